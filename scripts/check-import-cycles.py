#!/usr/bin/env python3
"""Import cycles between the files of each crate.

For every workspace package (a Cargo.toml with [package] and a src/ directory), each
file under src/ is one node; an edge A -> B means code in A names an item of B:
`use crate::b::...`, `crate::b::x` in an expression, `super::`/`self::` paths, or a
child module named without prefix in its parent. The crate root (lib.rs / main.rs)
declares every module and is left out, as are `#[cfg(test)]` blocks, comments and
string literals. A path resolves to the deepest file module it names
(`crate::a::b::Item` -> src/a/b.rs or src/a/b/mod.rs, else src/a.rs, ...).

Prints every cycle (one line per strongly connected component with more than one
file) and exits 1 if any is not in ALLOWED. Usage: scripts/check-import-cycles.py [ROOT]
"""
import os
import re
import sys

# Cycles tolerated for now: each entry is the exact set of files of one cycle
# (relative to the repository root); a cycle that grows or changes fails again.
# Keep this tiny, and drop entries as the branches that fix them merge.
ALLOWED = []

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_code(text):
    """Removes comments, string/char literals and #[cfg(test)] items."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 20]) and not re.match(
            r"[A-Za-z0-9_]", text[i - 1] if i else " "
        ):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            i = n if j < 0 else j + len(end)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.|[^\\'])'|'\\(x..|u\{[0-9a-fA-F]+\})'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'])'|'\\(x..|u\{[0-9a-fA-F]+\})'", text[i:i + 12])
            i += len(m.group(0))
            out.append("' '")
        else:
            out.append(c)
            i += 1
    code = "".join(out)
    # Drop `#[cfg(test)]` items (a `mod tests { ... }`, a fn, a use): tests may
    # reach anywhere.
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            break
        j = m.end()
        k = j
        while k < len(code) and code[k] not in "{;":
            k += 1
        if k < len(code) and code[k] == "{":
            depth = 0
            while k < len(code):
                if code[k] == "{":
                    depth += 1
                elif code[k] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
        code = code[: m.start()] + code[k + 1:]
    return code


def expand_use_tree(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]] (segments only)."""
    tree = re.sub(r"\s+", "", tree)
    tree = re.sub(r"\bas" + IDENT, "", tree)

    def split_top(s):
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        if cur:
            parts.append(cur)
        return parts

    def walk(s):
        brace = s.find("{")
        if brace < 0:
            return [[p for p in s.split("::") if p]]
        prefix = [p for p in s[:brace].split("::") if p]
        inner = s[brace + 1: s.rfind("}")]
        res = []
        for part in split_top(inner):
            for tail in walk(part):
                res.append(prefix + tail)
        return res

    return walk(tree)


class Crate:
    def __init__(self, root, src):
        self.root = root
        self.src = src
        self.files = {}  # module path tuple -> file (relative to repo root)
        for dirpath, _, names in os.walk(src):
            for name in names:
                if not name.endswith(".rs"):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, src)[:-3].split(os.sep)
                if rel in (["lib"], ["main"]):
                    mod = ()
                elif rel[-1] == "mod":
                    mod = tuple(rel[:-1])
                elif rel[0] == "bin":
                    continue  # separate binaries: their own crate roots
                else:
                    mod = tuple(rel)
                self.files.setdefault(mod, os.path.relpath(full, root))

    def resolve(self, segments):
        """Deepest file module named by an absolute module path."""
        for k in range(len(segments), 0, -1):
            if tuple(segments[:k]) in self.files:
                return tuple(segments[:k])
        return None

    def edges(self):
        graph = {}
        for mod, path in self.files.items():
            if mod == ():
                continue
            with open(os.path.join(self.root, path), encoding="utf-8") as f:
                code = strip_code(f.read())
            children = {m[-1] for m in self.files if len(m) == len(mod) + 1 and m[:-1] == mod}
            paths = []
            for m in re.finditer(r"\buse\s+([^;]+);", code):
                paths.extend(expand_use_tree(m.group(1)))
            for m in re.finditer(
                r"(?<![A-Za-z0-9_:])((?:" + IDENT + r"\s*::\s*)+" + IDENT + r")", code
            ):
                paths.append([p.strip() for p in m.group(1).split("::")])
            targets = set()
            for segs in paths:
                absolute = self.absolute(mod, segs, children)
                if absolute is None:
                    continue
                t = self.resolve(absolute)
                if t is not None and t != () and t != mod:
                    targets.add(self.files[t])
            graph[path] = targets
        return graph

    @staticmethod
    def absolute(mod, segs, children):
        if not segs:
            return None
        if segs[0] == "crate":
            return segs[1:]
        if segs[0] in ("self", "super"):
            base = list(mod)
            i = 0
            if segs[0] == "self":
                i = 1
            while i < len(segs) and segs[i] == "super":
                if not base:
                    return None
                base.pop()
                i += 1
            return base + segs[i:]
        if segs[0] in children:
            return list(mod) + segs
        return None


def sccs(graph):
    """Tarjan's strongly connected components (iterative)."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def crates(repo):
    for dirpath, dirnames, names in os.walk(repo):
        dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "node_modules")]
        if "Cargo.toml" in names and os.path.isdir(os.path.join(dirpath, "src")):
            with open(os.path.join(dirpath, "Cargo.toml"), encoding="utf-8") as f:
                if re.search(r"^\[package\]", f.read(), re.M):
                    yield os.path.join(dirpath, "src")


def self_test():
    """The checker finds the cycles it should and no others, on a made-up crate."""
    import tempfile

    files = {
        "Cargo.toml": "[package]\nname = \"t\"\n",
        "src/lib.rs": "mod a; mod b; mod c; mod d; mod m;\npub use a::A;\n",
        # a <-> b through a use tree and an inline path.
        "src/a.rs": "use crate::{b::{self, B}, c};\npub struct A;\n",
        "src/b.rs": "pub struct B;\nfn f() { let _ = crate::a::A; }\n",
        # c -> d only: mentions of c in d's comments, strings and tests do not count.
        "src/c.rs": "use crate::d::D;\n",
        "src/d.rs": (
            "pub struct D; // crate::c::X\n/* crate::c::Y */\n"
            "const S: &str = \"crate::c::Z\";\n"
            "#[cfg(test)]\nmod tests { use crate::c::*; }\n"
        ),
        # A parent that uses its child, and a child that uses super::.
        "src/m/mod.rs": "mod k;\npub use k::K;\npub struct P;\n",
        "src/m/k.rs": "use super::P;\npub struct K;\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            os.makedirs(os.path.dirname(os.path.join(tmp, name)), exist_ok=True)
            with open(os.path.join(tmp, name), "w", encoding="utf-8") as f:
                f.write(text)
        found = sccs(Crate(tmp, os.path.join(tmp, "src")).edges())
    want = [["src/a.rs", "src/b.rs"], ["src/m/k.rs", "src/m/mod.rs"]]
    if sorted(found) != want:
        print(f"check-import-cycles self-test failed: found {found}, want {want}", file=sys.stderr)
        sys.exit(2)


def main():
    self_test()
    repo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    bad, n_crates, allowed = 0, 0, 0
    for src in sorted(crates(repo)):
        n_crates += 1
        graph = Crate(repo, src).edges()
        for comp in sccs(graph):
            if set(comp) in ALLOWED:
                print(f"allowed for now: {' , '.join(comp)}")
                allowed += 1
                continue
            # Show the direct edges inside the component: what to cut.
            inner = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
            print(f"import cycle: {' , '.join(comp)}\n    " + "\n    ".join(inner))
            bad += 1
    if bad:
        print(f"{bad} import cycle(s) in {n_crates} crates", file=sys.stderr)
        return 1
    print(f"no import cycles in {n_crates} crates ({allowed} allowed for now)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
