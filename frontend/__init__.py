"""The .pc language: grammar (pc.lark), parser, AST with source locations, semantic checks, AST→IR."""
from .ast import Program, dump
from .lower import load_file, load_text
from .parse import parse_source

__all__ = ["Program", "dump", "load_file", "load_text", "parse_source"]
