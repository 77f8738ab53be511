"""Keyword spotting on the budgeted super-network core, one folder per concern (see
docs/architecture.md): data, model, config, runs, streaming, evaluation, training."""
