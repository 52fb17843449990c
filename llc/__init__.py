"""llc: the local learning coefficient λ̂ of a trained model, for any array framework.

``llc.estimate(loss_fn, params, data)`` samples the localized tempered posterior around
w* = ``params`` and returns λ̂ with MCMC diagnostics; ``llc.estimate_trajectory`` does so at
every checkpoint of a training run; ``llc.calibrate`` runs short chains over a grid of step
sizes (× nβ × γ) and recommends a step size by documented rules. The backend (NumPy,
PyTorch, ...) is chosen per call from the parameters' type; importing llc imports no
deep-learning framework.
"""

from ._backend import Backend, array_namespace, available_backends, get_backend
from ._estimate import default_nbeta, estimate
from ._restrict import ComponentMask
from ._version import __version__
from .posterior import LocalizedPosterior
from .diagnostics import (ChainFailureWarning, Finding, HealthThresholds, LLCHealthWarning,
                          check_health)
from ._errors import AllChainsFailedError
from .result import IncompleteRunWarning, LLCResult
from .trajectory import TrajectoryError, TrajectoryResult, estimate_trajectory
from .io import load
from .calibration import CalibrationResult, CalibrationWarning, calibrate
from .slt_observables import Observables, observables
from .influence import influence, susceptibilities
from . import plots, samplers  # plots: the drawers of result.plot(); no matplotlib yet

__all__ = [
    "__version__",
    "estimate",
    "estimate_trajectory",
    "calibrate",
    "CalibrationResult",
    "CalibrationWarning",
    "default_nbeta",
    "LLCResult",
    "TrajectoryResult",
    "TrajectoryError",
    "load",
    "AllChainsFailedError",
    "ChainFailureWarning",
    "IncompleteRunWarning",
    "LLCHealthWarning",
    "Finding",
    "HealthThresholds",
    "check_health",
    "LocalizedPosterior",
    "ComponentMask",
    "Backend",
    "get_backend",
    "available_backends",
    "array_namespace",
    "samplers",
    "plots",
    "observables",
    "influence",
    "susceptibilities",
    "Observables",
    "problems",
]


def __getattr__(name: str):
    if name == "problems":  # imported on first use: it is not needed to estimate
        import importlib

        return importlib.import_module(".problems", __name__)
    raise AttributeError(f"module 'llc' has no attribute {name!r}")
