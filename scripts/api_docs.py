"""Render ssconv's API reference with pdoc (https://pdoc.dev) and fail on its warnings.

``make docs`` runs it into ``docs/api/`` (gitignored); ``tests/test_api_docs.py`` runs it into
a temporary folder. pdoc has no "warnings are errors" switch: its warnings (a module that does
not import, an ``__all__`` entry that does not exist, a docstring it cannot parse, an
annotation it cannot evaluate) are Python warnings, recorded here, printed, and counted. So
are cross-references (``:func:`name```) that name nothing, which pdoc renders silently.

Every public module of the package is documented (pdoc follows ``__all__``, which would leave
out the submodules ``ssconv/__init__.py`` does not list); docstrings are read as Google style
with reStructuredText markup (``Args:`` sections, ````literals````, ``:func:`...``` roles).

Usage: ``python scripts/api_docs.py [-o FOLDER]`` (exit 1 on warnings).
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import os
import re
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "docs" / "api"


def public_modules(package: str = "ssconv") -> list[str]:
    """``package`` and its submodules, without private ones (``_x``) and ``__main__``.

    Found from the files (``pkgutil`` skips folders without an ``__init__.py``, such as
    ``ssconv/train/``)."""
    root = Path(importlib.import_module(package).__file__).parent
    names = {package}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(part.startswith("_") for part in parts):
            continue
        names.add(".".join((package, *parts)))
    return sorted(names)


def _specs(names: list[str]) -> list[str]:
    """``names`` without those a package before them already brings in (pdoc walks a
    package's submodules itself, but for a package with ``__all__`` only those it lists, and
    warns when a module is named twice)."""
    from pdoc.extract import walk_specs

    covered: set[str] = set()
    specs = []
    for name in names:
        if name not in covered:
            specs.append(name)
            covered.update(walk_specs([name]))
    return specs


def _strip_tildes() -> None:
    """``:class:`~a.b.C``` is C in Sphinx; pdoc keeps the ``~`` and then links nothing: drop it
    before pdoc converts the role (its full name is then linked)."""
    import pdoc.docstrings

    rst = pdoc.docstrings.rst
    if getattr(rst, "_ssconv_tildes", False):
        return

    def without_tildes(contents: str, source_file: Path | None) -> str:
        return rst(re.sub(r"(:(?:py:)?\w+:`)~", r"\1", contents), source_file)

    without_tildes._ssconv_tildes = True  # type: ignore[attr-defined]
    pdoc.docstrings.rst = without_tildes


def build(out: str | Path, modules: list[str] | None = None) -> list[str]:
    """Render ``modules`` (default: all public ones) into ``out``; returns pdoc's warnings."""
    import pdoc
    import pdoc.render

    # No kernel build while the modules are imported, no threads beyond one.
    os.environ.setdefault("SSCONV_NO_FUSED", "1")
    _strip_tildes()
    pdoc.render.configure(
        docformat="google",
        footer_text="ssconv API reference",
        search=True,
        show_source=True,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        names = _specs(modules or public_modules())
        pdoc.pdoc(*names, output_directory=Path(out))
    seen: dict[str, None] = {}
    for w in caught:
        # pdoc's own, and ssconv's (at import); not those of the libraries imported on the way.
        where = w.filename or ""
        ours = "site-packages" not in where and issubclass(w.category, UserWarning)
        if "pdoc" in where or ours:
            seen.setdefault(f"{w.category.__name__}: {w.message}", None)
    return list(seen)


_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj|const):`~?([\w.]+)`")


def _resolves(name: str, module) -> bool:
    """Whether ``name`` names something seen from ``module`` (its globals, a class of it, or
    an importable dotted path), the way a reader following the reference would find it."""
    classes = [v for v in vars(module).values() if isinstance(v, type)]
    scopes = [vars(module), vars(builtins), *(vars(c) for c in classes)]
    head, *rest = name.split(".")
    for scope in scopes:
        if head in scope:
            obj = scope[head]
            try:
                for part in rest:
                    obj = getattr(obj, part, None) or _annotations(obj)[part]
            except (KeyError, TypeError):
                continue
            return True
    # An instance attribute (a dataclass field, a buffer or an attribute set in __init__) of
    # a class of the module: it exists on instances only.
    last = name.rsplit(".", 1)[-1]
    source = Path(module.__file__).read_text()
    if any(last in _annotations(c) for c in classes) or re.search(
        rf"self\.{last}\s*[:=]|register_(buffer|parameter)\(\s*[\"']{last}[\"']", source
    ):
        return True
    parts = name.split(".")
    for i in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def _annotations(obj) -> dict:
    return {
        k: v
        for c in getattr(obj, "__mro__", ())
        for k, v in vars(c).get("__annotations__", {}).items()
    }


def broken_references(modules: list[str] | None = None) -> list[str]:
    """Cross-references (``:func:`name```, ``:class:``, ...) in the source of ``modules`` that
    name nothing: pdoc renders them as plain code without a warning."""
    found = []
    for name in modules or public_modules():
        module = importlib.import_module(name)
        path = Path(module.__file__)
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            for target in _ROLE.findall(line):
                if not _resolves(target, module):
                    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(f"{rel}:{lineno}: reference to {target!r} names nothing")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default=str(DEFAULT_OUT), help="output folder")
    args = parser.parse_args(argv)
    found = build(args.out) + broken_references()
    for text in found:
        print(f"warning: {text}", file=sys.stderr)
    index = Path(args.out) / "index.html"
    if found:
        print(f"{len(found)} pdoc warning(s); API docs written to {index}", file=sys.stderr)
        return 1
    print(f"API docs written to {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
