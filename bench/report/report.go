// Command report turns the benches' results (bench/results/*.json, schema in
// bench/README.md) into bench/results/README.md — one Markdown table of
// every figure with its anchor, ratio and target — and bench/results/chart.svg,
// a bar chart of every row's ratio to its anchor on a log scale.
//
// It exists so that each bench only has to write numbers: whether a target
// is met, how ratios read and how the chart looks are decided here, once,
// by code of our own (no chart library).
package main

import (
	"github.com/homeswarm/homeswarm/bench/schema"
	"math"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Result is the shared bench schema (package schema).
type Result = schema.Result

// Row is the shared bench schema (package schema).
type Row = schema.Row

// benchOrder is the order of the report; other benches follow,
// sorted by name.
var benchOrder = []string{"mesh", "mesh-loaded", "netdrv", "sync", "dblag", "edge", "failover", "memory"}

// ErrNoBench means a results file is not in the schema.
var ErrNoBench = schema.ErrNoBench

// LoadDir reads every *.json in dir, sorted in benchOrder.
func LoadDir(dir string) ([]Result, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Result
	for _, p := range paths {
		r, err := schema.Read(p)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	slices.SortStableFunc(out, func(a, b Result) int {
		ra, rb := benchRank(a.Bench), benchRank(b.Bench)
		if ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Bench, b.Bench)
	})
	return out, nil
}

func benchRank(b string) int {
	if i := slices.Index(benchOrder, b); i >= 0 {
		return i
	}
	return len(benchOrder)
}

// Target is a parsed target: Op Value [Unit], or Op Value× (a ratio).
type Target struct {
	Op    string // "<", "<=", ">" or ">="
	Value float64
	Unit  string // empty: the row's unit
	Ratio bool   // compare the row's Ratio, not its Value
}

var targetRe = regexp.MustCompile(`(<=|>=|≤|≥|<|>)\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(×|x\b)?\s*([A-Za-zµ%/]+)?`)

// ParseTargets reads every comparison in a target such as "p50 < 0.2 s",
// "≥ 0.8× rsync", "idle < 60 MiB RSS" or "< 1 s, >= 10x faster" (all must
// hold). It returns none when s holds no comparison with a number.
func ParseTargets(s string) []Target {
	var out []Target
	for _, m := range targetRe.FindAllStringSubmatch(s, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			continue
		}
		op := map[string]string{"≤": "<=", "≥": ">="}[m[1]]
		if op == "" {
			op = m[1]
		}
		t := Target{Op: op, Value: v, Ratio: m[3] != ""}
		if !t.Ratio {
			t.Unit = m[4]
		}
		out = append(out, t)
	}
	return out
}

// ParseTarget returns the first comparison of s; ok is false when none.
func ParseTarget(s string) (t Target, ok bool) {
	ts := ParseTargets(s)
	if len(ts) == 0 {
		return t, false
	}
	return ts[0], true
}

// unitScale gives a unit's dimension and its factor to that dimension's base.
func unitScale(u string) (dim string, f float64, ok bool) {
	switch u {
	case "ns":
		return "time", 1e-9, true
	case "µs", "us":
		return "time", 1e-6, true
	case "ms":
		return "time", 1e-3, true
	case "s":
		return "time", 1, true
	case "min":
		return "time", 60, true
	case "B":
		return "size", 1, true
	case "KiB":
		return "size", 1 << 10, true
	case "MiB":
		return "size", 1 << 20, true
	case "GiB":
		return "size", 1 << 30, true
	case "KB", "kB":
		return "size", 1e3, true
	case "MB":
		return "size", 1e6, true
	case "GB":
		return "size", 1e9, true
	case "MB/s":
		return "rate", 8e6, true
	case "MiB/s":
		return "rate", 8 << 20, true
	case "GB/s":
		return "rate", 8e9, true
	case "Mbit/s":
		return "rate", 1e6, true
	case "Gbit/s":
		return "rate", 1e9, true
	}
	return "", 0, false
}

// inRowUnit converts the target's value to the row's unit.
func (t Target) inRowUnit(rowUnit string) (float64, bool) {
	if t.Unit == "" || t.Unit == rowUnit {
		return t.Value, true
	}
	d1, f1, ok1 := unitScale(t.Unit)
	d2, f2, ok2 := unitScale(rowUnit)
	if !ok1 || !ok2 || d1 != d2 {
		return 0, false
	}
	return t.Value * f1 / f2, true
}

func compare(v float64, op string, t float64) bool {
	switch op {
	case "<":
		return v < t
	case "<=":
		return v <= t
	case ">":
		return v > t
	default:
		return v >= t
	}
}

// Verdict says whether a row meets its target.
type Verdict int

// Verdicts.
const (
	NoTarget Verdict = iota // the row states no target
	Unknown                 // a target this code cannot judge
	Met
	Missed
)

// Judge returns the row's verdict.
func Judge(r Row) Verdict {
	var ok bool
	if r.Met != nil {
		if *r.Met {
			return Met
		}
		return Missed
	}
	if strings.TrimSpace(r.Target) == "" {
		return NoTarget
	}
	ts := ParseTargets(r.Target)
	if len(ts) == 0 {
		return Unknown
	}
	met := true
	for _, t := range ts {
		v, tv := r.Value, t.Value
		if t.Ratio {
			if r.Ratio <= 0 {
				return Unknown
			}
			v = r.Ratio
		} else if tv, ok = t.inRowUnit(r.Unit); !ok {
			return Unknown
		}
		met = met && compare(v, t.Op, tv)
	}
	return verdict(met)
}

func verdict(ok bool) Verdict {
	if ok {
		return Met
	}
	return Missed
}

// TargetRatio is the ratio to the anchor the row must reach to meet its
// target, for the chart's target line; ok is false when there is none.
// For "value < T" (lower is better, ratio = anchor/value) it is anchor/T;
// for "value > T" it is T/anchor; for "≥ N×" it is N. With several
// comparisons, the most demanding one counts.
func TargetRatio(r Row) (float64, bool) {
	best := 0.0
	for _, t := range ParseTargets(r.Target) {
		var need float64
		if t.Ratio {
			need = t.Value
		} else {
			tv, ok := t.inRowUnit(r.Unit)
			if !ok || tv <= 0 || r.AnchorValue <= 0 {
				continue
			}
			if t.Op == "<" || t.Op == "<=" {
				need = r.AnchorValue / tv
			} else {
				need = tv / r.AnchorValue
			}
		}
		best = math.Max(best, need)
	}
	return best, best > 0
}

// sig formats x with about three significant digits and no trailing zeros.
func sig(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "—"
	}
	a := math.Abs(x)
	var s string
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		s = strconv.FormatFloat(x, 'f', 0, 64)
	case a >= 10:
		s = strconv.FormatFloat(x, 'f', 1, 64)
	case a >= 1:
		s = strconv.FormatFloat(x, 'f', 2, 64)
	default:
		s = strconv.FormatFloat(x, 'g', 3, 64)
		if strings.ContainsAny(s, "e") {
			return s
		}
	}
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// FormatRatio renders a ratio as "125×", "8.6×", "0.93×"; "—" for none.
func FormatRatio(r float64) string {
	if r <= 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return "—"
	}
	return sig(r) + "×"
}

// FormatValue renders a value with its unit.
func FormatValue(v float64, unit string) string {
	if unit == "" {
		return sig(v)
	}
	return sig(v) + " " + unit
}
