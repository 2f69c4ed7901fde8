# Sourced by scripts/report and scripts/test: makes .venv (once) and installs bnlab into it with the
# pins of constraints.txt. $EXTRAS names the pip extras to install: "lab" for the report (the
# experiments, the report and distributed sweeps), "lab,test" for the tests; "" is the library alone.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setting up .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
extras=${EXTRAS:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
# Re-installing is quick when nothing changed; -c keeps torch on the pinned CPU build.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec"
