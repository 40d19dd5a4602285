"""The parts of scripts/bench.py (see its docstring)."""
