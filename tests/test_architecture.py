"""The house rules a newcomer relies on, checked statically (``ast``, nothing imported):

1. **No import circle** among the project's modules (``stream``, ``engines``, ``ui``, ``train``,
   ``benchmarks``). What counts as an import of module B by module A: ``import B`` /
   ``from B import x`` / ``from pkg import B`` anywhere in A -- at module level, inside a function
   or method (a lazy import still closes a circle at call time) -- and
   ``importlib.import_module("B")`` with a literal name (the lazy-import-by-name dodge). Not
   counted: imports under ``if TYPE_CHECKING:`` (never run) and registries that merely *name*
   a module in a string (``stream.cli.COMMANDS``, ``engines.backends.BACKENDS``; they are
   entry points, not dependencies). An edge goes to the most specific project module named
   (``from stream import sources`` -> ``stream.sources``), not to the packages above it.
2. **The runtime never reaches ``train`` or ``torch``**: no module of ``stream``, ``engines`` or
   ``ui`` imports ``train``, ``torch`` or ``torchvision``, directly or through the project modules
   it imports (module- and function-level both count: "statically or at call time"). The
   ``pleura train/eval/export`` commands live in ``train/`` and are reached only by name from
   ``stream.cli.COMMANDS``. Exceptions are listed in ``RUNTIME_MAY_REACH`` with the reason.
3. **Functions stay short** in ``stream``, ``engines``, ``ui``: over ``MAX_LINES`` lines a function
   says why in its docstring, with the marker ``LONG_MARKER``.
4. **docs/architecture.md names only what exists**: every backticked ``path/file.py``, every
   backticked name after it (``stream/workercore.py`` ``Worker.process``), every backticked
   ``module.name`` of the project and every ``pleura <command>``.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream", "engines", "ui", "train", "benchmarks")
RUNTIME = ("stream", "engines", "ui")
FORBIDDEN_IN_RUNTIME = ("train", "torch", "torchvision")
MAX_LINES = 60
LONG_MARKER = "Long because"
RUNTIME_MAY_REACH: dict[str, str] = {
    # module -> why it may reach torch (through the module it imports); `pleura bench` lives in
    # benchmarks/cli.py, outside the runtime packages, so nothing needs an exception today
}


# --- the module graph -----------------------------------------------------------------------

def project_modules() -> dict[str, Path]:
    """Dotted name -> file, for every ``.py`` under the project packages (data folders skipped)."""
    mods: dict[str, Path] = {}
    for top in PACKAGES:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT)
            if "bundles" in rel.parts or "__pycache__" in rel.parts:
                continue
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            mods[".".join(parts)] = path
    return mods


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, where, and whether it runs at import time."""

    source: str
    target: str  # dotted name as written (resolved for relative imports)
    lineno: int
    lazy: bool  # inside a function: runs at call time


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for sub in child.orelse:
                yield from _walk_one(sub, lazy)
            continue
        yield from _walk_one(child, lazy)


def _walk_one(node: ast.AST, lazy: bool) -> Iterator[tuple[ast.AST, bool]]:
    yield node, lazy
    inner = lazy or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
    yield from _walk(node, inner)


def imports_of(name: str, path: Path) -> list[Import]:
    """Every import in one module (see the module docstring for what counts)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []
    for node, lazy in _walk(tree, False):
        if isinstance(node, ast.Import):
            out += [Import(name, a.name, node.lineno, lazy) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([base] if base else [])])
            out += [Import(name, f"{base}.{a.name}", node.lineno, lazy) for a in node.names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            out.append(Import(name, node.args[0].value, node.lineno, True))
    return out


def resolve(target: str, mods: dict[str, Path]) -> str | None:
    """The most specific project module a dotted import names, or None if outside the project."""
    parts = target.split(".")
    while parts:
        dotted = ".".join(parts)
        if dotted in mods:
            return dotted
        parts.pop()
    return None


def import_graph() -> tuple[dict[str, dict[str, Import]], dict[str, list[Import]]]:
    """(project edges: source -> target -> first Import, all imports per module)."""
    mods = project_modules()
    edges: dict[str, dict[str, Import]] = {m: {} for m in mods}
    every: dict[str, list[Import]] = {}
    for name, path in mods.items():
        every[name] = imports_of(name, path)
        for imp in every[name]:
            target = resolve(imp.target, mods)
            if target and target != name:
                edges[name].setdefault(target, imp)
    return edges, every


def strongly_connected(edges: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    comps: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
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
                    comps.append(sorted(comp))
    return comps


def a_cycle(comp: list[str], edges: dict[str, dict[str, Import]]) -> list[str]:
    """One concrete circle inside a component, as 'a:line -> b:line -> ... -> a' steps."""
    members = set(comp)
    start = comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:  # breadth-first back to start
        nxt = []
        for v in frontier:
            for w in sorted(edges[v]):
                if w not in members:
                    continue
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    path.reverse()
                    path.append(start)
                    return [f"{a} (line {edges[a][b].lineno}"
                            f"{', lazy' if edges[a][b].lazy else ''})"
                            for a, b in zip(path, path[1:], strict=False)] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp


def test_no_import_circle():
    edges, _ = import_graph()
    circles = [f"{', '.join(c)}; e.g. " + " -> ".join(a_cycle(c, edges))
               for c in strongly_connected(edges)]
    assert not circles, "import circles (cut them; see docs/architecture.md):\n" + "\n".join(
        circles)


def test_cycle_finder_finds_a_planted_circle():
    imp = Import("a", "b", 1, False)
    edges = {"a": {"b": imp}, "b": {"c": imp}, "c": {"a": imp}, "d": {"a": imp}}
    assert strongly_connected(edges) == [["a", "b", "c"]]
    assert a_cycle(["a", "b", "c"], edges)[-1] == "a"
    assert strongly_connected({"a": {"b": imp}, "b": {}}) == []


def test_runtime_never_reaches_train_or_torch():
    edges, every = import_graph()
    bad = []
    for start in (m for m in edges if m.split(".")[0] in RUNTIME):
        if start in RUNTIME_MAY_REACH:
            continue
        seen, todo, via = {start}, [start], {start: None}
        while todo:
            mod = todo.pop()
            for imp in every[mod]:
                if imp.target.split(".")[0] in FORBIDDEN_IN_RUNTIME:
                    chain, m = [], mod
                    while m:
                        chain.append(m)
                        m = via[m]
                    bad.append(f"{' <- '.join(chain)}: line {imp.lineno} imports {imp.target}")
            for nxt in edges[mod]:
                if nxt.split(".")[0] in FORBIDDEN_IN_RUNTIME:
                    continue  # already reported above: the first step into train is the fault
                if nxt not in seen:
                    seen.add(nxt)
                    via[nxt] = mod
                    todo.append(nxt)
    assert not bad, ("the runtime must not import train/torch (move the code to train/ or "
                     "reach it by name from stream.cli.COMMANDS):\n" + "\n".join(sorted(set(bad))))


def test_runtime_rule_catches_a_lazy_train_import(tmp_path):
    mod = tmp_path / "m.py"
    mod.write_text("def f():\n    from train.video import x\n    return x\n")
    (imp,) = imports_of("stream.m", mod)
    assert imp.target == "train.video.x" and imp.lazy and imp.lineno == 2


# --- short functions ------------------------------------------------------------------------

def long_functions(top: str) -> list[str]:
    """Functions of ``top`` over :data:`MAX_LINES` lines whose docstring gives no reason."""
    out = []
    for path in sorted((ROOT / top).rglob("*.py")):
        if "bundles" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            n = node.end_lineno - node.lineno + 1
            if n > MAX_LINES and LONG_MARKER not in (ast.get_docstring(node) or ""):
                out.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    return out


def test_runtime_functions_are_short_or_say_why():
    bad = [f for top in RUNTIME for f in long_functions(top)]
    assert not bad, (f"functions over {MAX_LINES} lines: split them, or say why in the docstring "
                     f"with '{LONG_MARKER} ...':\n" + "\n".join(bad))


# --- docs/architecture.md names only what exists --------------------------------------------

DOC = ROOT / "docs" / "architecture.md"
TICKS = re.compile(r"`([^`\n]+)`")


@functools.cache
def defined_names(path: Path) -> set[str]:
    """Top-level names of a module and ``Class.member`` names (defs, classes, assignments)."""
    names: set[str] = set()

    def add(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(prefix + node.name)
                if isinstance(node, ast.ClassDef):
                    add(node.body, prefix + node.name + ".")
            elif isinstance(node, ast.Assign):
                names.update(prefix + t.id for t in node.targets if isinstance(t, ast.Name))
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names.add(prefix + node.target.id)

    add(ast.parse(path.read_text()).body, "")
    return names


def doc_blocks(text: str) -> list[str]:
    """Paragraphs (blank-line separated; each table row apart), fenced code left out."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks: list[str] = []
    for para in re.split(r"\n\s*\n", text):
        rows = para.splitlines()
        if rows and all(r.lstrip().startswith("|") for r in rows):
            blocks += rows
        else:
            blocks.append(para)
    return blocks


def doc_references(text: str) -> list[tuple[str, str | None]]:
    """What the doc names, as (path, name or None):

    - a backticked ``path/file.py`` (or ``.md .toml .js .sh``, or ``folder/``): (path, None);
    - a backticked bare name (``run_capture``, ``Worker.process``): (each ``.py`` file named in
      the same paragraph or table row, joined by ``|``, name): it must be defined in one;
    - a backticked ``package.module.name`` of the project: (the module's file, name);
    - ``pleura <command>``: ("stream/cli.py", "COMMANDS:<command>").
    """
    refs: list[tuple[str, str | None]] = []
    mods = project_modules()
    for block in doc_blocks(text):
        toks = [m.group(1).strip() for m in TICKS.finditer(block)]
        files = [t for t in toks if re.fullmatch(r"[\w./-]+\.py", t) and "/" in t]
        for tok in toks:
            if re.fullmatch(r"[\w./-]+(\.(py|md|toml|js|sh)|/)", tok) and "/" in tok:
                refs.append((tok, None))
            elif re.fullmatch(r"pleura [a-z-]+.*", tok):
                refs.append(("stream/cli.py", "COMMANDS:" + tok.split()[1]))
            elif re.fullmatch(r"(stream|engines|ui|train|benchmarks)(\.\w+)+(\(\))?", tok):
                dotted = tok.removesuffix("()")
                mod = resolve(dotted, mods)
                rest = dotted[len(mod) + 1:] if mod else None
                refs.append((str(mods[mod].relative_to(ROOT)) if mod else dotted, rest or None))
            elif re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*(\(\))?", tok):
                refs.append(("|".join(files) or "(no file named in its paragraph)",
                             tok.removesuffix("()")))
    return refs


def missing_references(text: str) -> list[str]:
    bad = []
    for file, name in doc_references(text):
        paths = [ROOT / f for f in file.split("|")]
        if name is None:
            if not (paths[0].is_dir() if file.endswith("/") else paths[0].is_file()):
                bad.append(f"`{file}` does not exist")
        elif name.startswith("COMMANDS:"):
            tree = ast.parse(paths[0].read_text())
            keys = {k.value for n in ast.walk(tree) if isinstance(n, ast.Dict)
                    for k in n.keys if isinstance(k, ast.Constant)}
            if name.split(":")[1] not in keys:
                bad.append(f"`pleura {name.split(':')[1]}` is not a command of stream/cli.py")
        elif not any(p.is_file() and name in defined_names(p) for p in paths):
            bad.append(f"`{name}` is not defined in `{file}`")
    return bad


def test_architecture_doc_names_only_what_exists():
    text = DOC.read_text()
    assert len(text.splitlines()) <= 130, "docs/architecture.md: keep it to two pages"
    refs = doc_references(text)
    assert len(refs) > 40, "the doc should name the files and functions of the frame's path"
    bad = missing_references(text)
    assert not bad, "docs/architecture.md names what is not there:\n" + "\n".join(bad)


def test_doc_checker_catches_a_wrong_name():
    text = ("`stream/capture.py` `run_capture` and `stream/nothing.py`;\n"
            "`stream.workercore.Worker.nope`, `engines/scorer.py` `score_frame` / `nope2`, "
            "`pleura live`, `pleura fly`, `stream/nope/`\n\n`Worker.process` alone\n\n"
            "| a | `stream/sources/base.py` `Source` |\n| b | `Source` |\n")
    bad = missing_references(text)
    assert bad == ["`stream/nothing.py` does not exist",
                   "`Worker.nope` is not defined in `stream/workercore.py`",
                   "`nope2` is not defined in "
                   "`stream/capture.py|stream/nothing.py|engines/scorer.py`",
                   "`pleura fly` is not a command of stream/cli.py",
                   "`stream/nope/` does not exist",
                   "`Worker.process` is not defined in `(no file named in its paragraph)`",
                   "`Source` is not defined in `(no file named in its paragraph)`"], bad
