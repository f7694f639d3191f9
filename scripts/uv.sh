#!/usr/bin/env bash
# Makes sure uv is installed in .tools/uv at the version and hashes of scripts/uv-requirements.txt
# (from PyPI, `pip install --require-hashes`), then runs it with the given arguments:
#     scripts/uv.sh lock             refresh uv.lock after a change to pyproject.toml (make lock)
#     scripts/uv.sh lock --upgrade   move every package to its newest allowed release
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REQUIREMENTS=scripts/uv-requirements.txt
want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ ! -x .tools/uv/bin/uv ] || [ "$(cat .tools/uv/.installed 2>/dev/null)" != "$want" ]; then
    echo "setup: installing uv into .tools/uv" >&2
    rm -rf .tools/uv
    "$PY" -m venv .tools/uv
    .tools/uv/bin/pip install -q --no-deps --require-hashes -r "$REQUIREMENTS"
    echo "$want" > .tools/uv/.installed
fi
# Never a Python of uv's own: the machine's interpreter is the one preflight is tested with.
UV_PYTHON_DOWNLOADS=never exec .tools/uv/bin/uv "$@"
