import ctypes
import ctypes.util
import sys

import pytest

from ssconv.utils import malloc
from ssconv.utils.timing import machine_info


def _glibc() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(malloc, "_done", None)
    monkeypatch.delenv("SSCONV_NO_MALLOC_TUNING", raising=False)


@pytest.mark.skipif(not _glibc(), reason="glibc's mallopt only")
def test_tune_malloc_applies_once_and_is_recorded(fresh):
    assert not malloc.tuned()
    assert malloc.tune_malloc() is True
    assert malloc.tuned() and malloc.tune_malloc() is True
    assert machine_info()["malloc_tuned"] is True


def test_tune_malloc_can_be_turned_off(fresh, monkeypatch):
    monkeypatch.setenv("SSCONV_NO_MALLOC_TUNING", "1")
    assert malloc.tune_malloc() is False
    assert not malloc.tuned()
    assert machine_info()["malloc_tuned"] is False


def test_tune_malloc_does_nothing_off_linux(fresh, monkeypatch):
    monkeypatch.setattr(malloc.sys, "platform", "darwin")
    assert malloc.tune_malloc() is False


def test_the_command_tunes_malloc_on_start(fresh, monkeypatch, capsys):
    from ssconv.cli import main as cli

    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(1))
    assert cli.main(["models"]) == 0
    assert calls == [1]
