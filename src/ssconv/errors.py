"""The typed errors and warnings that callers branch on (never on message text).

Library messages describe the problem; a caller (the CLI) adds which flag fixes it.
"""

from __future__ import annotations

__all__ = ["BudgetInfeasibleError", "NoConvertibleLayerError", "SyntheticScoringWarning"]


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
