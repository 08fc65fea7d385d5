//! T5, CLIP and the video conditioner's temporal transformer: the tiny fixture models always
//! (divan), and the full-size models with random weights behind `AUDIOX_BENCH_FULL=1`
//! (manual timing): T5-base on 128 tokens, CLIP ViT-B/32 on 50 frames, the temporal
//! transformer on 50 tokens x 50 frames, and the whole video conditioner. See
//! docs/performance.md.

#[path = "common/mod.rs"]
mod common;

use audiox::ModelConfig;
use audiox_core::fixtures::{FixtureSet, official_config_path};
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::from_dyn;
use audiox_core::weights::{Component, WeightSource};
use audiox_encoders::clip::{ClipVision, ClipVisionConfig, normalize_pixels};
use audiox_encoders::conditioners::{TemporalTransformerConfig, VideoConditioner};
use audiox_encoders::parity::conditioner::video_conditioner;
use audiox_encoders::t5::{T5Config, T5Encoder};
use audiox_encoders::tokenizer::T5Tokenizer;
use burn::tensor::{Device, Int, Tensor, TensorData};
use divan::Bencher;

/// FLOPs of one T5 encoder pass over `n` tokens (projections, feed-forward, attention
/// products).
fn t5_flops(c: &T5Config, n: usize) -> f64 {
    let inner = (c.num_heads * c.d_kv) as f64;
    let d = c.d_model as f64;
    let per_token = 4.0 * d * inner + 2.0 * d * c.d_ff as f64;
    let attention = 2.0 * (n * n) as f64 * inner;
    2.0 * c.num_layers as f64 * (n as f64 * per_token + attention)
}

/// FLOPs of one CLIP pass over `frames` frames (patch embedding, layers, attention).
fn clip_flops(c: &ClipVisionConfig, frames: usize) -> f64 {
    let d = c.hidden_size as f64;
    let q = c.tokens() as f64;
    let patches = (c.tokens() - 1) as f64;
    let patch = patches * (3 * c.patch_size * c.patch_size) as f64 * d;
    let per_token = 4.0 * d * d + 2.0 * d * c.intermediate_size as f64;
    let attention = 2.0 * q * q * d;
    2.0 * frames as f64 * (patch + c.num_hidden_layers as f64 * (q * per_token + attention))
}

fn normal(seed: u64, shape: &[usize]) -> Vec<f32> {
    SeededNoise::new(seed)
        .normal("bench input", shape)
        .expect("seeded noise cannot fail")
}

fn main() {
    divan::main();
    full_size();
}

/// The vendored fixture set.
fn fixtures() -> FixtureSet {
    FixtureSet::open_default().expect("fixture set")
}

/// T5 (t5_encoder fixture: 2 x 130 tokens).
#[divan::bench(sample_count = 20)]
fn t5_tiny(bencher: Bencher) {
    let device = common::device();
    let fx = fixtures()
        .fixture("t5_encoder")
        .expect("t5_encoder fixture");
    let config = T5Config::from_hf_json(fx.field("t5_config").unwrap()).unwrap();
    let (t5, _) = T5Encoder::load(&config, &[WeightSource::new(fx.weights())], &device).unwrap();
    let ids = fx.i64("in.input_ids").unwrap();
    let mask = fx.i64("in.attention_mask").unwrap();
    let dims = [ids.shape[0], ids.shape[1]];
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids.values, dims), &device);
    let mask = Tensor::<2, Int>::from_data(TensorData::new(mask.values, dims), &device).float();
    bencher.bench_local(|| {
        let out = t5.forward(ids.clone(), mask.clone()).unwrap();
        common::sync(&device);
        out
    });
}

/// CLIP (clip_vision fixture).
#[divan::bench(sample_count = 20)]
fn clip_tiny(bencher: Bencher) {
    let device = common::device();
    let fx = fixtures()
        .fixture("clip_vision")
        .expect("clip_vision fixture");
    let config = ClipVisionConfig::from_hf_json(fx.field("clip_config").unwrap()).unwrap();
    let (clip, _) = ClipVision::load(&config, &[WeightSource::new(fx.weights())], &device).unwrap();
    let frames = fx.f32("in.frames").unwrap();
    let frames = from_dyn::<4>(frames.values, &frames.shape, &device).unwrap();
    bencher.bench_local(|| {
        let out = clip.forward(normalize_pixels(frames.clone())).unwrap();
        common::sync(&device);
        out
    });
}

/// The conditioner fixture's video conditioner with its video and Synchformer inputs (item 1
/// has no video and is skipped).
struct TinyVideo {
    device: Device,
    video: VideoConditioner,
    frames: Tensor<5>,
    sync: Tensor<3>,
}

impl TinyVideo {
    fn load() -> Self {
        let device = common::device();
        let fx = fixtures()
            .fixture("conditioner")
            .expect("conditioner fixture");
        let video = video_conditioner(&fx, &device).unwrap();
        let frames = fx.f32("in.video").unwrap();
        let sync = fx.f32("in.sync").unwrap();
        Self {
            frames: from_dyn::<5>(frames.values, &frames.shape, &device).unwrap(),
            sync: from_dyn::<3>(sync.values, &sync.shape, &device).unwrap(),
            video,
            device,
        }
    }
}

/// The video conditioner's temporal transformer on the CLIP features of the fixture's video.
#[divan::bench(sample_count = 20)]
fn temporal_transformer_tiny(bencher: Bencher) {
    let tiny = TinyVideo::load();
    let clip_out = tiny.video.clip_features(tiny.frames.clone()).unwrap();
    bencher.bench_local(|| {
        let out = tiny.video.temporal(clip_out.clone());
        common::sync(&tiny.device);
        out
    });
}

/// The whole video conditioner.
#[divan::bench(sample_count = 20)]
fn video_conditioner_tiny(bencher: Bencher) {
    let tiny = TinyVideo::load();
    bencher.bench_local(|| {
        let out = tiny
            .video
            .forward(tiny.frames.clone(), tiny.sync.clone())
            .unwrap();
        common::sync(&tiny.device);
        out
    });
}

/// The tokenizer (the bundle's tokenizer.json, 24 tokens).
#[divan::bench(sample_count = 20)]
fn tokenizer_tiny(bencher: Bencher) {
    let path = fixtures()
        .bundle_dir()
        .join("t5-base")
        .join("tokenizer.json");
    let tokenizer = T5Tokenizer::from_file(&path, 24).expect("the bundle's tokenizer.json");
    bencher.bench_local(|| {
        tokenizer
            .encode("a dog barks twice, then a car passes by on a wet road")
            .unwrap()
    });
}

fn full_t5() {
    let device = common::device();
    let config = T5Config::t5_base();
    let t5: T5Encoder = common::randomize(config.init(&device), 1);
    let n = 128;
    // A 40-token prompt padded to 128, as a typical request.
    let valid = 40;
    let ids: Vec<i64> = (0..n as i64)
        .map(|i| if i < valid { 100 + 37 * i } else { 0 })
        .collect();
    let mask: Vec<f32> = (0..n)
        .map(|i| if i < valid as usize { 1.0 } else { 0.0 })
        .collect();
    let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
    let mask = Tensor::<2>::from_data(TensorData::new(mask, [1, n]), &device);
    let flops = t5_flops(&config, n);
    // The machine is shared: the roofline is measured right before the stage.
    let roofline = common::matmul_gflops(&device, 3);
    for run in 0..3 {
        let secs = common::time_once(usize::from(run == 0), || {
            let out = t5.forward(ids.clone(), mask.clone()).unwrap();
            let _ = out.into_data();
        });
        common::report(
            &format!("t5_base_full (run {run}, {n} tokens)"),
            secs,
            flops,
            roofline,
        );
    }
}

fn full_clip_and_video() {
    let device = common::device();
    let model = ModelConfig::from_file(official_config_path()).unwrap();
    let config = model
        .video_conditioner()
        .unwrap()
        .clone()
        .with_clip(ClipVisionConfig::vit_b32());
    let video = common::randomize(config.init(&device), 2);
    let t = config.frames();
    let s = config.clip.image_size;
    // Frames with pixel values 0..255.
    let pixels: Vec<f32> = normal(3, &[t * 3 * s * s])
        .into_iter()
        .map(|x| (127.5 + 60.0 * x).clamp(0.0, 255.0).round())
        .collect();
    let frames = from_dyn::<5>(pixels, &[1, t, 3, s, s], &device).unwrap();
    let d = config.clip.hidden_size;
    let sync = from_dyn::<3>(
        normal(4, &[config.sync_rows * d]),
        &[1, config.sync_rows, d],
        &device,
    )
    .unwrap();

    // CLIP on 50 frames (normalisation included).
    let clip_flops = clip_flops(&config.clip, t);
    let roofline = common::matmul_gflops(&device, 3);
    let mut clip_out = None;
    for run in 0..3 {
        let secs = common::time_once(usize::from(run == 0), || {
            let out = video.clip_features(frames.clone()).unwrap();
            clip_out = Some(out.clone());
            let _ = out.into_data();
        });
        common::report(
            &format!("clip_vit_b32_full (run {run}, {t} frames)"),
            secs,
            clip_flops,
            roofline,
        );
    }

    // Temporal transformer on [50 tokens, 50 frames, 768].
    let clip_out = clip_out.expect("CLIP ran");
    let temporal: &TemporalTransformerConfig = &config.temporal;
    let q = config.clip.tokens();
    let temporal_flops = 2.0 * temporal.macs(q, t);
    let roofline = common::matmul_gflops(&device, 3);
    for run in 0..3 {
        let secs = common::time_once(usize::from(run == 0), || {
            let out = video.temporal(clip_out.clone());
            let _ = out.into_data();
        });
        common::report(
            &format!("temporal_transformer_full (run {run}, {q} x {t} x {d})"),
            secs,
            temporal_flops,
            roofline,
        );
    }

    // The whole conditioner with video, and without (all-zero frames: CLIP is skipped).
    let proj_flops = 2.0 * (d * (t * q + config.sync_rows) * config.tokens) as f64;
    let total = clip_flops + temporal_flops + proj_flops;
    let roofline = common::matmul_gflops(&device, 3);
    let secs = common::time_once(0, || {
        let out = video.forward(frames.clone(), sync.clone()).unwrap();
        let _ = out.tokens.into_data();
    });
    common::report("video_conditioner_full (with video)", secs, total, roofline);
    let zeros = Tensor::<5>::zeros([1, t, 3, s, s], &device);
    let secs = common::time_once(1, || {
        let out = video.forward(zeros.clone(), sync.clone()).unwrap();
        let _ = out.tokens.into_data();
    });
    println!("REPORT video_conditioner_full (no video, CLIP skipped): {secs:.4} s");
}

fn full_size() {
    if !common::full_size() {
        println!(
            "full-size T5 / CLIP / temporal benches skipped (set {}=1)",
            common::FULL_SIZE_ENV
        );
        return;
    }
    println!("{} threads", common::threads());
    full_t5();
    full_clip_and_video();
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS: {:.2} GB", rss as f64 / 1e9);
    }
}
