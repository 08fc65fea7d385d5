//! The error of each weight precision (`bf16`, `int8`) against `f32`, per stage and for the
//! whole request: relative error `||y - y32|| / ||y32||`, cosine similarity, and SNR in dB
//! (`10 log10(||y32||^2 / ||y - y32||^2)`).
//!
//! ```text
//! # the model shipped in the repository (fixtures/tiny/bundle), through the public API
//! cargo run --release -p audiox --example precision_error
//! # real weights, through the public API
//! cargo run --release -p audiox --example precision_error -- --checkpoint-dir checkpoints
//! # full size, random weights built in memory (about 16 GB of RAM), each stage on its own
//! cargo run --release -p audiox --example precision_error -- --full
//! # the same at the tiny sizes (a quick check of the --full code path)
//! cargo run --release -p audiox --example precision_error -- --random
//! ```
//!
//! Through the public API (the default), the model is loaded once per precision and the same
//! text-only request (same seed) runs on each; the stages are read from the request's
//! intermediates, so each one carries the error of the stages before it (cumulative): text
//! tokens (T5), video tokens (CLIP and the temporal transformer on the zero video), context
//! (MAF), the sampled latent (4 DiT steps), the decoded audio (the VAE decoder's kernels are
//! bf16 under either reduced precision), and the final clip.
//!
//! With `--random` / `--full`, components are built with burn's default initialisation as in
//! `examples/gpu_bench.rs`, converted in memory (`audiox_core::precision::convert_module`),
//! and each stage is fed the f32 model's input (isolated error): T5, the video conditioner, MAF,
//! one DiT step (the first DMD step, t = 1), the VAE decode of the f32 latent, then the whole
//! request (cumulative) for the latent and the audio. Random weights have no outliers, so int8 errors there are a lower bound of
//! what trained weights give. Nothing is timed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use audiox::{AudioX, Request, WeightPrecision};
use audiox_core::fixtures::fixtures_dir;
use audiox_core::noise::{NoiseSource, SeededNoise, labels};
use audiox_core::precision::convert_module;
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};
use audiox_encoders::conditioners::{PromptMask, TextConditioner, VideoConditioner};
use audiox_mmdit::{Dit, MafBlock, MmditDenoiser};
use audiox_sampler::{Dmd, Sampler, StepControl};
use audiox_vae::OobleckDecoder;
use burn::tensor::{Device, Distribution, Tensor};
use clap::Parser;

#[path = "common/random_model.rs"]
mod random_model;
use random_model::{Model, build};

const PROMPT: &str = "a wooden door creaks open, then slams shut";
const SEED: u64 = 7;

/// Error of bf16 and int8 weights against f32.
#[derive(Parser)]
struct Args {
    /// Checkpoint folder in the official layout (default: the repository's tiny model).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Random weights built in memory at the tiny sizes, each stage isolated.
    #[arg(long)]
    random: bool,
    /// Random weights built in memory at full size, each stage isolated.
    #[arg(long, conflicts_with = "random")]
    full: bool,
}

/// Error statistics of `got` against `want`.
#[derive(Debug, Clone, Copy)]
struct Stats {
    rel: f64,
    cosine: f64,
    snr_db: f64,
    max_abs: f64,
}

fn stats(got: &[f32], want: &[f32]) -> Stats {
    let (mut dot, mut gg, mut ww, mut ee, mut max_abs) = (0.0f64, 0.0, 0.0, 0.0, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        let (g, w) = (g as f64, w as f64);
        dot += g * w;
        gg += g * g;
        ww += w * w;
        ee += (g - w) * (g - w);
        max_abs = max_abs.max((g - w).abs());
    }
    Stats {
        rel: (ee / ww.max(f64::MIN_POSITIVE)).sqrt(),
        cosine: dot / (gg * ww).sqrt().max(f64::MIN_POSITIVE),
        snr_db: 10.0 * (ww / ee.max(f64::MIN_POSITIVE)).log10(),
        max_abs,
    }
}

fn print_header() {
    println!(
        "| stage | precision | relative error | cosine similarity | SNR (dB) | max abs error |"
    );
    println!("|---|---|---|---|---|---|");
}

fn print_row(stage: &str, p: WeightPrecision, s: Stats) {
    if s.max_abs == 0.0 {
        println!("| {stage} | {p} | 0 (identical) | 1 | - | 0 |");
        return;
    }
    println!(
        "| {stage} | {p} | {:.2e} | {:.7} | {:.1} | {:.2e} |",
        s.rel, s.cosine, s.snr_db, s.max_abs
    );
}

/// The stages read from a request's intermediates, with the final clip.
fn request_outputs(model: &AudioX) -> Result<Vec<(&'static str, Vec<f32>)>> {
    let out = model.generate(Request::text(PROMPT).seed(SEED).keep_intermediates(true))?;
    let i = out
        .intermediates
        .ok_or_else(|| Error::InvalidRequest("no intermediates were kept".into()))?;
    let clip: Vec<f32> = out.audio[0].channels().iter().flatten().copied().collect();
    Ok(vec![
        ("text tokens (T5)", to_vec(i.text_tokens)),
        ("video tokens (CLIP, temporal)", to_vec(i.video_tokens)),
        ("context (MAF)", to_vec(i.context)),
        ("latent (4 DiT steps)", to_vec(i.latent)),
        ("decoded audio (VAE)", to_vec(i.decoded)),
        ("output clip", clip),
    ])
}

fn public_api(dir: &Path) -> Result<()> {
    println!(
        "model {}: a text-only request (seed {SEED}) per precision; each stage carries the error \
         of the stages before it",
        dir.display()
    );
    let load = |p| {
        AudioX::builder()
            .checkpoint_dir(dir)
            .weights_precision(p)
            .build()
    };
    let reference = request_outputs(&load(WeightPrecision::F32)?)?;
    print_header();
    for p in [WeightPrecision::Bf16, WeightPrecision::Int8] {
        let model = load(p)?;
        let held = model.held_weight_bytes();
        eprintln!(
            "{p}: weights {:.1} MB ({:.1} MB f32, {:.1} MB bf16, {:.1} MB int8)",
            held.total() as f64 / 1e6,
            held.f32 as f64 / 1e6,
            held.bf16 as f64 / 1e6,
            held.int8 as f64 / 1e6
        );
        for ((stage, want), (_, got)) in reference.iter().zip(request_outputs(&model)?) {
            print_row(stage, p, stats(&got, want));
        }
    }
    Ok(())
}

/// The reduced components of `m` as the builder holds them for `p`: the DiT in `p`, the
/// conditioners and the VAE decoder's kernels in bf16.
struct Reduced {
    text: TextConditioner,
    video: VideoConditioner,
    maf: MafBlock,
    dit: Dit,
    decoder: OobleckDecoder,
}

fn reduce(m: &Model, p: WeightPrecision) -> Reduced {
    let conditioners = p.conditioners();
    Reduced {
        text: TextConditioner {
            tokenizer: m.text.tokenizer.clone(),
            encoder: convert_module(m.text.encoder.clone(), conditioners),
        },
        video: convert_module(m.video.clone(), conditioners),
        maf: convert_module(m.maf.clone(), conditioners),
        dit: convert_module(m.dit.clone(), p),
        decoder: convert_module(m.decoder.clone(), conditioners),
    }
}

/// Everything a stage comparison needs from one run.
struct Outputs {
    text: Tensor<3>,
    video: Tensor<3>,
    audio: Tensor<3>,
    context: Tensor<3>,
    velocity: Tensor<3>,
    latent: Tensor<3>,
    decoded: Tensor<3>,
}

/// Runs the text-only request with `text`, `video`, `maf`, `dit`, `decoder` (the rest from
/// `m`), and the first DiT step on its own.
fn run(
    m: &Model,
    text: &TextConditioner,
    video: &VideoConditioner,
    maf: &MafBlock,
    dit: &Dit,
    decoder: &OobleckDecoder,
    device: &Device,
) -> Result<Outputs> {
    let mut noise = SeededNoise::new(SEED);
    let shape = [1, dit.io_channels(), dit.latent_length()];
    let initial = from_vec(noise.normal(labels::INITIAL_NOISE, &shape)?, shape, device)?;
    let frames = video.frames();
    let size = video.visual_encoder_model.image_size();
    let width = m.config.model.conditioning.cond_dim;
    let zeros = Tensor::<5>::zeros([1, frames, 3, size, size], device);
    let sync_features = Tensor::<3>::zeros([1, m.sync_rows, width], device);
    let video_tokens = video.forward(zeros, sync_features)?.tokens;
    let (text_condition, _) = text.forward(&[PROMPT], device)?;
    let audio = m
        .audio
        .forward_silent(1, &PromptMask::Random, &mut noise, device)?
        .tokens;
    let context = maf.forward(
        text_condition.tokens.clone(),
        video_tokens.clone(),
        audio.clone(),
    )?;
    let prepared = dit.prepare(context.clone())?;
    let velocity = dit.forward(initial.clone(), Tensor::<1>::ones([1], device), &prepared)?;
    let denoiser = MmditDenoiser::new(dit, context.clone())?;
    let latent = Dmd::new(Dmd::DEFAULT_STEPS).sample(
        &denoiser,
        initial,
        &mut noise,
        &mut StepControl::new(),
    )?;
    let decoded = decoder.forward(latent.clone());
    Ok(Outputs {
        text: text_condition.tokens,
        video: video_tokens,
        audio,
        context,
        velocity,
        latent,
        decoded,
    })
}

fn random(full: bool) -> Result<()> {
    let device = Device::flex();
    let m = build(full, &device)?;
    println!(
        "{} sizes, random weights (burn's default initialisation); isolated stages get the f32 \
         run's input",
        if full { "full" } else { "tiny" }
    );
    let f32_run = run(&m, &m.text, &m.video, &m.maf, &m.dit, &m.decoder, &device)?;
    let want = |t: &Tensor<3>| to_vec(t.clone());
    let video_input = {
        let frames = m.video.frames();
        let size = m.video.visual_encoder_model.image_size();
        let width = m.config.model.conditioning.cond_dim;
        let uniform = Distribution::Uniform(0.0, 1.0);
        (
            Tensor::<5>::random([1, frames, 3, size, size], uniform, &device),
            Tensor::<3>::random([1, m.sync_rows, width], uniform, &device),
        )
    };
    let video_want = to_vec(
        m.video
            .forward(video_input.0.clone(), video_input.1.clone())?
            .tokens,
    );
    print_header();
    for p in [WeightPrecision::Bf16, WeightPrecision::Int8] {
        let r = reduce(&m, p);
        // Isolated: each stage on the f32 run's inputs.
        let (text, _) = r.text.forward(&[PROMPT], &device)?;
        print_row("T5", p, stats(&to_vec(text.tokens), &want(&f32_run.text)));
        // Random frames: a text-only request's all-zero video skips CLIP.
        let video = r
            .video
            .forward(video_input.0.clone(), video_input.1.clone())?;
        print_row(
            "video conditioner (CLIP, temporal; random frames)",
            p,
            stats(&to_vec(video.tokens), &video_want),
        );
        let context = r.maf.forward(
            f32_run.text.clone(),
            f32_run.video.clone(),
            f32_run.audio.clone(),
        )?;
        print_row("MAF", p, stats(&to_vec(context), &want(&f32_run.context)));
        let mut noise = SeededNoise::new(SEED);
        let shape = [1, r.dit.io_channels(), r.dit.latent_length()];
        let initial = from_vec(noise.normal(labels::INITIAL_NOISE, &shape)?, shape, &device)?;
        let prepared = r.dit.prepare(f32_run.context.clone())?;
        let velocity = r
            .dit
            .forward(initial, Tensor::<1>::ones([1], &device), &prepared)?;
        print_row(
            "DiT step (t = 1)",
            p,
            stats(&to_vec(velocity), &want(&f32_run.velocity)),
        );
        let decoded = r.decoder.forward(f32_run.latent.clone());
        print_row(
            "VAE decode (of the f32 latent)",
            p,
            stats(&to_vec(decoded), &want(&f32_run.decoded)),
        );
        // The whole request, every stage in this precision.
        let whole = run(&m, &r.text, &r.video, &r.maf, &r.dit, &r.decoder, &device)?;
        print_row(
            "request: latent",
            p,
            stats(&to_vec(whole.latent), &want(&f32_run.latent)),
        );
        print_row(
            "request: decoded audio",
            p,
            stats(&to_vec(whole.decoded), &want(&f32_run.decoded)),
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if args.full || args.random {
        random(args.full)
    } else {
        let dir = args
            .checkpoint_dir
            .clone()
            .unwrap_or_else(|| fixtures_dir().join("bundle"));
        public_api(&dir)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
