"""Training, the results store and sweeps (API in each module's docstring):

* :class:`RunConfig` (:mod:`.config`) -- one run, declared; its ``key()`` identifies it in a store;
* :func:`train` (:mod:`.trainer`) -- runs a config, returns a :class:`RunResult` (:mod:`.result`);
* :class:`Store` (:mod:`.store`) -- SQLite results store, crash-safe, shared by processes;
* :func:`run_sweep` (:mod:`.sweep`) -- runs a list of configs on worker processes into a store;
* :mod:`.probes` -- activation percentiles, gradient norms and custom measurements;
* :mod:`.distributed` -- data-parallel runs (DDP, SyncBN); :mod:`.overhead` -- trainer vs a bare loop.
"""

from .config import RunConfig
from .probes import Probe, StepContext, register_probe
from .result import RunResult
from .store import Store
from .sweep import SweepError, SweepProgress, run_sweep
from .trainer import build_model, evaluate, train

__all__ = [
    "RunConfig",
    "RunResult",
    "train",
    "build_model",
    "evaluate",
    "Probe",
    "StepContext",
    "register_probe",
    "Store",
    "run_sweep",
    "SweepProgress",
    "SweepError",
]
