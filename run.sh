#!/usr/bin/env bash
# One entry point that sets everything up on a fresh machine (Python alone) and then runs a job:
#   ./run.sh demo   - the main job: compile a model and train it on real data (scikit-learn's digits)
#   ./run.sh test   - the test suite (CPU only; Triton kernels run in its interpreter)
# The virtual environment lives in .venv (override with PCC_VENV); setup is skipped when up to date.
set -euo pipefail
cd "$(dirname "$0")"
venv="${PCC_VENV:-.venv}"

setup() {  # setup EXTRAS: install pcc with the given extras (test, demo) unless already done
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    stamp="$venv/.pcc-installed-$1"
    if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip
        # CPU build of torch first: a plain 'torch' requirement would pull several GB of CUDA wheels.
        if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
            "$venv/bin/python" -m pip install -q "torch==2.13.0" || "$venv/bin/python" -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
        fi
        "$venv/bin/python" -m pip install -q -e ".[$1]"
        touch "$stamp"
    fi
}

case "${1:-}" in
    demo)
        setup demo
        shift
        exec "$venv/bin/python" -m pcc.demo "$@"
        ;;
    test)
        setup test
        shift
        TRITON_INTERPRET=1 exec "$venv/bin/python" -m pytest -q "$@"
        ;;
    *)
        echo "usage: ./run.sh demo|test [args...]" >&2
        exit 1
        ;;
esac
