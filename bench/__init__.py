"""vatic's benchmarks: ``make bench`` (see bench/README.md and bench/run.py)."""
