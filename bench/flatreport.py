#!/usr/bin/env python3
"""The report of bench/flat.sh: flatreport.py DIR reads DIR/raw.jsonl, prints markdown, writes DIR/summary.json."""
import json, statistics, sys
from collections import defaultdict
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/raw.jsonl")]
machine = next(r for r in rows if r["kind"] == "machine")
runs = defaultdict(dict)  # (variant, system, batch, clients) -> round -> size -> row
for r in rows:
    if r["kind"] == "flat":
        runs[(r["variant"], r["system"], r["batch"], r["clients"])].setdefault(r["round"], {})[r["size"]] = r
print(f"# Pairs at {machine['small']:,} and {machine['big']:,} messages, {machine['date']}, courier {machine['courier']} at {machine['commit']}\n")
print(f"{machine['rounds']} pairs per figure, each measurement about {machine['seconds']} s. Cost ratio: big over small")
print("(latency: big / small; throughput: small / big), per pair; the median pair, then the lowest and highest.\n")
if machine.get("settings"):
    print(f"Server settings on both clusters, besides bench/run's: `{machine['settings']}`.\n")
print("| variant | system | figure | small (median) | big (median) | ratio, median pair | lowest | highest |")
print("|---|---|---|---:|---:|---:|---:|---:|")
summary = []
variants = list(dict.fromkeys(k[0] for k in runs))
systems = list(dict.fromkeys(k[1] for k in runs))
for (variant, system, batch, clients), by_round in sorted(
        runs.items(), key=lambda kv: (variants.index(kv[0][0]), kv[0][3] > 1, kv[0][2], kv[0][3], systems.index(kv[0][1]))):
    pairs = [v for v in by_round.values() if "small" in v and "big" in v]
    if not pairs:
        continue
    what = f"lease {batch} + {'ack' if batch == 1 else 'ack_batch'}"
    if clients == 1:
        for p in ("p50", "p99"):
            ratios = sorted(v["big"][f"{p}_ms"] / v["small"][f"{p}_ms"] for v in pairs)
            small = statistics.median(v["small"][f"{p}_ms"] for v in pairs)
            big = statistics.median(v["big"][f"{p}_ms"] for v in pairs)
            print(f"| {variant} | {system} | {what}, 1 client, {p} | {small:.3f} ms | {big:.3f} ms | {statistics.median(ratios):.2f}× | {ratios[0]:.2f}× | {ratios[-1]:.2f}× |")
            summary.append({"variant": variant, "system": system, "batch": batch, "clients": 1, "figure": p,
                            "small": small, "big": big, "ratio": statistics.median(ratios), "ratios": ratios})
    else:
        ratios = sorted(v["small"]["msgs_per_s"] / v["big"]["msgs_per_s"] for v in pairs)
        small = statistics.median(v["small"]["msgs_per_s"] for v in pairs)
        big = statistics.median(v["big"]["msgs_per_s"] for v in pairs)
        print(f"| {variant} | {system} | {what}, {clients} clients | {small:,.0f} msg/s | {big:,.0f} msg/s | {statistics.median(ratios):.2f}× | {ratios[0]:.2f}× | {ratios[-1]:.2f}× |")
        summary.append({"variant": variant, "system": system, "batch": batch, "clients": clients, "figure": "msgs_per_s",
                        "small": small, "big": big, "ratio": statistics.median(ratios), "ratios": ratios})
io = [(k, v) for k, v in runs.items() if any("wal_bytes" in r for s in v.values() for r in s.values())]
if io:
    print("\nWhat the measured runs cost the server, per message leased and acked (all of a figure's rounds):")
    print("WAL bytes, full-page images, blocks read from outside shared buffers; checkpoints begun during them.\n")
    print("| variant | system | figure | WAL bytes small / big | FPI small / big | blocks read small / big | checkpoints small / big |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (variant, system, batch, clients), by_round in sorted(
            io, key=lambda kv: (variants.index(kv[0][0]), kv[0][3] > 1, kv[0][2], kv[0][3], systems.index(kv[0][1]))):
        tot = {s: defaultdict(float) for s in ("small", "big")}
        for v in by_round.values():
            for size, r in v.items():
                for f in ("wal_bytes", "wal_fpi", "blks_read", "checkpoints", "messages_run"):
                    tot[size][f] += float(r.get(f, 0))
        def per(size, f):
            return tot[size][f] / tot[size]["messages_run"] if tot[size]["messages_run"] else float("nan")
        what = f"lease {batch} × {clients}"
        print(f"| {variant} | {system} | {what} | {per('small', 'wal_bytes'):,.0f} / {per('big', 'wal_bytes'):,.0f} "
              f"| {per('small', 'wal_fpi'):.3f} / {per('big', 'wal_fpi'):.3f} | {per('small', 'blks_read'):.2f} / {per('big', 'blks_read'):.2f} "
              f"| {tot['small']['checkpoints']:.0f} / {tot['big']['checkpoints']:.0f} |")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
