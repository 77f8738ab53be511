"""Training a keyword-spotting model into a run folder: the loop and its objectives."""
