"""The machine: plan, Triton kernel templates, codegen and runtime (see the backend issue)."""
