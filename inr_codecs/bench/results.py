"""One schema for every benchmark results file (``benchmarks/results/*.json``), numpy and stdlib only.

A results file is one JSON object::

    {"schema": "inr-codecs.benchmark/1",
     "benchmark": "rd",                 # which benchmark: rd, siren, sci, decode_speed, throughput, ...
     "date": "2026-11-22",              # when it was measured (YYYY-MM-DD), null when unknown
     "updated": "2026-11-23",           # optional: when rows were last replaced
     "command": "python benchmarks/rd.py",   # the command line that produced it, null when unknown
     "machine": {...},                  # what it ran on (:func:`machine`)
     "settings": {...},                 # benchmark-wide settings (volume, chunks, steps, ...)
     "notes": "...",                    # optional
     "runs": [{...}, ...]}              # one dict per measurement; a file with several sections
                                        # tags each row with its "section"

Write with :func:`write` (validated, atomic), read with :func:`read` (validated).
"""
from __future__ import annotations

import json
import os
import platform
import re
import shlex
import sys
import time

import numpy as np

SCHEMA = "inr-codecs.benchmark/1"
#: Top-level keys in the order they are written; ``updated`` and ``notes`` are optional.
KEYS = ("schema", "benchmark", "date", "updated", "command", "machine", "settings", "notes", "runs")
OPTIONAL = ("updated", "notes")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def machine() -> dict:
    """What the numbers were measured on."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": sys.version.split()[0], "numpy": np.__version__}
    try:
        import torch
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    device="cuda" if torch.cuda.is_available() else "cpu")
    except ImportError:
        pass
    import zarr
    info["zarr"] = zarr.__version__
    return info


def today() -> str:
    return time.strftime("%Y-%m-%d")


def command_line(argv=None) -> str:
    """This process's command line (``python script.py --flag ...``), for the ``command`` entry."""
    argv = sys.argv if argv is None else argv
    prog = os.path.basename(argv[0]) if argv else "python"
    head = ["python", argv[0]] if prog.endswith(".py") else [prog]
    return shlex.join([*head, *argv[1:]])


def new(benchmark: str, settings: dict | None = None, command: str | None = None) -> dict:
    """Empty results of ``benchmark``, measured today on this machine; append rows to ``["runs"]``."""
    return {"schema": SCHEMA, "benchmark": benchmark, "date": today(), "command": command,
            "machine": machine(), "settings": dict(settings or {}), "runs": []}


def validate(results) -> dict:
    """``results`` itself if it follows the schema; otherwise ValueError saying what is wrong."""
    if not isinstance(results, dict):
        raise ValueError(f"benchmark results must be a JSON object, not {type(results).__name__}")
    if "schema" not in results:
        raise ValueError(f"benchmark results have no 'schema' entry (expected {SCHEMA!r})")
    if results["schema"] != SCHEMA:
        raise ValueError(f"benchmark results have schema {results['schema']!r}, expected {SCHEMA!r}")
    missing = [k for k in KEYS if k not in OPTIONAL and k not in results]
    if missing:
        raise ValueError(f"benchmark results miss {', '.join(map(repr, missing))}")
    unknown = [k for k in results if k not in KEYS]
    if unknown:
        raise ValueError(f"benchmark results have unknown top-level entries {', '.join(map(repr, unknown))} "
                         f"(allowed: {', '.join(KEYS)}; put benchmark-wide values under 'settings')")
    kinds = {"benchmark": str, "command": (str, type(None)), "machine": dict, "settings": dict, "notes": str,
             "runs": list}
    for key, kind in kinds.items():
        if key in results and not isinstance(results[key], kind):
            raise ValueError(f"benchmark results' {key!r} is a {type(results[key]).__name__}, "
                             f"expected {kind.__name__ if isinstance(kind, type) else 'str or null'}")
    if not results["benchmark"]:
        raise ValueError("benchmark results' 'benchmark' is empty")
    for key in ("date", "updated"):
        value = results.get(key)
        if value is not None and not (isinstance(value, str) and _DATE.fullmatch(value)):
            raise ValueError(f"benchmark results' {key!r} is {value!r}, expected YYYY-MM-DD or null")
    for i, row in enumerate(results["runs"]):
        if not isinstance(row, dict):
            raise ValueError(f"benchmark results' runs[{i}] is a {type(row).__name__}, expected an object")
        if "section" in row and not isinstance(row["section"], str):
            raise ValueError(f"benchmark results' runs[{i}]['section'] is {row['section']!r}, expected a string")
    return results


def write(results: dict, path) -> None:
    """Validate ``results`` and write them to ``path`` as JSON (indent 1, keys in schema order), atomically."""
    validate(results)
    ordered = {k: results[k] for k in KEYS if k in results}
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(ordered, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def read(path) -> dict:
    """The results in ``path``, validated (ValueError naming the file and the problem)."""
    with open(path) as f:
        results = json.load(f)
    try:
        return validate(results)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}") from None
