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
