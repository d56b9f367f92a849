package main

import (
	"fmt"

	"github.com/homeswarm/homeswarm/bench/schema"
)

// measures is everything one run measured, per system.
type measures struct {
	svLat, defLat, tunLat                      []float64 // small-file latencies, s
	svTput, svNoSync, tunTput, rsTput, rsFsync []float64 // large-file MB/s
	svCPU, svWait                              []float64 // syncvol CPU and run-queue wait per large file, s
}

// buildRows turns the measurements into the schema's rows: one per
// (metric, anchor) pair, then the anchors' raw figures.
func buildRows(c config, m measures) []row {
	svLat, defLat, tunLat := m.svLat, m.defLat, m.tunLat
	lat := func(p float64, anchor string, anchorLat []float64, target, note string) row {
		v, a := schema.Pct(svLat, p), schema.Pct(anchorLat, p)
		return row{Name: "syncvol small-file propagation", Metric: fmt.Sprintf("p%g", p), Unit: "s",
			Value: schema.Round(v, 4), Anchor: anchor, AnchorValue: schema.Round(a, 4), Ratio: schema.Round(a/v, 2),
			Target: target, Samples: svLat, Note: note}
	}
	method := fmt.Sprintf("%d × %d B files written one at a time on A, %v apart; latency = write start → right content on B (polled every %v)",
		len(svLat), c.smallSize, c.gap, c.poll)
	var rows []row
	if len(defLat) > 0 {
		rows = append(rows, lat(50, anchorDefaults, defLat, "p50 < 0.2 s", method))
	}
	rows = append(rows, lat(50, anchorTuned, tunLat, "p50 < 0.2 s", method))
	if len(defLat) > 0 {
		rows = append(rows, lat(99, anchorDefaults, defLat, "p99 < 1 s", ""))
	}
	rows = append(rows, lat(99, anchorTuned, tunLat, "p99 < 1 s", ""))

	svTput, tunTput, rsTput := m.svTput, m.tunTput, m.rsTput
	sv, rs, tun := schema.Median(svTput), schema.Median(rsTput), schema.Median(tunTput)
	svNo, rsF := schema.Median(m.svNoSync), schema.Median(m.rsFsync)
	tputNote := fmt.Sprintf("one fresh %d MiB random file per round, moved in turn by every system (syncvol, rsync, Syncthing tuned, rsync --fsync, syncvol fsync off); median of %d rounds. syncvol: write start on A → complete on B, fsync on as shipped; rsync: `rsync -a` push to a daemon on 127.0.0.1, no fsync",
		c.largeMiB, len(svTput))
	rows = append(rows,
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: schema.Round(sv, 1),
			Anchor: anchorRsync, AnchorValue: schema.Round(rs, 1), Ratio: schema.Round(sv/rs, 2), Target: "≥ 0.8× rsync",
			Samples: svTput, Note: tputNote},
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: schema.Round(sv, 1),
			Anchor: anchorRsync + " --fsync", AnchorValue: schema.Round(rsF, 1), Ratio: schema.Round(sv/rsF, 2), Samples: svTput,
			Note: "informative: rsync made as durable as syncvol (fsync after each file)"},
		row{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: schema.Round(sv, 1),
			Anchor: anchorTuned, AnchorValue: schema.Round(tun, 1), Ratio: schema.Round(sv/tun, 2), Samples: svTput},
		row{Name: "syncvol large-file throughput, fsync off", Metric: "throughput", Unit: "MB/s", Value: schema.Round(svNo, 1),
			Anchor: anchorRsync, AnchorValue: schema.Round(rs, 1), Ratio: schema.Round(svNo/rs, 2), Samples: m.svNoSync,
			Note: "diagnostic: engines with DisableFsync, to separate the cost of fsync from the rest of the pipeline"},
	)

	raw := func(name, metric, unit string, v float64, samples []float64, note string) row {
		return row{Name: name, Metric: metric, Unit: unit, Value: schema.Round(v, 4), Samples: samples, Note: note}
	}
	if len(defLat) > 0 {
		note := fmt.Sprintf("anchor: %d samples only (each waits the 10 s watcher delay), so p99 is the maximum", len(defLat))
		rows = append(rows,
			raw("syncthing defaults small-file propagation", "p50", "s", schema.Pct(defLat, 50), defLat, note),
			raw("syncthing defaults small-file propagation", "p99", "s", schema.Pct(defLat, 99), nil, ""))
	}
	rows = append(rows,
		raw("syncthing fsWatcherDelayS=1 small-file propagation", "p50", "s", schema.Pct(tunLat, 50), tunLat,
			fmt.Sprintf("anchor: %d samples, same method as syncvol", len(tunLat))),
		raw("syncthing fsWatcherDelayS=1 small-file propagation", "p99", "s", schema.Pct(tunLat, 99), nil, ""),
		raw("syncthing fsWatcherDelayS=1 large-file throughput", "throughput", "MB/s", schema.Round(tun, 1), tunTput, ""),
		raw("rsync daemon large-file throughput", "throughput", "MB/s", schema.Round(rs, 1), rsTput, ""),
		raw("rsync daemon --fsync large-file throughput", "throughput", "MB/s", schema.Round(rsF, 1), m.rsFsync, ""),
		raw("syncvol large-file CPU", "CPU per file", "s", schema.Round(schema.Median(m.svCPU), 2), m.svCPU,
			fmt.Sprintf("diagnostic: user+system CPU of the bench process (both engines, and the write on A) from write start to complete on B, per large file, median of the rounds; its threads also waited a median %.2f s per file for a CPU (run queue), as the machine is shared", schema.Median(m.svWait))),
	)
	return rows
}

// ---------------------------------------------------------------- syncvol
