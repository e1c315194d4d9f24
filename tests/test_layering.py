"""The layout is the architecture: every folder of ``src/ssconv`` imports only the floors
below it (function-level imports included), so no import runs back up and there are no
circles. The floors are those of the README's "Layout" section."""

import ast
from pathlib import Path

import ssconv

ROOT = Path(ssconv.__file__).parent

#: Bottom to top; a floor may import any floor before it. Entries of one tuple are side by side
#: (they import neither each other nor anything above).
FLOORS = [
    ("utils", "errors"),
    ("kernels",),
    ("layers",),
    ("sparsity",),
    ("models", "pruning"),
    ("conversion",),
    ("deploy", "_profile"),
    ("data",),
    ("train",),
    ("runs", "bench", "report", "export"),
    ("cli",),
    ("__main__",),
]
LEVEL = {name: i for i, floor in enumerate(FLOORS) for name in floor}


def _unit(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imported_units(path: Path) -> set[tuple[str, int]]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module == "ssconv":
            # The public API (ssconv/__init__.py) stands on every floor up to _profile.
            out.add(("_profile", node.lineno))
        for name in names:
            parts = name.split(".")
            if parts[0] == "ssconv" and len(parts) > 1 and parts[1] in LEVEL:
                out.add((parts[1], node.lineno))
    return out


def test_every_module_is_on_a_floor():
    units = {_unit(p) for p in ROOT.rglob("*.py")} - {"__init__"}
    assert units <= set(LEVEL), f"not on a floor: {sorted(units - set(LEVEL))}"


def test_no_import_runs_back_up_or_sideways():
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue  # ssconv/__init__.py re-exports the public API from every floor
        for target, line in sorted(_imported_units(path)):
            if target != unit and LEVEL[target] >= LEVEL[unit]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports ssconv.{target}")
    assert not bad, "\n".join(bad)


def test_every_folder_of_modules_is_a_package():
    """setuptools' find_packages (pyproject.toml) ships only folders with an __init__.py:
    ssconv/train/ had none, so a built wheel had no ssconv.train."""
    folders = {p.parent for p in ROOT.rglob("*.py")}
    missing = sorted(str(f.relative_to(ROOT)) for f in folders if not (f / "__init__.py").exists())
    assert not missing, f"folders without __init__.py: {missing}"
