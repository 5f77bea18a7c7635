"""The optimizer: one pass per file, a pass manager, and the default pipeline."""
from . import block_edges, collapse_chains, dce, dedupe, layerize, verify_pass  # noqa: F401 (registration)
from .manager import REGISTRY, Options, Pass, PassError, PassFailure, parse_pipeline, run_pipeline

DEFAULT_PIPELINE = "collapse-chains,dce,dedupe,layerize,block-edges"

__all__ = ["REGISTRY", "Options", "Pass", "PassError", "PassFailure", "parse_pipeline", "run_pipeline",
           "DEFAULT_PIPELINE"]
