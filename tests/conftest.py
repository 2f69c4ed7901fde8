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
