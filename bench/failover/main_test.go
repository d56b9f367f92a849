//go:build linux

package main

import (
	"math"
	"testing"
)

func TestRows(t *testing.T) {
	t.Parallel()
	rs := rows(map[string][]sample{
		"drain": {
			{from: "home1", to: "home2", withData: 5, plain: 4, dataTask: 4.5, plainTask: 3.5},
			{from: "home2", to: "home3", withData: 6, plain: 5, dataTask: 5.5, plainTask: 4.5},
			{from: "home3", to: "home1", withData: 4.5, plain: 4.8, dataTask: math.NaN(), plainTask: 4},
		},
		"kill": {
			{from: "home1", to: "home2", withData: 20, plain: 15},
		},
	})
	if len(rs) != 6 {
		t.Fatalf("%d rows, want 3 per event", len(rs))
	}
	d := rs[0]
	if d.Name != "failover with data, drain" || d.Value != 5 || d.AnchorValue != 4.8 || d.Ratio != 0.96 {
		t.Errorf("drain row: %+v", d)
	}
	if d.Met == nil || !*d.Met {
		t.Errorf("drain: 5 s against 4.8 s meets ≤ +2 s: %+v", d.Met)
	}
	if o := rs[1]; o.Value != 1 || o.Target != "≤ 2 s" {
		t.Errorf("overhead row: %+v", o)
	}
	if k := rs[3]; k.Met == nil || *k.Met {
		t.Errorf("kill: 20 s against 15 s misses ≤ +2 s: %+v", k)
	}
}
