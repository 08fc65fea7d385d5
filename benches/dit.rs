//! One DiT step and the MAF fusion: the tiny fixture model always (divan), and behind
//! `AUDIOX_BENCH_FULL=1` the full-size network with random weights (manual timing: a step takes
//! seconds): latent [1, 64, 236], 384 context tokens of width 768, plus a per-part breakdown of
//! one block and the MAF block at full size. See docs/performance.md ("DiT step", "MAF").

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use audiox::ModelConfig;
use audiox_core::fixtures::{FixtureSet, official_config_path};
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::from_dyn;
use audiox_mmdit::parity::{load_fixture_dit, load_fixture_maf};
use audiox_mmdit::{Dit, DitConfig, MafBlock, MafBlockConfig};
use burn::tensor::{Device, Tensor};
use divan::Bencher;

/// FLOPs (2 x MACs) of one step as executed here: the context-only work (resampling and every
/// block's adaLN modulation) is prepared once per request, and the cross-attention is one
/// matvec per block.
fn step_flops(c: &DitConfig, batch: usize) -> f64 {
    let (n, e, f, k) = (c.seq_len(), c.width, c.ffn_hidden(), c.kernel_size);
    let l = n - 1;
    let hd = e / c.heads();
    let per_block = n * e * 3 * e                // qkv
        + 2 * c.heads() * n * n * hd               // q k^T and the weighted sum of v
        + n * k * e * e                          // linear1 (token conv)
        + e * e                                  // cross-attention: key half of to_kv(time)
        + 2 * n * k * e * f + n * k * f * e; // SwiGLU w1, w3, w2 (token convs)
    let other = c.timestep_features * e + e * e  // time MLP
        + 2 * l * c.io_channels * c.io_channels  // pre/post 1x1 convs
        + 2 * n * e * c.io_channels; // project_in / project_out
    2.0 * (batch * (c.depth * per_block + other)) as f64
}

/// FLOPs of the reference's step, which also computes the modulation and the dead
/// cross-attention query projection every time (~1.0 TFLOP: `docs/architecture.md`, "Cost of a
/// request").
fn reference_step_flops(c: &DitConfig, batch: usize) -> f64 {
    let (n, e) = (c.seq_len(), c.width);
    let extra = c.depth * (n * e * 6 * e + n * e * e)
        + c.context_tokens * c.cond_dim * e
        + e * c.context_tokens * n;
    step_flops(c, batch) + 2.0 * (batch * extra) as f64
}

/// FLOPs of [`Dit::prepare`]: context projection, resampling, every block's modulation.
fn prepare_flops(c: &DitConfig, batch: usize) -> f64 {
    let (n, e) = (c.seq_len(), c.width);
    let macs =
        c.context_tokens * c.cond_dim * e + e * c.context_tokens * n + c.depth * n * e * 6 * e;
    2.0 * (batch * macs) as f64
}

/// FLOPs of the MAF block for streams of `tokens` tokens in total.
fn maf_flops(c: &MafBlockConfig, tokens: usize, batch: usize) -> f64 {
    let d = c.width;
    let p = 3 * c.experts_per_modality;
    // q and output projections, k and v projections, scores and weighted sum.
    let attention = |q: usize, kv: usize| 2 * q * d * d + 2 * kv * d * d + 2 * q * kv * d;
    let gating = 3 * d * d + 3 * d;
    let cross = attention(p, tokens);
    let layer = attention(p, p) + 2 * p * d * c.mlp_ratio * d;
    2.0 * (batch * (gating + cross + c.fusion_layers * layer)) as f64
}

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let values = SeededNoise::new(seed)
        .normal("bench input", &shape)
        .unwrap();
    from_dyn(values, &shape, device).unwrap()
}

fn main() {
    divan::main();
    full_size();
}

/// The tiny fixture's DiT and MAF block with their inputs (`mmdit_forward`).
struct TinyDit {
    device: Device,
    dit: Dit,
    maf: MafBlock,
    text: Tensor<3>,
    video: Tensor<3>,
    audio: Tensor<3>,
    x: Tensor<3>,
}

impl TinyDit {
    fn load() -> Self {
        let device = common::device();
        let set = FixtureSet::open_default().expect("fixture set");
        let fx = set.fixture("mmdit_forward").expect("mmdit_forward fixture");
        let dit = load_fixture_dit(&fx, &device).unwrap();
        let maf = load_fixture_maf(&fx, &device).unwrap();
        let input = |name: &str| {
            let t = fx.f32(name).unwrap();
            from_dyn::<3>(t.values, &t.shape, &device).unwrap()
        };
        Self {
            text: input("in.text_tokens"),
            video: input("in.video_tokens"),
            audio: input("in.audio_tokens"),
            x: input("in.x"),
            device,
            dit,
            maf,
        }
    }

    /// The fused context of the fixture's inputs.
    fn context(&self) -> Tensor<3> {
        self.maf
            .forward(self.text.clone(), self.video.clone(), self.audio.clone())
            .unwrap()
    }
}

#[divan::bench(sample_count = 20)]
fn dit_step_tiny(bencher: Bencher) {
    let tiny = TinyDit::load();
    let prepared = tiny.dit.prepare(tiny.context()).unwrap();
    let t = Tensor::<1>::from_floats([0.5], &tiny.device);
    bencher.bench_local(|| {
        let v = tiny
            .dit
            .forward(tiny.x.clone(), t.clone(), &prepared)
            .unwrap();
        common::sync(&tiny.device);
        v
    });
}

#[divan::bench(sample_count = 20)]
fn dit_prepare_tiny(bencher: Bencher) {
    let tiny = TinyDit::load();
    let ctx = tiny.context();
    bencher.bench_local(|| tiny.dit.prepare(ctx.clone()).unwrap());
}

#[divan::bench(sample_count = 20)]
fn maf_tiny(bencher: Bencher) {
    let tiny = TinyDit::load();
    bencher.bench_local(|| tiny.context());
}

/// Seconds of the best of `reps` runs of `f` (each run read back).
fn best_of<const D: usize>(reps: usize, mut f: impl FnMut() -> Tensor<D>) -> f64 {
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            let _ = f().into_data();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Times the parts of one full-size block on its real inputs: where a step's time goes.
fn block_breakdown(
    dit: &Dit,
    config: &DitConfig,
    x: Tensor<3>,
    t: Tensor<1>,
    prepared: &audiox_mmdit::PreparedConditioning,
) {
    let device = x.device();
    let (n, e, f, k) = (
        config.seq_len(),
        config.width,
        config.ffn_hidden(),
        config.kernel_size,
    );
    let block = &dit.blocks[0];
    let m = &prepared.blocks()[0];
    let h = random([1, n, e], 7, &device);
    let hidden = random([1, n, f], 8, &device);
    let (_, time) = dit.time_embed.forward(t);
    let reps = 3;
    let qkv = block.attn.project(h.clone());
    let parts: Vec<(&str, f64, f64)> = vec![
        (
            "qkv projection",
            best_of(reps, || block.attn.project(h.clone())),
            (n * e * 3 * e) as f64,
        ),
        (
            "attention (rms, rope, sdpa, merge)",
            best_of(reps, || block.attn.attend(qkv.clone(), &dit.rope)),
            (2 * config.heads() * n * n * (e / config.heads())) as f64,
        ),
        (
            "linear1 token conv",
            best_of(reps, || block.linear1.forward(h.clone())),
            (n * k * e * e) as f64,
        ),
        (
            "ffn w1 token conv",
            best_of(reps, || block.ffn.w1.forward(h.clone())),
            (n * k * e * f) as f64,
        ),
        (
            "ffn w2 token conv",
            best_of(reps, || block.ffn.w2.forward(hidden.clone())),
            (n * k * f * e) as f64,
        ),
        (
            "whole ffn (w1, w3, w2, SiLU, product)",
            best_of(reps, || block.ffn.forward(h.clone())),
            (3 * n * k * e * f) as f64,
        ),
        (
            "cross-attention time term",
            best_of(reps, || block.cross_attn.time_term(time.clone())),
            (e * e) as f64,
        ),
        (
            "whole block",
            best_of(reps, || {
                block.forward(h.clone(), m, &dit.rope, time.clone(), 0, None)
            }),
            (n * e * 3 * e
                + 2 * config.heads() * n * n * (e / config.heads())
                + n * k * e * e
                + e * e
                + 3 * n * k * e * f) as f64,
        ),
    ];
    let _ = x;
    for (name, secs, macs) in parts {
        println!(
            "BLOCK PART {name}: {:.1} ms, {:.1} GFLOP/s",
            secs * 1e3,
            2.0 * macs / secs / 1e9
        );
    }
}

fn full_size() {
    if !common::full_size() {
        println!(
            "full-size DiT step and MAF skipped (set {}=1)",
            common::FULL_SIZE_ENV
        );
        return;
    }
    let device = common::device();
    let config = ModelConfig::from_file(official_config_path()).unwrap();

    // MAF: three streams of 128 tokens.
    let maf_config = config.maf().clone();
    let maf = maf_config.init(&device);
    let d = maf_config.width;
    let streams: Vec<Tensor<3>> = (0..3)
        .map(|i| random([1, 128, d], 10 + i, &device))
        .collect();
    let run_maf = || {
        maf.forward(streams[0].clone(), streams[1].clone(), streams[2].clone())
            .unwrap()
    };
    let _ = run_maf().into_data(); // materialises the random weights
    let roofline = common::matmul_gflops(&device, 5);
    println!("matmul roofline: {roofline:.1} GFLOP/s");
    let secs = best_of(3, run_maf);
    common::report(
        "maf_full (3 x 128 tokens)",
        secs,
        maf_flops(&maf_config, 384, 1),
        roofline,
    );
    drop(maf);

    // DiT: random weights (lazy init, materialised by the first call), random inputs.
    let dit_config = config.dit().clone();
    let dit = dit_config.init(&device).unwrap();
    let (c, l) = (dit.io_channels(), dit.latent_length());
    let [n_ctx, d] = dit.context_shape();
    let ctx = random([1, n_ctx, d], 1, &device);
    let x = random([1, c, l], 2, &device);
    let t = Tensor::<1>::from_floats([0.75], &device);
    let start = Instant::now();
    let prepared = dit.prepare(ctx.clone()).unwrap();
    let v = dit.forward(x.clone(), t.clone(), &prepared).unwrap();
    let largest = v.abs().max().into_scalar::<f32>();
    println!(
        "first prepare + step (random weight init included): {:.1} s; max |v| = {largest} (finite: {})",
        start.elapsed().as_secs_f64(),
        largest.is_finite()
    );
    println!(
        "step FLOPs: {:.3} TFLOP executed ({:.3} TFLOP as the reference computes it); prepare: {:.3} TFLOP",
        step_flops(&dit_config, 1) / 1e12,
        reference_step_flops(&dit_config, 1) / 1e12,
        prepare_flops(&dit_config, 1) / 1e12,
    );
    let secs = common::time_once(0, || {
        let p = dit.prepare(ctx.clone()).unwrap();
        let _ = p.blocks()[dit_config.depth - 1].gate_mlp.to_data();
    });
    common::report(
        "dit_prepare_full (once per request)",
        secs,
        prepare_flops(&dit_config, 1),
        roofline,
    );
    // Steps interleaved with one-block timings and rooflines: on a shared machine the load
    // changes between runs, and the block time x depth shows what a step costs when quiet.
    let h = random([1, dit_config.seq_len(), dit_config.width], 3, &device);
    let (_, time) = dit.time_embed.forward(t.clone());
    for run in 0..3 {
        let secs = common::time_once(0, || {
            dit.forward(x.clone(), t.clone(), &prepared)
                .unwrap()
                .into_data()
        });
        let roofline = common::matmul_gflops(&device, 3);
        common::report(
            &format!("dit_step_full (run {run})"),
            secs,
            step_flops(&dit_config, 1),
            roofline,
        );
        let block = best_of(2, || {
            dit.blocks[0].forward(
                h.clone(),
                &prepared.blocks()[0],
                &dit.rope,
                time.clone(),
                0,
                None,
            )
        });
        println!(
            "  one block {:.1} ms (x {} = {:.2} s), load average {}",
            block * 1e3,
            dit_config.depth,
            block * dit_config.depth as f64,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
    }
    block_breakdown(&dit, &dit_config, x, t, &prepared);
    println!(
        "roofline after: {:.1} GFLOP/s",
        common::matmul_gflops(&device, 5)
    );
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS: {:.2} GB", rss as f64 / 1e9);
    }
}
