//! How close the f32 products run to this CPU's multiply-add peak.
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p audiox-kernels --example f32_peak
//! ```
//!
//! First the peak: a loop of independent fused multiply-adds on registers only (24 chains of
//! the widest vectors the CPU has: 16 lanes with AVX-512, 8 with AVX2+FMA), on as many threads
//! as rayon has, counted as 2 FLOP per lane. No GEMM can beat it; the distance to it is what a
//! better kernel could still win. Then, for the shapes of T5 (128 tokens), CLIP (50 frames of
//! 50 tokens) and the student's DiT step (237 tokens), the f32 linear layer as the model runs
//! it (`audiox_kernels::linear_f32`: the `gemm` crate, columns split over the threads for at
//! most 256 rows), best of five after a warm-up, in GFLOP/s and as a share of the peak: once
//! with the weight in cache (the same weight every repetition) and once with it read from
//! memory, as in a forward pass, where every weight is used once (one pass over copies of
//! the weight that together take [`FROM_MEMORY_BYTES`], best of three passes).
//!
//! This machine's figures, and what hand-written kernels reached against them:
//! `docs/performance.md` (thirtieth session).

use std::time::Instant;

use audiox_kernels::linear_f32;
use burn::tensor::{Tensor, TensorData};

mod common;
use common::{best, values};

/// Multiply-add chains kept in registers with AVX-512 (32 vector registers); enough of them to
/// cover the instruction's latency on two ports.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHAINS: usize = 24;

/// The same with AVX2, which has 16 vector registers: 12 chains and the two operands fit (24
/// did not: the accumulators spilled to the stack and the loop timed loads and stores, 90
/// GFLOP/s on two Zen 3 cores whose FMA peak is about 157). Twelve still cover the latency on
/// two ports (4 cycles on Zen 3, 5 on Haswell: 8 and 10 chains in flight).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const CHAINS_AVX2: usize = 12;

/// `iters` rounds of [`CHAINS`] fused multiply-adds on 16-lane vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_avx512(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_set1_ps(0.5); CHAINS];
    let a = _mm512_set1_ps(std::hint::black_box(0.999_999_9));
    let b = _mm512_set1_ps(1e-7);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    let sum = acc
        .iter()
        .fold(_mm512_setzero_ps(), |s, &v| _mm512_add_ps(s, v));
    _mm512_reduce_add_ps(sum)
}

/// `iters` rounds of [`CHAINS_AVX2`] fused multiply-adds on 8-lane vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_avx2(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let mut acc = [_mm256_set1_ps(0.5); CHAINS_AVX2];
    let a = _mm256_set1_ps(std::hint::black_box(0.999_999_9));
    let b = _mm256_set1_ps(1e-7);
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut lanes = [0.0f32; 8];
    let sum = acc
        .iter()
        .fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    // SAFETY: `lanes` holds the 8 floats the store writes.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    lanes.iter().sum()
}

/// The widest FMA loop this CPU can run: FLOP per round of the loop (instructions times
/// FLOP per instruction), its name, the loop.
type FmaLoop = (usize, &'static str, fn(usize) -> f32);

/// The loop for the widest FMA this CPU has (`None` without FMA: no peak is printed).
fn widest_fma() -> Option<FmaLoop> {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was detected just above.
            return Some((CHAINS * 32, "AVX-512", |i| unsafe { fma_avx512(i) }));
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the features were detected just above.
            return Some((CHAINS_AVX2 * 16, "AVX2+FMA", |i| unsafe { fma_avx2(i) }));
        }
    }
    None
}

/// Register-only FMA rate of `threads` threads, GFLOP/s (best of three).
fn fma_peak(threads: usize) -> Option<(f64, &'static str)> {
    let (flop_per_round, name, run) = widest_fma()?;
    let iters = 20_000_000;
    let seconds = (0..3)
        .map(|_| {
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| std::hint::black_box(run(iters)));
                }
            });
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    Some((
        (threads * iters * flop_per_round) as f64 / seconds / 1e9,
        name,
    ))
}

/// Bytes of weight copies for the "from memory" column: larger than the caches of the CPUs
/// this runs on (a shared last-level cache included), so that each product reads its weight
/// from memory.
const FROM_MEMORY_BYTES: usize = 512 << 20;

fn main() {
    let threads = rayon::current_num_threads();
    let peak = fma_peak(threads);
    match peak {
        Some((rate, name)) => {
            println!(
                "{threads} threads: {name} multiply-add peak {rate:.0} GFLOP/s (registers only)"
            )
        }
        None => println!("{threads} threads: no FMA instructions on this CPU, no peak"),
    }
    println!(
        "| shape [m,k]x[k,n] | model | f32 linear GFLOP/s, weight in cache | share of the peak | weight from memory | share of the peak |"
    );
    println!("|---|---|---|---|---|---|");
    let device = Default::default();
    for (m, k, n, model) in [
        (128, 768, 768, "T5 projection"),
        (128, 768, 3072, "T5 FFN in"),
        (128, 3072, 768, "T5 FFN out"),
        (2500, 768, 2304, "CLIP qkv"),
        (2500, 768, 3072, "CLIP MLP in"),
        (2500, 3072, 768, "CLIP MLP out"),
        (237, 1536, 4608, "DiT step qkv"),
        (237, 4608, 1536, "DiT step token conv"),
    ] {
        let x = Tensor::<2>::from_data(TensorData::new(values(m * k, 1), [m, k]), &device);
        let w = Tensor::<2>::from_data(TensorData::new(values(k * n, 2), [k, n]), &device);
        let Some(_) = linear_f32(&x, &w, None) else {
            println!("| {m}x{k}x{n} | {model} | (not on the fast path) | | | |");
            continue;
        };
        let flop = 2.0 * (m * k * n) as f64 / 1e9;
        let share =
            |rate: f64| peak.map_or(String::new(), |(p, _)| format!("{:.0} %", 100.0 * rate / p));
        let cached = flop
            / best(|| {
                std::hint::black_box(linear_f32(&x, &w, None));
            });
        let copies: Vec<Tensor<2>> = (0..(FROM_MEMORY_BYTES / (4 * k * n)).max(2))
            .map(|i| {
                let v = values(k * n, 3 + i as u64);
                Tensor::<2>::from_data(TensorData::new(v, [k, n]), &device)
            })
            .collect();
        let pass = (0..3)
            .map(|_| {
                let t = Instant::now();
                for w in &copies {
                    std::hint::black_box(linear_f32(&x, w, None));
                }
                t.elapsed().as_secs_f64() / copies.len() as f64
            })
            .fold(f64::INFINITY, f64::min);
        let streamed = flop / pass;
        println!(
            "| {m}x{k}x{n} | {model} | {cached:.0} | {} | {streamed:.0} | {} |",
            share(cached),
            share(streamed)
        );
    }
}
