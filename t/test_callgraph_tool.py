"""Unit tests of t/callgraph.py on small synthetic C trees.

Nothing here looks at the real module's graph: only the tool is tested.
"""

import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import callgraph  # noqa: E402

TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                    "callgraph.py")


def tree(tmp_path, **files):
    """Write files (name_c= / name_h= keyword -> name.c / name.h)."""
    for key, text in files.items():
        name = key[:-2] + "." + key[-1]
        (tmp_path / name).write_text(text)
    return str(tmp_path)


def edges(src):
    return {e: {n.split()[0] for n in v}
            for e, v in callgraph.build_graph(src).items()}


def run(*args):
    return subprocess.run([sys.executable, TOOL] + list(args),
                          capture_output=True, text=True)


A_CALLS_B = """
void
a_one(int x)
{
    b_one(x);
}
"""

B_CALLS_A = """
void
b_one(int x)
{
    if (x) {
        a_one(x - 1);
    }
}
"""


def test_two_file_cycle(tmp_path):
    src = tree(tmp_path, a_c=A_CALLS_B, b_c=B_CALLS_A)
    g = edges(src)
    assert g == {("a.c", "b.c"): {"b_one"}, ("b.c", "a.c"): {"a_one"}}
    assert callgraph.cycles(callgraph.build_graph(src)) == [["a.c", "b.c"]]

    r = run(src)
    assert r.returncode == 1
    assert "a.c -> b.c: b_one" in r.stdout
    assert "cycles (1):" in r.stdout
    assert "2 files: a.c b.c" in r.stdout


def test_no_cycle_and_allow(tmp_path):
    src = tree(tmp_path, a_c=A_CALLS_B, b_c=B_CALLS_A.replace("a_one", "x"))
    r = run(src)
    assert r.returncode == 0, r.stdout
    assert "no cycles" in r.stdout

    tmp2 = tmp_path / "cyc"
    tmp2.mkdir()
    src = tree(tmp2, a_c=A_CALLS_B, b_c=B_CALLS_A)
    assert run("--allow", "b.c:a.c", src).returncode == 0
    assert run("--allow", "a.c:c.c", src).returncode == 1


def test_three_file_cycle_and_self_edges(tmp_path):
    src = tree(tmp_path,
               a_c="void\na(void)\n{\n    b(); a();\n}\n",
               b_c="void\nb(void)\n{\n    c();\n}\n",
               c_c="void\nc(void)\n{\n    a();\n}\n",
               d_c="void\nd(void)\n{\n    a();\n}\n")
    g = edges(src)
    assert ("a.c", "a.c") not in g
    assert callgraph.cycles(callgraph.build_graph(src)) == [
        ["a.c", "b.c", "c.c"]]


def test_function_pointers_count(tmp_path):
    src = tree(tmp_path,
               a_c="""
static void
local_cb(void *d)
{
}

static handler_t  table[] = {
    { "x", b_handler },
    { "y", local_cb },
};

static module_t  mod = { .init = b_init, .exit = NULL };

void
a_run(void)
{
    register_cb(b_callback, NULL);
    h = b_other;
}
""",
               b_c="""
void
b_handler(void *d)
{
}

int
b_init(void)
{
    return 0;
}

void
b_callback(void *d)
{
}

void
b_other(void *d)
{
}
""")
    assert edges(src) == {("a.c", "b.c"): {"b_handler", "b_init",
                                           "b_callback", "b_other"}}


def test_static_same_name_no_edge(tmp_path):
    body = "static int\nhelper(int x)\n{\n    return x;\n}\n\n" \
           "int\n%s(void)\n{\n    return helper(1);\n}\n"
    src = tree(tmp_path, a_c=body % "a_api", b_c=body % "b_api")
    assert edges(src) == {}


def test_static_only_resolves_in_own_file(tmp_path):
    src = tree(tmp_path,
               a_c="void\na(void)\n{\n    hidden();\n}\n",
               b_c="static void\nhidden(void)\n{\n}\n")
    assert edges(src) == {}


def test_comments_and_strings_do_not_count(tmp_path):
    src = tree(tmp_path,
               a_c=r'''
/* b_one() is called elsewhere,
 * b_two() too */
void
a_one(void)
{
    // b_three();
    log("b_four() \" b_five()");
    c = 'b';
    s = "it's b_six";
    p->b_seven = 1;
    q.b_eight(2);
}
''',
               b_c="".join("void\nb_%s(void)\n{\n}\n\n" % n for n in
                           ("one", "two", "three", "four", "five", "six",
                            "seven", "eight")))
    assert edges(src) == {}


def test_prototypes_are_not_uses(tmp_path):
    src = tree(tmp_path,
               a_c="void b_one(void);\nstatic void\na_local(void);\n\n"
                   "static void\na_local(void)\n{\n}\n",
               b_c="void\nb_one(void)\n{\n}\n")
    assert edges(src) == {}


def test_header_macro_attribution(tmp_path):
    src = tree(tmp_path,
               m_h="#define send_json(r, b)                \\\n"
                   "    send_body(r, \"json\", b)\n"
                   "#define metric_inc(m)  metric_add(m, 1)\n"
                   "#define twice(m)  metric_inc(m); metric_inc(m)\n",
               a_c="void\na(void)\n{\n    send_json(r, b);\n}\n",
               b_c="void\nsend_body(void)\n{\n}\n",
               c_c="void\nc(void)\n{\n    twice(1);\n}\n",
               d_c="void\nmetric_add(int m, int n)\n{\n}\n")
    g = callgraph.build_graph(src)
    assert g == {("a.c", "b.c"): {"send_body (via send_json)"},
                 ("c.c", "d.c"): {"metric_add (via twice)"}}


def test_local_macro_and_if_branches(tmp_path):
    src = tree(tmp_path,
               a_c="""
#define call_b(x)  b_one(x)

void
a(void)
{
#if (DEBUG)
    if (x) {
#else
    if (y) {
#endif
        call_b(1);
    }
}

void
a_two(void)
{
    b_two();
}
""",
               b_c="void\nb_one(int x)\n{\n}\n\nvoid\nb_two(void)\n{\n}\n")
    assert edges(src) == {("a.c", "b.c"): {"b_one", "b_two"}}


def test_generated_files_skipped(tmp_path):
    src = tree(tmp_path, a_c=A_CALLS_B, b_c=B_CALLS_A)
    (tmp_path / "im.pb-c.c").write_text("void\nb_one(void)\n{\n}\n")
    assert set(edges(src)) == {("a.c", "b.c"), ("b.c", "a.c")}


def test_dot_output(tmp_path):
    src = tree(tmp_path, a_c=A_CALLS_B, b_c=B_CALLS_A)
    r = run("--dot", src)
    assert r.returncode == 1
    assert r.stdout.startswith("digraph")
    assert '"a.c" -> "b.c"' in r.stdout and "color=red" in r.stdout
    assert "cycles (1):" in r.stderr


def test_bad_arguments(tmp_path):
    assert run("--allow", "nocolon", str(tmp_path)).returncode == 2
    assert run(str(tmp_path / "missing")).returncode == 2
