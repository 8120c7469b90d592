"""Tooling modules (the benchmark, the sample-volume fetcher) import only with their extra."""
from __future__ import annotations

import importlib.util


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):   # ValueError: sys.modules[name] is None or has no __spec__
        return False


def require(module: str, extra: str, names: tuple[str, ...]) -> None:
    """Raise ImportError naming ``extra`` unless every module of ``names`` is installed."""
    missing = [name for name in names if not _installed(name)]
    if missing:
        raise ImportError(f"{module} needs the '{extra}' extra: pip install 'inr-codecs[{extra}]' "
                          f"(missing: {', '.join(missing)})")
