#!/usr/bin/env python3
"""Summarises pgbench per-transaction logs (-l) for bench/run's scenario 7 and 9 measurements.

    logstats.py DIR MESSAGES_PER_TRANSACTION

DIR holds the logs of one measurement: one or more pgbench runs ("chunks"), each written with
--log-prefix=DIR/c<chunk>, so a chunk's files are c<chunk>.<pid>[.<thread>]. A log line is
`client transaction latency_us script epoch_s epoch_us`, the epoch being when the transaction
ended.

Each client's first transaction in each chunk is left out: it prepares the statements and fills
the session's caches, which a long-running consumer pays once. So is the time before it ended.
Prints one JSON object:
  transactions, messages      counted transactions and their messages
  seconds                     the sum over chunks of (last end - earliest end of a first
                              transaction): the time the counted transactions took
  msgs_per_s                  messages / seconds
  p50_ms, p99_ms, mean_ms, max_ms   latency of the counted transactions (pgbench's, per script)
  chunks                      how many pgbench runs the figure combines
"""
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def main():
    directory, per_tx = Path(sys.argv[1]), int(sys.argv[2])
    chunks = defaultdict(list)
    for f in directory.iterdir():
        chunks[f.name.split(".")[0]].append(f)
    latencies = []
    seconds = 0.0
    transactions = 0
    for files in chunks.values():
        by_client = defaultdict(list)
        for f in files:
            for line in f.read_text().splitlines():
                parts = line.split()
                if len(parts) < 6:
                    continue
                client, lat_us, end = int(parts[0]), int(parts[2]), int(parts[4]) + int(parts[5]) / 1e6
                by_client[client].append((end, lat_us))
        firsts, ends = [], []
        for rows in by_client.values():
            rows.sort()
            firsts.append(rows[0][0])
            for end, lat_us in rows[1:]:
                latencies.append(lat_us / 1000)
                ends.append(end)
                transactions += 1
        if ends:
            seconds += max(ends) - min(firsts)
    latencies.sort()
    messages = transactions * per_tx
    print(json.dumps({
        "transactions": transactions,
        "messages": messages,
        "seconds": round(seconds, 4),
        "msgs_per_s": messages / seconds if seconds > 0 else float("nan"),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "max_ms": latencies[-1] if latencies else float("nan"),
        "chunks": len(chunks),
    }))


main()
