//! VAE decode: the tiny fixture decoder always (divan), and the full-size decode of 236
//! latent frames -> 483,328 samples with random weights behind `AUDIOX_BENCH_FULL=1`
//! (manual timing: one decode takes seconds). See docs/performance.md.

#[path = "common/mod.rs"]
mod common;

use audiox::ModelConfig;
use audiox_core::fixtures::{FixtureSet, official_config_path};
use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::from_dyn;
use audiox_core::weights::{Component, WeightSource};
use audiox_vae::{ChunkedDecode, OobleckDecoder, OobleckDecoderConfig};
use burn::tensor::Tensor;
use divan::Bencher;

/// FLOPs of one decode of `frames` latent frames: 2 x MACs of every convolution.
fn decode_flops(config: &OobleckDecoderConfig, frames: usize) -> f64 {
    let w: Vec<usize> = std::iter::once(config.channels)
        .chain(config.c_mults.iter().map(|m| m * config.channels))
        .collect();
    let n = config.strides.len();
    let mut macs = (config.latent_dim * w[n] * 7 * frames) as f64;
    let mut len = frames;
    for j in 0..n {
        let (cin, cout, s) = (w[n - j], w[n - j - 1], config.strides[n - j - 1]);
        // Transposed conv: every input sample meets 2s taps per output channel.
        macs += (cin * cout * 2 * s * len) as f64;
        len *= s;
        // Three residual units: a kernel-7 and a 1x1 convolution each.
        macs += 3.0 * ((cout * cout * 7 * len) + (cout * cout * len)) as f64;
    }
    macs += (w[0] * config.channels_out * 7 * len) as f64;
    2.0 * macs
}

fn main() {
    divan::main();
    full_size();
}

#[divan::bench(sample_count = 20)]
fn vae_decode_tiny(bencher: Bencher) {
    let device = common::device();
    let set = FixtureSet::open_default().expect("fixture set");
    let fx = set.fixture("vae_decoder").expect("vae_decoder fixture");
    let config = ModelConfig::from_json_value(fx.config_json().unwrap()).unwrap();
    let (decoder, _) = OobleckDecoder::load(
        &config.vae().decoder,
        &[WeightSource::with_prefix(fx.weights(), "decoder.")],
        &device,
    )
    .unwrap();
    let latent = fx.f32("in.latent").unwrap();
    let latent = from_dyn::<3>(latent.values, &latent.shape, &device).unwrap();
    bencher.bench_local(|| {
        let out = decoder.forward(latent.clone());
        common::sync(&device);
        out
    });
}

fn full_size() {
    if !common::full_size() {
        println!(
            "full-size VAE decode skipped (set {}=1)",
            common::FULL_SIZE_ENV
        );
        return;
    }
    let device = common::device();
    let config = ModelConfig::from_file(official_config_path()).unwrap();
    let dec_config = config.vae().decoder.clone();
    let decoder: OobleckDecoder = common::randomize(dec_config.init(&device), 1);
    let frames = config.latent_length();
    let c = decoder.latent_dim();
    let values = SeededNoise::new(2)
        .normal("latent", &[1, c, frames])
        .unwrap();
    let latent = from_dyn::<3>(values, &[1, c, frames], &device).unwrap();
    let flops = decode_flops(&dec_config, frames);
    let roofline = common::matmul_gflops(&device, 5);
    println!(
        "matmul roofline: {roofline:.1} GFLOP/s; decode FLOPs: {:.3} TFLOP",
        flops / 1e12
    );
    for run in 0..2 {
        let secs = common::time_once(0, || {
            let out: Tensor<3> = decoder.forward(latent.clone());
            let _ = out.into_data();
        });
        common::report(
            &format!("vae_decode_full (run {run}, {frames} frames)"),
            secs,
            flops,
            roofline,
        );
    }
    let chunked = ChunkedDecode::default();
    let secs = common::time_once(0, || {
        let out = decoder.forward_chunked(latent.clone(), chunked).unwrap();
        let _ = out.into_data();
    });
    common::report(
        &format!("vae_decode_full_chunked ({chunked:?})"),
        secs,
        flops,
        roofline,
    );
    if let Some(rss) = common::peak_rss_bytes() {
        println!("peak RSS: {:.2} GB", rss as f64 / 1e9);
    }
}
