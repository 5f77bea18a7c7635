#!/usr/bin/env bash
# Sets up a bare GPU machine (torch and triton installed, no network) for the benchmarks and GPU tests.
# Source it from the repository root:  . bench/device_setup.sh
#
# * wheels in .whl/ (pyjuice 2.6.3, nvidia-cutlass, lark, tqdm; numba only where the machine lacks it)
#   and pcc itself go to $PCC_SITE (default /tmp/site), which is put on PYTHONPATH;
# * PyJuice's CUDA extensions build into $TORCH_EXTENSIONS_DIR (/tmp/torch_ext). A build saved from an
#   earlier machine (.whl/pj_ext.tgz, made by `pj_ext_save DIR`) is unpacked there and reused: the
#   installed sources are dated back first, since ninja rebuilds whatever is older than its sources.
# * MNIST's test images are looked for in .data/ (copy them there before the call; ../shared does not travel).
# * GPU tests: run pytest from outside the repository, e.g. `(R=$PWD; cd /tmp && python3 -P -m pytest -q
#   $R/tests/test_gpu.py)`: from its root, the repository's pcc/ folder shadows the installed package (whose
#   pcc.frontend, pcc.backend, ... come from the top-level folders), and the tests fail to import.
set -e
export PCC_SITE="${PCC_SITE:-/tmp/site}"
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-/tmp/torch_ext}"
export PYTHONUNBUFFERED=1 MAX_JOBS="${MAX_JOBS:-16}" TORCH_CUDA_ARCH_LIST=9.0a
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$PCC_SITE" .whl/*.whl
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$PCC_SITE" . 2>/dev/null
export PYTHONPATH="$PCC_SITE"
find "$PCC_SITE" -exec touch -h -d 2020-01-01 {} +
if [ -f .whl/pj_ext.tgz ]; then
    mkdir -p "$TORCH_EXTENSIONS_DIR" && tar xzf .whl/pj_ext.tgz -C "$TORCH_EXTENSIONS_DIR"
fi
export MNIST="$PWD/.data/t10k-images-idx3-ubyte.gz"
set +e

pj_ext_build() {  # builds (or loads) PyJuice's four CUDA extensions; prints which are available
    python3 - <<'EOF'
import time
t = time.perf_counter()
from pyjuice.layer.kernels import c  # the four the harness's batch sizes use (not the batch < 16 ones)
from pyjuice.layer.kernels.c import input_layers as ci
got = [c.is_available(), c.ele_is_available(), c.par_is_available(), ci.cat_backward_is_available()]
print("pyjuice CUDA extensions (fwd, ele, par, cat):", got, f"{time.perf_counter() - t:.0f} s", flush=True)
EOF
}

pj_ext_save() {  # pj_ext_save DIR: the extension builds as DIR/pj_ext.tgz, for .whl/ on the next machine
    tar czf "$1/pj_ext.tgz" -C "$TORCH_EXTENSIONS_DIR" . && ls -la "$1/pj_ext.tgz"
}
