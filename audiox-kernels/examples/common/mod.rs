//! Helpers shared by the kernel examples (`reduced_gemm`, `f32_peak`, `swiglu_gate`).

use std::time::Instant;

/// `len` deterministic values in [-1, 1) from `seed` (a linear congruential generator).
pub fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// The best of five timed runs of `f` after one untimed warm-up, in seconds.
pub fn best(mut f: impl FnMut()) -> f64 {
    f();
    (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}
