"""Streaming inference: audio chunks in, one posterior row per 200 ms step out, computing
only what is new (incremental features, row caches, real skipping)."""
