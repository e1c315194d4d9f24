"""Module surgery: replace a submodule by its dotted name, or retype modules in place."""

from __future__ import annotations

from torch import nn

__all__ = ["replace_module", "retype_modules"]


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule called ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def retype_modules(model: nn.Module, old: type, new: type) -> int:
    """Make every module of ``model`` whose type is exactly ``old`` an instance of ``new`` (a
    subclass of ``old`` that adds no state: the same parameters, buffers and ``state_dict``);
    returns how many changed. Subclasses of ``old`` are left alone."""
    changed = 0
    for module in model.modules():
        if type(module) is old:
            module.__class__ = new
            changed += 1
    return changed
