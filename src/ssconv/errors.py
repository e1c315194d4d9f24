"""The typed errors and warnings that callers branch on (never on message text).

Library messages describe the problem; a caller (the CLI) adds which flag fixes it.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "BudgetInfeasibleError",
    "NoConvertibleLayerError",
    "SyntheticScoringWarning",
    "Remedy",
    "RemedyError",
    "LIBRARY_NAMES",
    "render_template",
]

#: How a library message names the arguments that fix its problem (``{resume}`` in a
#: :class:`Remedy` template); a caller with other means renders its own (the CLI: ``--resume``).
LIBRARY_NAMES: dict[str, str] = {
    "out": "out",
    "resume": "resume=True",
    "overwrite": "overwrite=True",
    "allow_schedule_change": "allow_schedule_change=True",
    "epochs": "epochs",
    "pretrained": "pretrained=True",
    "init_checkpoint": "init_checkpoint=PATH",
}


def render_template(
    template: str, values: Mapping[str, object], names: Mapping[str, str] | None = None
) -> str:
    """``template`` with its argument fields named by ``names`` (default :data:`LIBRARY_NAMES`)
    and its other fields filled from ``values``."""
    return template.format_map({**LIBRARY_NAMES, **(names or {}), **values})


class Remedy:
    """A message that names the arguments fixing its problem as ``{name}`` fields of a template.

    ``str()`` renders them with :data:`LIBRARY_NAMES` (``resume=True``); :meth:`render` with a
    caller's names (the CLI passes ``{"resume": "--resume", ...}``). The message's own values
    (paths, numbers) are ``values``, substituted as they are.
    """

    def __init__(self, template: str, **values) -> None:
        self.template = template
        self.values = values
        super().__init__(self.render())

    def render(self, names: Mapping[str, str] | None = None) -> str:
        return render_template(self.template, self.values, names)

    def __reduce__(self):  # pickles (multiprocessing) keep the template, not the rendering
        return _rebuild, (type(self), self.template, self.values)


def _rebuild(cls, template: str, values: dict):
    return cls(template, **values)


class RemedyError(Remedy, ValueError):
    """A :class:`Remedy` that is a ``ValueError`` (bad arguments for the situation)."""


class BudgetInfeasibleError(ValueError):
    """A density / weight budget that the structure cannot meet.

    ``problem`` says what holds the weights; ``hint`` (may be empty) how to fix it through the
    library's arguments. ``str(exc)`` is ``"problem; hint"``.
    """

    def __init__(self, problem: str, hint: str = "") -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}" if hint else problem)


class NoConvertibleLayerError(ValueError):
    """The selection rules leave no layer to convert, replace or prune."""


class SyntheticScoringWarning(UserWarning):
    """A data-driven pruning method scored synthetic batches because no data was given.

    ``problem`` says what was scored; ``str(w)`` adds the library's fix (``pass data=...``),
    a caller with other means of passing data (the CLI's ``--dataset``) says its own.
    """

    def __init__(self, problem: str, hint: str = "pass data=...") -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(f"{problem}; {hint}" if hint else problem)
