"""Keyword-spotting networks as super networks: the graphs, the window forward over feature
sequences, and the static / BSN / SANAS models with one interface, made by name from the
model registry.

Importing this package registers the built-in models (as timm's ``models/__init__.py``
does): any lookup in :mod:`sanas.kws.model.registry` sees them.
"""

from sanas.kws.model import zoo as zoo
