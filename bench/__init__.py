"""Benchmark harness for the featurization job (issue 5): `python -m bench.run --n 2000`."""
