#!/usr/bin/env python3
"""Gives each sample of a node profile to the first stage of the order path its thread or stack
matches, in the order of the list (BENCHMARKS.md, "Where an order's time goes").

perf record -F 999 --call-graph dwarf,16384 -p <moneta pid> -- sleep 3
perf script --no-inline -F comm,ip,sym > script.txt && python3 benches/profile/stages.py script.txt
"""
import sys, collections
stages = [
 ("sled's I/O threads", lambda c, st: c.startswith("sled-io")),
 ("writer: sled apply_batch and flush", lambda c, st: c == "group-commit" and any("apply_batch" in s or "make_stable" in s or "Db::flush" in s or "Tree::flush" in s or "pagecache" in s and "flush" in s for s in st)),
 ("writer: raft", lambda c, st: c == "group-commit" and any("raft::" in s or "MultiRaft" in s or "stage_raft" in s for s in st)),
 ("writer: the rest", lambda c, st: c == "group-commit"),
 ("access token check", lambda c, st: any("Auth" in s and "verify" in s or "token_cache" in s for s in st)),
 ("broker confirmation", lambda c, st: any("Broker" in s for s in st)),
 ("valuation refresh", lambda c, st: any("valuation" in s.lower() for s in st)),
 ("entity actors (kameo, decide, apply)", lambda c, st: any("kameo" in s or "EntityActor" in s for s in st)),
 ("router and the order workflow", lambda c, st: any("Router" in s or "workflows" in s for s in st)),
 ("HTTP (hyper, warp)", lambda c, st: any("hyper" in s or "warp" in s for s in st)),
 ("tokio scheduling and the rest", lambda c, st: True),
]
counts = collections.Counter(); total = 0
comm = None; stack = []
def flush():
    global total
    if comm is None: return
    total += 1
    for name, f in stages:
        if f(comm, stack):
            counts[name] += 1; return
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        flush(); comm = None; stack = []; continue
    if not line.startswith((" ", "\t")):
        comm = line.split()[0]; continue
    stack.append(line.strip())
flush()
for name, _ in stages:
    print(f"| {name} | {100*counts[name]/max(total,1):.1f}% |")
print("samples", total)
