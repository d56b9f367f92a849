package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	dir := flag.String("dir", "bench/results", "directory of the *.json results; README.md and chart.svg are written there")
	flag.Parse()
	if err := run(*dir); err != nil {
		fmt.Fprintf(os.Stderr, "bench report: %v\n", err)
		os.Exit(1)
	}
}

func run(dir string) error {
	results, err := LoadDir(dir)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "chart.svg"), RenderSVG(results)); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, "README.md"), RenderMarkdown(results, "chart.svg")); err != nil {
		return err
	}
	n := 0
	for _, r := range results {
		n += len(r.Rows)
	}
	fmt.Printf("bench report: %d benches, %d rows → %s\n", len(results), n, filepath.Join(dir, "README.md"))
	return nil
}

func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
