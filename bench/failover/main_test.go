//go:build linux

package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

func TestRows(t *testing.T) {
	t.Parallel()
	rs := rows(map[string][]sample{
		"token drain": {
			{from: "home1", to: "home2", withData: 5, plain: 4, dataTask: 4.5, plainTask: 3.5},
			{from: "home2", to: "home3", withData: 6, plain: 5, dataTask: 5.5, plainTask: 4.5},
			{from: "home3", to: "home1", withData: 4.5, plain: 4.8, dataTask: math.NaN(), plainTask: 4},
		},
		"token kill": {
			{from: "home1", to: "home2", withData: 20, plain: 15},
		},
		"sqlite kill": {
			{from: "home2", to: "home3", withData: 16, plain: 15.5},
		},
	})
	if len(rs) != 8 {
		t.Fatalf("%d rows, want 3 per token event and 2 per database event", len(rs))
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
	if q := rs[6]; q.Name != "failover with a database (SQLite committing), kill" || q.Value != 16 || q.AnchorValue != 15.5 || q.Met == nil || !*q.Met {
		t.Errorf("database kill row: %+v", q)
	}
	if o := rs[7]; o.Name != "failover overhead of a database (SQLite committing) (with data − plain), kill" || o.Value != 0.5 {
		t.Errorf("database overhead row: %+v", o)
	}
}

// Every workload's commands are formats of the token that leave nothing
// over (a stray argument would end up in the command).
func TestWorkloadFormats(t *testing.T) {
	t.Parallel()
	for name, w := range workloads {
		for _, f := range []string{w.mark, w.check, w.want} {
			if got := fmt.Sprintf(f, "TOKEN"); strings.Contains(got, "%!") {
				t.Errorf("%s: %q formats to %q", name, f, got)
			}
		}
	}
}
