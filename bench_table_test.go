package main

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// median is the median of f over rounds (the lower middle of an even count).
func median(rounds []runResult, f func(runResult) float64) float64 {
	if len(rounds) == 0 {
		return 0
	}
	v := make([]float64, len(rounds))
	for i, r := range rounds {
		v[i] = f(r)
	}
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// ratio is the median of f for program a over that for b, in scenario spec.
func (p *peersResult) ratio(spec burstSpec, a, b string, f func(runResult) float64) float64 {
	x, y := median(p.rounds[spec.name][a], f), median(p.rounds[spec.name][b], f)
	if y == 0 {
		return 0
	}
	return x / y
}

// table renders the medians, the ratios and the targets as Markdown.
func (p *peersResult) table() string {
	var b strings.Builder
	secs := func(v float64) string { return fmt.Sprintf("%.2f s", v) }
	ms := func(v float64) string { return fmt.Sprintf("%.1f ms", v*1000) }
	count := func(v float64) string { return fmt.Sprintf("%.0f", v) }
	rows := []struct {
		name   string
		f      func(runResult) float64
		format func(float64) string
	}{
		{"CPU for the burst", cpuOf, secs},
		{"plan p50", p50Of, ms},
		{"plan p99", p99Of, ms},
		{"ack p99", ackOf, ms},
		{"TCP connects to Slack", func(r runResult) float64 { return float64(r.slackConns) }, count},
		{"TCP connects to GeminiDB", func(r runResult) float64 { return float64(r.gdbConns) }, count},
	}
	for _, spec := range []burstSpec{rate100, rate500} {
		runs := p.rounds[spec.name]
		fmt.Fprintf(&b, "\n%s (median of %d rounds)\n\n", spec.name, len(runs["bot"]))
		b.WriteString("| | bot | Bolt-JS | floor | bot / Bolt | bot / floor |\n|---|---|---|---|---|---|\n")
		for _, row := range rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %.2f× | %.2f× |\n", row.name,
				row.format(median(runs["bot"], row.f)), row.format(median(runs["bolt"], row.f)), row.format(median(runs["floor"], row.f)),
				p.ratio(spec, "bot", "bolt", row.f), p.ratio(spec, "bot", "floor", row.f))
		}
	}
	runs := p.rounds[openPlans.name]
	fmt.Fprintf(&b, "\n%s (median of %d rounds)\n\n", openPlans.name, len(runs["bot"]))
	b.WriteString("| | empty store | 300 open plans | 300 / empty |\n|---|---|---|---|\n")
	for _, row := range rows[:4] {
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f× |\n", row.name,
			row.format(median(runs["bot"], row.f)), row.format(median(runs["bot+300"], row.f)), p.ratio(openPlans, "bot+300", "bot", row.f))
	}
	perMin := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }
	fmt.Fprintf(&b, "\nIdle CPU per minute (measured over %v, scaled; Socket Mode pings every 5 s), the bot at a 30 s poll: %s with 1,000 open plans, %s with none; the floor: %s\n",
		p.idleOn, perMin(p.idle), perMin(p.idle0), perMin(p.idleFl))

	b.WriteString("\nTargets of issue 20\n\n| target | now | |\n|---|---|---|\n")
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "not met"
	}
	targets := []struct {
		name  string
		value float64
		limit float64
	}{
		{"CPU ≤ 0.4× Bolt at 100/s", p.ratio(rate100, "bot", "bolt", cpuOf), 0.4},
		{"CPU ≤ 0.5× Bolt at 500/s", p.ratio(rate500, "bot", "bolt", cpuOf), 0.5},
		{"plan p99 ≤ 1.3× floor at 100/s", p.ratio(rate100, "bot", "floor", p99Of), 1.3},
		{"ack p99 ≤ 1.2× floor at 100/s", p.ratio(rate100, "bot", "floor", ackOf), 1.2},
		{"ack p99 ≤ 1.2× floor at 500/s", p.ratio(rate500, "bot", "floor", ackOf), 1.2},
		{"plan p99 with 300 open plans ≤ 1.5× empty", p.ratio(openPlans, "bot+300", "bot", p99Of), 1.5},
		{"CPU with 300 open plans ≤ 1.5× empty", p.ratio(openPlans, "bot+300", "bot", cpuOf), 1.5},
	}
	for _, tg := range targets {
		fmt.Fprintf(&b, "| %s | %.2f× | %s |\n", tg.name, tg.value, mark(tg.value <= tg.limit))
	}
	fmt.Fprintf(&b, "| idle CPU with 1,000 open plans < 10 ms per minute | %s | %s |\n", perMin(p.idle), mark(p.idle < 10*time.Millisecond))
	return b.String()
}
