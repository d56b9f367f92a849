package main

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/homeswarm/homeswarm/bench/schema"
)

// TestBuildRowsResult rebuilds the rows of the committed result from its
// own samples: the rows (values, ratios, notes) come out as they were
// written, so the shared schema.Median/Pct/Round give this bench's figures.
func TestBuildRowsResult(t *testing.T) {
	t.Parallel()
	res, err := schema.Read("../results/sync.json")
	if err != nil {
		t.Fatal(err)
	}
	samples := map[string][]float64{}
	for _, r := range res.Rows {
		if r.Samples != nil {
			samples[r.Name] = r.Samples // rows of one name carry the same samples
		}
	}
	m := measures{
		svLat:    samples["syncvol small-file propagation"],
		defLat:   samples["syncthing defaults small-file propagation"],
		tunLat:   samples["syncthing fsWatcherDelayS=1 small-file propagation"],
		svTput:   samples["syncvol large-file throughput"],
		svNoSync: samples["syncvol large-file throughput, fsync off"],
		tunTput:  samples["syncthing fsWatcherDelayS=1 large-file throughput"],
		rsTput:   samples["rsync daemon large-file throughput"],
		rsFsync:  samples["rsync daemon --fsync large-file throughput"],
		svCPU:    samples["syncvol large-file CPU"],
	}
	c := config{smallSize: 1024, gap: 150 * time.Millisecond, poll: 5 * time.Millisecond, largeMiB: 256}
	got := buildRows(c, m)
	if len(got) != len(res.Rows) {
		t.Fatalf("%d rows, the result has %d", len(got), len(res.Rows))
	}
	for i, want := range res.Rows {
		g := got[i]
		if want.Name == "syncvol large-file CPU" {
			g.Note = want.Note // it quotes the run-queue wait, which the result does not keep
		}
		if !reflect.DeepEqual(g, want) {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, g, want)
		}
	}
}

// TestBuildRowsWithoutDefaults: -skip-defaults leaves out the rows of
// Syncthing at its defaults, and no row is NaN.
func TestBuildRowsWithoutDefaults(t *testing.T) {
	t.Parallel()
	one := []float64{1}
	rows := buildRows(config{}, measures{svLat: []float64{0.1, 0.2}, tunLat: []float64{0.5},
		svTput: one, svNoSync: one, tunTput: one, rsTput: one, rsFsync: one})
	if len(rows) != 12 {
		t.Fatalf("%d rows, want 12", len(rows))
	}
	for _, r := range rows {
		if r.Anchor == anchorDefaults || r.Value != r.Value || r.Ratio != r.Ratio {
			t.Errorf("row %+v", r)
		}
	}
	if _, err := json.Marshal(rows); err != nil {
		t.Fatal(err)
	}
}
