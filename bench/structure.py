"""Structure facts of the source tree, read with ``ast`` (nothing is imported): import cycles, file sizes,
function lengths, and which ``workflow`` modules the pipeline graph really uses.

The import graph has one node per module of ``mtl_models``, ``workflow``, ``pipeline`` and ``bench`` and one
arrow per import statement anywhere in the file (module level or inside a function), to the most specific module
it names (``from workflow import tracking`` points at ``workflow.tracking``). Imports under ``if TYPE_CHECKING:``
never run and are no arrow. The implicit import of a parent package's ``__init__`` is not an arrow either: every
submodule would otherwise sit in a cycle with a re-exporting ``__init__``.

The graph's closure is every module reachable from the entry points the pipeline runs (``ROOTS``), following
imports and ``[..., "-m", "<module>", ...]`` process starts found in those modules or in ``deploy/``.

    python -m bench.structure [--root .]
"""

from __future__ import annotations

import argparse
import ast
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("mtl_models", "workflow", "pipeline", "bench")
SIZE_PACKAGES = PACKAGES + ("tests",)
ROOTS = ("pipeline.graph", "pipeline.ops", "pipeline.local", "pipeline.cli", "workflow.steps")
MAX_FILE_LINES = 400
MAX_MEDIAN_FUNCTION = 15
GONE = ("workflow/candidates.py",)
_DASH_M = re.compile(r"-m[\"',\s]+([A-Za-z_][\w.]*)")


@dataclass
class Module:
    """One parsed source file: its dotted name, path, line count, import targets and ``-m`` process starts."""

    name: str
    path: Path
    lines: int
    tree: ast.Module
    imports: set[str] = field(default_factory=set)
    starts: set[str] = field(default_factory=set)  # started with ``-m`` or loaded by name / by file


def module_name(root: Path, path: Path) -> str:
    """``workflow/data/__init__.py`` -> ``workflow.data``; ``pipeline/ops.py`` -> ``pipeline.ops``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def parse_tree(root: Path, packages: tuple[str, ...]) -> dict[str, Module]:
    """Every ``.py`` file under the packages, parsed, by module name."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name = module_name(root, path)
            modules[name] = Module(name, path, len(text.splitlines()), ast.parse(text, filename=str(path)))
    return modules


def _base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` names, relative levels resolved against the importing module."""
    if not node.level:
        return node.module or ""
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package = package[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _most_specific(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or sits inside, or None for a module outside the tree."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def _dash_m_targets(node: ast.AST) -> list[str]:
    """Modules started as ``[..., "-m", "<module>", ...]`` in one list or tuple literal."""
    if not isinstance(node, (ast.List, ast.Tuple)):
        return []
    values = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in node.elts]
    return [values[i + 1] for i in range(len(values) - 1) if values[i] == "-m" and values[i + 1]]


def _loaded_by_name(module: Module, node: ast.AST, known: set[str]) -> list[str]:
    """Modules ``module`` loads without an import statement: ``importlib.import_module("<name>")``, a lazy registry's
    ``import_module(f"{__name__}.{...}")`` (every submodule of its package) and a sibling file named as a string
    (``Path(__file__).with_name("pyfunc_model.py")``: MLflow's models from code)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith(".py"):
        package = module.name if module.path.name == "__init__.py" else module.name.rsplit(".", 1)[0]
        sibling = f"{package}.{node.value.removesuffix('.py')}"
        return [sibling] if sibling in known and (module.path.parent / node.value).is_file() else []
    if not (isinstance(node, ast.Call) and node.args and getattr(node.func, "attr", getattr(node.func, "id", None))
            == "import_module"):
        return []
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return [arg.value] if arg.value in known else []
    head = arg.values[0] if isinstance(arg, ast.JoinedStr) and arg.values else None
    if isinstance(head, ast.FormattedValue) and getattr(head.value, "id", None) == "__name__":
        return [n for n in known if n.rsplit(".", 1)[0] == module.name and n != module.name]
    return []


def _type_only(tree: ast.Module) -> set[int]:
    """``id``s of the import nodes under ``if TYPE_CHECKING:``: they never run, so they are no arrow."""
    guarded = set()
    for node in ast.walk(tree):
        test = node.test if isinstance(node, ast.If) else None
        if test is not None and (getattr(test, "id", None) or getattr(test, "attr", None)) == "TYPE_CHECKING":
            guarded.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return guarded


def link(modules: dict[str, Module], known: set[str] | None = None) -> None:
    """Fill each module's ``imports`` and ``starts`` (``-m`` modules) with the ``known`` ones (default: ``modules``)."""
    known = set(modules) if known is None else known
    for module in modules.values():
        type_only = _type_only(module.tree)
        for node in ast.walk(module.tree):
            if id(node) in type_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = _base(module, node)
                for alias in node.names:
                    target = _most_specific(f"{base}.{alias.name}" if base else alias.name, known)
                    if target and target != module.name:
                        module.imports.add(target)
            elif isinstance(node, ast.Import):
                for target in filter(None, (_most_specific(a.name, known) for a in node.names)):
                    if target != module.name:
                        module.imports.add(target)
            for started in _dash_m_targets(node):
                if started in known:
                    module.starts.add(started)
                if f"{started}.__main__" in known:
                    module.starts.add(f"{started}.__main__")
            module.starts.update(_loaded_by_name(module, node, known))


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """The import graph's strongly connected components of more than one module (Tarjan), members sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for target in sorted(modules[name].imports):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in on_stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == name:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(modules)))
    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(found)


def deploy_starts(root: Path, known: set[str]) -> set[str]:
    """Modules of the tree that ``deploy/`` files start with ``python -m <module>``."""
    started = set()
    for path in sorted((root / "deploy").rglob("*")) if (root / "deploy").is_dir() else []:
        if path.is_file() and path.suffix in {".yaml", ".yml", ".sh", ""}:
            for name in _DASH_M.findall(path.read_text(encoding="utf-8", errors="replace")):
                started.update(m for m in (name, f"{name}.__main__") if m in known)
    return started


def closure(modules: dict[str, Module], roots: set[str]) -> set[str]:
    """Every module reachable from ``roots`` through imports, starts and loads, with the parent packages whose
    ``__init__`` running a module executes."""
    seen: set[str] = set()
    todo = [r for r in roots if r in modules]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            parents = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]
            todo.extend(modules[name].imports | modules[name].starts | {p for p in parents if p in modules})
    return seen


def function_lengths(modules: dict[str, Module]) -> list[int]:
    """Lines of every function and method (nested ones too), ``def`` line to last line, decorators excluded."""
    return [node.end_lineno - node.lineno + 1 for m in modules.values() for node in ast.walk(m.tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]


def unused_by_tests(root: Path, modules: dict[str, Module], used: set[str]) -> dict[str, list[str]]:
    """Test file -> the ``workflow`` modules it imports or starts that the graph's closure does not hold."""
    tests = parse_tree(root, ("tests",))
    known = set(modules)
    link(tests, known)
    found = {}
    for test in tests.values():
        outside = sorted(t for t in (test.imports | test.starts) & known
                         if t.startswith("workflow") and t not in used)
        if outside:
            found[str(test.path.relative_to(root))] = outside
    return found


@dataclass
class Facts:
    """What ``measure`` found; ``problems()`` says which acceptance rules it breaks."""

    modules: int
    arrows: int
    cycles: list[list[str]]
    big_files: dict[str, int]
    median_function: float
    functions: int
    gone_present: list[str]
    used: set[str]
    unused_workflow: list[str]
    test_imports_unused: dict[str, list[str]]

    def problems(self) -> list[str]:
        """One line per broken rule; empty when the tree meets them all."""
        out = [f"import cycle: {' -> '.join(c)}" for c in self.cycles]
        out += [f"{path}: {n} lines > {MAX_FILE_LINES}" for path, n in self.big_files.items()]
        if self.median_function > MAX_MEDIAN_FUNCTION:
            out.append(f"median function {self.median_function} lines > {MAX_MEDIAN_FUNCTION}")
        out += [f"{path} still exists" for path in self.gone_present]
        out += [f"{test} imports {', '.join(mods)}, not used by the graph"
                for test, mods in self.test_imports_unused.items()]
        return out


def measure(root: Path) -> Facts:
    """All structure facts of the tree at ``root``."""
    modules = parse_tree(root, PACKAGES)
    link(modules)
    roots = set(ROOTS) | deploy_starts(root, set(modules))
    used = closure(modules, roots)
    sized = {**modules, **parse_tree(root, ("tests",))}
    lengths = function_lengths(modules)
    return Facts(
        modules=len(modules), arrows=sum(len(m.imports) for m in modules.values()), cycles=cycles(modules),
        big_files={str(m.path.relative_to(root)): m.lines for m in sorted(sized.values(), key=lambda m: -m.lines)
                   if m.lines > MAX_FILE_LINES},
        median_function=statistics.median(lengths) if lengths else 0.0, functions=len(lengths),
        gone_present=[p for p in GONE if (root / p).exists()], used=used,
        unused_workflow=sorted(n for n in modules if n.startswith("workflow") and n not in used),
        test_imports_unused=unused_by_tests(root, modules, used))


def render(facts: Facts) -> str:
    """The facts as a short plain-text report."""
    lines = [f"modules {facts.modules} ({', '.join(PACKAGES)}), import arrows {facts.arrows}",
             f"import cycles: {len(facts.cycles)}"]
    lines += [f"  {' <-> '.join(c)}" for c in facts.cycles]
    lines.append(f"files over {MAX_FILE_LINES} lines ({', '.join(SIZE_PACKAGES)}): {len(facts.big_files)}")
    lines += [f"  {n:5d} {path}" for path, n in facts.big_files.items()]
    lines.append(f"median function: {facts.median_function} lines over {facts.functions} functions "
                 f"(limit {MAX_MEDIAN_FUNCTION})")
    lines.append(f"gone: {', '.join(GONE)}: {'present: ' + ', '.join(facts.gone_present) if facts.gone_present else 'yes'}")
    lines.append(f"workflow modules the graph uses: {sum(n.startswith('workflow') for n in facts.used)}; "
                 f"not used: {', '.join(facts.unused_workflow) or 'none'}")
    lines.append(f"tests importing a workflow module the graph does not use: {len(facts.test_imports_unused)}")
    lines += [f"  {test}: {', '.join(mods)}" for test, mods in facts.test_imports_unused.items()]
    problems = facts.problems()
    lines.append(f"problems: {len(problems)}" if problems else "all structure rules hold")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the facts; exit 1 when a rule is broken."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    facts = measure(parser.parse_args(argv).root.resolve())
    print(render(facts))
    return 1 if facts.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
