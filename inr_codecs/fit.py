"""The fitting engine: one training loop, with torch, for every method.

:func:`fit` trains a batch of B networks at once. It takes

* a model, :class:`Networks`: initial parameters with a leading axis of B networks, optional
  0/1 masks (a network's padding stays inert) and the forward pass ``forward(xp, params, x)``
  written once for numpy (decoding) and torch (fitting), so the numpy twin is the same code;
* a sampler: what each step trains on. :class:`GridSampler` draws voxels of whole chunks
  (network b fits chunk b), :class:`BoxSampler` voxels of boxes of a grid (network b fits box
  b: the blocks of partitioned chunks). Both draw uniformly or, with ``sampling="error"``,
  half uniformly and half in proportion to the last squared error seen at each voxel;
* a loss: :func:`sum_of_means` (each network's mean squared error, summed: every network gets
  the gradient it would get alone), :func:`mean_of_all` (one mean over every drawn voxel) or
  :func:`sum_of_log_means` (the log of each network's mean squared error, summed);
* :class:`FitOptions`: every fitting option, by name.

Early stopping, error-driven sampling, warm starts (a model's initial parameters), QAT and
precision therefore work for every method that uses the loop. torch is imported here, lazily,
and only compression reaches this module.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from . import args
from .nn import grid_coords
from .quant import quantise_xp

OPTIMIZERS = ("adam", "adamax")
SCHEDULES = ("cosine", "constant")
SAMPLINGS = ("uniform", "error")
PRECISIONS = ("highest", "high")
CHECK_EVERY = 10          # steps between early-stopping decisions (one device sync each)
PLATEAU_DB = 0.05         # improvement (dB of smoothed training PSNR) that counts as progress
EMA = 0.9                 # smoothing of the per-network training loss early stopping watches
MAX_ERROR_MAP = 2 ** 24   # voxels per network that error-driven sampling keeps an error for
MAX_SEED = 2 ** 63 - 1    # seeds are in 0..MAX_SEED (torch generators take seed + small offsets)


@dataclass(frozen=True, kw_only=True)
class FitOptions:
    """How networks are trained; every codec takes these as keyword arguments.

    Each value is checked here (:mod:`inr_codecs.args`): integer options take an int (or a float
    with an integral value, e.g. ``steps=1e4``), never a fractional float or a bool; real ones a
    finite number, never a bool or a string.

    steps : optimiser steps per network.
    batch_size : voxels drawn per step (per chunk; split between the blocks of a chunk).
    lr, lr_schedule : learning rate; "cosine" decays it to 5% over the steps, or "constant".
    optimizer : "adam" or "adamax".
    qat_fraction : share of the steps (at the end) trained through the quantiser.
    device : "auto", "cpu", "cuda" or "cuda:N".
    seed : seeds initialisation and sampling (on CPU the same input gives the same payload); an
        integer in 0..2**63 - 1.
    sampling : "uniform", or "error" (half the voxels in proportion to the last seen error).
    target_psnr : early stopping: a network stops once its smoothed training PSNR reaches this.
    plateau_steps : early stopping: stop after this many steps gaining < ``PLATEAU_DB`` dB.
    precision : "highest", or "high" (TF32 matmuls on CUDA).
    """

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
        # every value checked and stored as a Python int or float (never truncated)
        for key, check in (("steps", lambda k, v: args.integer(k, v, 1)),
                           ("batch_size", lambda k, v: args.integer(k, v, 1)),
                           ("lr", lambda k, v: args.real(k, v, above=0)),
                           ("qat_fraction", lambda k, v: args.real(k, v, at_least=0, below=1)),
                           ("seed", lambda k, v: args.integer(k, v, 0, MAX_SEED)),
                           ("target_psnr", lambda k, v: args.real(k, v, above=0)),
                           ("plateau_steps", lambda k, v: args.integer(k, v, CHECK_EVERY))):
            value = getattr(self, key)
            if value is not None or key not in ("target_psnr", "plateau_steps"):
                object.__setattr__(self, key, check(key, value))
        checks = [
            (self.lr_schedule in SCHEDULES, f"lr_schedule must be one of {SCHEDULES}, not {self.lr_schedule!r}"),
            (self.optimizer in OPTIMIZERS, f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}"),
            (isinstance(self.device, str) and re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device) is not None,
             f"device must be 'auto', 'cpu' or 'cuda[:N]', not {self.device!r}"),
            (self.sampling in SAMPLINGS, f"sampling must be one of {SAMPLINGS}, not {self.sampling!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, not {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def stops_early(self) -> bool:
        return self.target_psnr is not None or self.plateau_steps is not None


#: Names of the fitting options, in the order codecs list them.
OPTION_NAMES = tuple(f.name for f in fields(FitOptions))


@dataclass
class Networks:
    """B networks of one architecture, trained as one batched model.

    ``params``: float32 arrays with a leading axis of B (vectors (B, n) train as (B, 1, n));
    ``masks``: 0/1 arrays of the same shapes (padding of narrower networks), or None;
    ``forward(xp, params, x)``: x (k, in_dim) shared by all networks or (B, k, in_dim) ->
    (B, k, 1), the same function the numpy decoder evaluates;
    ``penalty(torch, params, rows, sq)``: an optional term per active network ((b,) tensor, e.g.
    a rate), added to the loss; ``rows`` are the active networks' indices, ``sq`` the step's
    squared errors on its uniformly drawn voxels (b, k), detached (for a rate weight steered to
    a distortion target);
    ``quantise(torch, params, qat)``: optional, replaces the per-tensor fake quantisation: the
    parameters every step uses (``qat`` False in the float phase, True in the quantisation-aware
    one), e.g. latents with additive noise, then rounded straight-through.
    """

    forward: Callable
    params: list[np.ndarray]
    masks: list[np.ndarray] | None = None
    penalty: Callable | None = None
    quantise: Callable | None = None


class Fitted(NamedTuple):
    """Trained float32 parameters (leading axis B, masked) and the optimiser steps each took."""

    params: list[np.ndarray]
    steps: np.ndarray


class Draw(NamedTuple):
    x: object      # coordinates (k, in_dim) or (b, k, in_dim)
    y: object      # targets (b, k)
    idx: object    # what the sampler needs to record errors (None for uniform draws)


def sum_of_means(sq):
    """Each network's mean squared error, summed over the networks."""
    return sq.mean(-1).sum()


def mean_of_all(sq):
    """The mean squared error over every drawn voxel of every network."""
    return sq.mean()


def sum_of_log_means(sq):
    """The log of each network's mean squared error, summed: with a rate term, a loss whose rate
    weight is scale free (the slope of log-distortion against rate; see ``LatentGridCodec``)."""
    return (sq.mean(-1) + 1e-12).log().sum()


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


# --- samplers ------------------------------------------------------------------------------

class _Sampler:
    """What the loop asks of a sampler: ``n_nets``, ``start(torch, device, gen, seed)``,
    ``draw(rows) -> Draw`` for the active networks ``rows``, and ``record`` of the squared
    errors of a draw (error-driven sampling); ``k`` voxels per network and step."""

    sampling: str
    k: int
    errors: _ErrorMap | None

    def record(self, rows, draw: Draw, sq) -> None:
        self.errors.set(rows, draw.idx, sq)

    @property
    def uniform_columns(self) -> int:
        """The first columns of a draw that are uniform (what early stopping watches)."""
        return self.k - self.k // 2 if self.sampling == "error" else self.k


class GridSampler(_Sampler):
    """Network b fits the whole grid of ``shape`` to ``targets[b]`` ((B, voxels), C order).

    "uniform" draws one set of voxel indices per step shared by every network (the whole
    grid when it has at most ``batch_size`` voxels), so a network's fit does not depend on
    which others share its batch; "error" draws each network's own indices.
    """

    def __init__(self, shape: tuple[int, ...], targets: np.ndarray, batch_size: int, sampling: str,
                 coords: bool = True):
        self.shape, self.sampling, self.want_coords = tuple(shape), sampling, coords
        self.targets = np.ascontiguousarray(np.atleast_2d(targets), np.float32)
        self.n_nets, self.n = self.targets.shape
        self.k = min(self.n, batch_size)
        self.full = self.n <= batch_size and sampling == "uniform"
        self.lazy_coords = coords and self.n > max(batch_size, 2 ** 22)
        if sampling == "error" and self.n > MAX_ERROR_MAP:
            raise ValueError(f"sampling='error' handles chunks of up to 2**24 voxels, not {self.n}")

    def start(self, torch, device, gen, seed):
        self.torch, self.device, self.gen = torch, device, gen
        self.y = torch.from_numpy(self.targets).to(device)
        if not self.want_coords:                # the forward takes flat voxel indices
            self.x = torch.arange(self.n, device=device)
        else:
            self.x = None if self.lazy_coords else torch.from_numpy(
                grid_coords(self.shape, np.arange(self.n))).to(device)
        self.errors = _ErrorMap(torch, device, seed, (self.n_nets, self.n)) if self.sampling == "error" else None

    def _coords(self, idx):
        if not self.want_coords:
            return idx
        if self.x is not None:
            return self.x[idx]
        flat = idx.cpu().numpy().reshape(-1)
        return self.torch.from_numpy(grid_coords(self.shape, flat)).to(self.device).reshape(idx.shape + (-1,))

    def draw(self, rows) -> Draw:
        torch = self.torch
        if self.full:
            return Draw(self.x, self.y[rows], None)
        if self.errors is None:
            idx = torch.randint(0, self.n, (self.k,), generator=self.gen).to(self.device)
            return Draw(self._coords(idx), self.y[rows][:, idx], None)
        half = self.k // 2
        uni = torch.randint(0, self.n, (len(rows), self.k - half), generator=self.gen).to(self.device)
        idx = torch.cat([uni, self.errors.hot(rows, half)], 1)
        return Draw(self._coords(idx), torch.gather(self.y[rows], 1, idx), idx)


class BoxSampler(_Sampler):
    """Network b fits the box ``starts[b] : starts[b] + sides[b]`` of a grid of ``shape``
    holding ``target`` (flat, C order), with coordinates on the box's own pixel centres along
    ``axes`` (see ``nn.grid_coords``). Every step draws ``ceil(batch_size / B)`` voxels per
    box, uniformly with replacement ("uniform") or half of them in proportion to the last seen
    error at each voxel of the box ("error")."""

    def __init__(self, shape, target: np.ndarray, starts, sides, axes: Sequence[int], batch_size: int,
                 sampling: str):
        self.shape, self.axes, self.sampling = tuple(shape), list(axes), sampling
        self.target = np.ascontiguousarray(target, np.float32)
        self.starts, self.sides = np.asarray(starts, np.int64), np.asarray(sides, np.int64)
        self.n_nets = len(self.starts)
        self.k = max(1, -(-batch_size // self.n_nets))
        self.counts = np.prod(self.sides, 1)
        if sampling == "error" and self.counts.max() > MAX_ERROR_MAP:
            raise ValueError(f"sampling='error' handles blocks of up to 2**24 voxels, not {self.counts.max()}")

    def start(self, torch, device, gen, seed):
        self.torch, self.device, self.gen = torch, device, gen
        self.y = torch.from_numpy(self.target).to(device)
        self.sides_t = torch.as_tensor(self.sides, device=device)
        self.starts_t = torch.as_tensor(self.starts, device=device)
        self.strides = torch.as_tensor(np.cumprod((list(self.shape[1:]) + [1])[::-1])[::-1].copy(), device=device)
        self.counts_t = torch.as_tensor(self.counts, device=device)[:, None].to(torch.float64)
        self.errors = None
        if self.sampling == "error":
            inside = torch.arange(int(self.counts.max()), device=device)[None] < self.counts_t
            self.errors = _ErrorMap(torch, device, seed, (self.n_nets, int(self.counts.max())), inside)

    def draw(self, rows) -> Draw:
        torch = self.torch
        n_uniform = self.uniform_columns
        u = torch.rand((len(rows), n_uniform), generator=self.gen, dtype=torch.float64).to(self.device)
        counts = self.counts_t[rows]
        local = torch.minimum((u * counts).long(), counts.long() - 1)                  # (b, k)
        if self.errors is not None:
            local = torch.cat([local, self.errors.hot(rows, self.k // 2)], 1)
        sides, starts = self.sides_t[rows], self.starts_t[rows]
        rest, flat, coords = local, torch.zeros_like(local), []
        for a in range(len(self.shape) - 1, -1, -1):                                  # unravel, last axis first
            i = rest % sides[:, a:a + 1]
            rest = rest // sides[:, a:a + 1]
            flat += (starts[:, a:a + 1] + i) * self.strides[a]
            if a in self.axes:
                coords.append((2 * i + 1).float() / sides[:, a:a + 1] - 1)
        return Draw(torch.stack(coords[::-1], -1), self.y[flat], local if self.errors is not None else None)


class _ErrorMap:
    """The last squared error seen at each voxel of each network (4.0, the largest possible on
    [-1, 1] data, until seen), and draws in proportion to it; ``valid`` (boxes of different
    sizes padded to one length) marks the voxels that exist."""

    def __init__(self, torch, device, seed, shape, valid=None):
        self.torch, self.valid = torch, valid
        self.err = torch.full(shape, 4.0, device=device)
        self.gen = torch.Generator(device=device).manual_seed(seed + 1)

    def hot(self, rows, n):
        weights = self.err[rows] + 1e-6
        if self.valid is not None:
            weights = weights * self.valid[rows]
        return self.torch.multinomial(weights, n, replacement=True, generator=self.gen)

    def set(self, rows, idx, sq):
        self.err[rows[:, None], idx] = sq.detach()


# --- the loop ------------------------------------------------------------------------------

def fit(model: Networks, sampler, loss: Callable, options: FitOptions, *, bits: int | None = None) -> Fitted:
    """Train ``model``'s B networks on what ``sampler`` draws, minimising ``loss``.

    With ``bits``, the last ``qat_fraction`` of the steps train through fake quantisation
    (per network and tensor, as the payload stores them). Early stopping (``target_psnr``,
    ``plateau_steps``) ends a network's float phase when its smoothed training PSNR (peak 2,
    the normalised range; measured on uniformly drawn voxels only, so that error sampling does
    not bias it) reaches the target or has gained less than ``PLATEAU_DB`` over
    ``plateau_steps`` steps; finished networks leave the batch (their optimiser state with
    them), and when all have, the quantisation-aware steps run for every network.
    """
    torch = _torch()
    device = resolve_device(options.device)
    gen = torch.Generator(device="cpu").manual_seed(options.seed)
    sampler.start(torch, device, gen, options.seed)
    run = _Run(torch, device, model, options)
    qat = round(options.qat_fraction * options.steps) if bits is not None else 0
    float_steps = options.steps - qat
    watch = _EarlyStop(sampler.n_nets, options, torch, device) if options.stops_early else None
    with _Precision(torch, device, options.precision):
        step = 0
        while step < float_steps and len(run.active):
            err = run.step(sampler, loss, step, None, watch is not None)
            step += 1
            if watch is not None:
                stop = watch.update(run.active, err, step)
                if stop is not None:
                    run.retire(stop)
        run.save()
        if qat:
            if watch is not None:
                run.restart()               # every network back in the batch, fresh optimiser state
            for j in range(qat):
                run.step(sampler, loss, float_steps + j, bits, False)
            run.save()
    return run.result()


def _fake_quantise(w, bits):
    """Straight-through quantisation, one step per network and tensor: the forward pass sees
    what the decoder will, gradients pass as is."""
    q, step = quantise_xp(_torch(), w.detach(), bits, batched=True)
    return w + (q * step - w).detach()


def _optimiser(options: FitOptions, ps):
    torch = _torch()
    return {"adam": torch.optim.Adam, "adamax": torch.optim.Adamax}[options.optimizer](ps, lr=options.lr)


def _lr(options: FitOptions, step: int) -> float:
    """Cosine decay to 5% of ``lr`` over the steps (or constant)."""
    if options.lr_schedule == "cosine":
        return options.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / options.steps)))
    return options.lr


class _Run:
    """The networks still training (``active``, global indices), their parameters, masks and
    optimiser, and the trained parameters of every network (``out``)."""

    def __init__(self, torch, device, model: Networks, options: FitOptions):
        self.torch, self.device, self.options = torch, device, options
        self.vec = [np.asarray(p).ndim == 2 for p in model.params]      # (B, n) vectors train as (B, 1, n)
        start = self._trained_shapes(model.params)
        self.forward, self.penalty, self.quantise = model.forward, model.penalty, model.quantise
        self.masks_np = None if model.masks is None else self._trained_shapes(model.masks)
        self.n_nets = len(start[0])
        self.out = [p.copy() for p in start]
        self.used = np.zeros(self.n_nets, np.int64)
        self.active = np.arange(self.n_nets)
        self._load(start)

    def _trained_shapes(self, arrays) -> list[np.ndarray]:
        return [np.asarray(a, np.float32)[:, None] if v else np.asarray(a, np.float32)
                for a, v in zip(arrays, self.vec)]

    def _load(self, params):
        torch = self.torch
        self.ps = [torch.tensor(p, device=self.device, requires_grad=True) for p in params]
        self.ms = None if self.masks_np is None else [
            torch.as_tensor(m[self.active], device=self.device) for m in self.masks_np]
        self.opt = _optimiser(self.options, self.ps)

    def step(self, sampler, loss, step: int, bits: int | None, want_error: bool):
        """One optimiser step of the active networks; their errors on uniform voxels if wanted."""
        rows = self.torch.as_tensor(self.active, device=self.device)
        for g in self.opt.param_groups:
            g["lr"] = _lr(self.options, step)
        draw = sampler.draw(rows)
        use = self.ps if self.ms is None else [p * m for p, m in zip(self.ps, self.ms)]
        if self.quantise is not None:
            use = self.quantise(self.torch, use, bits is not None)
        elif bits is not None:
            use = [_fake_quantise(p, bits) for p in use]
        sq = (self.forward(self.torch, use, draw.x)[..., 0] - draw.y) ** 2          # (b, k)
        value = loss(sq)
        if self.penalty is not None:
            value = value + self.penalty(self.torch, use, rows, sq.detach()[:, :sampler.uniform_columns]).sum()
        self.opt.zero_grad(set_to_none=True)
        value.backward()
        self.opt.step()
        self.used[self.active] += 1
        if draw.idx is not None:
            sampler.record(rows, draw, sq)
        return sq.detach()[:, :sampler.uniform_columns].mean(-1) if want_error else None

    def save(self, local=None):
        local = np.arange(len(self.active)) if local is None else local
        for o, p in zip(self.out, self.ps):
            o[self.active[local]] = p.detach()[self.torch.as_tensor(local, device=self.device)].cpu().numpy()

    def retire(self, stop: np.ndarray):
        """Save and drop the networks flagged in ``stop`` (over ``active``)."""
        self.save(np.flatnonzero(stop))
        keep = np.flatnonzero(~stop)
        self.active = self.active[keep]
        if len(self.active):
            self._compact(self.torch.as_tensor(keep, device=self.device))

    def _compact(self, keep):
        torch, old_ps, old_opt = self.torch, self.ps, self.opt
        self.ps = [p.detach()[keep].clone().requires_grad_(True) for p in old_ps]
        if self.ms is not None:
            self.ms = [m[keep] for m in self.ms]
        self.opt = type(old_opt)(self.ps, **old_opt.defaults)

        def take(v, n):
            if not torch.is_tensor(v):
                return v
            return v[keep].clone() if v.ndim and v.shape[0] == n else v.clone()

        for p_old, p_new in zip(old_ps, self.ps):
            state = old_opt.state.get(p_old)
            if state:
                self.opt.state[p_new] = {k: take(v, p_old.shape[0]) for k, v in state.items()}
        for g_new, g_old in zip(self.opt.param_groups, old_opt.param_groups):
            g_new["lr"] = g_old["lr"]

    def restart(self):
        self.active = np.arange(self.n_nets)
        self._load(self.out)

    def result(self) -> Fitted:
        out = self.out if self.masks_np is None else [o * m for o, m in zip(self.out, self.masks_np)]
        return Fitted([o[:, 0] if v else o for o, v in zip(out, self.vec)], self.used)


class _EarlyStop:
    """Smoothed per-network training PSNR and the stopping rules of :func:`fit`."""

    def __init__(self, n_nets: int, options: FitOptions, torch, device):
        self.options, self.torch = options, torch
        self.ema = torch.full((n_nets,), -1.0, device=device, dtype=torch.float64)   # -1: nothing seen yet
        self.best = np.full(n_nets, -np.inf)
        self.best_at = np.zeros(n_nets, np.int64)

    def update(self, active: np.ndarray, err, step: int) -> np.ndarray | None:
        """Fold in the active networks' errors; every CHECK_EVERY steps, which of them stop."""
        prev = self.ema[active]
        self.ema[active] = self.torch.where(prev < 0, err.double(), EMA * prev + (1 - EMA) * err.double())
        if step % CHECK_EVERY:
            return None
        db = 10 * np.log10(4.0 / np.maximum(self.ema[active].cpu().numpy(), 1e-12))
        stop = np.zeros(len(active), bool)
        if self.options.target_psnr is not None:
            stop |= db >= self.options.target_psnr
        if self.options.plateau_steps is not None:
            better = db > self.best[active] + PLATEAU_DB
            self.best_at[active[better]] = step
            self.best[active[better]] = db[better]
            stop |= step - self.best_at[active] >= self.options.plateau_steps
        return stop if stop.any() else None


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
