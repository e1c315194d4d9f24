"""``ssconv kernels [build]`` and ``ssconv --version``: the fused kernel's status, never a
surprise build (the loader is faked: no compiler runs here)."""

import json

import pytest

from ssconv.cli.main import main
from ssconv.kernels import fused

REAL_LOAD = fused._load


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No kernel tried in this process, an empty build folder, the tools present; the real
    loader fails the test if called."""
    monkeypatch.delenv("SSCONV_NO_FUSED", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr(fused, "_tried", False)
    monkeypatch.setattr(fused, "_module", None)
    monkeypatch.setattr(fused, "_error", None)
    monkeypatch.setattr(fused, "_missing_tool", lambda: None)
    monkeypatch.setattr(fused.sys, "platform", "linux")

    def no_build(*args, **kwargs):
        raise AssertionError("must not build or load the kernel")

    monkeypatch.setattr(fused, "_load", no_build)
    return monkeypatch


def fake_loader(monkeypatch, error=None):
    calls = []

    def load():
        calls.append(1)
        fused._tried = True
        fused._error = error
        fused._module = None if error else object()
        return fused._module

    monkeypatch.setattr(fused, "_load", load)
    return calls


def test_kernels_reports_not_built_without_building(fresh, capsys):
    assert main(["kernels"]) == 0
    out = capsys.readouterr().out.splitlines()
    _, build_dir, _ = fused._build_spec()
    assert out[0].startswith("fused CPU kernel: not built (would compile on first use")
    assert out[1] == f"  build folder: {build_dir}"
    assert out[2].startswith("  CPU capability: ")
    assert not build_dir.exists()
    assert main(["kernels", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "not built" and data["build_dir"] == str(build_dir)


def test_kernels_disabled_by_env(fresh, capsys):
    fresh.setenv("SSCONV_NO_FUSED", "1")
    assert main(["kernels"]) == 0
    assert capsys.readouterr().out.startswith("fused CPU kernel: disabled by SSCONV_NO_FUSED")
    fresh.setattr(fused, "_load", REAL_LOAD)  # it stops at the variable, before any build
    assert main(["kernels", "build"]) == 2
    assert "disabled by SSCONV_NO_FUSED" in capsys.readouterr().err


def test_kernels_build_calls_the_loader_once(fresh, capsys):
    calls = fake_loader(fresh)
    assert main(["kernels", "build"]) == 0
    out = capsys.readouterr().out
    assert calls == [1]
    assert out.startswith("fused CPU kernel: built\n") and "build folder: " in out


def test_kernels_build_failure_exits_2_with_the_reason(fresh, capsys):
    calls = fake_loader(fresh, error="ninja not found (pip install ninja)")
    assert main(["kernels", "build"]) == 2
    err = capsys.readouterr().err
    assert calls == [1]
    assert "could not be built: ninja not found (pip install ninja)" in err
    assert main(["kernels", "build", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "unavailable" and "ninja" in data["reason"]


def test_version_shows_the_kernel_status_without_building(fresh, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("ssconv ") and out[1].startswith("fused CPU kernel: not built")
