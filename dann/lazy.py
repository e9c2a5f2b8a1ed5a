"""`lazy_exports`: a package's public names imported on first use (PEP 562), so importing the
package loads none of the heavy modules (torch, Lightning) its names live in."""

import importlib
from collections.abc import Callable


def lazy_exports(
    package: str, homes: dict[str, tuple[str, ...]], namespace: dict
) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """`__all__`, `__getattr__` and `__dir__` for `package`, whose names live in the modules
    `homes` maps to them; a looked-up name is stored in `namespace` (the package's globals)."""
    home_of = {name: module for module, names in homes.items() for name in names}
    names = sorted(home_of)

    def __getattr__(name: str):
        if name not in home_of:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home_of[name]), name)
        namespace[name] = value  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return names, __getattr__, __dir__
