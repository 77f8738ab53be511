"""Custom wake words: train a detector for a phrase, evaluate it on hours of test stream."""
