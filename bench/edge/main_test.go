package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/homeswarm/homeswarm/bench/schema"
)

// TestResultPercentiles: every row of the committed result is its
// samples' nearest-rank percentile as schema.Pct computes it (the bench
// had its own quantile until it used schema's).
func TestResultPercentiles(t *testing.T) {
	t.Parallel()
	var rows []schema.Row
	for _, f := range []string{"../results/edge.json", "../results/edge-l4.json"} {
		res, err := schema.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, res.Rows...)
	}
	n := 0
	for _, r := range rows {
		i := strings.LastIndex(r.Metric, "p")
		p, err := strconv.ParseFloat(r.Metric[i+1:], 64)
		if i < 0 || err != nil || len(r.Samples) == 0 {
			continue
		}
		n++
		if got := schema.Round(schema.Pct(r.Samples, p), 3); got != r.Value {
			t.Errorf("%s %s: Pct = %v, the result says %v", r.Name, r.Metric, got, r.Value)
		}
	}
	if n == 0 {
		t.Fatal("no percentile rows with samples")
	}
}
