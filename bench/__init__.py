"""The benchmark harness: `python -m bench.run --size smoke|full`. See BENCHMARKS.md."""
