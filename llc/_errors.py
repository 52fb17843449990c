"""Errors, warnings and findings: the bottom layer every other module may import.

Re-exported where users meet them: ``llc`` (all of them), ``llc.diagnostics`` (``Finding``
and the health warnings), ``llc.result`` (``IncompleteRunWarning``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AllChainsFailedError", "ChainFailureWarning", "Finding", "IncompleteRunWarning",
           "LLCHealthWarning"]


@dataclass(frozen=True)
class Finding:
    """One problem found in a result.

    Attributes
    ----------
    code
        Stable kebab-case identifier, e.g. ``"negative-llc"``: match on it, not on the text.
    message
        What went wrong, with the numbers.
    chains
        Indices of the chains concerned; empty when the finding is about the estimate as a
        whole.
    suggestion
        A concrete change to make, e.g. "lower `step_size` from 0.01 to ~0.003".
    """

    code: str
    message: str
    chains: tuple[int, ...]
    suggestion: str

    def __str__(self) -> str:
        return f"[{self.code}] {self.message} Suggestion: {self.suggestion}"


class LLCHealthWarning(UserWarning):
    """A health check found a problem with an λ̂ estimate (see :func:`llc.check_health`)."""


class ChainFailureWarning(LLCHealthWarning):
    """Some chains diverged or raised and were left out of λ̂ (finding ``non-finite``)."""


class IncompleteRunWarning(UserWarning):
    """The run was interrupted: the result holds the draws taken so far."""


class AllChainsFailedError(RuntimeError):
    """Every chain of an estimate diverged or raised: there is no λ̂.

    A ``RuntimeError`` (as before it had its own class); the message names each chain's
    error, and the first error is the ``__cause__``.
    """
