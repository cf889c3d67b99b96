"""PEFT methods: one module each, a spec dataclass and an ``apply`` function.

See ``registry.py`` for the interface and the list.
"""
from autopeft.methods.registry import METHODS, Method, check_combination, get_method, make_spec

__all__ = ["METHODS", "Method", "check_combination", "get_method", "make_spec"]
