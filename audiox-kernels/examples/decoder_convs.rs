//! The VAE decoder's residual-unit convolutions (SnakeBeta, 7 taps, dilation 1, 3 or 9, added
//! into the residual) at the full-size decoder's channel counts and lengths, timed with the
//! algorithm this process uses ([`audiox_kernels::ConvAlgorithm`]); run it once per algorithm:
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p audiox-kernels --example decoder_convs
//! RAYON_NUM_THREADS=2 AUDIOX_CONV_ALGORITHM=shifted cargo run --release -p audiox-kernels --example decoder_convs
//! ```
//!
//! GFLOP/s count the direct convolution's multiply-adds (`2 C_out C_in k T`) whichever
//! algorithm ran, so the minimal-filtering path can read above the FMA peak. Best of five
//! after a warm-up; `AUDIOX_DECODER_CONVS_SCALE=n` divides the lengths by `n` for a quick run.
//! This machine's figures: `docs/performance.md` (history table).

use burn::tensor::{Tensor, TensorData};

mod common;
use common::{best, values};

/// `(channels, length)` of the decoder's five levels (10 s at 44.1 kHz).
const LEVELS: [(usize, usize); 5] = [
    (1024, 1720),
    (512, 13760),
    (256, 55040),
    (128, 220160),
    (128, 440320),
];

fn main() {
    let scale: usize = std::env::var("AUDIOX_DECODER_CONVS_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let device = Default::default();
    let algorithm = audiox_kernels::ConvAlgorithm::for_shape(128, 128, 7, 1);
    println!(
        "{} threads, {algorithm:?} for the 7-tap convolutions",
        rayon::current_num_threads()
    );
    println!("| channels | length | dilation | seconds | GFLOP/s (direct count) |");
    println!("|---|---|---|---|---|");
    let mut total = 0.0;
    for (seed, &(c, t)) in LEVELS.iter().enumerate() {
        let t = t / scale;
        let tensor = |shape: [usize; 3], seed: u64, amp: f32| -> Tensor<3> {
            let len = shape.iter().product();
            let v = values(len, seed).into_iter().map(|v| v * amp).collect();
            Tensor::from_data(TensorData::new(v, shape), &device)
        };
        let x = tensor([1, c, t], 10 * seed as u64 + 1, 1.0);
        let residual = tensor([1, c, t], 10 * seed as u64 + 2, 1.0);
        let w = tensor(
            [c, c, 7],
            10 * seed as u64 + 3,
            (3.0 / (7 * c) as f32).sqrt(),
        );
        let vector = |seed: u64, amp: f32| -> Tensor<1> {
            Tensor::from_data(TensorData::new(values(c, seed), [c]), &device) * amp
        };
        let (bias, alpha, beta) = (vector(4, 0.1), vector(5, 0.5), vector(6, 0.5));
        for dilation in [1usize, 3, 9] {
            let seconds = best(|| {
                std::hint::black_box(audiox_kernels::snake_conv1d_residual(
                    Some(residual.clone()),
                    x.clone(),
                    &alpha,
                    &beta,
                    &w,
                    Some(&bias),
                    1,
                    3 * dilation,
                    dilation,
                ));
            });
            total += seconds;
            let flops = 2.0 * (c * c * 7 * t) as f64;
            println!(
                "| {c} | {t} | {dilation} | {seconds:.3} | {:.0} |",
                flops / seconds / 1e9
            );
        }
    }
    println!("total (one of each): {total:.2} s");
}
