#!/usr/bin/python3
"""File-level call graph of ngx_im_module/*.c, and the cycles in it.

Usage: t/callgraph.py [--dot] [--allow FILE_A:FILE_B ...] [SRC_DIR]

Prints every edge "a.c -> b.c: f, g" (a.c uses functions defined in b.c),
or a Graphviz digraph with --dot, then every cycle: each strongly connected
component (Tarjan) of more than one file, with the edges inside it.  Exit
status 1 if a cycle remains once the --allow'ed edges are removed, else 0.
With --dot the cycle report goes to stderr, so stdout stays valid dot.

Approach (plain text analysis, standard library only, no preprocessor):

  1. Comments, string and char literals are blanked (newlines are kept,
     so columns and lines do not move).  Preprocessor lines, with their
     backslash continuations, are blanked as well; from them every
     "#define NAME[(args)] body" is remembered.
  2. A function definition is nginx style: "name(" at column 0, whose
     parameter list is followed by "{"; the body ends at the next "}" at
     column 0.  It is static if the line before it says "static".
  3. References are the identifiers in function bodies and in top-level
     initialisers (the text after "=" in a top-level statement: command
     tables, module contexts).  An identifier after "." or "->" is a
     member, not a reference.  A macro name (from *.h in SRC_DIR or this
     file's own #defines) counts as the functions its body names,
     transitively.  So calls, callbacks stored in tables and callbacks
     passed as arguments all count.
  4. A name resolves to this file if this file defines it (static or not),
     otherwise to every other file that defines it non-statically.  Edges
     are file -> file, self-edges dropped.

Limits: #if branches are all read as if compiled; a local variable or
parameter named like another file's function counts as a use; definitions
not in nginx style (type and name on one line) are not seen, nor are
functions defined in headers; prototypes and extern declarations are not
uses.  Generated sources (*.pb-c.c) are skipped.
"""

import glob
import os
import re
import sys


WORD = re.compile(r"(?<!\w)[A-Za-z_]\w*")
MEMBER = re.compile(r"(\.|->)\s*$")
DEFINE = re.compile(r"\s*#\s*define\s+([A-Za-z_]\w*)(\([^)]*\))?(.*)", re.S)
DEF_START = re.compile(r"^([A-Za-z_]\w*)\s*\(", re.M)
COL0_CLOSE = re.compile(r"^\}", re.M)


def strip(text):
    """Blank comments, string and char literals; keep newlines."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
        else:
            out.append(c)
            i += 1
            continue
        out.append(re.sub(r"[^\n]", " ", text[i:j]))
        i = j
    return "".join(out)


def idents(code):
    """Identifiers in code, except struct members (after "." or "->")."""
    return [m.group() for m in WORD.finditer(code)
            if not MEMBER.search(code, max(0, m.start() - 40), m.start())]


def split_preprocessor(text):
    """Return (text with directives blanked, {macro: body})."""
    lines = text.split("\n")
    macros = {}
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith("#"):
            i += 1
            continue
        first = i
        while lines[i].endswith("\\") and i + 1 < len(lines):
            i += 1
        directive = " ".join(l.rstrip("\\") for l in lines[first:i + 1])
        m = DEFINE.match(directive)
        if m:
            params = set(re.findall(r"\w+", m.group(2) or ""))
            body = {x for x in idents(m.group(3)) if x not in params}
            macros.setdefault(m.group(1), set()).update(body)
        for k in range(first, i + 1):
            lines[k] = ""
        i += 1
    return "\n".join(lines), macros


def parse(text):
    """Return (definitions {name: static}, referenced identifiers, macros)."""
    code, macros = split_preprocessor(strip(text))
    defs, refs, top = {}, [], []
    pos = 0
    for m in DEF_START.finditer(code):
        if m.start() < pos:
            continue                   # inside a previous body
        depth, j = 0, m.end() - 1
        while j < len(code):
            depth += {"(": 1, ")": -1}.get(code[j], 0)
            if depth == 0:
                break
            j += 1
        rest = code[j + 1:].lstrip()
        if not rest.startswith("{"):
            continue                   # a prototype or a macro call
        brace = len(code) - len(rest)
        end = COL0_CLOSE.search(code, brace)
        end = end.end() if end else len(code)
        prev = code[:m.start()].rstrip().rsplit("\n", 1)[-1]
        defs[m.group(1)] = bool(re.search(r"\bstatic\b", prev))
        refs += idents(code[brace:end])
        top.append(code[pos:m.start()])
        pos = end
    top.append(code[pos:])
    for stmt in ";".join(top).split(";"):
        if "=" in stmt:
            refs += idents(stmt.split("=", 1)[1])
    return defs, refs, macros


def expand(name, macros, seen=None):
    """The identifiers name stands for: itself, or its macro body, deep."""
    if name not in macros:
        return {name}
    seen = set() if seen is None else seen
    if name in seen:
        return {name}                  # C does not expand it again
    seen.add(name)
    out = set()
    for x in macros[name]:
        out |= expand(x, macros, seen)
    return out


def build_graph(src):
    """Return {(file_a, file_b): {names of b used by a}}."""
    header_macros = {}
    for h in sorted(glob.glob(os.path.join(src, "*.h"))):
        with open(h, errors="replace") as f:
            for k, v in parse(f.read())[2].items():
                header_macros.setdefault(k, set()).update(v)
    files = {}
    for path in sorted(glob.glob(os.path.join(src, "*.c"))):
        name = os.path.basename(path)
        if name.endswith(".pb-c.c"):
            continue
        with open(path, errors="replace") as f:
            files[name] = parse(f.read())
    public = {}
    for name, (defs, _, _) in files.items():
        for fn, static in defs.items():
            if not static:
                public.setdefault(fn, set()).add(name)
    edges = {}
    for name, (defs, refs, macros) in files.items():
        known = dict(header_macros, **macros)
        for ref in set(refs):
            via = "" if ref not in known else " (via %s)" % ref
            for fn in expand(ref, known):
                if fn in defs:
                    continue           # resolves inside this file
                for other in public.get(fn, ()):
                    edges.setdefault((name, other), set()).add(fn + via)
    return edges


def sccs(nodes, edges):
    """Tarjan's strongly connected components, each a sorted list."""
    succ = {v: sorted(b for a, b in edges if a == v) for v in nodes}
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def cycles(edges, allowed=()):
    """SCCs of more than one file once the allowed edges are dropped."""
    kept = {e for e in edges if e not in set(allowed)}
    nodes = {x for e in kept for x in e}
    return sorted(c for c in sccs(nodes, kept) if len(c) > 1)


def examples(names, limit=4):
    names = sorted(names)
    more = " (+%d)" % (len(names) - limit) if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def main(argv):
    dot, allowed, src, args = False, [], None, list(argv)
    while args:
        a = args.pop(0)
        if a == "--dot":
            dot = True
        elif a == "--allow" and args and ":" in args[0]:
            allowed.append(tuple(os.path.basename(x)
                                 for x in args.pop(0).split(":", 1)))
        elif a in ("-h", "--help"):
            print(__doc__)
            return 0
        elif not a.startswith("-") and src is None:
            src = a
        else:
            sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
            return 2
    if src is None:
        src = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "..", "ngx_im_module")
    if not os.path.isdir(src):
        sys.stderr.write("callgraph: no such directory: %s\n" % src)
        return 2

    edges = build_graph(src)
    found = cycles(edges, allowed)
    in_cycle = {e for c in found for e in edges
                if e[0] in c and e[1] in c and e not in allowed}

    report = sys.stderr if dot else sys.stdout
    if dot:
        print("digraph callgraph {")
        print("  node [shape=box];")
        for a, b in sorted(edges):
            style = (" style=dashed" if (a, b) in allowed
                     else " color=red" if (a, b) in in_cycle else "")
            print('  "%s" -> "%s" [label="%d"%s];'
                  % (a, b, len(edges[a, b]), style))
        print("}")
    else:
        print("edges (%d):" % len(edges))
        for a, b in sorted(edges):
            mark = " [allowed]" if (a, b) in allowed else ""
            print("  %s -> %s: %s%s" % (a, b, examples(edges[a, b]), mark))

    if not found:
        report.write("no cycles\n")
        return 0
    report.write("cycles (%d):\n" % len(found))
    for comp in found:
        report.write("  %d files: %s\n" % (len(comp), " ".join(comp)))
        for a, b in sorted(e for e in in_cycle if e[0] in comp):
            report.write("    %s -> %s: %s\n"
                         % (a, b, examples(edges[a, b])))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
