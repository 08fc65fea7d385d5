#!/usr/bin/env python3
"""A/B timing of the torch baseline's Oobleck VAE decoder against variants that compute the
decode the way the official inference code does, in one process, alternating, so that a shared
machine's load affects every variant alike.

Written for this project (the official code is not copied). Variants:

* `baseline`: `torch_baseline.Decoder` as the bench runs it (plain convolutions, random Snake
  parameters, `torch.inference_mode()`).
* `no_grad`: the same module under `torch.no_grad()` (what the official decode runs under).
* `weight_norm`: every convolution wrapped in `torch.nn.utils.weight_norm` (the hook form the
  official `WNConv1d` / `WNConvTranspose1d` layers use: the weight is recomputed from `g` and `v`
  before every call), Snake's log-scale parameters at their initial zeros, `torch.no_grad()`.
* `flush_denormal`: the baseline with `torch.set_flush_denormal(True)` (tests whether random
  weights produce subnormal activations that slow the arithmetic).
* `no_mkldnn`: the baseline with oneDNN (mkldnn) turned off, so convolutions take ATen's own
  CPU kernels (tests how much the decode depends on which convolution backend a torch build
  picks; torch versions differ there).

Usage: python benches/torch_decoder_ab.py [--frames 236] [--reps 3] [--threads 2] [--tiny]
       [--variants baseline,no_grad,weight_norm,flush_denormal,no_mkldnn]
Prints one line per run and a summary with each variant's best and median time and its ratio to
the baseline.
"""

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn as nn

import torch_baseline as tb


def with_weight_norm(module):
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d)):
            torch.nn.utils.weight_norm(m)
    for m in module.modules():
        if isinstance(m, tb.Snake):
            with torch.no_grad():
                m.alpha.zero_()
                m.beta.zero_()
    return module


@contextlib.contextmanager
def flush_denormal():
    torch.set_flush_denormal(True)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_flush_denormal(False)


@contextlib.contextmanager
def no_mkldnn():
    with torch.backends.mkldnn.flags(enabled=False), torch.inference_mode():
        yield


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=236, help="latent frames (236 for a 10 s request)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny widths (a smoke check)")
    p.add_argument("--variants", default="baseline,no_grad,weight_norm,flush_denormal,no_mkldnn",
                   help="comma-separated; the first is the reference of the ratios")
    args = p.parse_args()
    if args.reps < 1 or args.frames < 1:
        p.error("--reps and --frames must be at least 1")
    if args.tiny:
        tb.S = tb.TINY
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning)
    base = tb.Decoder().eval()
    wn = with_weight_norm(tb.Decoder()).eval()
    z = torch.randn(1, tb.S.io, args.frames)
    variants = {
        "baseline": (base, torch.inference_mode),
        "no_grad": (base, torch.no_grad),
        "weight_norm": (wn, torch.no_grad),
        "flush_denormal": (base, flush_denormal),
        "no_mkldnn": (base, no_mkldnn),
    }
    chosen = args.variants.split(",")
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        p.error(f"unknown variants {unknown}; known: {list(variants)}")
    variants = {k: variants[k] for k in chosen}
    times = {k: [] for k in variants}
    for rep in range(args.reps + 1):  # the first round warms every variant up
        for name, (model, ctx) in variants.items():
            with ctx():
                t = time.perf_counter()
                model(z)
                dt = time.perf_counter() - t
            if rep > 0:
                times[name].append(dt)
                print(f"run {rep} {name}: {dt:.3f} s", flush=True)
    ref = statistics.median(times[chosen[0]])
    print(f"{args.frames} latent frames, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name}: best {min(ts):.3f} s, median {med:.3f} s, median / {chosen[0]} {med / ref:.3f}")


if __name__ == "__main__":
    main()
