"""Kernels compiled for an H100 (sm_90) on a machine without one, to read what their accesses became.

The tests run Triton's interpreter (``TRITON_INTERPRET=1``), which compiles nothing, so the compilation runs in a
subprocess without it; Triton's CUDA backend produces PTX with no GPU present.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

_SCRIPT = r"""
import json, sys, importlib, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
module, kernel, sig, variants, divisible = json.loads(sys.argv[1])
fn = getattr(importlib.import_module(module), kernel)
out = []
for constexprs in variants:
    full = {**sig, **{k: "constexpr" for k in constexprs}}
    attrs = {(list(full).index(n),): [["tt.divisibility", 16]] for n in divisible}
    src = ASTSource(fn, full, constexprs=constexprs, attrs=attrs)
    out.append(triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ptx"])
print(json.dumps(out))
"""


def ptx(module: str, kernel: str, sig: dict[str, str], variants: list[dict], divisible: list[str]) -> list[str]:
    """The PTX of ``module.kernel`` for each dict of constexpr values in ``variants``; ``sig`` types the other
    arguments (``"*fp32"``, ``"i32"``, ...), and the arguments named in ``divisible`` are 16-byte aligned, as
    Triton assumes of a torch tensor's pointer."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    arg = json.dumps([module, kernel, sig, variants, divisible])
    out = subprocess.run([sys.executable, "-c", _SCRIPT, arg], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)
