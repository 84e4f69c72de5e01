#!/usr/bin/env python3
"""The report of bench/flat.sh: flatreport.py DIR reads DIR/raw.jsonl, prints markdown, writes DIR/summary.json."""
import datetime, gzip, json, os, re, statistics, sys
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
    print(f"Server settings on every cluster, besides bench/run's: `{machine['settings']}`.\n")
print("| variant | system | figure | small (median) | big (median) | ratio, median pair | lowest | highest |")
print("|---|---|---|---:|---:|---:|---:|---:|")
summary = []
variants = list(dict.fromkeys(k[0] for k in runs))
systems = list(dict.fromkeys(k[1] for k in runs))


def figure_order(kv):
    """Every table's order of runs' items: variant, 1 client first, batch, clients, system."""
    (variant, system, batch, clients), _ = kv
    return variants.index(variant), clients > 1, batch, clients, systems.index(system)


def ratio(pair, figure):
    """A pair's cost ratio, big over small: latency (p50, p99) big / small, msgs_per_s small / big."""
    if figure == "msgs_per_s":
        return pair["small"]["msgs_per_s"] / pair["big"]["msgs_per_s"]
    return pair["big"][f"{figure}_ms"] / pair["small"][f"{figure}_ms"]


for (variant, system, batch, clients), by_round in sorted(
        runs.items(), key=figure_order):
    pairs = [v for v in by_round.values() if "small" in v and "big" in v]
    if not pairs:
        continue
    what = f"lease {batch} + {'ack' if batch == 1 else 'ack_batch'}"
    if clients == 1:
        for p in ("p50", "p99"):
            ratios = sorted(ratio(v, p) for v in pairs)
            small = statistics.median(v["small"][f"{p}_ms"] for v in pairs)
            big = statistics.median(v["big"][f"{p}_ms"] for v in pairs)
            print(f"| {variant} | {system} | {what}, 1 client, {p} | {small:.3f} ms | {big:.3f} ms | {statistics.median(ratios):.2f}× | {ratios[0]:.2f}× | {ratios[-1]:.2f}× |")
            summary.append({"variant": variant, "system": system, "batch": batch, "clients": 1, "figure": p,
                            "small": small, "big": big, "ratio": statistics.median(ratios), "ratios": ratios})
    else:
        ratios = sorted(ratio(v, "msgs_per_s") for v in pairs)
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
            io, key=figure_order):
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

# Autovacuum on the queue tables, from the clusters' logs (log_autovacuum_min_duration = 0): each
# pass's window, and which measurements it overlapped. A vacuum of one system's 10-million table
# reads and writes hundreds of MB while another system is being measured on the same cluster.
def server_log(name):
    """The lines of a cluster's log as the run saved it (compressed or not); none if it did not."""
    for path, opener in ((f"{out}/server-{name}.log.gz", gzip.open), (f"{out}/server-{name}.log", open)):
        if os.path.exists(path):
            with opener(path, "rt", errors="replace") as f:
                return f.read().splitlines()
    return []


# Runs before 2026-12-04 put every system on one pair of clusters (server-small, server-big); since
# then each system has its own pair (server-<system>-small, ...) unless the run says "shared".
per_system = machine.get("clusters", "shared") == "per-system"
cluster_systems = sorted({r["system"] for r in rows if r["kind"] == "flat"}) if per_system else [None]
clusters = [(size, system) for size in ("small", "big") for system in cluster_systems]
logs = {(size, system): server_log(f"{system}-{size}" if system else size) for size, system in clusters}


def vacuums(size, system):
    found, cur = [], None
    for line in logs[(size, system)]:
        m = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] LOG:  automatic (?:aggressive )?vacuum of table \"[^.]+\.(courier|pgmq|skq)\.([^\"]+)\"", line)
        if m:
            end = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
            cur = {"size": size, "cluster": system, "system": m.group(2), "table": f"{m.group(2)}.{m.group(3)}", "end": end}
            found.append(cur)
            continue
        if cur is not None:
            if (e := re.search(r"elapsed: ([\d.]+) s", line)):
                cur["elapsed"] = float(e.group(1))
                cur["start"] = cur["end"] - cur["elapsed"]
                cur = None
            elif (b := re.search(r"buffer usage: (\d+) hits, (\d+) misses, (\d+) dirtied", line)):
                cur["misses"], cur["dirtied"] = int(b.group(2)), int(b.group(3))
            elif (w := re.search(r"WAL usage: (\d+) records, (\d+) full page images, (\d+) bytes", line)):
                cur["fpi"], cur["wal_bytes"] = int(w.group(2)), int(w.group(3))
    return [v for v in found if "start" in v and v.get("misses", 0) > 1000]
passes = [v for size, system in clusters for v in vacuums(size, system)]
if passes:
    print("\nAutovacuum passes over the queue tables (from the server logs; passes that read under 1,000 blocks left out):\n")
    print("| cluster | table | elapsed | blocks read | blocks dirtied | full-page images | WAL |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for v in passes:
        print(f"| {v['size'] + (' (' + v['cluster'] + ')' if v['cluster'] else '')} | {v['table']} | {v['elapsed']:.1f} s | {v['misses']:,} | {v['dirtied']:,} | {v.get('fpi', 0):,} | {v.get('wal_bytes', 0) / 1e6:,.0f} MB |")
    flats = sorted((r for r in rows if r["kind"] == "flat"), key=lambda r: r["t"])
    prev = {}
    for r in flats:
        # Where the record does not say when it started: since the end of the one before on its
        # cluster (which takes in its probe and top-ups; an overlap is flagged rather than missed).
        where = (r["size"], r["system"] if per_system else None)
        start = r.get("t0", prev.get(where, r["t"] - 2 * r["seconds"]))
        prev[where] = r["t"]
        r["vacuumed"] = sorted({v["system"] for v in passes if (v["size"], v["cluster"]) == where and v["start"] < r["t"] and v["end"] > start})
    print("\nFigures in which a measurement overlapped an autovacuum pass on its cluster: the median pair over all")
    print("pairs, and over the pairs in which neither side overlapped one (n: how many).\n")
    print("| variant | system | figure | all pairs | without a vacuum | vacuumed tables' systems |")
    print("|---|---|---|---:|---:|---|")
    for (variant, system, batch, clients), by_round in sorted(
            runs.items(), key=figure_order):
        pairs = [v for v in by_round.values() if "small" in v and "big" in v]
        hit = [v for v in pairs if v["small"].get("vacuumed") or v["big"].get("vacuumed")]
        if not hit:
            continue
        clean = [v for v in pairs if v not in hit]
        who = ", ".join(sorted({s for v in hit for side in v.values() for s in side.get("vacuumed", [])}))
        what = f"lease {batch} + {'ack' if batch == 1 else 'ack_batch'}"
        figs = [("p99", f"{what}, 1 client, p99"), ("p50", f"{what}, 1 client, p50")] if clients == 1 else [("msgs_per_s", f"{what}, {clients} clients")]
        for figure, label in figs:
            c = f"{statistics.median(ratio(v, figure) for v in clean):.2f}× (n={len(clean)})" if clean else "–"
            print(f"| {variant} | {system} | {label} | {statistics.median(ratio(v, figure) for v in pairs):.2f}× (n={len(pairs)}) | {c} | {who} |")

# Statements auto_explain logged (bench/run's settings: over 250 ms, nested ones included), by
# text: which of a system's statements stall, and how often, on each cluster.
def slow(size, system):
    lines, found = logs[(size, system)], {}
    for i, line in enumerate(lines):
        if (m := re.search(r"LOG:  duration: ([\d.]+) ms  plan:", line)):
            text = next((l.split("Query Text:", 1)[1].strip() for l in lines[i + 1:i + 3] if "Query Text:" in l), "")
            if not text and i + 2 < len(lines):
                text = lines[i + 2].strip()  # a multi-line text starts on the next line
            text = " ".join(text.split())
            if re.search(r"\b(courier|pgmq|skq)\.", text):
                found.setdefault(text, []).append(float(m.group(1)))
    return found
stalls = [(size + (f" ({system})" if system else ""), text, ms) for size, system in clusters for text, ms in slow(size, system).items()]
if stalls:
    print("\nStatements over 250 ms (auto_explain, nested statements included), whole run:\n")
    print("| cluster | statement | times | median | max |")
    print("|---|---|---:|---:|---:|")
    for size, text, ms in sorted(stalls, key=lambda x: (not x[0].startswith("small"), x[0], -len(x[2]))):
        short = text if len(text) <= 100 else text[:97] + "..."
        print(f"| {size} | `{short.replace('|', '¦')}` | {len(ms)} | {statistics.median(ms):,.0f} ms | {max(ms):,.0f} ms |")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)


# ratios.png: each figure's median-pair ratio per system, the bar's whisker from the lowest pair to
# the highest, on a log scale with the 1.5× target marked. Skipped where matplotlib is not
# installed (bench/flat.sh installs Debian's and runs this with /usr/bin/python3).
def chart():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no chart: matplotlib is not installed)", file=sys.stderr)
        return
    def label(r):
        what = f"lease {r['batch']}"
        return f"{what}, 1 client, {r['figure']}" if r["clients"] == 1 else f"{what}, {r['clients']} clients, msg/s"
    fig, axes = plt.subplots(1, len(variants), figsize=(4.2 * len(variants), 5.2), sharex=True, sharey=True, squeeze=False)
    colors = {"courier": "#1f77b4", "pgmq": "#d62728", "skq": "#7f7f7f"}
    for ax, variant in zip(axes[0], variants):
        rows_v = [r for r in summary if r["variant"] == variant]
        labels = list(dict.fromkeys(label(r) for r in rows_v))
        height = 0.8 / len(systems)
        for i, system in enumerate(systems):
            for r in (r for r in rows_v if r["system"] == system):
                y = labels.index(label(r)) + i * height
                ax.barh(y, r["ratio"], height=height, color=colors.get(system, "#2ca02c"),
                        label=system if y == i * height else None)
                ax.plot([r["ratios"][0], r["ratios"][-1]], [y, y], color="black", linewidth=0.8)
        ax.axvline(1.5, color="black", linestyle="--", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(variant)
        ax.set_yticks([k + 0.4 - height / 2 for k in range(len(labels))])
        ax.set_yticklabels(labels, fontsize=8)
        ax.set_xlabel(f"cost at {machine['big']:,} over {machine['small']:,} (log)")
    axes[0][0].invert_yaxis()  # shared: once for all, top to bottom as in report.md
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Median pair with lowest–highest; dashed: 1.5×  ({machine['date']}, {machine['commit']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(f"{out}/ratios.png", dpi=110)
    print(f"\n![Ratios, 10 million over 10 thousand, per figure and system](ratios.png)")


chart()
