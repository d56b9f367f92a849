// Package schema is the one definition of a benchmark result file
// (bench/results/<bench>.json, described in bench/README.md): every bench
// program writes it and bench/report reads it.
package schema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"

	"github.com/homeswarm/homeswarm/internal/atomicfile"
)

// Result is one bench's figures from one run.
type Result struct {
	Bench   string `json:"bench"`
	Rows    []Row  `json:"rows"`
	Machine string `json:"machine"`
	Date    string `json:"date"`
}

// Row is one figure. Ratio is > 1 when the row beats its anchor: anchor/value
// for latencies, value/anchor for throughputs; zero when there is no anchor.
// Met, when set, overrides the verdict parsed from Target (for targets the
// parser cannot judge, such as "≤ Swarm reschedule + 2 s").
type Row struct {
	Name        string    `json:"name"`
	Metric      string    `json:"metric"`
	Unit        string    `json:"unit"`
	Value       float64   `json:"value"`
	Anchor      string    `json:"anchor,omitempty"`
	AnchorValue float64   `json:"anchor_value,omitempty"`
	Ratio       float64   `json:"ratio,omitempty"`
	Target      string    `json:"target,omitempty"`
	Samples     []float64 `json:"samples,omitempty"`
	Note        string    `json:"note,omitempty"`
	Met         *bool     `json:"met,omitempty"`
}

// ErrNoBench means a file is not a result (it has no "bench" field).
var ErrNoBench = errors.New(`not a bench result (no "bench" field)`)

// Read reads the result at path; errors name the path.
func Read(path string) (Result, error) {
	var r Result
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if r.Bench == "" {
		return r, fmt.Errorf("%s: %w", path, ErrNoBench)
	}
	return r, nil
}

// Write writes r to path (bench/results/<bench>.json) as indented JSON,
// creating the directory, through a temporary file renamed into place so
// a reader never sees half a result. Characters such as < and ≥ in
// targets are written as they are.
func Write(path string, r Result) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, buf.Bytes(), 0o644)
}

// No samples. Median, Mean and Pct return NaN for no samples (a NaN sample counts
// as none), so a log line shows "NaN" rather than a made-up figure, and
// Round turns NaN (and ±Inf, e.g. a ratio over a NaN or zero anchor) into
// 0, so a row computed from no samples is written with value 0, which JSON
// can carry. Every bench relies on exactly this: compute with Median/Pct,
// round into the row with Round.

// Round rounds x to digits decimals for a row; NaN and infinities (no
// measurement) become 0.
func Round(x float64, digits int) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return 0
	}
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// RoundAll is Round applied to every sample (a row's Samples).
func RoundAll(xs []float64, digits int) []float64 {
	out := make([]float64, len(xs))
	for i, x := range xs {
		out[i] = Round(x, digits)
	}
	return out
}

// Median is the median of the samples that are not NaN, NaN if none is.
func Median(xs []float64) float64 {
	v := sorted(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Mean is the arithmetic mean of the samples that are not NaN, NaN if
// none is.
func Mean(xs []float64) float64 {
	v := sorted(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// Pct is the nearest-rank percentile p (0–100) of the samples that are
// not NaN, NaN if none is: the smallest sample at least p % of them do not
// exceed (Pct(xs, 0) is the minimum, Pct(xs, 100) the maximum).
func Pct(xs []float64, p float64) float64 {
	v := sorted(xs)
	if len(v) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p/100*float64(len(v)))) - 1
	return v[max(0, min(i, len(v)-1))]
}

// sorted is a sorted copy of the samples that are not NaN.
func sorted(xs []float64) []float64 {
	var v []float64
	for _, x := range xs {
		if !math.IsNaN(x) {
			v = append(v, x)
		}
	}
	slices.Sort(v)
	return v
}
