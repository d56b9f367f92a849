// Package schema is the one definition of a benchmark result file
// (bench/results/<bench>.json, described in bench/README.md): every bench
// program writes it and bench/report reads it.
package schema

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
