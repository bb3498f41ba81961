#!/usr/bin/env python3
"""Measure the relative RMS error of candidate block-quantization formats (numpy only).

Used to choose the model file's q8/q4 block size and the q4 variant (docs/FORMAT.md, "Choosing the
formats"). Weights are drawn like trained transformer matrices: Gaussian rows whose scale varies per
output channel, plus a few input channels with 20-50x larger values (OPT's outlier features), plus a
heavy-tailed (Student-t) variant.

    python3 Benchmarks/quant_formats.py [--rows 1024] [--cols 2560] [--seed 0]
"""
import argparse

import numpy as np


def f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float32)


def q8_sym(w, block):
    b = w.reshape(-1, block)
    d = f16(np.abs(b).max(axis=1, keepdims=True) / 127)
    q = np.clip(np.round(np.divide(b, d, out=np.zeros_like(b), where=d > 0)), -127, 127)
    return (q * d).reshape(w.shape), 16 / block + 8


def q4_sym(w, block):
    """Symmetric: levels -8..7 around zero, scale from the signed extreme (ggml q4_0 style)."""
    b = w.reshape(-1, block)
    idx = np.abs(b).argmax(axis=1)
    extreme = b[np.arange(b.shape[0]), idx][:, None]
    d = f16(extreme / -8)
    q = np.clip(np.round(np.divide(b, d, out=np.zeros_like(b), where=d != 0)), -8, 7)
    return (q * d).reshape(w.shape), 16 / block + 4


def q4_minmax(w, block):
    b = w.reshape(-1, block)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d, m = f16((hi - lo) / 15), f16(lo)
    q = np.clip(np.round(np.divide(b - m, d, out=np.zeros_like(b), where=d > 0)), 0, 15)
    return (q * d + m).reshape(w.shape), 32 / block + 4


def q4_fitted(w, block, iters=4):
    """Min/max start, then alternate rounding and a least-squares (d, m) refit; keep the best per block."""
    b = w.reshape(-1, block).astype(np.float64)
    lo, hi = b.min(axis=1, keepdims=True), b.max(axis=1, keepdims=True)
    d, m = f16((hi - lo) / 15).astype(np.float64), f16(lo).astype(np.float64)

    def rounded(d, m):
        q = np.clip(np.round(np.divide(b - m, d, out=np.zeros_like(b), where=d > 0)), 0, 15)
        return q, ((b - (q * d + m)) ** 2).sum(axis=1, keepdims=True)

    q, err = rounded(d, m)
    best_d, best_m, best_err = d.copy(), m.copy(), err.copy()
    for _ in range(iters):
        n = block
        sq, sqq = q.sum(1, keepdims=True), (q * q).sum(1, keepdims=True)
        sx, sqx = b.sum(1, keepdims=True), (q * b).sum(1, keepdims=True)
        det = n * sqq - sq * sq
        ok = det > 0
        nd = np.where(ok, (n * sqx - sq * sx) / np.where(ok, det, 1), best_d)
        nm = np.where(ok, (sqq * sx - sq * sqx) / np.where(ok, det, 1), best_m)
        nd = np.where(nd > 0, f16(nd), best_d)
        nm = f16(nm).astype(np.float64)
        q, err = rounded(nd, nm)
        better = err < best_err
        best_d, best_m, best_err = np.where(better, nd, best_d), np.where(better, nm, best_m), np.minimum(err, best_err)
    q, _ = rounded(best_d, best_m)
    return (q * best_d + best_m).reshape(w.shape).astype(np.float32), 32 / block + 4


def rel_rms(w, x):
    return float(np.sqrt(((w - x) ** 2).sum() / (w ** 2).sum()))


def weights(kind, rows, cols, rng):
    row_scale = rng.lognormal(mean=np.log(0.02), sigma=0.3, size=(rows, 1)).astype(np.float32)
    if kind == "gaussian":
        w = rng.standard_normal((rows, cols), dtype=np.float32)
    elif kind == "student-t(4)":
        w = rng.standard_t(4, size=(rows, cols)).astype(np.float32) / np.sqrt(2)
    else:  # outlier input channels, as in OPT's attention and fc1 inputs
        w = rng.standard_normal((rows, cols), dtype=np.float32)
        cols_out = rng.choice(cols, size=max(1, cols // 400), replace=False)
        w[:, cols_out] *= rng.uniform(20, 50, size=cols_out.size).astype(np.float32)
    return w * row_scale


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--cols", type=int, default=2560)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    formats = [("q8 symmetric", q8_sym), ("q4 symmetric", q4_sym), ("q4 min/max", q4_minmax), ("q4 fitted (ours)", q4_fitted)]
    print(f"relative RMS error, {args.rows}x{args.cols} matrices; bits per weight in brackets")
    for kind in ["gaussian", "student-t(4)", "outlier channels"]:
        w = weights(kind, args.rows, args.cols, rng)
        print(f"\n{kind}")
        print(f"{'format':18}" + "".join(f"{'block ' + str(b):>18}" for b in (16, 32, 64, 128)))
        for name, fn in formats:
            cells = []
            for block in (16, 32, 64, 128):
                x, bits = fn(w, block)
                cells.append(f"{rel_rms(w, x):.5f} [{bits:.2f}]")
            print(f"{name:18}" + "".join(f"{c:>18}" for c in cells))


if __name__ == "__main__":
    main()
