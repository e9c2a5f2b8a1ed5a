"""Data: dataset pairs (registered by name) and the datamodule that serves them.

Names are imported on first use (PEP 562), like `dann`'s: `dann.data.download` and
`dann.data.sources` (scripts/download.py) load without torch or Lightning. The pair modules
register their pairs when `get_pair` / `available_pairs` is first called (dann/data/registry.py).
"""

from dann.lazy import lazy_exports

_HOMES = {
    "dann.data.datamodule": ("DOMAINS", "DomainAdaptationDataModule", "InMemoryDataset"),
    "dann.data.registry": ("DomainData", "PairData", "Split", "available_pairs", "get_pair"),
}
__all__, __getattr__, __dir__ = lazy_exports("dann.data", _HOMES, globals())
