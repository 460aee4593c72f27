"""Benchmarks (DESIGN section 10): run as modules, e.g. ``python -m bench.past_sync``; never part of the tests."""
