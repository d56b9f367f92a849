package schema

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
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
	var out Result
	if err := json.Unmarshal(b, &out); err != nil || out.Rows[0].Target != in.Rows[0].Target || out.Rows[0].Value != 1.5 {
		t.Fatalf("read back %+v %v", out, err)
	}
	if ents, err := os.ReadDir(filepath.Dir(path)); err != nil || len(ents) != 1 {
		t.Fatalf("temporary file left: %v %v", ents, err)
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
