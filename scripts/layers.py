#!/usr/bin/env python3
"""Holds server/src to the layout its crate doc declares.

    python3 scripts/layers.py [server/src]

The `# Layout` section of `lib.rs` lists the modules from the top down, one
bullet a layer; a module belongs to a bullet when its link is followed by
`:` or `,` (`- [`db`]: ... [`kv`]: ...`). Every other file's module is
placed by its longest listed prefix (`auth/revocation.rs` is
`auth::revocation`; `auth/mod.rs` is `auth`).

Then every `crate::`/`super::` path a file names (in `use` lines and in
code, unit tests left out) must lead to its own layer or one below it.
Exit 1, naming each offence, when:
- a file's module is not placed by the doc (the map no longer matches the
  code), or the doc names a module that does not exist;
- a file imports from a higher layer;
- two modules import each other, directly or round a loop (same layer).

Why a script and not `cargo modules`: it needs no build and no extra tool,
runs in the test command in a second, and it reads the same doc a person
reads, so the doc cannot drift from the code without the tests saying so.
"""
import os
import re
import sys
from collections import defaultdict


def module_of(root, path):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def declared_layers(lib_rs):
    doc = [l[3:].strip() for l in open(lib_rs, encoding="utf-8") if l.startswith("//!")]
    try:
        start = doc.index("# Layout") + 1
    except ValueError:
        sys.exit("layers: lib.rs has no '# Layout' section")
    bullets = []
    for line in doc[start:]:
        if line.startswith("#"):
            break
        if line.startswith("- "):
            bullets.append(line[2:])
        elif bullets and line:
            bullets[-1] += " " + line
    layers = []
    for b in bullets:
        names = re.findall(r"\[`([a-z_:]+)`\]\s*[:,]", b)
        if names:
            layers.append([tuple(n.split("::")) for n in names])
    return layers


def crate_paths(module, text):
    text = re.sub(r"(?s)#\[cfg\(test\)\]\s*mod\s+tests\s*\{.*", "", text)
    text = re.sub(r"//[^\n]*", "", text)
    found = []
    for u in re.findall(r"\buse\s+([^;]+);", text):
        found += expand(u.replace(" ", "").replace("\n", ""))
    found += re.findall(r"\b((?:crate|super)(?:::\w+)+)", text)
    out = []
    for p in found:
        parts = p.split("::")
        if parts[0] == "crate":
            out.append(tuple(parts[1:]))
        elif parts[0] == "super":
            base = list(module)
            while parts and parts[0] == "super":
                base, parts = base[:-1], parts[1:]
            out.append(tuple(base + parts))
    return out


def expand(use):
    """`crate::{a::b, c::{d, e}}` -> [crate::a::b, crate::c::d, crate::c::e]."""
    if "{" not in use:
        return [use]
    head, rest = use.split("{", 1)
    inner = rest[: rest.rindex("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [x for i in items if i for x in expand(head + i)]


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "server/src"
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                files[module_of(root, p)] = p
    files.pop((), None)  # lib.rs declares the layout; main.rs is the binary above it
    mods = set(files)
    layers = declared_layers(os.path.join(root, "lib.rs"))
    rank, problems = {}, []
    for i, layer in enumerate(layers):
        for m in layer:
            if m not in mods:
                problems.append(f"the layout names `{'::'.join(m)}`, which is no module")
            rank[m] = i

    def layer_of(m):
        for k in range(len(m), 0, -1):
            if m[:k] in rank:
                return rank[m[:k]]
        return None

    def resolve(path):
        for k in range(len(path), 0, -1):
            if path[:k] in mods:
                return path[:k]
        return None

    edges = defaultdict(set)
    for m, p in sorted(files.items()):
        if layer_of(m) is None:
            problems.append(f"{p}: module `{'::'.join(m)}` is in no layer of the crate doc")
            continue
        for path in crate_paths(m, open(p, encoding="utf-8").read()):
            t = resolve(path)
            if t is None or t == m or t == m[: len(t)] or m == t[: len(m)]:
                continue  # itself, a parent's re-export, or its own child
            lt = layer_of(t)
            if lt is not None and lt < layer_of(m):
                problems.append(f"{p}: imports `{'::'.join(path)}` from a higher layer")
            edges[m].add(t)

    # A loop is a path back to where it started (the layers allow same-layer imports).
    def reaches(a, b, seen):
        for n in edges[a]:
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                if reaches(n, b, seen):
                    return True
        return False

    for m in sorted(edges):
        for t in sorted(edges[m]):
            if m < t and reaches(t, m, set()):
                problems.append(f"loop: `{'::'.join(m)}` and `{'::'.join(t)}` reach each other")

    for p in dict.fromkeys(problems):
        print("layers:", p)
    n = sum(len(v) for v in edges.values())
    print(f"layers: {len(files)} modules in {len(layers)} layers, {n} imports, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
