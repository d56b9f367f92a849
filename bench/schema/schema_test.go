package schema

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results", "x.json")
	in := Result{Bench: "x", Rows: []Row{{Name: "a", Value: 1.5, Target: "p50 < 0.2 s"}}, Machine: "m", Date: "d"}
	if err := Write(path, in); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "p50 < 0.2 s") || !strings.HasSuffix(string(b), "}\n") {
		t.Fatalf("written:\n%s", b)
	}
	out, err := Read(path)
	if err != nil || out.Rows[0].Target != in.Rows[0].Target || out.Rows[0].Value != 1.5 {
		t.Fatalf("read back %+v %v", out, err)
	}
	if ents, err := os.ReadDir(filepath.Dir(path)); err != nil || len(ents) != 1 {
		t.Fatalf("temporary file left: %v %v", ents, err)
	}
}

func TestReadNotAResult(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "x.json")
	if err := os.WriteFile(path, []byte(`{"rows": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); !errors.Is(err, ErrNoBench) {
		t.Fatalf("Read = %v, want ErrNoBench", err)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}, {[]float64{math.NaN(), 1}, 1}} {
		if got := Median(tc.in); got != tc.want {
			t.Errorf("Median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("median of nothing is not NaN")
	}
}

func TestMean(t *testing.T) {
	t.Parallel()
	if got := Mean([]float64{1, 2, 6, math.NaN()}); got != 3 {
		t.Errorf("Mean = %v, want 3", got)
	}
}

func TestPct(t *testing.T) {
	t.Parallel()
	xs := []float64{5, 1, 4, 2, 3, 10, 9, 8, 7, 6, math.NaN()}
	for _, tc := range []struct{ p, want float64 }{{50, 5}, {90, 9}, {99, 10}, {10, 1}, {0, 1}, {100, 10}} {
		if got := Pct(xs, tc.p); got != tc.want {
			t.Errorf("Pct(%v) = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := Pct([]float64{0.25}, 99); got != 0.25 {
		t.Errorf("Pct of one sample = %v", got)
	}
}

// TestNoSamples pins the behaviour every bench relies on for no samples:
// Median, Mean and Pct say NaN, Round makes the row's value 0 (and a ratio over
// it 0), and the result can be written.
func TestNoSamples(t *testing.T) {
	t.Parallel()
	for _, xs := range [][]float64{nil, {}, {math.NaN(), math.NaN()}} {
		if m, a, p := Median(xs), Mean(xs), Pct(xs, 50); !math.IsNaN(m) || !math.IsNaN(a) || !math.IsNaN(p) {
			t.Errorf("Median, Mean, Pct(%v) = %v, %v, %v, want NaN", xs, m, a, p)
		}
		if v, r := Round(Median(xs), 3), Round(1/Pct(xs, 99), 2); v != 0 || r != 0 {
			t.Errorf("rounded %v: value %v, ratio %v, want 0, 0", xs, v, r)
		}
	}
	if r := Round(1/Round(Median(nil), 3), 2); r != 0 {
		t.Errorf("ratio over a zero anchor = %v, want 0", r)
	}
	if got := RoundAll([]float64{1.23456, math.NaN()}, 2); !slices.Equal(got, []float64{1.23, 0}) {
		t.Errorf("RoundAll = %v", got)
	}
	path := filepath.Join(t.TempDir(), "x.json")
	if err := Write(path, Result{Bench: "x", Rows: []Row{{Name: "none", Value: Round(Pct(nil, 50), 4)}}}); err != nil {
		t.Fatalf("a row from no samples cannot be written: %v", err)
	}
}
