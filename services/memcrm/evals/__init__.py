"""Benchmarks of memcrm through its real API, each beside baselines computed in the same run."""
