"""Shared fixtures: example paths, the shared data folder, CPU-only defaults."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CI has no GPU: kernels run in Triton's interpreter

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.pc"))
SHARED_DATA = Path(os.environ.get("PCC_DATA", ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Skip tests marked ``gpu`` when CUDA is absent."""
    try:
        import torch
        has_cuda = torch.cuda.is_available()
    except Exception:
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (or $PCC_DATA); tests using it skip clearly when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder not found at {SHARED_DATA} (set PCC_DATA)")
    return SHARED_DATA
