#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine (Python alone) and then runs a job:
#   ./run.sh demo   - the main job: compile a model through every stage and report on it
#   ./run.sh test   - the test suite (CPU only; Triton kernels run in its interpreter)
# The virtual environment lives in .venv (override with PCC_VENV); setup is skipped when up to date.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PCC_VENV:-.venv}"
stamp="$venv/.pcc-installed"

setup() {
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip
        # CPU build of torch first: a plain 'torch' requirement would pull several GB of CUDA wheels.
        if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
            "$venv/bin/python" -m pip install -q "torch==2.13.0" || "$venv/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
        fi
        "$venv/bin/python" -m pip install -q -e ".[test]"
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        setup
        shift
        exec "$venv/bin/python" -m pcc.demo "$@"
        ;;
    test)
        setup
        shift
        TRITON_INTERPRET=1 exec "$venv/bin/python" -m pytest -q "$@"
        ;;
    *)
        echo "usage: ./run.sh demo|test [args...]" >&2
        exit 1
        ;;
esac
