"""The models that ship with vqkit: their folders (``models/NAME/``), the SHA-256 registry
(``registry.json``) and their cards.

Loading, hash checks and name resolution live in :mod:`vqkit.runs.shipped` (every command that takes
a run goes through it); this package holds the data and renders the cards (``vqkit models``,
docs/models.md). Each model is rebuilt from its recipe by ``benchmarks/zoo/zoo.py train NAME``.
"""

from vqkit.runs.shipped import ShippedModel, get, registry, verify
from vqkit.zoo.cards import CARD_FORMAT, listing, render_card, render_docs

__all__ = [
    "CARD_FORMAT",
    "ShippedModel",
    "get",
    "listing",
    "registry",
    "render_card",
    "render_docs",
    "verify",
]
