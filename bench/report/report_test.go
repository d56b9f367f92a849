package main

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func boolp(b bool) *bool { return &b }

func sample() []Result {
	return []Result{
		{Bench: "sync", Machine: "test box", Date: "2026-01-02T03:04:05Z", Rows: []Row{
			{Name: "syncvol small-file propagation", Metric: "p50", Unit: "s", Value: 0.08,
				Anchor: "syncthing defaults", AnchorValue: 10, Ratio: 125, Target: "p50 < 0.2 s", Note: "60 files"},
			{Name: "syncvol small-file propagation", Metric: "p99", Unit: "s", Value: 1.5,
				Anchor: "syncthing fsWatcherDelayS=1", AnchorValue: 1.1, Ratio: 0.73, Target: "p99 < 1 s", Note: "60 files"},
			{Name: "syncvol large-file throughput", Metric: "throughput", Unit: "MB/s", Value: 150,
				Anchor: "rsync daemon", AnchorValue: 200, Ratio: 0.75, Target: "≥ 0.8× rsync"},
			{Name: "rsync | daemon", Metric: "throughput", Unit: "MB/s", Value: 200},
		}},
		{Bench: "mesh", Machine: "test box", Date: "2026-01-02T03:04:05Z", Rows: []Row{
			{Name: "mesh throughput", Unit: "Gbit/s", Value: 1.3, Anchor: "wireguard-go", AnchorValue: 1.0,
				Ratio: 1.3, Target: "≥ 1.0× wireguard-go"},
			{Name: "failover", Unit: "s", Value: 9, Anchor: "swarm", AnchorValue: 8, Ratio: 0.89,
				Target: "≤ Swarm reschedule + 2 s", Met: boolp(true)},
			{Name: "odd", Unit: "s", Value: 3, Target: "fast enough"},
		}},
	}
}

func TestFormatRatio(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   float64
		want string
	}{
		{125, "125×"}, {1234.6, "1235×"}, {12.34, "12.3×"}, {8.6, "8.6×"}, {10, "10×"},
		{1, "1×"}, {1.25, "1.25×"}, {0.93, "0.93×"}, {0.0123, "0.0123×"}, {0, "—"}, {-1, "—"},
	} {
		if got := FormatRatio(tc.in); got != tc.want {
			t.Errorf("FormatRatio(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestFormatValue(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		v    float64
		unit string
		want string
	}{
		{0.0987, "s", "0.0987 s"}, {10.04, "s", "10 s"}, {198.23, "MB/s", "198 MB/s"}, {1.5, "", "1.5"}, {0, "s", "0 s"},
	} {
		if got := FormatValue(tc.v, tc.unit); got != tc.want {
			t.Errorf("FormatValue(%v, %q) = %q, want %q", tc.v, tc.unit, got, tc.want)
		}
	}
}

func TestParseTarget(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want Target
		ok   bool
	}{
		{"p50 < 0.2 s", Target{Op: "<", Value: 0.2, Unit: "s"}, true},
		{"p99 <= 1s", Target{Op: "<=", Value: 1, Unit: "s"}, true},
		{"≥ 0.8× rsync", Target{Op: ">=", Value: 0.8, Ratio: true}, true},
		{">= 1.0x wireguard-go", Target{Op: ">=", Value: 1, Ratio: true}, true},
		{"idle < 60 MiB RSS", Target{Op: "<", Value: 60, Unit: "MiB"}, true},
		{"edge < 1 s", Target{Op: "<", Value: 1, Unit: "s"}, true},
		{"> 500", Target{Op: ">", Value: 500}, true},
		{"≤ Swarm reschedule + 2 s", Target{}, false},
		{"", Target{}, false},
	} {
		got, ok := ParseTarget(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("ParseTarget(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestJudge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		row  Row
		want Verdict
	}{
		{"latency met", Row{Unit: "s", Value: 0.08, Target: "p50 < 0.2 s"}, Met},
		{"latency missed", Row{Unit: "s", Value: 0.3, Target: "p50 < 0.2 s"}, Missed},
		{"unit converted", Row{Unit: "ms", Value: 150, Target: "p50 < 0.2 s"}, Met},
		{"ratio met", Row{Ratio: 0.9, Target: "≥ 0.8× rsync"}, Met},
		{"ratio missed", Row{Ratio: 0.7, Target: "≥ 0.8× rsync"}, Missed},
		{"ratio without anchor", Row{Target: "≥ 0.8× rsync"}, Unknown},
		{"incompatible unit", Row{Unit: "MB/s", Value: 3, Target: "< 1 s"}, Unknown},
		{"unparsable", Row{Target: "≤ Swarm reschedule + 2 s"}, Unknown},
		{"override", Row{Target: "≤ Swarm reschedule + 2 s", Met: boolp(false)}, Missed},
		{"no target", Row{Value: 1}, NoTarget},
		{"memory", Row{Unit: "MiB", Value: 40, Target: "idle < 60 MiB RSS"}, Met},
		{"both met", Row{Unit: "s", Value: 0.3, Ratio: 18, Target: "< 1 s, >= 10x faster"}, Met},
		{"one of two missed", Row{Unit: "s", Value: 2.9, Ratio: 3.8, Target: "< 1 s, >= 10x faster"}, Missed},
		{"ratio missed, value met", Row{Unit: "s", Value: 0.5, Ratio: 5, Target: "< 1 s, >= 10x faster"}, Missed},
	} {
		if got := Judge(tc.row); got != tc.want {
			t.Errorf("%s: Judge = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestTargetRatio(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		row  Row
		want float64
		ok   bool
	}{
		{"latency", Row{Unit: "s", AnchorValue: 10, Target: "p50 < 0.2 s"}, 50, true},
		{"throughput", Row{Unit: "MB/s", AnchorValue: 100, Target: "> 80 MB/s"}, 0.8, true},
		{"ratio", Row{Target: "≥ 0.8× rsync"}, 0.8, true},
		{"most demanding", Row{Unit: "s", AnchorValue: 11.4, Target: "< 1 s, >= 10x faster"}, 11.4, true},
		{"no anchor", Row{Unit: "s", Target: "< 1 s"}, 0, false},
		{"none", Row{}, 0, false},
	} {
		got, ok := TargetRatio(tc.row)
		if ok != tc.ok || (ok && (got < tc.want*0.999 || got > tc.want*1.001)) {
			t.Errorf("%s: TargetRatio = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func TestRenderMarkdown(t *testing.T) {
	t.Parallel()
	md := RenderMarkdown(sample(), "chart.svg")
	for _, want := range []string{
		"![ratio of every figure to its anchor, log scale](chart.svg)",
		"| Bench | Row | Value | Anchor | Anchor value | Ratio | Target | Met? |",
		"| sync | syncvol small-file propagation (p50) [1] | 0.08 s | syncthing defaults | 10 s | 125× | p50 < 0.2 s | ✅ |",
		"| sync | syncvol small-file propagation (p99) [1] | 1.5 s | syncthing fsWatcherDelayS=1 | 1.1 s | 0.73× | p99 < 1 s | ❌ |",
		"| 150 MB/s | rsync daemon | 200 MB/s | 0.75× | ≥ 0.8× rsync | ❌ |",
		`| sync | rsync \| daemon (throughput) | 200 MB/s | — | — | — | — | — |`,
		"| mesh | failover | 9 s | swarm | 8 s | 0.89× | ≤ Swarm reschedule + 2 s | ✅ |",
		"| mesh | odd | 3 s | — | — | — | fast enough | ? |",
		"[1] 60 files  \n\n",
		"* **sync** — 2026-01-02T03:04:05Z, test box",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
	// One table line per row plus header and separator, all with 9 pipes
	// outside escapes.
	var table []string
	for _, l := range strings.Split(md, "\n") {
		if strings.HasPrefix(l, "| ") || strings.HasPrefix(l, "|-") {
			table = append(table, l)
		}
	}
	if len(table) != 2+7 {
		t.Fatalf("table has %d lines, want 9", len(table))
	}
	for _, l := range table {
		if n := strings.Count(strings.ReplaceAll(l, `\|`, ""), "|"); n != 9 {
			t.Errorf("line has %d cell separators, want 9: %s", n, l)
		}
	}
	if got := RenderMarkdown(nil, "chart.svg"); !strings.Contains(got, "No results yet.") {
		t.Errorf("empty report: %s", got)
	}
}

// roundTrip decodes the SVG with encoding/xml, re-encodes every token and
// decodes the result again, returning the element names seen.
func roundTrip(t *testing.T, svg string) map[string]int {
	t.Helper()
	names := map[string]int{}
	var re bytes.Buffer
	enc := xml.NewEncoder(&re)
	dec := xml.NewDecoder(strings.NewReader(svg))
	dec.Strict = true
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG not well-formed: %v\n%s", err, svg)
		}
		if se, ok := tok.(xml.StartElement); ok {
			names[se.Name.Local]++
			for _, a := range se.Attr {
				if a.Name.Local == "class" {
					names[se.Name.Local+"."+a.Value]++
				}
			}
		}
		if err := enc.EncodeToken(xml.CopyToken(tok)); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	}
	if err := enc.Flush(); err != nil {
		t.Fatal(err)
	}
	dec2 := xml.NewDecoder(&re)
	for {
		if _, err := dec2.Token(); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("re-encoded SVG not well-formed: %v", err)
		}
	}
	return names
}

func TestMarkdownEscapes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"p50 < 0.2 s", "p50 < 0.2 s"},
		{"<script>", "&lt;script>"},
		{"a | b", `a \| b`},
		{"fs_watcher *x*", `fs\_watcher \*x\*`},
		{"two\nlines", "two lines"},
	} {
		if got := mdCell(tc.in); got != tc.want {
			t.Errorf("mdCell(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := rowLabel(Row{Name: "x throughput", Metric: "throughput"}); got != "x throughput" {
		t.Errorf("rowLabel repeats the metric: %q", got)
	}
}

func TestRenderSVG(t *testing.T) {
	t.Parallel()
	svg := RenderSVG(sample())
	if !strings.HasPrefix(svg, `<svg xmlns="http://www.w3.org/2000/svg"`) {
		t.Fatalf("not an SVG document: %.80s", svg)
	}
	names := roundTrip(t, svg)
	// Rows with a ratio: 3 sync + 2 mesh.
	if names["rect.bar"] != 5 {
		t.Errorf("%d bars, want 5", names["rect.bar"])
	}
	// Targets with a ratio: sync p50 (50×), p99 (1.1×), throughput (0.8×), mesh (1×).
	if names["line.target"] != 4 {
		t.Errorf("%d target marks, want 4", names["line.target"])
	}
	if !strings.Contains(svg, "target p50 &lt; 0.2 s") || !strings.Contains(svg, "0.08 s vs 10 s syncthing defaults") {
		t.Error("target text not escaped")
	}
	empty := roundTrip(t, RenderSVG(nil))
	if empty["rect.bar"] != 0 || empty["svg"] != 1 {
		t.Errorf("empty chart: %v", empty)
	}
}

func TestLoadDirAndRun(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	files := map[string]string{
		"sync.json": `{"bench":"sync","rows":[{"name":"a","metric":"p50","unit":"s","value":0.1,"anchor":"x","anchor_value":1,"ratio":10,"target":"p50 < 0.2 s"}],"machine":"m","date":"d"}`,
		"zeta.json": `{"bench":"zeta","rows":[],"machine":"m","date":"d"}`,
		"mesh.json": `{"bench":"mesh","rows":[{"name":"b","unit":"Gbit/s","value":1,"anchor":"wg","anchor_value":1,"ratio":1}],"machine":"m","date":"d"}`,
		"notes.txt": "ignored",
	}
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range res {
		order = append(order, r.Bench)
	}
	if strings.Join(order, ",") != "mesh,sync,zeta" {
		t.Errorf("order %v, want mesh,sync,zeta", order)
	}
	if err := run(dir); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(filepath.Join(dir, "README.md"))
	if err != nil || !strings.Contains(string(md), "| sync | a (p50) | 0.1 s | x | 1 s | 10× | p50 < 0.2 s | ✅ |") {
		t.Errorf("README.md: %v\n%s", err, md)
	}
	svg, err := os.ReadFile(filepath.Join(dir, "chart.svg"))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, string(svg))

	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"rows":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadDir(dir); !errors.Is(err, ErrNoBench) {
		t.Errorf("LoadDir with a foreign file: %v, want ErrNoBench", err)
	}
}

func TestReplaceSection(t *testing.T) {
	t.Parallel()
	doc := "# X\n\n## Benchmarks\n\nintro\n\n" + SectionStart + "\nold table\n" + SectionEnd + "\n\n## Tests\n"
	got, err := ReplaceSection(doc, "\nnew table\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# X\n\n## Benchmarks\n\nintro\n\n" + SectionStart + "\n\nnew table\n" + SectionEnd + "\n\n## Tests\n"
	if got != want {
		t.Errorf("ReplaceSection:\n%q\nwant\n%q", got, want)
	}
	if _, err := ReplaceSection("no markers", "x"); !errors.Is(err, ErrNoSection) {
		t.Errorf("without markers: %v, want ErrNoSection", err)
	}
	if _, err := ReplaceSection(SectionEnd+SectionStart, "x"); !errors.Is(err, ErrNoSection) {
		t.Errorf("markers reversed: %v, want ErrNoSection", err)
	}
}

func TestWriteSection(t *testing.T) {
	t.Parallel()
	top := t.TempDir()
	dir := filepath.Join(top, "bench", "results")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	res := `{"bench":"memory","rows":[{"name":"syncvol idle memory","metric":"RSS","unit":"MiB","value":48,"anchor":"syncthing","anchor_value":17,"ratio":0.35,"target":"idle < 60 MiB RSS"}],"machine":"m","date":"d"}`
	if err := os.WriteFile(filepath.Join(dir, "memory.json"), []byte(res), 0o644); err != nil {
		t.Fatal(err)
	}
	readme := filepath.Join(top, "README.md")
	if err := os.WriteFile(readme, []byte("## Benchmarks\n"+SectionStart+"\n"+SectionEnd+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(dir, readme); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(readme)
	for _, want := range []string{
		"](bench/results/chart.svg)",
		"| memory | syncvol idle memory (RSS) | 48 MiB | syncthing | 17 MiB | 0.35× | idle < 60 MiB RSS | ✅ |",
		SectionEnd,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("README lacks %q:\n%s", want, b)
		}
	}
	if err := os.WriteFile(readme, []byte("no section"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := writeSection(dir, readme); !errors.Is(err, ErrNoSection) {
		t.Errorf("README without markers: %v, want ErrNoSection", err)
	}
}
