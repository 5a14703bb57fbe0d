"""Benchmarks: `python -m bench.run [--quick] [--parts 1,4,5]` runs the suite and renders docs/benchmarks.md."""
