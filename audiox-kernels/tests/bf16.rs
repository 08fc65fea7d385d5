//! The bf16-weight product against an f64 reference of the same rounded values, on both paths,
//! for shapes that hit every edge of the packing (odd k, n not a multiple of 32, m not a
//! multiple of the 8-row tile, empty dimensions).

use audiox_kernels::bf16::{Bf16Kernel, matmul, matmul_widened, matmul_with, native_available};
use half::bf16;

/// Deterministic values in [-1, 1) (a simple LCG: the test must not depend on a seed crate).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn round(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn halves(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

/// `x · w` in f64 (row-major).
fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            let a = x[i * k + p] as f64;
            for j in 0..n {
                out[i * n + j] += a * w[p * n + j] as f64;
            }
        }
    }
    out
}

/// Largest error relative to the sum of |terms| of each output (the f32 accumulation bound).
fn worst(out: &[f32], want: &[f64], x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> f64 {
    let mut worst = 0f64;
    for i in 0..m {
        for j in 0..n {
            let scale: f64 = (0..k)
                .map(|p| (x[i * k + p] as f64 * w[p * n + j] as f64).abs())
                .sum::<f64>()
                .max(1e-30);
            worst = worst.max((out[i * n + j] as f64 - want[i * n + j]).abs() / scale);
        }
    }
    worst
}

const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (3, 5, 7),
    (8, 64, 32),
    (9, 65, 33),
    (17, 130, 95),
    (40, 257, 64),
    (7, 1024, 31),
    (64, 96, 160),
];

#[test]
fn widened_path_is_the_f32_product_of_the_rounded_weight() {
    for &(m, k, n) in &SHAPES {
        let x = values(m * k, m as u64);
        let w = values(k * n, (k * 31 + n) as u64);
        let mut out = vec![f32::NAN; m * n];
        matmul_widened(&x, m, &halves(&w), k, n, &mut out);
        let want = reference(&x, &round(&w), m, k, n);
        let err = worst(&out, &want, &x, &round(&w), m, k, n);
        assert!(err < 1e-5, "[{m},{k}]x[{k},{n}]: {err}");
    }
}

#[test]
fn default_path_matches_the_product_of_rounded_operands() {
    // On an AVX512-BF16 CPU the activations are rounded too; elsewhere only the weight is.
    let native = native_available();
    eprintln!("native bf16 kernel: {native}");
    for &(m, k, n) in &SHAPES {
        let x = values(m * k, m as u64 + 99);
        let w = values(k * n, (k * 31 + n) as u64);
        let mut out = vec![f32::NAN; m * n];
        matmul(&x, m, &halves(&w), k, n, &mut out);
        let xs = if native { round(&x) } else { x.clone() };
        let want = reference(&xs, &round(&w), m, k, n);
        let err = worst(&out, &want, &xs, &round(&w), m, k, n);
        assert!(err < 1e-5, "[{m},{k}]x[{k},{n}]: {err}");
        // Against the unrounded f32 product the error is the bf16 rounding: a few 1e-3.
        let exact = reference(&x, &w, m, k, n);
        let err = worst(&out, &exact, &x, &w, m, k, n);
        assert!(err < 1e-2, "[{m},{k}]x[{k},{n}] vs f32: {err}");
    }
}

/// Every kernel this CPU runs (AMX, AVX512-BF16, widened), each against the f64 product of the
/// operands it rounds.
#[test]
fn every_supported_kernel_matches_the_product_of_its_rounded_operands() {
    for kernel in Bf16Kernel::ALL {
        if !kernel.is_supported() {
            eprintln!("{}: not on this CPU", kernel.name());
            continue;
        }
        for &(m, k, n) in SHAPES.iter().chain(&[(33, 40, 70), (70, 33, 129)]) {
            let x = values(m * k, m as u64 + 7);
            let w = values(k * n, (k * 17 + n) as u64);
            let mut out = vec![f32::NAN; m * n];
            matmul_with(kernel, &x, m, &halves(&w), k, n, &mut out);
            let xs = if kernel.rounds_activations() {
                round(&x)
            } else {
                x.clone()
            };
            let want = reference(&xs, &round(&w), m, k, n);
            let err = worst(&out, &want, &xs, &round(&w), m, k, n);
            assert!(err < 1e-5, "{}: [{m},{k}]x[{k},{n}]: {err}", kernel.name());
        }
    }
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let (m, k, n) = (37, 300, 200);
    let x = values(m * k, 5);
    let w = halves(&values(k * n, 6));
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0f32; m * n];
        pool.install(|| matmul(&x, m, &w, k, n, &mut out));
        out
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn empty_dimensions() {
    for f in [matmul, matmul_widened] {
        let mut out = vec![f32::NAN; 3 * 4];
        f(&[], 3, &[], 0, 4, &mut out);
        assert!(out.iter().all(|&v| v == 0.0), "k = 0 gives zeros");
        f(&values(10, 1), 2, &[], 5, 0, &mut []);
        f(&[], 0, &halves(&values(20, 2)), 5, 4, &mut []);
    }
}

#[test]
fn linear_on_burn_tensors_matches_the_slice_product_plus_bias() {
    use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
    let device = Device::flex();
    let (b, t, k, n) = (2, 5, 33, 40);
    let x = values(b * t * k, 7);
    let w = values(k * n, 8);
    let bias = values(n, 9);
    let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [b, t, k]), &device);
    let wt =
        Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device).cast(FloatDType::BF16);
    assert_eq!(wt.dtype(), DType::BF16);
    let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), &device);
    let got: Vec<f32> = audiox_kernels::bf16::linear(&xt, &wt, Some(&bt))
        .expect("flex f32 input, bf16 weight")
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let mut want = vec![0f32; b * t * n];
    matmul(&x, b * t, &halves(&w), k, n, &mut want);
    for (row, chunk) in want.chunks_mut(n).enumerate() {
        chunk.iter_mut().zip(&bias).for_each(|(o, b)| *o += b);
        assert_eq!(&got[row * n..(row + 1) * n], &*chunk, "row {row}");
    }
    // An f32 weight is not this kernel's: the caller keeps its own path.
    let w32 = Tensor::<2>::from_data(TensorData::new(w, [k, n]), &device);
    assert!(audiox_kernels::bf16::linear(&xt, &w32, None).is_none());
}
