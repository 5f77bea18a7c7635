"""The circuit IR: block records, tensors, ``.pcir`` text, verifier and the reference interpreter."""
from .circuit import (Block, Circuit, Domain, InputBlock, ProdBlock, SumBlock, Tensor, Variable,
                      scopes)
from .diagnostics import Diagnostic, Loc, UserError
from .interpret import log_likelihood, node_values
from .parser import parse_file, parse_text
from .printer import print_circuit, to_text
from .verify import VerifyError, verify

__all__ = ["Block", "Circuit", "Domain", "InputBlock", "ProdBlock", "SumBlock", "Tensor", "Variable",
           "scopes", "Diagnostic", "Loc", "UserError", "log_likelihood", "node_values", "parse_file",
           "parse_text", "print_circuit", "to_text", "VerifyError", "verify"]
