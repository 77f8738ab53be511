"""Families of training runs: sweeps on Ray Tune and the cost/accuracy front across runs."""
