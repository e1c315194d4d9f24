"""The documentation runs: every Python block of README.md and docs/ is executed, every
``ssconv ...`` command of its shell blocks is parsed by the real argument parser.

Conventions in the Markdown files:

* a fenced ```` ```python ```` block is executed; the blocks of one file run in order in one
  fresh interpreter (later blocks may use names of earlier ones, as a reader would);
* ``<!-- not-tested: REASON -->`` on the line(s) right before a fence skips that block (for a
  block that cannot run here, e.g. one that needs CIFAR on disk); keep these few;
* in shell blocks (``bash``, ``sh``, ``console`` or no language), every command line that runs
  ``ssconv`` (after environment assignments, ``nohup``, ``torchrun ... -m ssconv``) must parse
  with ``ssconv``'s parser (subcommand and options exist, values have the right types); lines
  running ``python some/script.py`` must name a script of the repository.

The Python blocks run with small settings so that the test stays fast: ``SSCONV_NO_FUSED=1``
(no kernel build), one thread, and :func:`ssconv.pruning.prune` capped at 2 rounds of
iterative methods (SynFlow's 100 rounds take a minute on a CPU), and
:func:`ssconv.export.export_onnx` on the TorchScript-based exporter unless a block asks for one
(the dynamo exporter takes 10-15 s; tests/test_export.py covers both). Nothing is downloaded;
the blocks run in a temporary folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ssconv.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
SKIP = re.compile(r"<!--\s*not-tested:\s*(?P<reason>.*?)\s*-->")
FENCE = re.compile(r"^(?P<indent> {0,3})```(?P<lang>[\w+-]*)\s*$")

# Run before the blocks of each file: small settings, see the module docstring.
PRELUDE = textwrap.dedent(
    """
    import functools
    import ssconv.pruning as _pruning

    _full_prune = _pruning.prune

    @functools.wraps(_full_prune)
    def _quick_prune(*args, **kwargs):
        kwargs["iterations"] = min(kwargs.get("iterations", 100), 2)
        return _full_prune(*args, **kwargs)

    _pruning.prune = _quick_prune

    import ssconv.export as _export

    _full_export_onnx = _export.export_onnx

    @functools.wraps(_full_export_onnx)
    def _quick_export_onnx(*args, **kwargs):
        kwargs.setdefault("dynamo", False)  # 3 s instead of 10-15 s; same check by onnxruntime
        return _full_export_onnx(*args, **kwargs)

    _export.export_onnx = _quick_export_onnx
    """
)


def blocks(path: Path) -> list[tuple[int, str, str, str | None]]:
    """``(line, language, code, skip reason or None)`` of every fenced block of ``path``."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        start, lang = i, m["lang"].lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith("```"):
            j += 1
        reason = None
        k = start - 1
        while k >= 0 and lines[k].strip().startswith("<!--"):  # comments right above
            found = SKIP.search(lines[k])
            if found:
                reason = found["reason"]
                break
            k -= 1
        out.append((start + 1, lang, "\n".join(lines[start + 1 : j]), reason))
        i = j + 1
    return out


def python_files() -> list[Path]:
    return [p for p in DOCS if any(lang == "python" for _, lang, _, _ in blocks(p))]


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_python_blocks_run(path, tmp_path):
    parts = [PRELUDE]
    for line, lang, code, reason in blocks(path):
        if lang != "python" or reason is not None:
            continue
        parts.append(f"# --- {path.name}:{line}\n{code}")
    script = tmp_path / "doc_blocks.py"
    script.write_text("\n\n".join(parts) + "\n")
    env = {
        **os.environ,
        "SSCONV_NO_FUSED": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src"),
    }
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{path.name}'s Python blocks failed:\n{proc.stderr[-4000:]}"


def _logical_lines(code: str) -> list[str]:
    """Shell lines with continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return [line for line in out if line.strip() and not line.lstrip().startswith("#")]


def _words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for word in lexer:
        if set(word) <= set(";&|<>"):  # a redirection or a separator: the command ends
            break
        words.append(word)
    return words


def ssconv_argv(line: str) -> list[str] | None:
    """The arguments after ``ssconv`` of a shell line that runs it, else None."""
    words = _words(line)
    while words and (re.match(r"^\w+=", words[0]) or words[0] in {"nohup", "time", "exec"}):
        words.pop(0)
    if not words:
        return None
    if words[0] == "ssconv":
        return words[1:]
    if words[0] in {"python", "python3", "torchrun"} and "-m" in words:
        i = words.index("-m")
        if i + 1 < len(words) and words[i + 1] == "ssconv":
            return words[i + 2 :]
    return None


def shell_commands() -> list[tuple[str, str]]:
    cases = []
    for path in DOCS:
        for line, lang, code, reason in blocks(path):
            if lang not in SHELL_LANGS or reason is not None:
                continue
            for cmd in _logical_lines(code):
                cases.append((f"{path.relative_to(ROOT)}:{line}", cmd.strip()))
    return cases


def test_docs_have_blocks_to_check():
    assert python_files(), "no ```python block found in README.md / docs"
    assert sum(ssconv_argv(c) is not None for _, c in shell_commands()) >= 8


@pytest.mark.parametrize("where, command", shell_commands(), ids=lambda v: str(v)[:60])
def test_shell_commands_parse(where, command, capsys):
    argv = ssconv_argv(command)
    words = _words(command)
    if argv is None:
        scripts = [w for w in words if w.endswith((".py", ".sh")) and "/" in w]
        if words and words[0] in {"python", "python3"} and scripts:
            assert (ROOT / scripts[0]).is_file(), f"{where}: no script {scripts[0]}"
        return
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        err = capsys.readouterr().err
        pytest.fail(f"{where}: `ssconv {shlex.join(argv)}` does not parse ({exc.code}): {err}")
    assert callable(args.func)


def test_not_tested_marker_is_honoured(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "text\n\n<!-- not-tested: needs CIFAR-10 on disk -->\n```python\nraise SystemExit(1)\n"
        "```\n\n```python\nprint(1)\n```\n"
    )
    found = blocks(doc)
    assert [(lang, reason) for _, lang, _, reason in found] == [
        ("python", "needs CIFAR-10 on disk"),
        ("python", None),
    ]
