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


def _fake_quantise(w, bits, batched=False):
    """Straight-through quantisation: forward sees what the decoder will, gradients pass as is."""
    q, step = quantise_xp(_torch(), w.detach(), bits, batched)
    return w + (q * step - w).detach()


def _optimiser(cfg: FitConfig, ps):
    torch = _torch()
    return {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[cfg.optimizer](ps, lr=cfg.lr)


def _set_lr(opt, cfg: FitConfig, step: int, steps: int) -> None:
    """Cosine decay to 5% of ``cfg.lr`` over ``steps`` (or constant)."""
    if cfg.lr_schedule == "cosine":
        lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        for g in opt.param_groups:
            g["lr"] = lr


def _qat_start(cfg: FitConfig, steps: int, bits: int | None) -> int:
    """First step trained through the quantiser (``steps`` if there is no QAT)."""
    return steps - int(round(cfg.qat_fraction * steps)) if bits is not None else steps


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
    opt = _optimiser(cfg, ps)
    qat_from = _qat_start(cfg, steps, bits)
    for step in range(steps):
        _set_lr(opt, cfg, step, steps)
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


def fit_blocks(forward, params: list[np.ndarray], masks: list[np.ndarray], target: np.ndarray,
               shape: tuple[int, ...], starts: np.ndarray, sides: np.ndarray, axes: list[int],
               cfg: FitConfig, bits: int | None = None) -> list[np.ndarray]:
    """Train B independent networks at once, network b on the box ``starts[b] : starts[b] + sides[b]``.

    params: tensors with a leading axis of B (networks padded to a common shape); masks: 0/1
    arrays of the same shapes, zero where a network's padding is (multiplied in before every
    forward, so padding stays inert). forward(torch, params, x) maps (B, k, in_dim) to
    (B, k, 1). Coordinates are each box's own pixel centres on ``axes`` (see
    ``nn.grid_coords``). Every step draws ``ceil(batch_size / B)`` voxels per box, uniformly
    with replacement; the loss is the mean of the boxes' mean squared errors. With ``bits``,
    the last ``qat_fraction`` of the steps see each network quantised per tensor.
    Returns the masked float32 parameters as numpy arrays.
    """
    torch = _torch()
    device = resolve_device(cfg.device)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    n_blocks = len(starts)
    k = max(1, -(-cfg.batch_size // n_blocks))
    y_all = torch.from_numpy(np.ascontiguousarray(target, np.float32)).to(device)
    sides_t = torch.as_tensor(np.asarray(sides, np.int64), device=device)
    starts_t = torch.as_tensor(np.asarray(starts, np.int64), device=device)
    strides = torch.as_tensor(np.cumprod((list(shape[1:]) + [1])[::-1])[::-1].copy(), device=device)
    counts = torch.prod(sides_t, 1, keepdim=True).to(torch.float64)
    ps = [torch.tensor(p, device=device, requires_grad=True) for p in params]
    ms = [torch.as_tensor(m, dtype=torch.float32, device=device) for m in masks]
    opt = _optimiser(cfg, ps)
    qat_from = _qat_start(cfg, cfg.steps, bits)
    for step in range(cfg.steps):
        _set_lr(opt, cfg, step, cfg.steps)
        u = torch.rand((n_blocks, k), generator=gen, dtype=torch.float64).to(device)
        local = torch.minimum((u * counts).long(), counts.long() - 1)        # (B, k)
        flat = torch.zeros_like(local)
        coords = []
        for a in range(len(shape) - 1, -1, -1):                              # unravel, last axis first
            i = local % sides_t[:, a:a + 1]
            local = local // sides_t[:, a:a + 1]
            flat += (starts_t[:, a:a + 1] + i) * strides[a]
            if a in axes:
                coords.append((2 * i + 1).float() / sides_t[:, a:a + 1] - 1)
        x = torch.stack(coords[::-1], -1)                                   # (B, k, in_dim)
        use = [p * m for p, m in zip(ps, ms)]
        if step >= qat_from:
            use = [_fake_quantise(p, bits, batched=True) for p in use]
        loss = torch.mean((forward(torch, use, x)[..., 0] - y_all[flat]) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return [(p * m).detach().cpu().numpy().astype(np.float32) for p, m in zip(ps, ms)]
