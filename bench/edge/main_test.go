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
	res, err := schema.Read("../results/edge.json")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range res.Rows {
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
