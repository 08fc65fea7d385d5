//! `linear_f32` against burn's own `linear`: the same bits, for any thread count, over shapes
//! on both sides of the column split (few and many rows, batches, bias or none, a transposed
//! weight view), and `None` where burn must keep the product.

use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_kernels::{SPLIT_MAX_ROWS, linear_f32};
use burn::tensor::{Device, Tensor};

fn seeded<const D: usize>(seed: u64, shape: [usize; D], device: &Device) -> Tensor<D> {
    let v = SeededNoise::new(seed).normal("t", &shape).unwrap();
    from_vec(v, shape, device).unwrap()
}

fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
    to_vec(t).into_iter().map(f32::to_bits).collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
}

/// `[batch, rows, k] x [k, n]`, with or without bias, both sides run in pools of 1, 2 and 3
/// threads: the fast path returns burn's bits.
#[test]
fn linear_f32_has_burns_bits_for_any_thread_count() {
    let device = Device::flex();
    let shapes = [
        // T5-like: few rows, columns split over the threads.
        (1, 128, 96, 768, true),
        (1, 40, 200, 300, false),
        (2, 50, 130, 257, true),
        // At and past the split limit: the crate's own parallel call.
        (1, SPLIT_MAX_ROWS, 64, 320, true),
        (1, SPLIT_MAX_ROWS + 3, 70, 400, true),
        (3, 200, 33, 130, false),
        (4, 2, 40, 129, true),
        // A long reduction (several of the crate's reduction blocks).
        (1, 96, 1100, 256, true),
    ];
    for (i, &(b, m, k, n, with_bias)) in shapes.iter().enumerate() {
        let seed = 10 * i as u64;
        let x = seeded(seed, [b, m, k], &device);
        let w = seeded(seed + 1, [k, n], &device);
        let bias = with_bias.then(|| seeded(seed + 2, [n], &device));
        let reference = pool(2).install(|| {
            bits(burn::tensor::module::linear(
                x.clone(),
                w.clone(),
                bias.clone(),
            ))
        });
        for threads in [1, 2, 3] {
            let fast = pool(threads).install(|| linear_f32(&x, &w, bias.as_ref()));
            let fast = fast.unwrap_or_else(|| panic!("no fast path for {:?}", shapes[i]));
            assert_eq!(fast.dims(), [b, m, n]);
            assert!(
                bits(fast) == reference,
                "{:?} on {threads} threads differs from burn's linear",
                shapes[i]
            );
        }
    }
}

/// A weight held as a transposed view (`[n, k]` storage read as `[k, n]`) is read through its
/// strides, with the same bits.
#[test]
fn linear_f32_reads_a_transposed_weight_view() {
    let device = Device::flex();
    let x = seeded(1, [1, 100, 80], &device);
    let w = seeded(2, [300, 80], &device).transpose();
    let bias = seeded(3, [300], &device);
    let reference = bits(burn::tensor::module::linear(
        x.clone(),
        w.clone(),
        Some(bias.clone()),
    ));
    let fast = pool(2).install(|| linear_f32(&x, &w, Some(&bias)).unwrap());
    assert!(bits(fast) == reference);
}

/// Shapes the `gemm` crate may sum in another order (one row per batch, at most 128 columns, a
/// reduction of 2), a strided input and a mismatched width are left to burn. (An autodiff graph
/// is too: `audiox-train`'s `tests/trainer.rs` checks the gradient through `precision::linear`.)
#[test]
fn linear_f32_leaves_other_products_to_burn() {
    let device = Device::flex();
    let w = seeded(1, [32, 200], &device);
    assert!(linear_f32(&seeded(2, [4, 1, 32], &device), &w, None).is_none());
    for narrow in [64, 128] {
        let w = seeded(4, [32, narrow], &device);
        assert!(linear_f32(&seeded(3, [1, 10, 32], &device), &w, None).is_none());
    }
    assert!(
        linear_f32(
            &seeded(5, [1, 10, 2], &device),
            &seeded(6, [2, 200], &device),
            None
        )
        .is_none()
    );
    let strided = seeded(7, [1, 32, 10], &device).swap_dims(1, 2);
    assert!(linear_f32(&strided, &w, None).is_none());
    assert!(linear_f32(&seeded(8, [1, 10, 31], &device), &w, None).is_none());
    let wrong_bias = seeded(9, [199], &device);
    assert!(linear_f32(&seeded(10, [1, 10, 32], &device), &w, Some(&wrong_bias)).is_none());
}
