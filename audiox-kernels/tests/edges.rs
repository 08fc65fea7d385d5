//! Edge shapes of the fast kernels: lengths exactly at, just below and just above the output
//! block (1024 columns) and its multiples, and zero-sized dimensions (an empty batch, no
//! time steps, no channels), each against burn's own ops.

use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_kernels::{conv_transpose1d, conv1d, reference, snake, snake_conv1d};
use burn::tensor::{Device, Tensor};

/// The output block of the convolutions (`audiox-kernels/src/conv.rs`).
const BLOCK: usize = 1024;

fn seeded<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<D> {
    let v = SeededNoise::new(seed)
        .normal("t", &shape)
        .unwrap()
        .into_iter()
        .map(|x| x * scale)
        .collect();
    from_vec(v, shape, &Device::flex()).unwrap()
}

fn assert_close<const D: usize>(fast: Tensor<D>, slow: Tensor<D>, tol: f32, label: &str) {
    assert_eq!(fast.dims(), slow.dims(), "{label}");
    let (a, b) = (to_vec(fast), to_vec(slow));
    let peak = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / peak;
    assert!(err < tol, "{label}: {err}");
}

#[test]
fn convolutions_at_block_boundaries() {
    // Output lengths around one and two blocks; kernel 3, padding 1 keeps the length.
    for (i, out) in [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + 1]
        .into_iter()
        .enumerate()
    {
        let seed = 10 * i as u64;
        let x = seeded(seed, [1, 3, out], 1.0);
        let w = seeded(seed + 1, [2, 3, 3], 0.3);
        let b = seeded(seed + 2, [2], 0.1);
        let fast = conv1d(x.clone(), &w, Some(&b), 1, 1, 1);
        assert_eq!(fast.dims()[2], out);
        assert_close(
            fast,
            reference::conv1d(x.clone(), &w, Some(&b), 1, 1, 1),
            1e-5,
            &format!("conv1d to {out}"),
        );
        let alpha = seeded(seed + 3, [3], 0.5);
        let beta = seeded(seed + 4, [3], 0.5);
        assert_close(
            snake_conv1d(x.clone(), &alpha, &beta, &w, Some(&b), 1, 1, 1),
            reference::conv1d(
                reference::snake(x.clone(), &alpha, &beta),
                &w,
                Some(&b),
                1,
                1,
                1,
            ),
            2e-5,
            &format!("snake_conv1d to {out}"),
        );
        assert_close(
            snake(x.clone(), &alpha, &beta),
            reference::snake(x, &alpha, &beta),
            2e-6,
            &format!("snake over {out}"),
        );
        // Strided: the input is `stride` times longer than the block-sized output.
        let x = seeded(seed + 5, [1, 2, 4 * out], 1.0);
        let w = seeded(seed + 6, [2, 2, 8], 0.3);
        let fast = conv1d(x.clone(), &w, None, 4, 2, 1);
        assert_eq!(fast.dims()[2], out);
        assert_close(
            fast,
            reference::conv1d(x, &w, None, 4, 2, 1),
            1e-5,
            &format!("strided conv1d to {out}"),
        );
    }
    // Transposed: input lengths such that the output (t * stride) sits on the boundaries.
    for (i, t) in [BLOCK / 2 - 1, BLOCK / 2, BLOCK / 2 + 1, BLOCK]
        .into_iter()
        .enumerate()
    {
        let x = seeded(100 + i as u64, [1, 3, t], 1.0);
        let w = seeded(110 + i as u64, [3, 2, 4], 0.3);
        assert_close(
            conv_transpose1d(x.clone(), &w, None, 2, 1),
            reference::conv_transpose1d(x, &w, None, 2, 1),
            1e-5,
            &format!("conv_transpose1d from {t}"),
        );
    }
}

#[test]
fn attention_at_block_sized_sequences() {
    for (i, n) in [BLOCK - 1, BLOCK, BLOCK + 1].into_iter().enumerate() {
        let q = seeded::<4>(200 + i as u64, [1, 1, n, 4], 1.0);
        let k = seeded::<4>(210 + i as u64, [1, 1, n, 4], 1.0);
        let v = seeded::<4>(220 + i as u64, [1, 1, n, 4], 1.0);
        let fast = audiox_kernels::attention(q.clone(), k.clone(), v.clone(), None);
        let slow = reference::attention(q, k, v, None);
        assert_close(
            fast.reshape([1, n, 4]),
            slow.reshape([1, n, 4]),
            2e-6,
            &format!("attention over {n}"),
        );
    }
}

#[test]
fn zero_sized_dimensions_give_empty_outputs() {
    let w = seeded(300, [2, 3, 3], 0.3);
    let alpha = seeded(301, [3], 0.5);
    let beta = seeded(302, [3], 0.5);
    // An empty batch.
    let x = Tensor::<3>::zeros([0, 3, 50], &Device::flex());
    assert_eq!(conv1d(x.clone(), &w, None, 1, 1, 1).dims(), [0, 2, 50]);
    assert_eq!(snake(x.clone(), &alpha, &beta).dims(), [0, 3, 50]);
    assert_eq!(
        snake_conv1d(x.clone(), &alpha, &beta, &w, None, 1, 1, 1).dims(),
        [0, 2, 50]
    );
    let wt = seeded(303, [3, 2, 4], 0.3);
    assert_eq!(conv_transpose1d(x, &wt, None, 2, 1).dims(), [0, 2, 100]);
    // No time steps: the padded input (2 columns) is shorter than the kernel (3), so no output
    // column fits (burn's reference formula underflows here; ours returns zero columns).
    let x = Tensor::<3>::zeros([1, 3, 0], &Device::flex());
    assert_eq!(snake(x.clone(), &alpha, &beta).dims(), [1, 3, 0]);
    assert_eq!(conv1d(x.clone(), &w, None, 1, 1, 1).dims(), [1, 2, 0]);
    assert_eq!(
        snake_conv1d(x, &alpha, &beta, &w, None, 1, 1, 1).dims(),
        [1, 2, 0]
    );
    // Attention with an empty batch and with no heads.
    for shape in [[0usize, 2, 5, 4], [1, 0, 5, 4]] {
        let q = Tensor::<4>::zeros(shape, &Device::flex());
        let out = audiox_kernels::attention(q.clone(), q.clone(), q, None);
        assert_eq!(out.dims(), shape);
    }
}
