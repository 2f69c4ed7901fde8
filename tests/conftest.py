import os

from hypothesis import HealthCheck, settings

# Parity tests run torch ops whose first call is slow, so no per-example deadline. In CI the
# examples are derandomized so a run is reproducible; locally each run explores new cases.
settings.register_profile(
    "bnlab",
    deadline=None,
    max_examples=int(os.environ.get("BNLAB_HYPOTHESIS_EXAMPLES", "120")),
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("bnlab")

# Without a GPU, bnlab's Triton kernels run in Triton's interpreter (tests/test_triton_backend.py).
# Triton reads this as it is imported, which torch.compile does early in a session, so it is set here.
if "TRITON_INTERPRET" not in os.environ:
    import torch

    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"

import pytest


@pytest.fixture(scope="session")
def demos():
    """The report's demos, measured once per test session (a few seconds)."""
    from bnlab import demos as demo_module

    return demo_module.run()


@pytest.fixture(scope="session")
def lab():
    """Every experiment's real analysis over synthetic quick-sweep runs (report_fixtures.lab_results)."""
    from report_fixtures import lab_results

    return lab_results()
