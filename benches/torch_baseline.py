#!/usr/bin/env python3
"""PyTorch baselines for the audiox benches: the same shapes and operations as AudioX-Turbo's
stages, written with torch's public modules, random weights, fp32.

Written for this project (not the official code). Each stage builds its network, runs it once
to warm up, then reports the best of `--reps` timed runs as one JSON line:

    {"stage": "dit_step", "seconds": 5.7, "threads": 2, "torch": "2.11.0"}

Usage: python benches/torch_baseline.py --stage {dit_step,vae_decode,vae_encode,clip,t5,matmul,all}
       [--threads 2] [--reps 2]
The Rust side (`cargo bench -p audiox --bench vs_torch`) runs this script and prints ratios.
"""

import argparse
import json
import resource
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------------------------------
# DiT step: 24 blocks, width 1536, 64 heads of 24, 237 tokens, per-token adaLN computed in the
# step (as the official code does), kernel-3 token convolutions.
# ---------------------------------------------------------------------------------------------

class DitBlock(nn.Module):
    def __init__(self, d=1536, heads=64, hidden=4096):
        super().__init__()
        self.heads = heads
        self.ada = nn.Linear(d, 6 * d)
        self.qkv = nn.Linear(d, 3 * d)
        self.linear1 = nn.Conv1d(d, d, 3, padding=1)
        self.to_kv = nn.Linear(d, 2 * d, bias=False)
        self.w1 = nn.Conv1d(d, hidden, 3, padding=1, bias=False)
        self.w3 = nn.Conv1d(d, hidden, 3, padding=1, bias=False)
        self.w2 = nn.Conv1d(hidden, d, 3, padding=1, bias=False)

    def forward(self, x, c, t_emb, cos, sin):
        b, n, d = x.shape
        h, hd = self.heads, d // self.heads
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        a = F.layer_norm(x, (d,), eps=1e-5) * (1 + sc1) + sh1
        q, k, v = self.qkv(a).view(b, n, h, hd, 3).unbind(-1)
        q = q * torch.rsqrt(q.pow(2).mean(-1, keepdim=True) + 1e-6)
        k = k * torch.rsqrt(k.pow(2).mean(-1, keepdim=True) + 1e-6)

        def rope(t):
            t0, t1 = t[..., 0::2], t[..., 1::2]
            return torch.stack((t0 * cos - t1 * sin, t0 * sin + t1 * cos), -1).flatten(-2)

        q, k, v = (rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2))
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.linear1(att.transpose(1, 2)).transpose(1, 2) * g1
        kv = self.to_kv(t_emb).view(b, h, hd, 2)[..., 0]
        x = x + (kv * torch.rsqrt(kv.pow(2).mean(-1, keepdim=True) + 1e-6)).reshape(b, 1, d)
        r = (F.layer_norm(x, (d,), eps=1e-5) * (1 + sc2) + sh2).transpose(1, 2)
        u = self.w2(F.silu(self.w1(r)) * self.w3(r)).transpose(1, 2)
        return x + u * g2


def dit_step():
    d, n, depth = 1536, 237, 24
    blocks = nn.ModuleList([DitBlock() for _ in range(depth)])
    proj_tokens, proj_seq = nn.Linear(768, d), nn.Linear(384, n)
    x, ctx, t_emb = torch.randn(1, n, d), torch.randn(1, 384, 768), torch.randn(1, d)
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    freqs = 10000.0 ** (-torch.arange(0, 24, 2, dtype=torch.float32) / 24)
    ang = (pos * freqs)[None, :, None, :]
    cos, sin = ang.cos(), ang.sin()

    def run():
        c = proj_seq(proj_tokens(ctx).transpose(1, 2)).transpose(1, 2)
        h = x
        for blk in blocks:
            h = blk(h, c, t_emb, cos, sin)
        return h

    return run


# ---------------------------------------------------------------------------------------------
# Oobleck VAE (weight norm folded into plain convolutions), SnakeBeta as torch ops.
# ---------------------------------------------------------------------------------------------

class Snake(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.alpha = nn.Parameter(torch.randn(c) * 0.3)
        self.beta = nn.Parameter(torch.randn(c) * 0.3)

    def forward(self, x):
        a = self.alpha.exp()[None, :, None]
        b = self.beta.exp()[None, :, None]
        return x + (1.0 / (b + 1e-9)) * torch.sin(a * x).pow(2)


def residual(c, dil):
    return nn.ModuleList([Snake(c), nn.Conv1d(c, c, 7, dilation=dil, padding=3 * dil), Snake(c), nn.Conv1d(c, c, 1)])


def run_residual(units, x):
    for u in units:
        x = x + u[3](u[2](u[1](u[0](x))))
    return x


class Decoder(nn.Module):
    def __init__(self, ch=128, mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8), latent=64):
        super().__init__()
        w = [ch] + [m * ch for m in mults]
        n = len(strides)
        self.inp = nn.Conv1d(latent, w[n], 7, padding=3)
        self.blocks = nn.ModuleList()
        for j in range(n):
            cin, cout, s = w[n - j], w[n - j - 1], strides[n - j - 1]
            self.blocks.append(nn.ModuleList([
                Snake(cin), nn.ConvTranspose1d(cin, cout, 2 * s, stride=s, padding=math.ceil(s / 2)),
                residual(cout, 1), residual(cout, 3), residual(cout, 9)]))
        self.act = Snake(w[0])
        self.out = nn.Conv1d(w[0], 2, 7, padding=3, bias=False)

    def forward(self, z):
        x = self.inp(z)
        for blk in self.blocks:
            x = blk[1](blk[0](x))
            x = run_residual([blk[2], blk[3], blk[4]], x)
        return self.out(self.act(x))


class Encoder(nn.Module):
    def __init__(self, ch=128, mults=(1, 2, 4, 8, 16), strides=(2, 4, 4, 8, 8), latent=128):
        super().__init__()
        w = [ch] + [m * ch for m in mults]
        self.inp = nn.Conv1d(2, w[0], 7, padding=3)
        self.blocks = nn.ModuleList()
        for i, s in enumerate(strides):
            self.blocks.append(nn.ModuleList([
                residual(w[i], 1), residual(w[i], 3), residual(w[i], 9), Snake(w[i]),
                nn.Conv1d(w[i], w[i + 1], 2 * s, stride=s, padding=math.ceil(s / 2))]))
        self.act = Snake(w[-1])
        self.out = nn.Conv1d(w[-1], latent, 3, padding=1)

    def forward(self, x):
        x = self.inp(x)
        for blk in self.blocks:
            x = run_residual([blk[0], blk[1], blk[2]], x)
            x = blk[4](blk[3](x))
        return self.out(self.act(x))


def vae_decode():
    dec, z = Decoder(), torch.randn(1, 64, 236)
    return lambda: dec(z)


def vae_encode():
    enc, audio = Encoder(), torch.randn(1, 2, 441000) * 0.1
    return lambda: enc(audio)


# ---------------------------------------------------------------------------------------------
# CLIP ViT-B/32 vision tower on 50 frames (pre-LN layers with quick-GELU), T5-base encoder.
# ---------------------------------------------------------------------------------------------

def clip():
    d = 768
    patch = nn.Conv2d(3, d, 32, 32, bias=False)
    cls, pos = torch.randn(1, 1, d), torch.randn(1, 50, d)
    pre = nn.LayerNorm(d)
    layer = lambda: nn.TransformerEncoderLayer(d, 12, 3072, dropout=0.0, activation=lambda x: x * torch.sigmoid(1.702 * x),
                                               batch_first=True, norm_first=True)
    layers = nn.ModuleList([layer() for _ in range(12)]).eval()
    frames = torch.randn(50, 3, 224, 224)

    def run():
        x = patch(frames).flatten(2).transpose(1, 2)
        x = pre(torch.cat([cls.expand(50, -1, -1), x], 1) + pos)
        for l in layers:
            x = l(x)
        return x

    return run


class T5Layer(nn.Module):
    def __init__(self, d=768, heads=12, ff=3072):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.wi, self.wo = nn.Linear(d, ff, bias=False), nn.Linear(ff, d, bias=False)
        self.n1, self.n2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))

    @staticmethod
    def rms(x, w):
        return w * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    def forward(self, x, bias):
        b, n, d = x.shape
        h = self.rms(x, self.n1)
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        att = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), attn_mask=bias, scale=1.0)
        x = x + self.o(att.transpose(1, 2).reshape(b, n, d))
        return x + self.wo(F.relu(self.wi(self.rms(x, self.n2))))


def t5():
    emb = nn.Embedding(32128, 768)
    layers = nn.ModuleList([T5Layer() for _ in range(12)])
    ids = torch.randint(0, 32128, (1, 128))
    bias = torch.randn(1, 12, 128, 128)

    def run():
        x = emb(ids)
        for l in layers:
            x = l(x, bias)
        return x

    return run


def matmul():
    a, b = torch.randn(1, 1024, 2048), torch.randn(1, 2048, 2048)
    return lambda: a @ b


STAGES = {"dit_step": dit_step, "vae_decode": vae_decode, "vae_encode": vae_encode, "clip": clip, "t5": t5, "matmul": matmul}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--stage", default="all", choices=list(STAGES) + ["all"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for name in STAGES if args.stage == "all" else [args.stage]:
        with torch.inference_mode():
            run = STAGES[name]()
            run()
            best = float("inf")
            for _ in range(args.reps):
                t = time.perf_counter()
                run()
                best = min(best, time.perf_counter() - t)
        line = {"stage": name, "seconds": best, "threads": torch.get_num_threads(), "torch": torch.__version__}
        line["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        if name == "matmul":
            line["gflops"] = 2 * 1024 * 2048 * 2048 / best / 1e9
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
