"""docs/models.md's "Adding a model" as code: its two code blocks (the model file, the zoo entry), loaded in this
process or written into a checkout where the guide says they go, so the tests prove the guide's own text.

Each block opens with a comment naming its file (``# mtl_models/models/gated_bottom.py``, ``# mtl_models/zoo.py``).
The zoo block holds the guide's three pieces: import lines, the builder, and the ``ZooEntry(...)`` for the tuple of
entries at the end of ``zoo.py``.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "models.md"
SECTION = "## Adding a model"
ZOO_FILE = "mtl_models/zoo.py"


@dataclass(frozen=True)
class GuideModel:
    model_path: str  # e.g. mtl_models/models/gated_bottom.py
    model_source: str
    imports: list[str]  # the zoo block's import statements
    builders: list[str]  # its function definitions
    entry: str  # its ZooEntry(...) call, as written

    @property
    def module_name(self) -> str:
        return self.model_path[:-len(".py")].replace("/", ".")


def section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:end if end >= 0 else len(text)]


def read_guide(path: Path = GUIDE) -> GuideModel:
    """The guide's model file and zoo pieces; an assertion names what the section no longer has."""
    blocks = re.findall(r"```python\n(.*?)```", section(path.read_text()), flags=re.S)
    by_file = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        if first.startswith("# ") and first[2:].strip().endswith(".py"):
            by_file[first[2:].strip()] = rest
    zoo_block = by_file.pop(ZOO_FILE, None)
    assert zoo_block is not None and len(by_file) == 1, f"{path}: expected a model file block and a {ZOO_FILE} block"
    (model_path, model_source), = by_file.items()
    tree = ast.parse(zoo_block)
    pieces = {"imports": [], "builders": [], "entry": []}
    for node in tree.body:
        source = ast.get_source_segment(zoo_block, node)
        kind = ("imports" if isinstance(node, (ast.Import, ast.ImportFrom)) else
                "builders" if isinstance(node, ast.FunctionDef) else "entry")
        pieces[kind].append(source)
    assert len(pieces["entry"]) == 1 and "ZooEntry(" in pieces["entry"][0], f"{path}: the zoo block's entry"
    return GuideModel(model_path, model_source, pieces["imports"], pieces["builders"], pieces["entry"][0])


def load_entry(guide: GuideModel) -> Any:
    """The guide's model module imported under its package name, and its ``ZooEntry`` built in ``zoo``'s namespace
    (not registered: the caller does)."""
    from mtl_models import zoo

    spec = importlib.util.spec_from_loader(guide.module_name, loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(REPO / guide.model_path)
    sys.modules[guide.module_name] = module
    exec(compile(guide.model_source, guide.model_path, "exec"), module.__dict__)
    namespace = dict(vars(zoo))
    exec(compile("\n\n".join(guide.imports + guide.builders), ZOO_FILE, "exec"), namespace)
    entry = eval(compile(guide.entry, ZOO_FILE, "eval"), namespace)
    return entry[0] if isinstance(entry, tuple) else entry


def forget(guide: GuideModel) -> None:
    sys.modules.pop(guide.module_name, None)


def apply(guide: GuideModel, root: Path) -> None:
    """Steps 1 and 2 in the checkout at ``root``: the model file, and the zoo pieces each beside its kind."""
    (root / guide.model_path).write_text(guide.model_source)
    zoo_path = root / ZOO_FILE
    lines = zoo_path.read_text().splitlines()
    last_import = max(i for i, line in enumerate(lines) if line.startswith("from .models import"))
    table = next(i for i, line in enumerate(lines) if line.startswith("for _entry in ("))
    close = next(i for i in range(table, len(lines)) if lines[i] == "):")
    entry = textwrap.indent(guide.entry.rstrip().rstrip(",") + ",", "    ").splitlines()
    builders = [line for b in guide.builders for line in (*b.splitlines(), "", "")]
    lines = (lines[:last_import + 1] + guide.imports + lines[last_import + 1:table] + builders
             + lines[table:close] + entry + lines[close:])
    zoo_path.write_text("\n".join(lines) + "\n")


def name_in_docs(root: Path, class_name: str, space_keys: list[str]) -> None:
    """Step 3 in the checkout at ``root``: the class in README's first bullet, its own keys in docs/search.md."""
    readme = root / "README.md"
    text = readme.read_text()
    bullet = "- **`mtl_models`**: "
    assert bullet in text, f"{readme}: no mtl_models bullet"
    readme.write_text(text.replace(bullet, f"{bullet}{class_name} (a contributed model), ", 1))
    search = root / "docs" / "search.md"
    text = search.read_text()
    heading = "## Search space (`workflow.search.space`)\n"
    assert heading in text, f"{search}: no search space section"
    keys = ", ".join(f"`{k}`" for k in space_keys)
    search.write_text(text.replace(heading, f"{heading}\n{class_name} searches {keys} of its own.\n", 1))
