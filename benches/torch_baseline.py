#!/usr/bin/env python3
"""PyTorch baselines for the audiox benches: the same shapes and operations as AudioX-Turbo's
stages, written with torch's public modules, random weights, fp32.

Written for this project (not the official code). Each stage builds its network, runs it once
to warm up, then reports the best of `--reps` timed runs as one JSON line:

    {"stage": "dit_step", "seconds": 5.7, "threads": 2, "torch": "2.11.0", "peak_rss_gb": 9.3}

Usage: python benches/torch_baseline.py --stage {dit_step,vae_decode,vae_encode,clip,t5,matmul,
       request,all} [--threads 2] [--reps 2] [--tiny] [--check-shapes]

`request` is the whole text-only 10 s request as the official pipeline computes it (see the
function's comment); `--tiny` shrinks every width and depth (same structure) for a quick smoke
check of the script; `--check-shapes` runs the chosen sizes on torch's meta device (shapes only,
seconds, no memory). The Rust side (`cargo bench -p audiox --bench vs_torch`) runs this script
and prints ratios.
"""

import argparse
import json
import math
import resource
import time
from types import SimpleNamespace

import torch
import torch.nn as nn
import torch.nn.functional as F

# Sizes of the official model (docs/architecture.md), and a tiny set with the same structure.
FULL = SimpleNamespace(
    # DiT: width, heads (64 of 24, an upstream quirk), SwiGLU hidden, blocks, tokens (time token
    # + 236 latent frames), latent channels, context tokens after MAF, conditioning width.
    d=1536, heads=64, hidden=4096, depth=24, tokens=237, io=64, ctx=384, cond=768,
    # Oobleck VAE and the 10 s stereo prompt at 44.1 kHz.
    vae_ch=128, audio=441_000,
    # CLIP ViT-B/32 on 50 frames; the temporal transformer over them (16 heads of 64).
    clip_d=768, clip_heads=12, clip_layers=12, clip_ff=3072, frames=50,
    temp_heads=16, temp_head_dim=64, temp_layers=4, sync_rows=240, video_tokens=128,
    # T5-base encoder on 128 positions.
    t5_d=768, t5_heads=12, t5_layers=12, t5_ff=3072, t5_len=128, vocab=32128,
    # MAF: 64 experts per modality, 24 heads, 8 fusion layers; audio prompt latent frames.
    experts=64, maf_heads=24, maf_layers=8, prompt_frames=215,
)
TINY = SimpleNamespace(
    d=96, heads=4, hidden=256, depth=2, tokens=237, io=64, ctx=384, cond=64,
    vae_ch=8, audio=441_000,
    clip_d=64, clip_heads=4, clip_layers=2, clip_ff=128, frames=50,
    temp_heads=4, temp_head_dim=16, temp_layers=1, sync_rows=240, video_tokens=128,
    t5_d=64, t5_heads=4, t5_layers=2, t5_ff=128, t5_len=128, vocab=1000,
    experts=8, maf_heads=4, maf_layers=2, prompt_frames=215,
)
S = FULL


def rms(x, eps=1e-6):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)


# ---------------------------------------------------------------------------------------------
# DiT call: 24 blocks, width 1536, 64 heads of 24, 237 tokens, per-token adaLN computed in the
# call (as the official code does), kernel-3 token convolutions, and the cross-attention to the
# time token the official block computes (its query projection included, although the single
# key makes the result independent of it).
# ---------------------------------------------------------------------------------------------

class DitBlock(nn.Module):
    def __init__(self):
        super().__init__()
        d, hidden = S.d, S.hidden
        self.heads = S.heads
        self.ada = nn.Linear(d, 6 * d)
        self.qkv = nn.Linear(d, 3 * d)
        self.linear1 = nn.Conv1d(d, d, 3, padding=1)
        self.to_q = nn.Linear(d, d, bias=False)
        self.to_kv = nn.Linear(d, 2 * d, bias=False)
        self.w1 = nn.Conv1d(d, hidden, 3, padding=1, bias=False)
        self.w3 = nn.Conv1d(d, hidden, 3, padding=1, bias=False)
        self.w2 = nn.Conv1d(hidden, d, 3, padding=1, bias=False)

    def forward(self, x, c, time_token, cos, sin):
        b, n, d = x.shape
        h, hd = self.heads, d // self.heads
        sh1, sc1, g1, sh2, sc2, g2 = self.ada(F.silu(c)).chunk(6, dim=-1)
        a = F.layer_norm(x, (d,), eps=1e-5) * (1 + sc1) + sh1
        q, k, v = self.qkv(a).view(b, n, h, hd, 3).unbind(-1)
        q, k = rms(q), rms(k)

        def rope(t):
            t0, t1 = t[..., 0::2], t[..., 1::2]
            return torch.stack((t0 * cos - t1 * sin, t0 * sin + t1 * cos), -1).flatten(-2)

        q, k, v = (rope(q).transpose(1, 2), rope(k).transpose(1, 2), v.transpose(1, 2))
        att = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        x = x + self.linear1(att.transpose(1, 2)).transpose(1, 2) * g1
        # Cross-attention to the one time token (the official block's key/value order kept).
        cq = rms(self.to_q(x).view(b, n, h, hd)).transpose(1, 2)
        ck, cv = self.to_kv(time_token).view(b, 1, h, hd, 2).unbind(-1)
        cross = F.scaled_dot_product_attention(cq, cv.transpose(1, 2), rms(ck).transpose(1, 2))
        x = x + cross.transpose(1, 2).reshape(b, n, d)
        r = (F.layer_norm(x, (d,), eps=1e-5) * (1 + sc2) + sh2).transpose(1, 2)
        u = self.w2(F.silu(self.w1(r)) * self.w3(r)).transpose(1, 2)
        return x + u * g2


class Dit(nn.Module):
    """One call of the denoiser: timestep embedding, input/output projections, the context
    projections (recomputed every call, as the official code does) and the blocks."""

    def __init__(self):
        super().__init__()
        d = S.d
        self.fourier = nn.Parameter(torch.randn(128, 1))
        self.t1, self.t2 = nn.Linear(256, d), nn.Linear(d, d)
        self.pre = nn.Conv1d(S.io, S.io, 1, bias=False)
        self.post = nn.Conv1d(S.io, S.io, 1, bias=False)
        self.project_in = nn.Linear(S.io, d, bias=False)
        self.project_out = nn.Linear(d, S.io, bias=False)
        self.proj_tokens, self.proj_seq = nn.Linear(S.cond, d), nn.Linear(S.ctx, S.tokens)
        self.blocks = nn.ModuleList([DitBlock() for _ in range(S.depth)])
        hd = d // S.heads
        pos = torch.arange(S.tokens, dtype=torch.float32)[:, None]
        freqs = 10000.0 ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
        ang = (pos * freqs)[None, :, None, :]
        self.cos, self.sin = ang.cos(), ang.sin()

    def forward(self, x, t, ctx):
        f = 2 * math.pi * t[:, None] * self.fourier[:, 0][None, :]
        t_emb = self.t2(F.silu(self.t1(torch.cat([f.cos(), f.sin()], -1))))[:, None, :]
        x = self.pre(x) + x
        h = torch.cat([t_emb, self.project_in(x.transpose(1, 2))], 1)
        c = self.proj_seq(self.proj_tokens(ctx).transpose(1, 2)).transpose(1, 2)
        for blk in self.blocks:
            h = blk(h, c, t_emb, self.cos, self.sin)
        o = self.project_out(h).transpose(1, 2)[:, :, 1:]
        return self.post(o) + o


def dit_step():
    dit = Dit()
    x, ctx, t = torch.randn(1, S.io, S.tokens - 1), torch.randn(1, S.ctx, S.cond), torch.tensor([0.5])
    return lambda: dit(x, t, ctx)


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


MULTS, STRIDES = (1, 2, 4, 8, 16), (2, 4, 4, 8, 8)


class Decoder(nn.Module):
    def __init__(self, latent=64):
        super().__init__()
        w = [S.vae_ch] + [m * S.vae_ch for m in MULTS]
        n = len(STRIDES)
        self.inp = nn.Conv1d(latent, w[n], 7, padding=3)
        self.blocks = nn.ModuleList()
        for j in range(n):
            cin, cout, s = w[n - j], w[n - j - 1], STRIDES[n - j - 1]
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
    def __init__(self, latent=128):
        super().__init__()
        w = [S.vae_ch] + [m * S.vae_ch for m in MULTS]
        self.inp = nn.Conv1d(2, w[0], 7, padding=3)
        self.blocks = nn.ModuleList()
        for i, s in enumerate(STRIDES):
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
    dec, z = Decoder(), torch.randn(1, S.io, S.tokens - 1)
    return lambda: dec(z)


def vae_encode():
    enc, audio = Encoder(), torch.randn(1, 2, S.audio) * 0.1
    return lambda: enc(audio)


# ---------------------------------------------------------------------------------------------
# CLIP ViT-B/32 vision tower on 50 frames (pre-LN layers with quick-GELU), T5-base encoder.
# ---------------------------------------------------------------------------------------------

class Clip(nn.Module):
    def __init__(self):
        super().__init__()
        d = S.clip_d
        self.patch = nn.Conv2d(3, d, 32, 32, bias=False)
        self.cls, self.pos = nn.Parameter(torch.randn(1, 1, d)), nn.Parameter(torch.randn(1, 50, d))
        self.pre = nn.LayerNorm(d)
        layer = lambda: nn.TransformerEncoderLayer(d, S.clip_heads, S.clip_ff, dropout=0.0,
                                                   activation=lambda x: x * torch.sigmoid(1.702 * x),
                                                   batch_first=True, norm_first=True)
        self.layers = nn.ModuleList([layer() for _ in range(S.clip_layers)])

    def forward(self, frames):
        x = self.patch(frames).flatten(2).transpose(1, 2)
        x = self.pre(torch.cat([self.cls.expand(frames.shape[0], -1, -1), x], 1) + self.pos)
        for l in self.layers:
            x = l(x)
        return x


def clip():
    model, frames = Clip().eval(), torch.randn(S.frames, 3, 224, 224)
    return lambda: model(frames)


class T5Layer(nn.Module):
    def __init__(self):
        super().__init__()
        d = S.t5_d
        self.heads = S.t5_heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.wi, self.wo = nn.Linear(d, S.t5_ff, bias=False), nn.Linear(S.t5_ff, d, bias=False)
        self.n1, self.n2 = nn.Parameter(torch.ones(d)), nn.Parameter(torch.ones(d))

    def forward(self, x, bias):
        b, n, d = x.shape
        h = self.n1 * rms(x)
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)
        att = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)), attn_mask=bias, scale=1.0)
        x = x + self.o(att.transpose(1, 2).reshape(b, n, d))
        return x + self.wo(F.relu(self.wi(self.n2 * rms(x))))


class T5(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(S.vocab, S.t5_d)
        self.layers = nn.ModuleList([T5Layer() for _ in range(S.t5_layers)])
        self.bias = torch.randn(1, S.t5_heads, S.t5_len, S.t5_len)

    def forward(self, ids):
        x = self.emb(ids)
        for l in self.layers:
            x = l(x, self.bias)
        return rms(x)


def t5():
    model, ids = T5(), torch.randint(0, S.vocab, (1, S.t5_len))
    return lambda: model(ids)


def matmul():
    a, b = torch.randn(1, 1024, 2048), torch.randn(1, 2048, 2048)
    return lambda: a @ b


# ---------------------------------------------------------------------------------------------
# The whole text-only request as the official pipeline computes it when neither video nor an
# audio prompt is given (docs: reference-model.md, sections 0-2 and 7): T5 over all 128 padded
# positions; the video conditioner on 50 all-zero frames (CLIP, the temporal transformer, the
# frame projection and the sync branch on zero sync features are all computed, then replaced by
# the learned empty feature; the Synchformer itself is not run without video); the audio
# conditioner's VAE encode of 10 s of silence and its posterior sample; MAF fusion; 4 DMD
# denoiser calls, each recomputing the context projections and adaLN modulations; VAE decode.
# ---------------------------------------------------------------------------------------------

class TemporalLayer(nn.Module):
    def __init__(self):
        super().__init__()
        d, inner = S.clip_d, S.temp_heads * S.temp_head_dim
        self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * inner, bias=False)
        self.out = nn.Linear(inner, d)
        self.ff1, self.ff2 = nn.Linear(d, S.clip_ff), nn.Linear(S.clip_ff, d)  # 3072 at full size, as CLIP's

    def forward(self, x):
        b, n, _ = x.shape
        split = lambda t: t.view(b, n, S.temp_heads, S.temp_head_dim).transpose(1, 2)
        q, k, v = (split(t) for t in self.qkv(self.n1(x)).chunk(3, -1))
        x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))
        return x + self.ff2(F.gelu(self.ff1(self.n2(x))))


class VideoConditioner(nn.Module):
    def __init__(self):
        super().__init__()
        d = S.clip_d
        self.clip = Clip()
        self.temp_pos = nn.Parameter(torch.randn(1, S.frames, d))
        self.temporal = nn.ModuleList([TemporalLayer() for _ in range(S.temp_layers)])
        self.temp_norm = nn.LayerNorm(d)
        self.proj = nn.Linear(S.frames * 50, S.video_tokens)
        self.proj_sync = nn.Linear(S.sync_rows, S.video_tokens)
        self.sync_weight = nn.Parameter(torch.tensor(1.0))
        self.empty = nn.Parameter(torch.randn(1, S.video_tokens, d))
        self.mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
        self.std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]

    def forward(self, video, sync):
        d = S.clip_d
        is_zero = bool((video == 0).all())
        frames = ((video[0].float() / 255.0) - self.mean) / self.std
        h = self.clip(frames)  # [frames, 50 tokens, d]
        h = h.transpose(0, 1) + self.temp_pos  # per token index, over time
        for layer in self.temporal:
            h = layer(h)
        h = self.temp_norm(h).transpose(0, 1).reshape(1, -1, d)  # token index = t * 50 + q
        h = self.proj(h.reshape(-1, S.frames * 50)).reshape(1, S.video_tokens, d)
        h = h + self.sync_weight * self.proj_sync(sync.reshape(-1, S.sync_rows)).reshape(1, S.video_tokens, d)
        return self.empty if is_zero else h


class AudioConditioner(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Encoder()
        self.proj_frames = nn.Linear(S.prompt_frames, S.video_tokens)
        self.proj_out = nn.Linear(S.io, S.cond)

    def forward(self, audio):
        mean, scale = self.encoder(audio).chunk(2, 1)
        latent = mean + (F.softplus(scale) + 1e-4) * torch.randn_like(mean)
        return self.proj_out(self.proj_frames(latent).transpose(1, 2))


class Maf(nn.Module):
    def __init__(self):
        super().__init__()
        d = S.cond
        self.gate = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 3), nn.Sigmoid())
        self.experts = nn.Parameter(torch.randn(3 * S.experts, d))
        self.cross = nn.MultiheadAttention(d, S.maf_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, S.maf_heads, 4 * d, activation=F.gelu, batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, S.maf_layers, enable_nested_tensor=False)
        self.norms = nn.ModuleList([nn.LayerNorm(d) for _ in range(3)])

    def forward(self, streams):
        w = self.gate(torch.cat([s.mean(1) for s in streams], -1))
        z = torch.cat([s * w[:, i, None, None] for i, s in enumerate(streams)], 1)
        e = self.experts[None]
        u = self.norm1(e + self.cross(e, z, z, need_weights=False)[0])
        parts = self.fusion(u).chunk(3, 1)
        return torch.cat([s + torch.sigmoid(torch.tensor(-10.0)) * n(p.mean(1))[:, None]
                          for s, p, n in zip(streams, parts, self.norms)], 1)


def request():
    text, video, audio = T5().eval(), VideoConditioner().eval(), AudioConditioner().eval()
    maf, dit, decoder = Maf().eval(), Dit().eval(), Decoder().eval()
    ids = torch.randint(0, S.vocab, (1, S.t5_len))
    mask = (torch.arange(S.t5_len) < 12).float()[None, :, None]  # a short prompt, padded
    frames = torch.zeros(1, S.frames, 3, 224, 224, dtype=torch.uint8)
    sync = torch.zeros(1, S.sync_rows, S.clip_d)
    silence = torch.zeros(1, 2, S.audio)
    # DMD, 4 steps (the student's default schedule).
    sigmas = [1.0, 0.75, 0.5, 0.25]

    def run():
        v = video(frames, sync)
        t = text(ids) * mask
        a = audio(silence)
        ctx = maf([v, t, a])  # the official concatenation order does not change the cost
        x = torch.randn(1, S.io, S.tokens - 1)
        for i, s in enumerate(sigmas):
            x0 = x - s * dit(x, torch.tensor([s]), ctx)
            nxt = sigmas[i + 1] if i + 1 < len(sigmas) else 0.0
            x = (1 - nxt) * x0 + nxt * torch.randn_like(x0)
        return decoder(x)

    return run


STAGES = {"dit_step": dit_step, "vae_decode": vae_decode, "vae_encode": vae_encode, "clip": clip, "t5": t5,
          "matmul": matmul, "request": request}
# `all` runs the single stages; the whole request only when asked for by name.
ALL = ["dit_step", "vae_decode", "vae_encode", "clip", "t5", "matmul"]


def check_shapes(names):
    """Builds and runs `names` on the meta device: every module and product is checked for shape
    agreement at the chosen sizes without allocating or computing anything."""
    meta_bool = torch.Tensor.__bool__
    # The video conditioner branches on "all frames zero"; on meta there is no value: say yes.
    torch.Tensor.__bool__ = lambda t: True if t.device.type == "meta" else meta_bool(t)
    try:
        with torch.device("meta"), torch.inference_mode():
            for name in names:
                out = STAGES[name]()()
                print(json.dumps({"stage": name, "output_shape": list(out.shape)}), flush=True)
    finally:
        torch.Tensor.__bool__ = meta_bool


def main():
    global S
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", default="all", choices=list(STAGES) + ["all"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--tiny", action="store_true", help="tiny widths and depths (a smoke check, not a baseline)")
    p.add_argument("--check-shapes", action="store_true",
                   help="run the stages on torch's meta device (shapes only: no memory, no arithmetic, no timing)")
    args = p.parse_args()
    if args.reps < 1:
        p.error("--reps must be at least 1")
    if args.tiny:
        S = TINY
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.check_shapes:
        check_shapes(ALL + ["request"] if args.stage == "all" else [args.stage])
        return
    for name in ALL if args.stage == "all" else [args.stage]:
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
        if args.tiny:
            line["tiny"] = True
        if name == "matmul":
            line["gflops"] = 2 * 1024 * 2048 * 2048 / best / 1e9
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
