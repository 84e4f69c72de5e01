import re,glob,collections,statistics
rows=collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob('bench/results/2026-12-02-layering/*-[0-9].log')):
    v=f.rsplit('/',1)[1].split('-')[0]
    vals={}
    for line in open(f):
        m=re.search(r'scenario (\d) run \d (\w+): (\d+) msg/s',line)
        if m: vals[(m.group(1),m.group(2))]=int(m.group(3))
    for s in '1234':
        c=vals.get((s,'courier')); p=vals.get((s,'pgmq')); k=vals.get((s,'skq'))
        if c and p and k:
            rows[s][v].append((c/p,c/k,c))
for s in '1234':
    for v in ['base','after']:
        r=rows[s][v]
        if r:
            print(f"S{s} {v:5} n={len(r)} courier/pgmq median {statistics.median(x[0] for x in r):.2f} [{min(x[0] for x in r):.2f}-{max(x[0] for x in r):.2f}]  courier/skq median {statistics.median(x[1] for x in r):.2f} [{min(x[1] for x in r):.2f}-{max(x[1] for x in r):.2f}]  courier msg/s median {statistics.median(x[2] for x in r):.0f}")
