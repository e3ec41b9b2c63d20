"""Benchmarks: our path and the peer baseline side by side, results in bench/results/*.json."""
