"""The fitting loop: trains many networks at once with torch.

Every network of a batch has the same architecture, and every tensor carries a leading axis
of B networks, so one step is a few batched matmuls whatever B is (many chunks of an array,
or the blocks of one chunk). A network's loss is its own mean squared error and the batch
loss is their sum, so each network gets exactly the gradient it would get alone.

torch is imported here, lazily, and only compression reaches this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .nn import grid_coords
from .quant import quantise_xp

OPTIMIZERS = ("adam", "adamax")
SCHEDULES = ("cosine", "constant")
SAMPLINGS = ("uniform", "error")
PRECISIONS = ("highest", "high")
CHECK_EVERY = 10          # steps between early-stopping decisions (one device sync each)
PLATEAU_DB = 0.05         # improvement (dB of smoothed training PSNR) that counts as progress
EMA = 0.9                 # smoothing of the per-network training loss early stopping watches


@dataclass(frozen=True)
class FitConfig:
    """How networks are trained. See ``SIRENCodec`` for the meaning and defaults of each field."""

    steps: int = 1000
    batch_size: int = 16384
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    optimizer: str = "adam"
    qat_fraction: float = 0.1
    device: str = "auto"
    seed: int = 0
    sampling: str = "uniform"
    target_psnr: float | None = None
    plateau_steps: int | None = None
    precision: str = "highest"

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
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}")
        if self.target_psnr is not None and not (0 < self.target_psnr < math.inf):
            raise ValueError(f"target_psnr must be a positive number of dB or None, not {self.target_psnr}")
        if self.plateau_steps is not None and int(self.plateau_steps) < CHECK_EVERY:
            raise ValueError(f"plateau_steps must be >= {CHECK_EVERY} or None, not {self.plateau_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")

    @property
    def stops_early(self) -> bool:
        return self.target_psnr is not None or self.plateau_steps is not None


class Fitted(NamedTuple):
    """Trained float32 parameters (leading axis B) and the optimiser steps each network took."""

    params: list[np.ndarray]
    steps: np.ndarray


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
    """Straight-through quantisation, one step per network and tensor: the forward pass sees
    what the decoder will, gradients pass as is."""
    q, step = quantise_xp(_torch(), w.detach(), bits, batched=True)
    return w + (q * step - w).detach()


def _optimiser(cfg: FitConfig, ps):
    torch = _torch()
    return {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[cfg.optimizer](ps, lr=cfg.lr)


def _lr(cfg: FitConfig, step: int, steps: int) -> float:
    """Cosine decay to 5% of ``cfg.lr`` over ``steps`` (or constant)."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    return cfg.lr


def _qat_steps(cfg: FitConfig, steps: int, bits: int | None) -> int:
    """Steps (at the end) trained through the quantiser."""
    return round(cfg.qat_fraction * steps) if bits is not None else 0


def _compact(opt, ps, keep):
    """Drop the networks not in ``keep`` from the parameters and the optimiser's state."""
    torch = _torch()
    new = [p.detach()[keep].clone().requires_grad_(True) for p in ps]
    new_opt = type(opt)(new, **opt.defaults)
    def take(v, n):
        if not torch.is_tensor(v):
            return v
        return v[keep].clone() if v.ndim and v.shape[0] == n else v.clone()

    for p_old, p_new in zip(ps, new):
        state = opt.state.get(p_old)
        if state:
            new_opt.state[p_new] = {k: take(v, p_old.shape[0]) for k, v in state.items()}
    for g_new, g_old in zip(new_opt.param_groups, opt.param_groups):
        g_new["lr"] = g_old["lr"]
    return new, new_opt


class _Precision:
    """TF32 matmuls for the duration of a fit, on CUDA only (``precision="high"``)."""

    def __init__(self, torch, device: str, precision: str):
        self.torch, self.on = torch, device.startswith("cuda") and precision == "high"

    def __enter__(self):
        if self.on:
            self.saved = self.torch.get_float32_matmul_precision()
            self.torch.set_float32_matmul_precision("high")

    def __exit__(self, *exc):
        if self.on:
            self.torch.set_float32_matmul_precision(self.saved)


def fit(forward, params: list[np.ndarray], targets: np.ndarray, shape: tuple[int, ...],
        cfg: FitConfig, bits: int | None = None, steps: int | None = None) -> Fitted:
    """Train B networks, network b to ``targets[b]``, each on the whole grid of ``shape``.

    forward(xp, params, x): params with a leading axis of B (vectors as (B, 1, n)); x is
    (k, in_dim) shared by all networks or (B, k, in_dim); returns (B, k, 1).
    params: float32 initial parameters, each with a leading axis of B.
    targets: (B, voxels) float32 normalised chunk values in C order.
    bits: if given, the last ``qat_fraction`` of the steps train through fake quantisation.
    steps: overrides ``cfg.steps`` (pilot runs).

    Sampling: ``"uniform"`` draws one set of voxel indices per step shared by every network
    (the whole grid when it has at most ``batch_size`` voxels), so a network's fit does not
    depend on which others share its batch; ``"error"`` draws half of each network's voxels
    uniformly and half in proportion to the last squared error seen at each voxel (unseen
    voxels first). Early stopping (``target_psnr``, ``plateau_steps``) ends a network's float
    phase when its smoothed training PSNR (peak 2, the normalised range; measured on uniformly
    drawn voxels only, so that error sampling does not bias it) reaches the target or
    has gained less than ``PLATEAU_DB`` over ``plateau_steps`` steps; finished networks leave
    the batch, and when all have, the quantisation-aware steps run for every network.
    """
    torch = _torch()
    device = resolve_device(cfg.device)
    steps = cfg.steps if steps is None else int(steps)
    targets = np.ascontiguousarray(np.atleast_2d(targets), np.float32)
    n_nets, n = targets.shape
    qat = _qat_steps(cfg, steps, bits)
    float_steps = steps - qat
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    k = min(n, cfg.batch_size)
    full = n <= cfg.batch_size and cfg.sampling == "uniform"
    y_all = torch.from_numpy(targets).to(device)
    x_all = torch.from_numpy(grid_coords(shape, np.arange(n))).to(device) if n <= max(cfg.batch_size, 2**22) else None
    vec = [np.asarray(p).ndim == 2 for p in params]          # (B, n) vectors train as (B, 1, n)
    ps = [torch.tensor(np.asarray(p, np.float32)[:, None] if v else np.asarray(p, np.float32), device=device,
                       requires_grad=True) for p, v in zip(params, vec)]
    opt = _optimiser(cfg, ps)
    active = np.arange(n_nets)
    out = [np.empty(tuple(p.shape), np.float32) for p in ps]
    used = np.zeros(n_nets, np.int64)
    if cfg.sampling == "error" and n > 2**24:
        raise ValueError(f"sampling='error' handles chunks of up to 2**24 voxels, not {n}")
    err_map = torch.full((n_nets, n), 4.0, device=device) if cfg.sampling == "error" else None
    gen_dev = torch.Generator(device=device).manual_seed(cfg.seed + 1) if err_map is not None else None
    ema = torch.full((n_nets,), -1.0, device=device, dtype=torch.float64)    # -1: nothing seen yet
    best = np.full(n_nets, -np.inf)
    best_at = np.zeros(n_nets, np.int64)

    def coords(idx):
        return x_all[idx] if x_all is not None else torch.from_numpy(
            grid_coords(shape, idx.cpu().numpy().reshape(-1))).to(device).reshape(idx.shape + (-1,))

    def sample(rows):
        if full:
            return x_all, y_all[rows]
        if cfg.sampling == "uniform":
            idx = torch.randint(0, n, (k,), generator=gen).to(device)
            return coords(idx), y_all[rows][:, idx]
        half = k // 2
        uni = torch.randint(0, n, (len(rows), k - half), generator=gen).to(device)
        hot = torch.multinomial(err_map[rows] + 1e-6, half, replacement=True, generator=gen_dev)
        idx = torch.cat([uni, hot], 1)
        return coords(idx), torch.gather(y_all[rows], 1, idx), idx

    def save(rows_local, rows_global):
        for o, p in zip(out, ps):
            o[rows_global] = p.detach()[rows_local].cpu().numpy()

    def train(step, total, quantise):
        rows = torch.as_tensor(active, device=device)
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, step, total)
        drawn = sample(rows)
        x, y = drawn[0], drawn[1]
        use = [_fake_quantise(p, bits) for p in ps] if quantise else ps
        sq = (forward(torch, use, x)[..., 0] - y) ** 2                 # (b, k)
        per_net = sq.mean(-1)
        opt.zero_grad(set_to_none=True)
        per_net.sum().backward()
        opt.step()
        if err_map is None:
            return per_net.detach()
        err_map[rows[:, None], drawn[2]] = sq.detach()
        return sq.detach()[:, :k - k // 2].mean(-1)      # early stopping watches the uniform half

    with _Precision(torch, device, cfg.precision):
        step = 0
        while step < float_steps and len(active):
            per_net = train(step, steps, False)
            used[active] += 1
            step += 1
            if not cfg.stops_early:
                continue
            prev = ema[active]
            ema[active] = torch.where(prev < 0, per_net.double(), EMA * prev + (1 - EMA) * per_net.double())
            if step % CHECK_EVERY:
                continue
            db = 10 * np.log10(4.0 / np.maximum(ema[active].cpu().numpy(), 1e-12))
            stop = np.zeros(len(active), bool)
            if cfg.target_psnr is not None:
                stop |= db >= cfg.target_psnr
            if cfg.plateau_steps is not None:
                better = db > best[active] + PLATEAU_DB
                best_at[active[better]] = step
                best[active[better]] = db[better]
                stop |= step - best_at[active] >= cfg.plateau_steps
            if stop.any():
                save(np.flatnonzero(stop), active[stop])
                keep = np.flatnonzero(~stop)
                active = active[keep]
                if len(active):
                    ps, opt = _compact(opt, ps, torch.as_tensor(keep, device=device))
        save(np.arange(len(active)), active)
        if qat:
            if cfg.stops_early:      # every network back in the batch, fresh optimiser state
                active = np.arange(n_nets)
                ps = [torch.tensor(o, device=device, requires_grad=True) for o in out]
                opt = _optimiser(cfg, ps)
            for j in range(qat):
                train(float_steps + j, steps, True)
                used[active] += 1
            save(np.arange(len(active)), active)
    return Fitted([o[:, 0] if v else o for o, v in zip(out, vec)], used)


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
    qat_from = cfg.steps - _qat_steps(cfg, cfg.steps, bits)
    with _Precision(torch, device, cfg.precision):
        for step in range(cfg.steps):
            for g in opt.param_groups:
                g["lr"] = _lr(cfg, step, cfg.steps)
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
                use = [_fake_quantise(p, bits) for p in use]
            loss = torch.mean((forward(torch, use, x)[..., 0] - y_all[flat]) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return [(p * m).detach().cpu().numpy().astype(np.float32) for p, m in zip(ps, ms)]
