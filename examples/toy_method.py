"""A new method in one file: a toy INR codec registered from outside the package.

Everything a method provides (see the "Adding a method" guide): a payload body and its numpy
decoder, a codec that sizes its network to the byte budget and fits it with the shared
fitting engine, and one registry entry. Once registered, Zarr v2 and v3, ``compress``, the CLI
and ``inr_codecs.decode`` all handle it.

    python examples/toy_method.py --steps 200
"""
import argparse
import struct

import numpy as np

from inr_codecs import payload, quant, registry
from inr_codecs.codec import (Encoded, InrCodec, denormalise, header_for, normalise, pack_range,
                              pack_within_budget, read_range)
from inr_codecs.nn import coord_axes, grid_coords

TOY_ID = 200                  # a payload method id no registered method uses


# --- format and numpy decoder: what an independent decoder needs -------------------------
# body: lo, hi (2 x f64), width (u16), encoding (u8), bits (u8), tensors W1, b1, W2, b2

def shapes(in_dim, width):
    return [(in_dim, width), (width,), (width, 1), (1,)]


def forward(xp, params, x):
    """One sine layer and a linear output, written once for numpy (decode) and torch (fit)."""
    w1, b1, w2, b2 = params
    return xp.sin(x @ w1 + b1) @ w2 + b2


def read_fields(r):
    lo, hi = read_range(r)
    width, encoding, bits = r.take("HBB")
    return {"lo": lo, "hi": hi, "width": width, "encoding": encoding, "bits": bits}


def describe_body(header, r):
    return read_fields(r)


def decode_body(header, r):
    f = read_fields(r)
    params = quant.decode_tensors(r, shapes(len(coord_axes(header.shape)), f["width"]), f["encoding"], f["bits"])
    r.done()
    n = int(np.prod(header.shape))
    y = forward(np, params, grid_coords(header.shape, np.arange(n)))[:, 0]
    return denormalise(y, f["lo"], f["hi"], header.dtype)


# --- encoder -------------------------------------------------------------------------------

class ToyCodec(InrCodec):
    """One sine layer per chunk, as wide as the budget allows."""

    codec_id = "inr_codecs.toy"
    method_id = TOY_ID
    fit_defaults = {"lr": 1e-2, "steps": 200}
    unsupported = ("target_psnr", "plateau_steps")       # refused with a clear error

    def _overhead(self, ndim):
        return payload.frame_overhead(ndim) + 16 + 4 + quant.side_bytes(quant.ENCODINGS[self.encoding], 4)

    def _width(self, shape, budget):
        bpp = quant.bits_per_param_estimate(quant.ENCODINGS[self.encoding], self._smallest_bits())
        per_unit = (len(coord_axes(shape)) + 2) * bpp / 8
        return int((budget - self._overhead(len(shape)) - bpp / 8) // per_unit)

    def min_bytes(self, shape, bits):
        return self._overhead(len(shape)) + 4 * (len(coord_axes(shape)) + 2) + 2

    def encode_arrays(self, arrs, ranges, budget, init=None):
        import torch  # noqa: F401  (fitting needs torch; decoding above does not)

        from inr_codecs.fit import GridSampler, Networks, fit, sum_of_means
        shape, n = arrs[0].shape, len(arrs)
        width = max(1, self._width(shape, budget))
        rng = np.random.default_rng(self.seed)     # random Fourier features, then a small linear readout
        scales = (8.0, np.pi, 1.0 / width, 0.0)
        start = [rng.uniform(-a, a, (n,) + s).astype(np.float32)
                 for a, s in zip(scales, shapes(len(coord_axes(shape)), width))]
        targets = np.stack([normalise(a, lo, hi) for a, (lo, hi) in zip(arrs, ranges)])
        options = self.fit_options()
        bits = self._smallest_bits() or None
        fitted = fit(Networks(forward, start), GridSampler(shape, targets, options.batch_size, options.sampling),
                     sum_of_means, options, bits=bits)
        header, enc = header_for(arrs[0], self.method_id), quant.ENCODINGS[self.encoding]
        out = []
        for i, (lo, hi) in enumerate(ranges):
            params = [p[i] for p in fitted.params]
            data, _ = pack_within_budget(lambda b: payload.pack(header, pack_range(lo, hi) + struct.pack(
                "<HBB", width, enc, b) + quant.encode_tensors(params, enc, b)), bits or 0, budget)
            out.append(Encoded(data, int(fitted.steps[i])))
        return out


METHOD = registry.register(registry.Method(TOY_ID, "toy", decode_body, describe_body,
                                           lambda f: {"width": f["width"]}, ToyCodec, "Toy"))


def main(argv=None):
    import tempfile

    import zarr

    from inr_codecs import compress
    from inr_codecs.metrics import psnr
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    a = ap.parse_args(argv)
    z, y, x = np.mgrid[:16, :32, :32] / 16.0
    vol = (1000 * (np.sin(x) + np.cos(1.5 * y) + z)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        from inr_codecs.zarr3 import ToySerializer   # generated from the registry entry
        r = compress(vol, f"{tmp}/toy.zarr", ToySerializer(ratio=16, steps=a.steps), chunks=(16, 32, 32),
                     progress=False)
        back = zarr.open_array(f"{tmp}/toy.zarr", mode="r")[:]
    print(f"toy method: ratio {r.ratio:.1f}x, PSNR {psnr(vol, back):.2f} dB")


if __name__ == "__main__":
    main()
