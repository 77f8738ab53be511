"""Keyword-spotting networks as super networks: the graphs, the window forward over feature
sequences, and the static / BSN / SANAS models with one interface."""
