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

/// Every kernel this CPU runs (AMX, AVX512-BF16, AVX2, widened), each against the f64 product of the
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

/// `f` run on a pool of `threads` threads.
fn on_threads<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let (m, k, n) = (37, 300, 200);
    let x = values(m * k, 5);
    let w = halves(&values(k * n, 6));
    let run = |threads| {
        let mut out = vec![0f32; m * n];
        on_threads(threads, || matmul(&x, m, &w, k, n, &mut out));
        out
    };
    assert_eq!(run(1), run(3));
}

/// The AVX2 kernel computes every output as one chain of fused multiply-adds over the
/// reduction in ascending order, from zero, with the activations unrounded: bit for bit the
/// scalar chain, whatever the thread count (which changes how columns are grouped per task),
/// across reduction blocks (k past 256 and 512), partial tiles (rows not a multiple of 6) and
/// partial panels (columns not a multiple of 16).
#[test]
fn avx2_kernel_is_one_fused_chain_per_output_on_any_thread_count() {
    if !Bf16Kernel::Avx2.is_supported() {
        eprintln!("avx2: not on this CPU");
        return;
    }
    for &(m, k, n) in &[(13, 600, 300), (6, 256, 16), (1, 513, 17), (40, 1030, 129)] {
        let x = values(m * k, (m + k) as u64);
        let w = halves(&values(k * n, (k + n) as u64));
        let mut want = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                want[i * n + j] = (0..k).fold(0f32, |acc, p| {
                    x[i * k + p].mul_add(w[p * n + j].to_f32(), acc)
                });
            }
        }
        for threads in [1, 2, 3, 8] {
            let mut out = vec![f32::NAN; m * n];
            on_threads(threads, || {
                matmul_with(Bf16Kernel::Avx2, &x, m, &w, k, n, &mut out)
            });
            assert_eq!(out, want, "[{m},{k}]x[{k},{n}] on {threads} threads");
        }
    }
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

/// `w` `[k, n]` row-major as `[n, k]` row-major.
fn transposed(w: &[bf16], k: usize, n: usize) -> Vec<bf16> {
    let mut t = vec![bf16::ZERO; k * n];
    for r in 0..k {
        for c in 0..n {
            t[c * k + r] = w[r * n + c];
        }
    }
    t
}

/// The weight given transposed gives exactly the row-major product of the same kernel: AMX
/// multiplies it where it lies (sizes multiples of 32; the same tile steps in the same order,
/// so bit for bit) or, for many tokens, packs it for its row-major tiles; AVX512-BF16 packs
/// the same panels from it (16 x 16 transposes); the widened kernel and other sizes go
/// through a row-major copy.
#[test]
fn transposed_weight_gives_the_row_major_result_of_every_kernel() {
    use audiox_kernels::bf16::{TRANSPOSED_MULTIPLE, matmul_transposed_with};
    let t = TRANSPOSED_MULTIPLE;
    // Tokens below, at and above the 32-row blocks; reductions of one, several and a partial
    // chunk (the chunk is about 1,024 channels at 256 tokens, smaller for more tokens).
    let shapes = [
        (1, t, t),
        (5, 2 * t, 3 * t),
        (31, t, 2 * t),
        (33, 5 * t, t),
        (237, 48 * t, 2 * t),
        (300, 40 * t, 5 * t),
        // Above 512 tokens the transposed weight is packed for the row-major tiles.
        (530, 2 * t, 3 * t),
        (7, 33, 40), // not multiples of 32: the copy
    ];
    for kernel in Bf16Kernel::ALL {
        if !kernel.is_supported() {
            continue;
        }
        for &(m, k, n) in &shapes {
            let x = values(m * k, m as u64 + 3);
            let w = halves(&values(k * n, (k + 5 * n) as u64));
            let mut want = vec![f32::NAN; m * n];
            matmul_with(kernel, &x, m, &w, k, n, &mut want);
            let mut got = vec![f32::NAN; m * n];
            matmul_transposed_with(kernel, &x, m, &transposed(&w, k, n), k, n, &mut got);
            assert_eq!(got, want, "{}: [{m},{k}]x[{k},{n}]", kernel.name());
        }
    }
}

#[test]
fn transposed_product_does_not_depend_on_the_thread_count() {
    let (m, k, n) = (70, 2048, 96);
    let x = values(m * k, 5);
    let wt = transposed(&halves(&values(k * n, 6)), k, n);
    let run = |threads| {
        let mut out = vec![0f32; m * n];
        on_threads(threads, || {
            audiox_kernels::bf16::matmul_transposed(&x, m, &wt, k, n, &mut out)
        });
        out
    };
    assert_eq!(run(1), run(3));
}

/// `hold_transposed` keeps the tensor's values (burn reads the strided view) and `linear` reads
/// it in place, with the row-major weight's result; on a CPU whose kernel is the widened one,
/// or sizes that are not multiples of 32, the weight is left as it was.
#[test]
fn a_weight_held_transposed_keeps_its_values_and_product() {
    use audiox_kernels::bf16::{hold_transposed, linear, prefers_transposed};
    use burn::tensor::{Device, FloatDType, Tensor, TensorData};
    let device = Device::flex();
    // A `TokenConv`-like kernel [taps, c_in, c_out] read as [taps * c_in, c_out], and a
    // `Linear` weight whose sizes do not fit.
    let (taps, c_in, n) = (3, 64, 96);
    let k = taps * c_in;
    let w = values(k * n, 11);
    let held = Tensor::<3>::from_data(TensorData::new(w.clone(), [taps, c_in, n]), &device)
        .cast(FloatDType::BF16);
    let before = held.clone().into_data();
    let moved = hold_transposed(held.clone());
    assert_eq!(moved.dims(), [taps, c_in, n]);
    assert_eq!(moved.clone().into_data(), before, "same values");
    let flex = moved
        .clone()
        .try_into_primitive::<burn::backend::Flex>()
        .unwrap();
    // Stored [n, k] exactly where the kernel prefers it, row-major elsewhere.
    assert_eq!(flex.is_contiguous(), !prefers_transposed(k, n));
    let (m, bias) = (45, values(n, 12));
    let x = Tensor::<2>::from_data(TensorData::new(values(m * k, 13), [m, k]), &device);
    let b = Tensor::<1>::from_data(TensorData::new(bias, [n]), &device);
    let want = linear(&x, &held, Some(&b)).expect("row-major bf16 weight");
    let got = linear(&x, &moved, Some(&b)).expect("transposed bf16 weight");
    assert_eq!(got.into_data(), want.clone().into_data());
    // burn's own operations read the view: a product through a widened copy agrees.
    let wide = moved.cast(FloatDType::F32).reshape([k, n]);
    let burn_product = x
        .clone()
        .matmul(wide)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let rows = Tensor::<2>::from_data(TensorData::new(w.clone(), [k, n]), &device)
        .cast(FloatDType::BF16)
        .cast(FloatDType::F32);
    let x2 = Tensor::<2>::from_data(TensorData::new(values(m * k, 13), [m, k]), &device);
    let plain = x2.matmul(rows).into_data().try_to_vec::<f32>().unwrap();
    assert_eq!(burn_product, plain);

    // Converted and transposed in one pass from f32: the same tensor, the same product.
    match audiox_kernels::bf16::hold_transposed_from_f32(&w, [taps, c_in, n], &device) {
        Some(direct) => {
            assert!(prefers_transposed(k, n));
            assert_eq!(direct.clone().into_data(), before);
            let flex = direct
                .clone()
                .try_into_primitive::<burn::backend::Flex>()
                .unwrap();
            assert!(!flex.is_contiguous());
            let again = linear(&x, &direct, Some(&b)).expect("transposed bf16 weight");
            assert_eq!(again.into_data(), want.clone().into_data());
        }
        None => assert!(!prefers_transposed(k, n)),
    }
    let odd = Tensor::<2>::from_data(TensorData::new(values(33 * 40, 14), [33, 40]), &device)
        .cast(FloatDType::BF16);
    let same = hold_transposed(odd.clone());
    assert_eq!(same.into_data(), odd.into_data());
    assert!(!prefers_transposed(33, 40));
}
