//go:build linux

package main

import (
	"fmt"
	"github.com/homeswarm/homeswarm/bench/schema"
	"os/exec"
	"strings"

	"github.com/homeswarm/homeswarm/netdriver/mesh"
)

// result is the shared bench schema (package schema).
type result = schema.Result

// row is the shared bench schema (package schema).
type row = schema.Row

// rows turns the measurements into result rows. Ratios are > 1 when the
// row beats its anchor: value/anchor for throughput, anchor/value for RTT
// and CPU.
func rows(res map[string]*measured, c config, mode, meshNote string) []row {
	b, w, m := res[pathBare], res[pathWG], res[pathMesh]
	tput := func(x *measured) float64 { return schema.Median(x.gbps) }
	rtt := func(x *measured) float64 { return schema.Median(x.rtts) }
	cpu := func(x *measured) float64 { return schema.Median(x.cpuGbit) }
	higher := func(v, a float64) float64 { return schema.Round(v/a, 3) }
	lower := func(v, a float64) float64 { return schema.Round(a/v, 3) }
	r4 := func(xs []float64) []float64 { return schema.RoundAll(xs, 4) }

	tputNote := fmt.Sprintf("iperf3 TCP home→vps through the NAT, median of %d runs of %d s (after %d s left out), paths interleaved in one run; meshnet TUN mode %s, MTU %d; wireguard-go %s at its default MTU 1420",
		c.runs, c.seconds, c.omit, mode, mesh.DefaultMTU, wgVersion(c.wireguardGo))
	tputNote += fmt.Sprintf("; bytes per packet arriving on vps's WAN link (a GSO packet carries many datagrams): bare %.0f, wireguard-go %.0f, meshnet %.0f",
		schema.Median(b.wirePkt), schema.Median(w.wirePkt), schema.Median(m.wirePkt))
	if meshNote != "" {
		tputNote += "; " + meshNote
	}
	rttNote := fmt.Sprintf("busybox ping home→vps on idle paths, median of %d pings 50 ms apart in %d rounds interleaved with the other paths; means: meshnet %.3f, wireguard-go %.3f, bare %.3f ms",
		len(m.rtts), c.rttRounds(), schema.Mean(m.rtts), schema.Mean(w.rtts), schema.Mean(b.rtts))
	cpuNote := "utime+stime of both tunnel processes (home and vps) during each iperf3 run, per Gbit received; median of runs. Kernel work done in softirq context for other processes is not counted for either"

	var rs []row
	add := func(r row) { rs = append(rs, r) }
	add(row{Name: "meshnet TCP throughput", Metric: "throughput", Unit: "Gbit/s", Value: schema.Round(tput(m), 3),
		Anchor: pathWG, AnchorValue: schema.Round(tput(w), 3), Ratio: higher(tput(m), tput(w)),
		Target: "≥ 1.5× wireguard-go", Samples: r4(m.gbps), Note: tputNote})
	add(row{Name: "meshnet TCP throughput vs bare path", Metric: "throughput", Unit: "Gbit/s", Value: schema.Round(tput(m), 3),
		Anchor: pathBare, AnchorValue: schema.Round(tput(b), 3), Ratio: higher(tput(m), tput(b)), Target: "≥ 0.4× the bare path"})
	add(row{Name: "wireguard-go TCP throughput", Metric: "throughput", Unit: "Gbit/s", Value: schema.Round(tput(w), 3),
		Anchor: pathBare, AnchorValue: schema.Round(tput(b), 3), Ratio: higher(tput(w), tput(b)), Samples: r4(w.gbps)})
	add(row{Name: "bare veth path TCP throughput", Metric: "throughput", Unit: "Gbit/s", Value: schema.Round(tput(b), 3),
		Samples: r4(b.gbps)})
	add(row{Name: "meshnet RTT", Metric: "RTT", Unit: "ms", Value: schema.Round(rtt(m), 4),
		Anchor: pathWG, AnchorValue: schema.Round(rtt(w), 4), Ratio: lower(rtt(m), rtt(w)), Samples: r4(m.rtts), Note: rttNote})
	add(row{Name: "wireguard-go RTT", Metric: "RTT", Unit: "ms", Value: schema.Round(rtt(w), 4),
		Anchor: pathBare, AnchorValue: schema.Round(rtt(b), 4), Ratio: lower(rtt(w), rtt(b)), Samples: r4(w.rtts)})
	add(row{Name: "bare veth path RTT", Metric: "RTT", Unit: "ms", Value: schema.Round(rtt(b), 4), Samples: r4(b.rtts)})
	addM, addW := rtt(m)-rtt(b), rtt(w)-rtt(b)
	added := row{Name: "meshnet added latency", Metric: "RTT − bare RTT", Unit: "ms", Value: schema.Round(addM, 4),
		Anchor: pathWG, AnchorValue: schema.Round(addW, 4),
		Target: "≥ 1× wireguard-go (an added RTT at most its)", Note: "median RTT through the tunnel minus the bare path's median RTT"}
	if addM > 0 && addW > 0 {
		added.Ratio = lower(addM, addW)
	}
	add(added)
	add(row{Name: "meshnet CPU per Gbit/s", Metric: "CPU", Unit: "CPU-s/Gbit", Value: schema.Round(cpu(m), 3),
		Anchor: pathWG, AnchorValue: schema.Round(cpu(w), 3), Ratio: lower(cpu(m), cpu(w)), Samples: r4(m.cpuGbit), Note: cpuNote,
		Target: "≥ 1.43× wireguard-go (a CPU cost of at most 0.7 of its)"})
	add(row{Name: "wireguard-go CPU per Gbit/s", Metric: "CPU", Unit: "CPU-s/Gbit", Value: schema.Round(cpu(w), 3),
		Samples: r4(w.cpuGbit)})
	if p := res[pathBase]; p != nil {
		label := "meshnet built from " + c.baseLabel
		if c.baseLabel == "" {
			label = "meshnet built from " + c.baseline
		}
		add(row{Name: "meshnet TCP throughput vs before", Metric: "throughput", Unit: "Gbit/s", Value: schema.Round(tput(m), 3),
			Anchor: label, AnchorValue: schema.Round(tput(p), 3), Ratio: higher(tput(m), tput(p)), Samples: r4(p.gbps),
			Note: "the samples are the earlier build's; both builds ran in this run, interleaved with the other paths"})
		add(row{Name: "meshnet CPU per Gbit/s vs before", Metric: "CPU", Unit: "CPU-s/Gbit", Value: schema.Round(cpu(m), 3),
			Anchor: label, AnchorValue: schema.Round(cpu(p), 3), Ratio: lower(cpu(m), cpu(p)), Samples: r4(p.cpuGbit)})
		add(row{Name: "meshnet RTT vs before", Metric: "RTT", Unit: "ms", Value: schema.Round(rtt(m), 4),
			Anchor: label, AnchorValue: schema.Round(rtt(p), 4), Ratio: lower(rtt(m), rtt(p)), Samples: r4(p.rtts)})
	}
	return rs
}

// wgVersion asks the wireguard-go binary its version.
func wgVersion(bin string) string {
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		return "?"
	}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "v0.") {
			return f
		}
	}
	return "?"
}

func printSummary(res map[string]*measured, r result, out string) {
	fmt.Println()
	fmt.Printf("%-26s %12s %10s %14s\n", "path", "TCP Gbit/s", "RTT ms", "CPU-s/Gbit")
	for _, p := range []string{pathBare, pathWG, pathMesh, pathBase} {
		m := res[p]
		if m == nil {
			continue
		}
		cpu := "-"
		if len(m.cpuGbit) > 0 {
			cpu = fmt.Sprintf("%.3f", schema.Median(m.cpuGbit))
		}
		fmt.Printf("%-26s %12.3f %10.3f %14s\n", p, schema.Median(m.gbps), schema.Median(m.rtts), cpu)
	}
	fmt.Println()
	for _, row := range r.Rows {
		if row.Ratio == 0 {
			continue
		}
		fmt.Printf("%-48s %8.3f %-10s vs %-15s %8.3f  ratio %.2f× %s\n", row.Name, row.Value, row.Unit, row.Anchor, row.AnchorValue, row.Ratio, row.Target)
	}
	fmt.Printf("\nmachine: %s\nwritten: %s\n", r.Machine, out)
}
