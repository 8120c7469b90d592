"""Checks of constructor arguments (codecs and fitting options), each raising ValueError with a
message that names the argument and the value it was given.

* Integers: ``int`` or numpy integers, or a float with an integral value (``steps=1e4``);
  never ``bool`` nor a fractional float (no silent truncation), nor a string.
* Real numbers: ``int``, ``float`` or numpy numbers, finite; never ``bool`` nor a string.
  ``f32=True``: the payloads store the value as float32, so the float32 value must satisfy
  the same bounds (finite: at most ``F32_MAX`` in magnitude; nonzero where zero is excluded).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

#: Largest finite float32 (a value stored as float32 must not exceed it in magnitude).
F32_MAX = float(np.finfo(np.float32).max)


def _is_bool(value) -> bool:
    return isinstance(value, (bool, np.bool_))


def integer(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as a Python int, checked to be an integer in ``lo..hi`` (either bound optional)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    if not isinstance(value, numbers.Integral):
        if not (math.isfinite(float(value)) and float(value).is_integer()):
            raise ValueError(f"{name} must be an integer, not {value!r} (fractional values are not truncated)")
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        if hi is None:
            raise ValueError(f"{name} must be an integer >= {lo}, not {value!r}")
        if lo is None:
            raise ValueError(f"{name} must be an integer <= {hi}, not {value!r}")
        raise ValueError(f"{name} must be an integer in {lo}..{hi}, not {value!r}")
    return v


def real(name: str, value, *, above: float | None = None, at_least: float | None = None,
         below: float | None = None, f32: bool = False) -> float:
    """``value`` as a Python float, checked to be a finite real number with ``value > above``,
    ``value >= at_least`` and ``value < below`` (each optional). ``f32``: stored as float32 in
    payloads, so its float32 value must be finite and within the same bounds; the float64 value
    is returned (what the user gave, for the configuration)."""
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, not {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, not {value!r}")
    if f32 and abs(v) > F32_MAX:
        raise ValueError(f"{name} must be at most {F32_MAX:.8g} in magnitude (payloads store it as float32), "
                         f"not {value!r}")
    checked = (v, float(np.float32(v))) if f32 else (v,)
    for x in checked:
        if above is not None and not x > above:
            raise ValueError(f"{name} must be > {above:g}, not {value!r}"
                             + (" (0 as float32, which payloads store)" if x != v else ""))
        if at_least is not None and not x >= at_least:
            raise ValueError(f"{name} must be >= {at_least:g}, not {value!r}")
        if below is not None and not x < below:
            raise ValueError(f"{name} must be < {below:g}, not {value!r}")
    return v


def boolean(name: str, value) -> bool:
    """``value`` checked to be True or False (a Python or numpy bool)."""
    if not _is_bool(value):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return bool(value)


def f32(value: float) -> float:
    """The float32 value of a checked ``real(..., f32=True)`` argument (what payloads store and
    the fit uses, so that the encoder trains the network the decoder evaluates)."""
    return float(np.float32(value))
