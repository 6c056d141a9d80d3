"""Pieces of ``scripts/bench.py``: interleaved step timing, host-op counts, the plain baseline loop, machine facts."""
