#!/usr/bin/env python3
"""Turns bench/run's raw.jsonl into results.md and PNG charts (same directory)."""
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

out = Path(sys.argv[1])
rows = [json.loads(line) for line in (out / "raw.jsonl").read_text().splitlines() if line.strip()]
machine = next(r for r in rows if r["kind"] == "machine")


def mb(n_bytes):
    """Sizes in MB of 1024² bytes, as pg_size_pretty gives them, in every table and chart alike."""
    return n_bytes / 1024 / 1024


NAMES = {"courier": "courier", "pgmq": "pgmq 1.13", "skq": "SKIP LOCKED table", "bare": "bare INSERT",
         "heap": "no-index INSERT"}
SCENARIOS = {
    1: "produce, 1 msg/tx, 8 clients",
    2: "consume: lease 1 + ack, 8 clients",
    3: "produce, batches of 100, 4 clients",
    4: "consume: lease 100 + batch ack, 4 clients",
}
md = []
targets = []


def target(name, ok, detail):
    targets.append((name, ok, detail))


def fmt(x, digits=0):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:,.{digits}f}"


md.append(f"# courier benchmark results ({machine['date']})\n")
md.append(
    f"Machine: {machine['cpus']} vCPUs ({machine['cpu_model']}), {machine['memory_gb']} GB RAM, "
    f"Linux {machine['kernel']}. PostgreSQL {machine['postgres']} with fsync=on, synchronous_commit=on, "
    f"shared_buffers=1GB, default autovacuum, courier preloaded. courier {machine['courier']}, "
    f"pgmq {machine['pgmq']} (installed from the pgmq crate's embedded SQL). pgbench -M prepared over a "
    f"Unix socket on the same machine (its CPU counts against the 2 cores too), payload 214 bytes of JSON, "
    f"visibility timeout 30 s for every system."
    + (" **Quick mode: 1 run per figure and short steady states; not for publication.**" if machine["quick"] else "")
    + "\n"
)

# --- Throughput scenarios -------------------------------------------------------------------
tp = defaultdict(list)
for r in rows:
    if r["kind"] == "throughput":
        tp[(r["scenario"], r["system"])].append(r)


def median(key):
    runs = tp.get(key, [])
    return statistics.median(r["msgs_per_s"] for r in runs) if runs else None


if tp:
    md.append("## Throughput (messages per second; median of runs, min–max)\n")
    md.append("| scenario | system | msg/s | min–max | WAL bytes/msg | commits/msg |")
    md.append("|---|---|---:|---:|---:|---:|")
    for s in sorted({k[0] for k in tp}):
        for system in ["courier", "pgmq", "skq", "bare", "heap"]:
            runs = tp.get((s, system))
            if not runs:
                continue
            v = [r["msgs_per_s"] for r in runs]
            md.append(
                f"| {s}. {SCENARIOS[s]} | {NAMES[system]} | {fmt(statistics.median(v))} | "
                f"{fmt(min(v))}–{fmt(max(v))} | {fmt(statistics.median(r['wal_bytes_per_msg'] for r in runs))} | "
                f"{fmt(statistics.median(r['commits_per_msg'] for r in runs), 3)} |"
            )
    md.append("")

    def ratio(s, a, b):
        x, y = median((s, a)), median((s, b))
        return x / y if x and y else None

    for s, other, goal in [(1, "pgmq", 2.0), (1, "bare", 0.9), (2, "pgmq", 1.5), (2, "skq", 1.0), (3, "pgmq", 1.8), (4, "pgmq", 1.3)]:
        r = ratio(s, "courier", other)
        if r is not None:
            detail = f"{r:.2f}×"
            # Where the same run measured the physical ceiling, say whether the goal fits under it:
            # the bare INSERT (a row and one index entry per message, the least a queue needs to
            # find a message again) and the no-index INSERT (a row and nothing else).
            ceiling = ratio(s, other, "bare") if other != "bare" else None
            if ceiling is not None:
                needed = goal * median((s, other))
                detail += (f" ({goal}× pgmq is {fmt(needed)} msg/s: {goal * ceiling:.2f}× the bare INSERT "
                           f"({fmt(median((s, 'bare')))})")
                if median((s, "heap")):
                    detail += f" and {needed / median((s, 'heap')):.2f}× the no-index INSERT ({fmt(median((s, 'heap')))})"
                detail += ")"
            target(f"scenario {s}: courier / {NAMES[other]} ≥ {goal}", r >= goal, detail)

    fig, ax = plt.subplots(figsize=(10, 4.5))
    scen = sorted({k[0] for k in tp})
    systems = ["courier", "pgmq", "skq", "bare", "heap"]
    width = 0.16
    for i, system in enumerate(systems):
        vals = [median((s, system)) or 0 for s in scen]
        ax.bar([x + (i - 2) * width for x in range(len(scen))], vals, width, label=NAMES[system])
    ax.set_xticks(range(len(scen)))
    ax.set_xticklabels([f"{s}. {SCENARIOS[s]}" for s in scen], fontsize=8)
    ax.set_ylabel("messages per second")
    ax.set_title("Throughput per scenario (median)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    md.append("![Throughput per scenario](throughput.png)\n")

# --- Steady state ------------------------------------------------------------------------------
samples = defaultdict(list)
for r in rows:
    if r["kind"] == "sample":
        samples[(r["scenario"], r["system"])].append(r)
latency = {(r["scenario"], r["system"]): r for r in rows if r["kind"] == "latency"}


def per_window(series):
    """(t, msgs/s) between consecutive samples, from the cumulative delete counter."""
    out_ = []
    for a, b in zip(series, series[1:]):
        dt = b["t"] - a["t"]
        if dt > 0:
            out_.append((b["t"], (b["deleted_total"] - a["deleted_total"]) / dt))
    return out_


def window_rate(series, t_from, t_to):
    pts = [s for s in series if t_from <= s["t"] <= t_to]
    if len(pts) < 2:
        return None
    return (pts[-1]["deleted_total"] - pts[0]["deleted_total"]) / (pts[-1]["t"] - pts[0]["t"])


if any(k[0] == 5 for k in samples):
    md.append(f"## Steady state ({machine['rate']} msg/s offered, consumers wait when the queue is empty)\n")
    md.append("| system | duration | size at end | peak dead tuples | first-minute msg/s | last-minute msg/s | size trend, last 5 min | enqueue→lease p50 / p99 |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    sizes = {}
    for system in ["courier", "pgmq", "skq"]:
        ser = sorted(samples.get((5, system), []), key=lambda r: r["t"])
        if not ser:
            continue
        end = ser[-1]["t"]
        first = window_rate(ser, 0, 60)
        last = window_rate(ser, end - 60, end)
        tail = [s for s in ser if s["t"] >= end - 300]
        trend = (tail[-1]["bytes"] - tail[0]["bytes"]) / max(tail[-1]["t"] - tail[0]["t"], 1) * 60 if len(tail) > 1 else None
        peak_dead = max(s["dead_tuples"] for s in ser)
        lat = latency.get((5, system), {})
        sizes[system] = (ser[-1]["bytes"], peak_dead, first, last, trend, lat)
        md.append(
            f"| {NAMES[system]} | {end / 60:.1f} min | {mb(ser[-1]['bytes']):.2f} MB | {fmt(peak_dead)} | "
            f"{fmt(first)} | {fmt(last)} | {fmt(trend / 1024 if trend is not None else None, 1)} kB/min | "
            f"{fmt(lat.get('p50_ms'), 1)} / {fmt(lat.get('p99_ms'), 1)} ms |"
        )
    md.append("")
    if "courier" in sizes:
        size, dead, first, last, trend, lat = sizes["courier"]
        if first and last:
            target("scenario 5: last-minute throughput within 5 % of the first", abs(last - first) / first <= 0.05, f"{first:.0f} → {last:.0f} msg/s")
        if "pgmq" in sizes:
            target("scenario 5: total size ≤ ½ pgmq's", size <= sizes["pgmq"][0] / 2, f"{mb(size):.2f} MB vs {mb(sizes['pgmq'][0]):.2f} MB")
            target("scenario 5: peak dead tuples ≤ ½ pgmq's", dead <= sizes["pgmq"][1] / 2, f"{dead:,} vs {sizes['pgmq'][1]:,}")
        if trend is not None:
            target("scenario 5: no upward size trend over the last 5 minutes", trend <= 8192, f"{trend / 1024:.1f} kB/min")
        if lat.get("p99_ms") is not None:
            target("scenario 5: p99 enqueue-to-lease < 50 ms", lat["p99_ms"] < 50, f"{lat['p99_ms']:.1f} ms")
    fig, ax = plt.subplots(figsize=(10, 4))
    for system in ["courier", "pgmq", "skq"]:
        ser = sorted(samples.get((5, system), []), key=lambda r: r["t"])
        if ser:
            ax.plot([s["t"] / 60 for s in ser], [mb(s["bytes"]) for s in ser], label=NAMES[system])
    ax.set_xlabel("minutes")
    ax.set_ylabel("queue relations, MB (table + indexes + TOAST)")
    ax.set_title(f"Size over time at {machine['rate']} msg/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "steady_size.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 4))
    for system in ["courier", "pgmq", "skq"]:
        ser = sorted(samples.get((5, system), []), key=lambda r: r["t"])
        if ser:
            ax.plot([s["t"] / 60 for s in ser], [s["dead_tuples"] for s in ser], label=NAMES[system])
    ax.set_xlabel("minutes")
    ax.set_ylabel("dead tuples (pg_stat_user_tables)")
    ax.set_title(f"Dead tuples over time at {machine['rate']} msg/s")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "steady_dead.png", dpi=110)
    plt.close(fig)
    md.append("![Size over time](steady_size.png)\n\n![Dead tuples over time](steady_dead.png)\n")

if any(k[0] == 6 for k in samples):
    hs, hd = machine["hold_start_s"], machine["hold_s"]
    md.append(
        f"## Steady state with a snapshot held (REPEATABLE READ transaction open from {hs / 60:g} to {(hs + hd) / 60:g} min)\n"
    )
    md.append("| system | msg/s before | lowest 1-min msg/s while held | drop | backlog at release | back to full speed after release |")
    md.append("|---|---:|---:|---:|---:|---:|")
    drops = {}
    fig, ax = plt.subplots(figsize=(10, 4))
    for system in ["courier", "pgmq", "skq"]:
        ser = sorted(samples.get((6, system), []), key=lambda r: r["t"])
        if not ser:
            continue
        before = window_rate(ser, 0, hs) or 0
        held = [window_rate(ser, t, t + 60) for t in [s["t"] for s in ser if hs <= s["t"] <= hs + hd - 60]]
        held = [h for h in held if h is not None]
        low = min(held) if held else None
        release = hs + hd
        at_release = min(ser, key=lambda s: abs(s["t"] - release))
        pre_backlog = statistics.median([s["live_tuples"] for s in ser if s["t"] < hs] or [0])
        recovered = None
        for s in ser:
            if s["t"] > release and s["live_tuples"] <= max(pre_backlog * 1.5, pre_backlog + 600):
                recovered = s["t"] - release
                break
        drop = (1 - low / before) if low is not None and before else None
        drops[system] = (drop, recovered)
        md.append(
            f"| {NAMES[system]} | {fmt(before)} | {fmt(low)} | {fmt(drop * 100 if drop is not None else None, 1)} % | "
            f"{fmt(at_release['live_tuples'])} | {'%.0f s' % recovered if recovered is not None else 'not within the run'} |"
        )
        pts = per_window(ser)
        ax.plot([t / 60 for t, _ in pts], [v for _, v in pts], label=NAMES[system])
    ax.axvspan(hs / 60, (hs + hd) / 60, color="grey", alpha=0.15, label="snapshot held")
    ax.set_xlabel("minutes")
    ax.set_ylabel("messages consumed per second")
    ax.set_title("Throughput while a snapshot is held")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "snapshot.png", dpi=110)
    plt.close(fig)
    md.append("\n![Throughput while a snapshot is held](snapshot.png)\n")
    if "courier" in drops and drops["courier"][0] is not None:
        others = [d for s, (d, _) in drops.items() if s != "courier" and d is not None]
        target("scenario 6: courier degrades less than both peers", all(drops["courier"][0] < d for d in others),
               ", ".join(f"{NAMES[s]} {d * 100:.1f} %" for s, (d, _) in drops.items() if d is not None))
        rec = drops["courier"][1]
        target("scenario 6: courier back to full speed within 1 minute of release", rec is not None and rec <= 60,
               f"{rec:.0f} s" if rec is not None else "not within the run")

# --- Backlog ------------------------------------------------------------------------------------
bl = defaultdict(dict)
for r in rows:
    if r["kind"] == "backlog":
        bl[r["system"]][r["backlog"]] = r["lease_ack_ms"]
if bl:
    md.append("## Lease at the head of a large backlog (1 client, lease 1 + ack, ms per message)\n")
    md.append("| system | small backlog | large backlog | ratio |")
    md.append("|---|---:|---:|---:|")
    for system, d in bl.items():
        small, large = d.get(min(d)), d.get(max(d))
        md.append(f"| {NAMES[system]} ({max(d):,} messages) | {small:.3f} | {large:.3f} | {large / small:.2f}× |")
        if system == "courier":
            target("scenario 7: head lease latency with the large backlog ≤ 2× a small one", large / small <= 2, f"{large / small:.2f}×")
    md.append("")

# --- Scenario 7: consuming at the head of a backlog --------------------------------------------
base_label = machine.get("base")
if base_label:
    NAMES["base"] = f"courier before ({base_label})"
S7_SYSTEMS = [s for s in ["courier", "pgmq", "skq", "base"] if s != "base" or base_label]
VARIANTS = {
    "plain": "as built",
    "inflight": "1,000 messages in flight at the head",
    "snapshot": "a REPEATABLE READ snapshot held for the whole variant",
    "mixed": "built with priorities (70 % at 0, 20 % at 5, 10 % at 9) and 10 % delayed by an hour",
}
FIGURES = [("lat", 1, 1), ("lat", 100, 1), ("tput", 1, 4), ("tput", 1, 8), ("tput", 100, 4), ("tput", 100, 8)]
FIGURE_NAMES = {("lat", 1, 1): "lease 1 + ack, 1 client", ("lat", 100, 1): "lease 100 + ack_batch, 1 client",
                ("tput", 1, 4): "lease 1 + ack, 4 clients", ("tput", 1, 8): "lease 1 + ack, 8 clients",
                ("tput", 100, 4): "lease 100 + ack_batch, 4 clients", ("tput", 100, 8): "lease 100 + ack_batch, 8 clients"}
s7 = {}
for r in rows:
    if r["kind"] == "s7":
        key = (r["variant"], r["backlog"] if r["variant"] not in ("quiet", "empty") else r["neighbour"], r["system"],
               r["measure"], r["batch"], r["clients"])
        # A figure measured twice (the rest of the machine was busy the first time): the attempt with
        # the least interference.
        if key not in s7 or r.get("cpu_others_pct", 0) < s7[key].get("cpu_others_pct", 0):
            s7[key] = r


def fig(variant, backlog, system, f):
    return s7.get((variant, backlog, system) + f)


def cost(variant, backlog, system, f):
    """The figure as a cost (lower is better): p50 latency, or seconds per million messages."""
    r = fig(variant, backlog, system, f)
    if r is None:
        return None
    return r["p50_ms"] if f[0] == "lat" else 1e6 / r["msgs_per_s"]


def show(r, f):
    if r is None:
        return "–"
    if f[0] == "lat":
        return f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}"
    return fmt(r["msgs_per_s"])


def mib(b):
    return f"{mb(b):,.1f}"


if s7:
    backlogs = sorted({k[1] for k in s7 if k[0] in VARIANTS})
    md.append("## Scenario 7: consuming at the head of a backlog\n")
    md.append(
        "Each backlog was built by 4 producers in batches of 100 and VACUUM ANALYZEd, then consumed from its head. "
        "Latencies (p50 / p99, ms) are pgbench's per script: lease and ack in two transactions, with 1 client; "
        "throughput in messages per second. Below 100,000 messages the queue is topped up between runs so that it "
        "never holds fewer leasable messages than the backlog nor more than twice as many; from 100,000 on, one run "
        "takes what was added for it, so the queue ends at the backlog. Each client's first transaction of a run is "
        "not counted. One measurement per figure, the systems in turn, the order rotating.\n")
    others = sorted(r["cpu_others_pct"] for r in s7.values() if "cpu_others_pct" in r)
    if others:
        retried = sum(1 for r in rows if r["kind"] == "s7" and r.get("attempt") == 2)
        niced = sorted(r.get("cpu_niced_pct", 0) for r in s7.values() if "cpu_others_pct" in r)
        md.append(f"The machine was shared: during the median figure processes outside the benchmark at its priority "
                  f"used {statistics.median(others):.0f} % of its CPU (the 90th percentile figure {others[int(0.9 * (len(others) - 1))]:.0f} %, "
                  f"the worst {others[-1]:.0f} %), and niced ones, which only get what the benchmark leaves idle, "
                  f"{statistics.median(niced):.0f} %; {retried} figures were measured a second time because the first "
                  f"exceeded a third, and the attempt with less interference is shown. Each figure's shares are in raw.jsonl "
                  f"(`cpu_bench_pct`, `cpu_others_pct`, `cpu_niced_pct`).\n")
    for variant, title in VARIANTS.items():
        if not any(k[0] == variant for k in s7):
            continue
        md.append(f"### {variant}: {title}\n")
        md.append("| backlog | system | " + " | ".join(FIGURE_NAMES[f] for f in FIGURES) + " |")
        md.append("|---:|---|" + "---:|" * len(FIGURES))
        for b in backlogs:
            for system in S7_SYSTEMS:
                if not any(fig(variant, b, system, f) for f in FIGURES):
                    continue
                md.append(f"| {b:,} | {NAMES[system]} | " + " | ".join(show(fig(variant, b, system, f), f) for f in FIGURES) + " |")
        md.append("")
        small, large = backlogs[0], backlogs[-1]
        if len(backlogs) > 1:
            ratios = []
            for f in FIGURES:
                a, z = cost(variant, small, "courier", f), cost(variant, large, "courier", f)
                if a and z:
                    ratios.append((z / a, FIGURE_NAMES[f]))
            if ratios:
                worst = max(ratios)
                md.append(f"courier at {large:,} against {small:,} (cost ratio: latency, or time per message; "
                          f"above 1 is slower): " + ", ".join(f"{n} {x:.2f}×" for x, n in ratios) + "\n")
                target(f"scenario 7 {variant}: courier at {large:,} within 1.5× of {small:,}", worst[0] <= 1.5,
                       f"worst {worst[0]:.2f}× ({worst[1]})")
        losses, total = [], 0
        for b in backlogs:
            for f in FIGURES:
                c, p = cost(variant, b, "courier", f), cost(variant, b, "pgmq", f)
                if c and p:
                    total += 1
                    if c >= p:
                        losses.append(f"{FIGURE_NAMES[f]} at {b:,} ({p / c:.2f}×)")
        if total:
            target(f"scenario 7 {variant}: courier ahead of pgmq at every size", not losses,
                   f"ahead in {total - len(losses)} of {total} figures" + (": behind in " + "; ".join(losses) if losses else ""))
        if base_label:
            gains = []
            for b in backlogs:
                for f in [("lat", 1, 1), ("tput", 100, 4)]:
                    c, o = cost(variant, b, "courier", f), cost(variant, b, "base", f)
                    if c and o:
                        gains.append(f"{FIGURE_NAMES[f]} at {b:,}: {o / c:.2f}×")
            if gains:
                md.append(f"courier against {NAMES['base']} (above 1 is faster now): " + "; ".join(gains) + "\n")

        fig_, axes = plt.subplots(1, 4, figsize=(16, 4))
        panels = [("lease 1 + ack, 1 client: ms (p50 solid, p99 dashed)", [("lat", 1, 1)]),
                  ("lease 100 + ack_batch, 1 client: ms", [("lat", 100, 1)]),
                  ("lease 1 + ack: msg/s (4 clients solid, 8 dashed)", [("tput", 1, 4), ("tput", 1, 8)]),
                  ("lease 100 + ack_batch: msg/s", [("tput", 100, 4), ("tput", 100, 8)])]
        colors = {"courier": "C0", "pgmq": "C1", "skq": "C2", "base": "C3"}
        for ax, (title_, fs) in zip(axes, panels):
            for system in S7_SYSTEMS:
                for i, f in enumerate(fs):
                    pts = [(b, fig(variant, b, system, f)) for b in backlogs if fig(variant, b, system, f)]
                    if not pts:
                        continue
                    if f[0] == "lat":
                        ax.plot([b for b, _ in pts], [r["p50_ms"] for _, r in pts], "-o", color=colors[system], label=NAMES[system])
                        ax.plot([b for b, _ in pts], [r["p99_ms"] for _, r in pts], "--", color=colors[system])
                    else:
                        ax.plot([b for b, _ in pts], [r["msgs_per_s"] for _, r in pts], "-o" if i == 0 else "--",
                                color=colors[system], label=NAMES[system] if i == 0 else None)
            ax.set_xscale("log")
            if fs[0][0] == "lat":
                ax.set_yscale("log")
            ax.set_xlabel("backlog (messages)")
            ax.set_title(title_, fontsize=9)
        axes[0].legend(fontsize=8)
        fig_.suptitle(f"Scenario 7, {variant}: {title}", fontsize=10)
        fig_.tight_layout()
        fig_.savefig(out / f"backlog_{variant}.png", dpi=100)
        plt.close(fig_)
        md.append(f"![Scenario 7, {variant}](backlog_{variant}.png)\n")

    # Sizes and builds.
    sizes = [r for r in rows if r["kind"] == "s7_size"]
    builds = {(r["system"], r["variant"], r["backlog"]): r for r in rows if r["kind"] == "s7_build"}
    if sizes:
        md.append("### Relations' sizes (MB) and the builds\n")
        md.append("Measured after the build's VACUUM ANALYZE (\"built\") and after the snapshot variant "
                  "(whatever the consumers and vacuums left). courier's table holds every queue's messages; "
                  "pgmq has a table per queue. Build rate: 4 producers, batches of 100.\n")
        md.append("| backlog | variant | when | system | heap | indexes | TOAST | total | build msg/s | VACUUM ANALYZE s |")
        md.append("|---:|---|---|---|---:|---|---:|---:|---:|---:|")
        for r in sorted(sizes, key=lambda r: (r["backlog"], r["variant"] != "plain", r["when"] != "built", S7_SYSTEMS.index(r["system"]))):
            idx = ", ".join(f"{n.split('.')[-1]} {mib(v)}" for n, v in sorted((r["indexes"] or {}).items()))
            bd = builds.get((r["system"], r["variant"], r["backlog"])) if r["when"] == "built" else None
            md.append(f"| {r['backlog']:,} | {r['variant']} | {r['when']} | {NAMES[r['system']]} | {mib(r['heap'])} | {idx} | "
                      f"{mib(r['toast'])} | {mib(r['total'])} | "
                      f"{fmt(bd['messages'] / bd['build_s']) if bd else ''} | {bd['vacuum_analyze_s'] if bd else ''} |")
        md.append("")

    # The timed vacuums.
    vac = [r for r in rows if r["kind"] == "s7_vacuum"]
    if vac:
        md.append("### VACUUM of the backlog's table while consumers run\n")
        md.append("`VACUUM (SKIP_LOCKED, TRUNCATE false, PARALLEL 0)` of each system's table at autovacuum's pace (what courier's worker runs), "
                  "timed, after the consumers took messages from the head (courier's worker and autovacuum kept off "
                  "the table meanwhile), with 4 clients consuming lease 1 + ack at full speed from 10 s before it until "
                  "10 s after. Rates are per second from pgbench's progress reports.\n")
        md.append("| backlog | system | dead rows before | VACUUM s | index scans | pages scanned / total | msg/s before | during | after |")
        md.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        fig_, axes = plt.subplots(1, len({r["backlog"] for r in vac}), figsize=(7 * len({r["backlog"] for r in vac}), 3.8), squeeze=False)
        for ax, b in zip(axes[0], sorted({r["backlog"] for r in vac})):
            for r in [r for r in vac if r["backlog"] == b]:
                def mean_rate(lo, hi):
                    v = [x for t, x in r["rates"] if lo < t <= hi]
                    return statistics.fmean(v) if v else None
                before = mean_rate(r["start"] - 9, r["start"])
                during = mean_rate(r["start"], r["end"] + 1)  # a progress line covers the second before it
                after = mean_rate(r["end"] + 1, r["end"] + 10)
                md.append(f"| {b:,} | {NAMES[r['system']]} | {fmt(r['dead'])} | {r['vacuum_s']:.2f} | {r['index_scans']} | "
                          f"{fmt(r['pages_scanned'])} / {fmt(r['pages'])} | {fmt(before)} | {fmt(during)} | {fmt(after)} |")
                ax.plot([t - r["start"] for t, _ in r["rates"]], [x * 1 for _, x in r["rates"]], label=NAMES[r["system"]],
                        color={"courier": "C0", "pgmq": "C1", "skq": "C2", "base": "C3"}[r["system"]])
                ax.axvspan(0, r["end"] - r["start"], alpha=0.08, color={"courier": "C0", "pgmq": "C1", "skq": "C2", "base": "C3"}[r["system"]])
            ax.set_title(f"{b:,} messages: consume rate around a VACUUM (shaded)", fontsize=9)
            ax.set_xlabel("seconds from the start of the VACUUM")
            ax.set_ylabel("lease 1 + ack per second (4 clients)")
            ax.legend(fontsize=8)
        fig_.tight_layout()
        fig_.savefig(out / "backlog_vacuum.png", dpi=100)
        plt.close(fig_)
        md.append("\n![Consume rate around a VACUUM](backlog_vacuum.png)\n")

    # courier's vacuum worker, from the samples of pg_stat_activity and pg_stat_progress_vacuum.
    windows = []  # (backlog, start, end): a backlog may come twice in one run (BACKLOG_SIZES)
    for r in rows:
        if r["kind"] == "s7_window":
            if r["edge"] == "start":
                if windows and windows[-1][2] == 1e12:  # a run stopped inside a window: it ends here
                    windows[-1][2] = r["t"]
                windows.append([r["backlog"], r["t"], 1e12])
            elif windows and windows[-1][0] == r["backlog"]:
                windows[-1][2] = r["t"]
    passes = []
    for f in sorted(out.glob("vacuum-samples-*.txt")):
        cluster = f.stem.split("-")[-1]
        workers, stats = {}, []
        for line in f.read_text().splitlines():
            p = line.split("|")
            if len(p) != 10:
                continue
            t = float(p[0])
            if p[2] == "stat":
                stats.append((t, float(p[3])))
            elif p[2] == "courier vacuum":
                w = workers.setdefault(p[1], {"start": float(p[3]), "last": t, "heap": 0, "index_scans": 0, "dead": 0, "phases": []})
                w["last"] = t
                w["heap"] = max(w["heap"], int(p[6]))
                w["index_scans"] = max(w["index_scans"], int(p[8]))
                w["dead"] = max(w["dead"], int(p[9]))
                if p[5] and (not w["phases"] or w["phases"][-1] != p[5]):
                    w["phases"].append(p[5])
        ends = sorted({e for _, e in stats if e > 0})
        for pid, w in workers.items():
            end = next((e for e in ends if w["start"] < e <= w["last"] + 1.0), w["last"])
            backlog = next((b for b, t0, t1 in windows if t0 <= w["start"] <= t1), None)
            passes.append({"cluster": "base" if cluster == "base" else "courier", "backlog": backlog,
                           "seconds": end - w["start"], **w})
    if passes:
        md.append("### courier's vacuum worker during the measurements\n")
        md.append("Passes seen by sampling `pg_stat_activity` and `pg_stat_progress_vacuum` 4 times a second (a pass "
                  "shorter than that may go unseen); a pass lasts from the worker's start to the `last_vacuum` it "
                  "leaves in `pg_stat_user_tables`. Heap blocks: the table's size when the pass began.\n")
        md.append("| build | backlog | passes seen | seconds: median | max | total | heap blocks | index scans (max) | dead rows (max) |")
        md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for cl in ["courier", "base"]:
            for b in sorted({p["backlog"] for p in passes if p["cluster"] == cl and p["backlog"] is not None}):
                ps = [p for p in passes if p["cluster"] == cl and p["backlog"] == b]
                sec = sorted(p["seconds"] for p in ps)
                md.append(f"| {NAMES[cl]} | {b:,} | {len(ps)} | {statistics.median(sec):.2f} | {sec[-1]:.2f} | {sum(sec):.1f} | "
                          f"{fmt(max(p['heap'] for p in ps))} | {max(p['index_scans'] for p in ps)} | {fmt(max(p['dead'] for p in ps))} |")
        md.append("")

    # Quiet and empty queues next to the backlog.
    if any(k[0] in ("quiet", "empty") for k in s7):
        md.append("### A quiet queue and an empty one next to the backlog\n")
        md.append("Lease 1 + ack from a queue holding 1,000 messages (topped up as above), and `lease` of an empty "
                  "queue, 1 client, while the backlog of the size on the left sits in another queue (courier: the "
                  "same table; pgmq: another table). p50 / p99 in ms.\n")
        md.append("| backlog next door | system | quiet queue: lease 1 + ack | empty queue: lease |")
        md.append("|---:|---|---:|---:|")
        neighbours = sorted({k[1] for k in s7 if k[0] in ("quiet", "empty")})
        for nb in neighbours:
            for system in S7_SYSTEMS:
                qr, er = fig("quiet", nb, system, ("lat", 1, 1)), fig("empty", nb, system, ("lat", 1, 1))
                if qr or er:
                    md.append(f"| {nb:,} | {NAMES[system]} | {show(qr, ('lat',))} | {show(er, ('lat',))} |")
        md.append("")
        if len(neighbours) > 1:
            for what in ["quiet", "empty"]:
                a, z = fig(what, neighbours[0], "courier", ("lat", 1, 1)), fig(what, neighbours[-1], "courier", ("lat", 1, 1))
                if a and z:
                    target(f"scenario 7: {what} queue's lease p50 next to {neighbours[-1]:,} within 1.2× of next to {neighbours[0]:,}",
                           z["p50_ms"] / a["p50_ms"] <= 1.2,
                           f"{a['p50_ms']:.3f} → {z['p50_ms']:.3f} ms (p99 {a['p99_ms']:.3f} → {z['p99_ms']:.3f})")

# --- Scenario 9: many queues ---------------------------------------------------------------------
many = defaultdict(list)
for r in rows:
    if r["kind"] == "many":
        many[(r["op"], r["system"], r["queues"])].append(r["msgs_per_s"])
if many:
    md.append("## Scenario 9: 1,000 queues sharing the traffic\n")
    md.append("8 clients; each transaction produces one message into, or leases one message from and acks it in, a "
              "queue drawn at random among 1,000 (courier: one table; pgmq: a table per queue), against the same on "
              "one queue, in the same run. Consumers start from 200,000 messages spread evenly (or in the one queue). "
              "Messages per second, median of runs (min–max).\n")
    md.append("| operation | system | 1 queue | 1,000 queues | 1,000 / 1 |")
    md.append("|---|---|---:|---:|---:|")
    for op in ["produce", "consume"]:
        for system in ["courier", "pgmq", "base"]:
            one, lots = many.get((op, system, 1)), many.get((op, system, 1000))
            if not one or not lots:
                continue
            r_ = statistics.median(lots) / statistics.median(one)
            md.append(f"| {op} | {NAMES[system]} | {fmt(statistics.median(one))} ({fmt(min(one))}–{fmt(max(one))}) | "
                      f"{fmt(statistics.median(lots))} ({fmt(min(lots))}–{fmt(max(lots))}) | {r_:.2f} |")
            if system == "courier":
                target(f"scenario 9: courier {op}, 1,000 queues ≥ 0.9× one queue", r_ >= 0.9, f"{r_:.2f}×")
        c, p = many.get((op, "courier", 1000)), many.get((op, "pgmq", 1000))
        if c and p:
            target(f"scenario 9: courier {op} ahead of pgmq with 1,000 queues", statistics.median(c) > statistics.median(p),
                   f"{statistics.median(c) / statistics.median(p):.2f}×")
    md.append("")

# --- Wakeups ------------------------------------------------------------------------------------
wk = [r for r in rows if r["kind"] == "wakeup"]
if wk:
    md.append("## Waiting consumers: enqueue commit to lease returning (8 waiters, 500 msg/s)\n")
    md.append("| consumer | p50 | p90 | p99 | max | delivered |")
    md.append("|---|---:|---:|---:|---:|---:|")
    labels = {"courier": "courier lease(wait => '1 s'), preloaded", "pgmq100": "pgmq read_with_poll, 100 ms (default)",
              "pgmq10": "pgmq read_with_poll, 10 ms", "notify": "LISTEN/NOTIFY + SKIP LOCKED table"}
    for r in wk:
        md.append(f"| {labels[r['system']]} | {r['p50_ms']:.2f} ms | {r['p90_ms']:.2f} ms | {r['p99_ms']:.2f} ms | {r['max_ms']:.1f} ms | {r['received']}/{r['sent']} |")
        if r["system"] == "courier":
            target("wakeup p50 < 2 ms", r["p50_ms"] < 2, f"{r['p50_ms']:.2f} ms")
            target("wakeup p99 < 10 ms", r["p99_ms"] < 10, f"{r['p99_ms']:.2f} ms")
    md.append("")
for r in rows:
    if r["kind"] == "idle_cpu":
        md.append(f"{r['waiters']} idle courier waiters used {r['cpu_seconds']:.2f} CPU-seconds in {r['seconds']:.0f} s: "
                  f"**{r['percent_of_one_core']:.2f} % of one core**.\n")
        target(f"{r['waiters']} idle waiters < 2 % of one core", r["percent_of_one_core"] < 2, f"{r['percent_of_one_core']:.2f} %")

if targets:
    md.append("## Targets\n")
    md.append("| target | met | measured |")
    md.append("|---|:---:|---|")
    for name, ok, detail in targets:
        md.append(f"| {name} | {'yes' if ok else '**no**'} | {detail} |")
    md.append("")

# Hand-written analysis of this run (what each change bought, what the figures mean), if any.
notes = out / "notes.md"
if notes.exists():
    md.append(notes.read_text())

(out / "results.md").write_text("\n".join(md) + "\n")
print(f"wrote {out / 'results.md'}")
