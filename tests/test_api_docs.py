"""The rendered API reference (``make docs``: pdoc through ``scripts/api_docs.py``) builds
without warnings, and its reference check finds references that name nothing."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

pytest.importorskip("pdoc", reason="pdoc is in the dev extra: pip install -e '.[dev]'")

import api_docs  # noqa: E402


@pytest.mark.slow
def test_api_docs_build_without_warnings(tmp_path):
    out = tmp_path / "api"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SSCONV_NO_FUSED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "api_docs.py"), "-o", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=600,
    )
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert proc.returncode == 0 and not warnings, proc.stderr[-4000:]
    for page in ("index.html", "ssconv.html", "ssconv/layers/ssconv.html", "ssconv/runs.html"):
        assert (out / page).is_file(), page
    # ssconv/train/ has no __init__.py: its modules are documented all the same.
    assert (out / "ssconv" / "train" / "trainer.html").is_file()
    text = (out / "ssconv" / "runs.html").read_text()
    assert 'href="train/config.html#TrainConfig"' in text  # ":class:`~...`" is linked


def test_every_public_module_is_listed():
    names = api_docs.public_modules()
    assert {"ssconv", "ssconv.layers.ssconv", "ssconv.train.trainer", "ssconv.runs"} <= set(names)
    assert not [n for n in names if any(p.startswith("_") for p in n.split("."))]


def test_references_that_name_nothing_are_found(tmp_path, monkeypatch):
    package = tmp_path / "fakedocs"
    package.mkdir()
    (package / "__init__.py").write_text(
        textwrap.dedent(
            '''
            """See :func:`nothing_here`, :class:`Good`, :meth:`Good.run`, :attr:`Good.x`,
            :func:`os.path.join`, :class:`~collections.OrderedDict`, :exc:`ValueError`."""
            import dataclasses


            @dataclasses.dataclass
            class Good:
                """:attr:`missing` and :attr:`y` (set in run)."""

                x: int

                def run(self):
                    self.y = 1
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = api_docs.broken_references(["fakedocs"])
    assert [f.split(": ", 1)[1] for f in found] == [
        "reference to 'nothing_here' names nothing",
        "reference to 'missing' names nothing",
    ]
