#!/usr/bin/env python3
"""Checks the crate's module layering (issue #13): no import cycle between top-level
modules, `hub`/`broker`/`model` never import a front (`ws`, `pusher`, `http`), and no
source file is over 600 lines. Prints the module graph and exits 1 on a violation."""
import os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
graph, bad = {}, []
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        rel = os.path.relpath(path, root)
        top = rel.split(os.sep)[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        text = open(path).read()
        lines = text.count("\n")
        if lines > 600:
            bad.append(f"{rel}: {lines} lines (over 600)")
        # `crate::x` anywhere in code (not comments or docs).
        code = "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("//"))
        for m in set(re.findall(r"crate::([a-z_]+)", code)):
            if m != top:
                graph.setdefault(top, set()).add(m)
        graph.setdefault(top, set())

for low in ("hub", "broker", "model", "shard", "access", "namespace"):
    for front in ("ws", "pusher", "http", "state", "server"):
        if front in graph.get(low, ()):
            bad.append(f"{low} imports {front}")

# Cycles: depth-first search over the module graph.
state, stack = {}, []
def visit(n):
    state[n] = 1
    stack.append(n)
    for m in sorted(graph.get(n, ())):
        if m not in graph:
            continue
        if state.get(m) == 1:
            bad.append("cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        elif m not in state:
            visit(m)
    stack.pop()
    state[n] = 2
for n in sorted(graph):
    if n not in state:
        visit(n)

for n in sorted(graph):
    print(f"{n:10} -> {' '.join(sorted(graph[n]))}")
if bad:
    print("\n".join(["", "violations:"] + sorted(set(bad))))
    sys.exit(1)
print("\nlayering OK: no cycles, no front imported below the fronts, no file over 600 lines")
