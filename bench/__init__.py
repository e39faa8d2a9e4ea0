"""Benchmarks that print figures and ratios (never asserts): `python -m bench NAME`."""
