//! The SwiGLU gate of the DiT's feed-forward, `silu(gate) * up`, as burn's composed ops
//! ([`audiox_kernels::reference::silu_mul`]) and as the fused kernel the model runs
//! ([`audiox_kernels::silu_mul`]), at the full-size DiT's shape (`[1, 237, 4096]`: 237 tokens of
//! the cached step, hidden width 4,096), 24 times (one per block: one step's worth).
//!
//! ```text
//! RAYON_NUM_THREADS=2 cargo run --release -p audiox-kernels --example swiglu_gate
//! ```
//!
//! Both sides get a fresh copy of the gate each time (the fused kernel writes into it), so the
//! copy is timed on its own too. Best of five after a warm-up. This machine's figures:
//! `docs/performance.md` (history table, 2026-12-05).

use burn::tensor::{Tensor, TensorData};

mod common;
use common::{best, values};

/// Blocks of the full-size DiT: one gate each per step.
const BLOCKS: usize = 24;

fn main() {
    let shape = [1usize, 237, 4096];
    let len = shape.iter().product::<usize>();
    let device = Default::default();
    let gate: Tensor<3> = Tensor::from_data(TensorData::new(values(len, 1), shape), &device);
    let up: Tensor<3> = Tensor::from_data(TensorData::new(values(len, 2), shape), &device);
    let fresh = || gate.clone() * 1.0;
    let copy = best(|| {
        for _ in 0..BLOCKS {
            std::hint::black_box(fresh());
        }
    });
    let composed = best(|| {
        for _ in 0..BLOCKS {
            std::hint::black_box(audiox_kernels::reference::silu_mul(fresh(), up.clone()));
        }
    });
    let fused = best(|| {
        for _ in 0..BLOCKS {
            std::hint::black_box(audiox_kernels::silu_mul(fresh(), up.clone()));
        }
    });
    println!(
        "{BLOCKS} gates of {shape:?}: burn's composed ops {:.1} ms, fused {:.1} ms \
         (each including the copy of the gate: {:.1} ms)",
        composed * 1e3,
        fused * 1e3,
        copy * 1e3
    );
}
