"""Quality measures, with the conventions the project reports in."""
from __future__ import annotations

import numpy as np


def psnr(original: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR in dB with peak = max - min of the original (not the dtype's maximum)."""
    x = np.asarray(original, np.float64)
    mse = float(np.mean((x - np.asarray(decoded, np.float64)) ** 2))
    peak = float(x.max() - x.min())
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse)) if peak > 0 else float("-inf")
