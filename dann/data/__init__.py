"""Data: dataset pairs (registered by name) and the datamodule that serves them.

Names are imported on first use (PEP 562), like `dann`'s: `dann.data.download` and
`dann.data.sources` (scripts/download.py) load without torch or Lightning. The pair modules
register their pairs when `get_pair` / `available_pairs` is first called (dann/data/registry.py).
"""

import importlib

_HOMES = {
    "dann.data.datamodule": ("DOMAINS", "DomainAdaptationDataModule", "InMemoryDataset"),
    "dann.data.registry": ("DomainData", "PairData", "Split", "available_pairs", "get_pair"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module 'dann.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
