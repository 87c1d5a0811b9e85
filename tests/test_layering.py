"""vivace's units import only downward, and no two units import each other.

Why a test: the layer order is what lets a lower unit (runtime, compression)
be used, tested and reasoned about without the ones above it (the CLI, the
TUI). Python accepts an upward import happily, often as a function-level
import nobody sees, so every import statement is checked here, wherever it
sits: module level, inside a function, or under ``if TYPE_CHECKING:``.

A unit is a top-level module or subpackage of ``vivace``. ``LAYERS`` runs top
to bottom; a unit may import units on lower lines, and units on its own line
only as ``SAME_LINE_ALLOWED`` says. Inside a unit, modules import one
another without a cycle either (``test_no_import_cycles_between_modules``): a
cycle of modules is one tangle nobody can read, test or move alone. The parts of a package (its
modules and sub-packages, such as ``agents.sot``) import one another without a cycle as well
(``test_no_import_cycles_between_the_parts_of_a_package``). ``vivace/__init__.py`` (the package face,
which re-exports the public API) is exempt as an importer; importing the face
from inside the package is allowed only from the top line, since it pulls in
everything it re-exports.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "vivace"
BENCH = ROOT.parent / "vivace_bench"  # the benchmarks: above all of vivace, which never imports them
FACE = "vivace"  # the unit name for ``vivace/__init__.py``

LAYERS: list[set[str]] = [
    {"cli", "__main__"},
    {"commands"},
    {"tui", "serve"},
    {"agents"},
    {"assembly"},
    {"retrieval"},
    {"compression"},  # takes an embedder protocol; never imports retrieval
    {"runtime"},
    {"trace", "config", "errors", "choices", "plugins"},  # choices: every closed set of spellings; plugins: the
    # entry-point loader. Both import nothing of vivace.
]
SAME_LINE_ALLOWED = {
    ("__main__", "cli"),  # ``python -m vivace`` is the CLI's entry point
    ("trace", "config"),
    ("trace", "errors"),
    ("config", "errors"),
    ("config", "choices"),
}
LEVEL = {unit: i for i, line in enumerate(LAYERS) for unit in line}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, e.g. "vivace.trace"
    line: int
    target: str  # the imported module as written (resolved if relative)
    unit: str  # the imported unit, or FACE

    def __str__(self) -> str:
        shown = "vivace (package face)" if self.unit == FACE else self.unit
        return f"{self.module} -> {shown} ({self.line})"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def unit_of(module: str, root: Path) -> str:
    """``vivace.a.b`` -> ``a``; ``vivace`` -> FACE."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == root.name else FACE


def units_in(root: Path) -> set[str]:
    found = {p.stem for p in root.glob("*.py") if p.stem != "__init__"}
    return found | {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}


def from_source(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from (a relative one resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_names(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute module names one node imports (``from X import a`` also yields ``X.a``)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        source = from_source(node, module, is_package)
        # ``from vivace import runtime`` imports a unit; ``from vivace.x import y`` stays in unit x.
        return [f"{source}.{alias.name}" for alias in node.names] if "." not in source else [source]
    if (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ):
        return [node.args[0].value]  # a literal name; names held in variables are not followed
    return []


def scan(root: Path) -> list[Import]:
    """Every import between different units of the package at ``root`` (the face excluded as importer)."""
    units = units_in(root)
    found: list[Import] = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        source_unit = unit_of(module, root)
        if source_unit == FACE:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            for name in imported_names(node, module, path.name == "__init__.py"):
                parts = name.split(".")
                if parts[0] != root.name:
                    continue
                # "vivace.x" where x is no unit (``from vivace import __version__``) is the face.
                unit = parts[1] if len(parts) > 1 and parts[1] in units else FACE
                if unit != source_unit:
                    found.append(Import(module, node.lineno, name, unit))
    return sorted(set(found), key=lambda i: (i.module, i.line, i.unit))


def violations(imports: list[Import]) -> list[Import]:
    bad = []
    for imp in imports:
        source = unit_of(imp.module, ROOT)
        if imp.unit == FACE:
            ok = LEVEL.get(source) == 0
        elif source not in LEVEL or imp.unit not in LEVEL:
            continue  # reported by test_every_unit_has_a_layer
        elif LEVEL[source] == LEVEL[imp.unit]:
            ok = (source, imp.unit) in SAME_LINE_ALLOWED
        else:
            ok = LEVEL[source] < LEVEL[imp.unit]
        if not ok:
            bad.append(imp)
    return bad


def cycles(imports: list[Import], root: Path) -> list[list[str]]:
    """The import cycles between units: components of more than one unit."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if imp.unit != FACE:
            edges.setdefault(unit_of(imp.module, root), set()).add(imp.unit)
    return components(edges)


def components(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components (Tarjan) of more than one node."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sorted(found)


def report(title: str, items: list[Import]) -> str:
    return f"{title} ({len(items)}):\n" + "\n".join(f"  {i}" for i in items)


# -- the checks on vivace ---------------------------------------------------------------


def test_every_unit_has_a_layer() -> None:
    unplaced = units_in(ROOT) - set(LEVEL)
    assert not unplaced, f"place these units in LAYERS: {sorted(unplaced)}"


def test_imports_point_down_the_layers() -> None:
    bad = violations(scan(ROOT))
    if bad:
        pytest.fail(report("imports that do not point down the layers", bad), pytrace=False)


def test_no_import_cycles_between_units() -> None:
    imports = scan(ROOT)
    found = cycles(imports, ROOT)
    detail = []
    for comp in found:
        inside = [i for i in imports if unit_of(i.module, ROOT) in comp and i.unit in comp]
        detail.append(report(" <-> ".join(comp), inside))
    if found:
        pytest.fail("import cycles between units:\n" + "\n".join(detail), pytrace=False)


# -- the same between modules ------------------------------------------------------------


def type_checking_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under ``if TYPE_CHECKING:``: imports for annotations, never run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def module_imports(root: Path) -> list[Import]:
    """Every import of one of the package's modules by another, wherever it sits (a function too),
    except under ``if TYPE_CHECKING:``. ``from a.b import c`` imports ``a.b``, and ``a.b.c`` if that is
    a module; ``Import.unit`` holds the imported module here."""
    paths = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    found: list[Import] = []
    for module, path in paths.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            names = imported_names(node, module, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                source = from_source(node, module, path.name == "__init__.py")
                names = [source, *(f"{source}.{alias.name}" for alias in node.names)]
            found += [Import(module, node.lineno, name, name) for name in names if name in paths and name != module]
    return sorted(set(found), key=lambda i: (i.module, i.line, i.unit))


def module_cycles(imports: list[Import]) -> list[list[str]]:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        edges.setdefault(imp.module, set()).add(imp.unit)
    return components(edges)


def one_cycle(comp: list[str], imports: list[Import]) -> list[Import]:
    """A shortest way round a component, from its first module back to it: the imports to untie."""
    inside = [i for i in imports if i.module in comp and i.unit in comp]
    start = comp[0]
    came: dict[str, Import] = {}
    todo = [start]
    while todo:
        here = todo.pop(0)
        for imp in inside:
            if imp.module == here and imp.unit not in came:
                came[imp.unit] = imp
                todo.append(imp.unit)
        if start in came:
            break
    path = [came[start]]
    while path[0].module != start:
        path.insert(0, came[path[0].module])
    return path


def test_the_library_never_imports_the_benchmarks() -> None:
    """``vivace_bench`` plugs its commands in through an entry point; the library has no import of it."""
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        module = module_name(path, ROOT)
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            for name in imported_names(node, module, path.name == "__init__.py"):
                if name.split(".")[0] == BENCH.name:
                    found.append(f"{module}:{node.lineno} imports {name}")
    assert not found, "the library imports the benchmarks:\n" + "\n".join(found)


@pytest.mark.parametrize("root", [ROOT, BENCH], ids=["vivace", "vivace_bench"])
def test_no_import_cycles_between_modules(root: Path) -> None:
    imports = module_imports(root)
    found = module_cycles(imports)
    detail = [f"{len(comp)} modules: {', '.join(comp)}\n  for one, "
              + " ; ".join(f"{i.module}:{i.line} imports {i.unit}" for i in one_cycle(comp, imports))
              for comp in found]
    if found:
        pytest.fail("import cycles between modules (move what both sides need to a lower module):\n"
                    + "\n".join(detail), pytrace=False)


def package_cycles(imports: list[Import], root: Path) -> dict[str, list[list[str]]]:
    """Per package (``vivace.agents``, ``vivace.agents.sot``...), the cycles between its children: its
    modules and sub-packages, each one node (``sot`` stands for every module under ``agents/sot/``)."""
    packages = sorted(module_name(p, root) for p in root.rglob("__init__.py"))
    found: dict[str, list[list[str]]] = {}
    for package in packages:
        edges: dict[str, set[str]] = {}
        for imp in imports:
            if imp.module.startswith(package + ".") and imp.unit.startswith(package + "."):
                child, target = (name[len(package) + 1 :].split(".")[0] for name in (imp.module, imp.unit))
                if child != target:
                    edges.setdefault(child, set()).add(target)
        if comps := components(edges):
            found[package] = comps
    return found


@pytest.mark.parametrize("root", [ROOT, BENCH], ids=["vivace", "vivace_bench"])
def test_no_import_cycles_between_the_parts_of_a_package(root: Path) -> None:
    """A sub-package is one part of its parent: ``agents.sot`` and ``agents.pipeline`` may use the agents'
    core (``base``, ``events``, ``journal``...), but the core may not reach back into them."""
    imports = module_imports(root)
    found = package_cycles(imports, root)
    detail = []
    for package, comps in found.items():
        for comp in comps:
            inside = [i for i in imports if i.module.startswith(package + ".") and i.unit.startswith(package + ".")
                      and i.module[len(package) + 1 :].split(".")[0] in comp
                      and i.unit[len(package) + 1 :].split(".")[0] in comp]
            detail.append(report(f"{package}: " + " <-> ".join(comp), inside))
    if found:
        pytest.fail("import cycles between the parts of a package:\n" + "\n".join(detail), pytrace=False)


# -- the scanner itself, on a made-up package --------------------------------------------


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    root = tmp_path / "vivace"
    files = {
        "__init__.py": "from vivace.cli import main\n",
        "errors.py": "",
        "config.py": "from vivace import errors\n",
        "cli.py": "from vivace import __version__\n",
        "runtime/__init__.py": "from .backend import B\n",
        "runtime/backend.py": (
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n"
            "    from vivace.agents.base import Agent\n"
            "def f():\n"
            "    import vivace.tui.app\n"
            "from ..config import C\n"
            "from .. import trace\n"
        ),
        "trace.py": "import importlib\nimportlib.import_module('vivace.runtime.backend')\n",
        "agents/__init__.py": "",
        "tui/__init__.py": "from vivace import __version__\n",
    }
    write_tree(root, files)
    return root


def test_scanner_sees_every_kind_of_import(toy: Path) -> None:
    got = {(i.module, i.unit, i.line) for i in scan(toy)}
    assert got == {
        ("vivace.config", "errors", 1),
        ("vivace.cli", FACE, 1),
        ("vivace.runtime.backend", "agents", 3),  # under TYPE_CHECKING
        ("vivace.runtime.backend", "tui", 5),  # inside a function
        ("vivace.runtime.backend", "config", 6),  # relative
        ("vivace.runtime.backend", "trace", 7),  # relative, a unit by name
        ("vivace.trace", "runtime", 2),  # import_module with a literal name
        ("vivace.tui", FACE, 1),
    }  # the face's own import of cli is exempt; runtime's relative import stays inside runtime


def test_violations_and_cycles_on_the_toy(toy: Path) -> None:
    imports = scan(toy)
    assert sorted(str(i) for i in violations(imports)) == [
        "vivace.runtime.backend -> agents (3)",
        "vivace.runtime.backend -> tui (5)",
        "vivace.trace -> runtime (2)",
        "vivace.tui -> vivace (package face) (1)",
    ]  # runtime -> trace points down; trace -> runtime closes the cycle
    assert cycles(imports, toy) == [["runtime", "trace"]]


def test_module_cycles_on_a_toy(tmp_path: Path) -> None:
    root = tmp_path / "vivace"
    files = {
        "__init__.py": "",
        "a.py": "from vivace import b\n",
        "b.py": ("from typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n"
                 "    from vivace.a import A\n"
                 "def f():\n"
                 "    from .c import C\n"),
        "c.py": "from vivace.b import f\n",
    }
    write_tree(root, files)
    imports = module_imports(root)
    assert module_cycles(imports) == [["vivace.b", "vivace.c"]]  # b -> a is for annotations only
    assert [str(i) for i in one_cycle(["vivace.b", "vivace.c"], imports)] == [
        "vivace.b -> vivace.c (5)", "vivace.c -> vivace.b (1)"]


def test_package_cycles_on_a_toy(tmp_path: Path) -> None:
    root = tmp_path / "vivace"
    files = {
        "__init__.py": "",
        "agents/__init__.py": "",
        "agents/base.py": "def f():\n    from vivace.agents.sot.points import P\n",
        "agents/sot/__init__.py": "",
        "agents/sot/points.py": "from vivace.agents.sot.calls import C\n",
        "agents/sot/calls.py": "from vivace.agents.base import f\n",
        "agents/pipeline/__init__.py": "",
        "agents/pipeline/spec.py": "from vivace.agents.base import f\n",
    }
    write_tree(root, files)
    imports = module_imports(root)
    assert module_cycles(imports) == [["vivace.agents.base", "vivace.agents.sot.calls", "vivace.agents.sot.points"]]
    assert package_cycles(imports, root) == {"vivace.agents": [["base", "sot"]]}  # inside sot: no cycle
