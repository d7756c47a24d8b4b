"""The shape of the imports: no circle, no import running up a layer, light packages stay light.

Read from the source with `ast` (nothing imported), over every product module of the four
packages. Layers, bottom to top: data ← trainer ← sweeps ← service (an import may only point
down or sideways); inside sweeps, the rooms: errors, codeversion, stats ← specs ← store ← running,
reporting ← the entry points (``sweeps/__init__``, ``__main__``, ``run``). Circles are looked
for among module-level imports (what runs when a module is imported, ``if TYPE_CHECKING:``
blocks included); the layers hold for every import, those inside functions too. Example of
what the first test reports::

    import circle: sweeps.specs.spec -> sweeps.specs.expand -> sweeps.specs.spec
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("data", "trainer", "sweeps", "service")  # bottom to top
#: sweeps' rooms, bottom to top; rooms of one rank must not import each other
ROOMS = {
    "sweeps.errors": 0,
    "sweeps.codeversion": 0,
    "sweeps.stats": 0,  # the verdicts' statistics and the threshold search's t quantiles
    "sweeps.specs": 1,
    "sweeps.store": 2,
    "sweeps.running": 3,
    "sweeps.reporting": 3,
    "sweeps": 4,  # __init__, __main__, run: the entry points
}


@dataclass(frozen=True)
class Import:
    source: str  # importing module, e.g. "sweeps.specs.spec"
    target: str  # imported own module, e.g. "sweeps.specs.expand"
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "in a function" if self.in_function else "at module level"
        return f"{self.source}:{self.line} imports {self.target} ({where})"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the four packages, by dotted name."""
    found = {}
    for pkg in LAYERS:
        for path in sorted((root / pkg).rglob("*.py")):
            found[module_name(path)] = path
    return found


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Each import statement, and whether it sits inside a function body."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from _imports(node, inner)


def own_imports(modules: dict[str, Path]) -> list[Import]:
    """Every import of one of our modules, resolved to the module it loads (``from pkg import
    mod`` is an import of ``pkg.mod`` when that is a module, else of ``pkg``)."""
    out = []
    for source, path in modules.items():
        package = source if path.name == "__init__.py" else source.rpartition(".")[0]
        for node, in_function in _imports(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                assert isinstance(node, ast.ImportFrom)
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                if target.split(".")[0] in LAYERS:
                    out.append(Import(source, target, node.lineno, in_function))
    return out


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One circle of ``edges`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (found := visit(start)):
            return found
    return None


def layer(module: str) -> int:
    return LAYERS.index(module.split(".")[0])


def room(module: str) -> tuple[str, int]:
    """The sweeps room of ``module`` and its rank (`ROOMS`)."""
    for name, rank in sorted(ROOMS.items(), key=lambda kv: -len(kv[0])):
        if module == name or module.startswith(name + "."):
            return name, rank
    raise AssertionError(f"{module} is in no room of sweeps; add it to ROOMS")


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    modules = product_modules()
    assert {"data", "trainer", "sweeps", "service", "sweeps.specs.spec"} <= modules.keys()
    return own_imports(modules)


def test_no_import_circle(imports: list[Import]) -> None:
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.in_function:
            edges.setdefault(imp.source, set()).add(imp.target)
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle or ())


def test_imports_run_down_the_layers(imports: list[Import]) -> None:
    """service → sweeps → trainer → data, never back up (inside functions neither)."""
    upward = [str(i) for i in imports if layer(i.target) > layer(i.source)]
    assert not upward, "imports running up a layer:\n" + "\n".join(upward)


def test_sweeps_rooms_import_down(imports: list[Import]) -> None:
    """specs ← store ← running, reporting; running and reporting do not import each other."""
    wrong = []
    for i in imports:
        if not (i.source.startswith("sweeps") and i.target.startswith("sweeps")):
            continue
        (src_room, src), (dst_room, dst) = room(i.source), room(i.target)
        if dst > src or (dst == src and dst_room != src_room):
            wrong.append(f"{i} ({src_room} -> {dst_room})")
    assert not wrong, "imports against sweeps' rooms:\n" + "\n".join(wrong)


def heavy_modules(module: str) -> set[str]:
    """Which of ray and torch a fresh interpreter has loaded after ``import module``."""
    code = (
        f"import sys\nimport {module}\n"
        "print(' '.join(m for m in ('ray', 'torch') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return set(run.stdout.split())


@pytest.fixture(scope="module")
def torch_of_train_config() -> bool:
    """Whether `trainer.config` itself loads torch (it does until the trainer makes it light)."""
    return "torch" in heavy_modules("trainer.config")


@pytest.mark.parametrize("module", ["data", "sweeps", "sweeps.specs.spec", "sweeps.store"])
def test_light_imports_load_no_ray(module: str, torch_of_train_config: bool) -> None:
    """No Ray in ``import sweeps`` or the spec (Ray lives in `sweeps.running`), and no torch
    brought by sweeps itself: at most what `trainer.config` loads; data never loads either."""
    loaded = heavy_modules(module)
    assert "ray" not in loaded, f"import {module} loads Ray"
    if module == "data" or not torch_of_train_config:
        assert "torch" not in loaded, f"import {module} loads torch"


def test_the_graph_sees_what_it_must() -> None:
    """The reader itself: a circle, an upward import and a ``from pkg import mod`` are found."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}}) is None
    imports = own_imports(product_modules())
    found = {(i.source, i.target) for i in imports}
    assert ("sweeps.specs.spec", "sweeps.specs.expand") in found
    assert ("sweeps.reporting.studies", "sweeps.reporting.verdicts") in found  # from pkg import mod
    assert any(i.in_function for i in imports if i.source == "sweeps.running.trainable")
