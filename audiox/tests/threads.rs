//! Bit-identical results whatever the thread count, at sizes where burn's CPU kernels do split
//! work across threads (the tiny fixture models are too small for that).

#[path = "../../benches/common/mod.rs"]
mod common;

use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_mmdit::DitConfig;
use audiox_vae::OobleckDecoderConfig;
use burn::tensor::{Device, Tensor};

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

fn seeded<const D: usize>(seed: u64, shape: [usize; D], device: &Device) -> Tensor<D> {
    let values = SeededNoise::new(seed).normal("test", &shape).unwrap();
    from_vec(values, shape, device).unwrap()
}

#[test]
fn dit_step_is_thread_count_independent() {
    let device = Device::flex();
    // 16 heads of 24 (the section's `num_heads` is the head size), SwiGLU width 1024.
    let config = DitConfig::new(16, 384, 2, 24, 128, 128)
        .with_context_tokens(96)
        .with_seq_len(129);
    let dit = common::randomize(config.init(&device).unwrap(), 11);
    let x = seeded(1, [2, 16, 128], &device);
    let ctx = seeded(2, [2, 96, 128], &device);
    let t = Tensor::<1>::from_floats([0.7, 0.3], &device);
    let run = |threads| {
        in_pool(threads, || {
            let prepared = dit.prepare(ctx.clone()).unwrap();
            to_vec(dit.forward(x.clone(), t.clone(), &prepared).unwrap())
        })
    };
    let one = run(1);
    assert!(one.iter().all(|v| v.is_finite()));
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}

#[test]
fn vae_decode_is_thread_count_independent() {
    let device = Device::flex();
    let decoder = OobleckDecoderConfig::new(2, 32, vec![1, 2, 4], vec![2, 4, 8], 16).init(&device);
    let decoder = common::randomize(decoder, 12);
    let latent = seeded(3, [1, 16, 64], &device);
    let run = |threads| in_pool(threads, || to_vec(decoder.forward(latent.clone())));
    let one = run(1);
    assert!(one.iter().all(|v| v.is_finite()));
    assert_eq!(one, run(2));
    assert_eq!(one, run(4));
}
