"""Measurements the experiments take inside training runs, as bnlab.train probes.

Each submodule registers its probes with ``bnlab.train.probes.register_probe`` when imported; a
config names them by spec string (e.g. ``"ics:blocks.1.op"``), so they run in the sweep's worker
processes and their metrics are stored with the run. ``bnlab.train.probes.make_probe`` imports
this package when a spec names a probe it does not know yet. Add a submodule's import here.
"""

# imported for the probes they register
from . import (
    ics,  # noqa: F401  (C6)
    landscape,  # noqa: F401  (C7)
    precise_eval,  # noqa: F401  (C11: EMA vs PreciseBN)
    shift_eval,  # noqa: F401  (C13, C14: adaptation to shifted data)
)
