"""A callable's keyword arguments read from its source file, without importing it.

The config check names the closest valid argument of a `_target_` (`+trainer.max_epoch=3`:
did you mean max_epochs?) before the heavy imports: importing `pytorch_lightning.Trainer` to
read its signature takes longer than the whole check should. `source_arguments` parses the
module with `ast` instead, following `from x import Name` re-exports (a package's
`__init__.py`) a few hops. It answers None when it cannot tell (a C extension, a dynamic
definition, `**kwargs`): the caller then imports the target as before.
"""

import ast
from importlib.util import find_spec, resolve_name
from pathlib import Path

MAX_HOPS = 6


def _module_file(module: str) -> Path | None:
    """The module's .py file, found without importing it or its parent packages."""
    top, *rest = module.split(".")
    try:
        spec = find_spec(top)  # a top-level name: nothing is imported
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    for part in rest:
        if path.name != "__init__.py":
            return None
        package = path.parent / part
        path = package / "__init__.py" if package.is_dir() else path.parent / f"{part}.py"
        if not path.is_file():
            return None
    return path


def _init_arguments(node: ast.FunctionDef | ast.ClassDef) -> set[str] | None:
    if isinstance(node, ast.ClassDef):
        inits = [n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"]
        if len(inits) != 1:
            return None  # inherited or overloaded: the import tells
        node = inits[0]
    args = node.args
    if args.kwarg is not None:
        return None
    names = {a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)}
    return names - {"self"}


def source_arguments(target: str, hops: int = MAX_HOPS) -> set[str] | None:
    """The keyword arguments of `target` ("package.module.Name"), or None when unknown."""
    module, _, name = target.rpartition(".")
    path = _module_file(module) if module and hops > 0 else None
    if path is None:
        return None
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return _init_arguments(node)
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = "." * node.level + (node.module or "")
                    try:
                        origin = resolve_name(source, package) if node.level else source
                    except (ImportError, ValueError):
                        return None
                    return source_arguments(f"{origin}.{alias.name}", hops - 1)
    return None
