"""sanas: budgeted, input-adaptive neural architecture search.

Layers:
- ``sanas.supernet``: the general core (graph, executors, costs, distributions,
  estimators, budgets). It knows nothing about audio.
- ``sanas.kws``: keyword spotting on top of it (data, features, models, streaming).
- ``sanas.cli``: a thin command line over both.
"""

__version__ = "0.1.0"
