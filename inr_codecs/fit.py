"""The fitting loop: trains a network's float32 parameters to a chunk with torch.

torch is imported here, lazily, and only compression reaches this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .nn import grid_coords
from .quant import quantise_xp

OPTIMIZERS = ("adam", "adamax")
SCHEDULES = ("cosine", "constant")


@dataclass(frozen=True)
class FitConfig:
    """How a network is trained. See ``SIRENCodec`` for the meaning and defaults of each field."""

    steps: int = 1000
    batch_size: int = 16384
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    qat_fraction: float = 0.1
    device: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, not {self.steps}")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, not {self.lr}")
        if self.lr_schedule not in SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {SCHEDULES}, not {self.lr_schedule!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if not 0 <= self.qat_fraction < 1:
            raise ValueError(f"qat_fraction must be in [0, 1), not {self.qat_fraction}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', not {self.device!r}")


def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError(
            "compressing with inr-codecs needs PyTorch (decoding does not): "
            "pip install 'inr-codecs[fit]' or see https://pytorch.org") from e
    return torch


def resolve_device(device: str) -> str:
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} was requested but torch sees no CUDA device")
    return device


def _fake_quantise(w, bits):
    """Straight-through quantisation: forward sees what the decoder will, gradients pass as is."""
    q, step = quantise_xp(_torch(), w.detach(), bits)
    return w + (q * step - w).detach()


def fit(forward, params: list[np.ndarray], target: np.ndarray, shape: tuple[int, ...],
        cfg: FitConfig, bits: int | None = None, steps: int | None = None) -> list[np.ndarray]:
    """Train ``params`` so that ``forward(torch, params, coords)`` matches ``target``.

    target: float32 values of the chunk in C order, flattened, already normalised.
    bits: if given, the last ``qat_fraction`` of the steps train through fake quantisation.
    steps: overrides ``cfg.steps`` (pilot runs). Returns float32 numpy parameters.
    """
    torch = _torch()
    device = resolve_device(cfg.device)
    steps = cfg.steps if steps is None else steps
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    n = target.size
    full = n <= cfg.batch_size
    y_all = torch.from_numpy(np.ascontiguousarray(target, np.float32)).to(device)
    # coordinates of every voxel, kept on the device unless the chunk is huge (then per batch)
    x_all = torch.from_numpy(grid_coords(shape, np.arange(n))).to(device) if n <= max(cfg.batch_size, 2**22) else None
    ps = [torch.tensor(p, device=device, requires_grad=True) for p in params]
    opt_cls = {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[cfg.optimizer]
    opt = opt_cls(ps, lr=cfg.lr)
    qat_from = steps - int(round(cfg.qat_fraction * steps)) if bits is not None else steps
    for step in range(steps):
        if cfg.lr_schedule == "cosine":
            lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
            for g in opt.param_groups:
                g["lr"] = lr
        if full:
            x, y = x_all, y_all
        else:
            idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
            x = (x_all[idx.to(device)] if x_all is not None
                 else torch.from_numpy(grid_coords(shape, idx.numpy())).to(device))
            y = y_all[idx.to(device)]
        use = [_fake_quantise(p, bits) for p in ps] if step >= qat_from else ps
        loss = torch.mean((forward(torch, use, x)[..., 0] - y) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [p.detach().cpu().numpy().astype(np.float32) for p in ps]
