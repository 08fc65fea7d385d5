//! Convolutions with the kernel held in bf16 against burn's f32 convolution of the same rounded
//! values. On a CPU with AVX512-BF16 the native path also rounds the activations (SnakeBeta's
//! output, when fused) to bf16, and the reference gets them rounded the same way; elsewhere
//! (and for strided `conv1d`) the kernel is widened and only the kernel is rounded. CI runs this
//! file again under `qemu -cpu Nehalem`, where the widened path is the one taken.

use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_kernels::bf16::native_available;
use audiox_kernels::{
    conv_transpose1d, conv1d, reference, snake, snake_conv1d, snake_conv1d_residual,
};
use burn::tensor::{DType, Device, FloatDType, Tensor};

fn seeded<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<D> {
    let v = SeededNoise::new(seed)
        .normal("t", &shape)
        .unwrap()
        .into_iter()
        .map(|x| x * scale)
        .collect();
    from_vec(v, shape, &Device::flex()).unwrap()
}

/// `t` held in bf16.
fn held<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    let h = t.clone().cast(FloatDType::BF16);
    assert_eq!(h.dtype(), DType::BF16);
    h
}

/// `t` rounded to bf16 and back.
fn rounded<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
    held(t).cast(FloatDType::F32)
}

/// Largest absolute difference over the reference's peak.
fn max_rel_err(a: Tensor<3>, b: Tensor<3>) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let (a, b) = (to_vec(a), to_vec(b));
    let peak = b.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / peak
}

/// Whether the activations of this convolution are rounded (the native path runs).
fn activations_rounded(stride: usize) -> bool {
    native_available() && stride == 1
}

/// `(b, cin, cout, t, k, stride, padding, dilation)`.
type ConvCase = (usize, usize, usize, usize, usize, usize, usize, usize);

const CONV_CASES: [ConvCase; 10] = [
    (1, 4, 5, 17, 7, 1, 3, 1),
    (2, 3, 6, 2500, 7, 1, 27, 9),
    (1, 8, 8, 1030, 1, 1, 0, 1),
    (1, 4, 8, 61, 4, 2, 1, 1),
    (2, 8, 16, 3001, 16, 8, 4, 1),
    (1, 5, 3, 9, 3, 1, 1, 3),
    (1, 2, 2, 3, 7, 1, 3, 1),
    (1, 6, 4, 2049, 3, 1, 0, 2),
    (1, 33, 17, 300, 7, 1, 3, 1),
    (1, 64, 2, 700, 7, 1, 3, 1),
];

#[test]
fn conv1d_with_a_bf16_kernel_matches_the_conv_of_rounded_operands() {
    eprintln!("native bf16 kernels: {}", native_available());
    for (i, &(b, cin, cout, t, k, s, p, d)) in CONV_CASES.iter().enumerate() {
        let x = seeded(100 + i as u64, [b, cin, t], 1.0);
        let w = seeded(200 + i as u64, [cout, cin, k], 0.3);
        let bias = seeded(300 + i as u64, [cout], 0.1);
        let xr = if activations_rounded(s) {
            rounded(&x)
        } else {
            x.clone()
        };
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bias);
            let got = conv1d(x.clone(), &held(&w), bias, s, p, d);
            let want = reference::conv1d(xr.clone(), &rounded(&w), bias, s, p, d);
            let err = max_rel_err(got.clone(), want);
            assert!(err < 2e-5, "case {i}: {err}");
            // Against the f32 convolution the difference is bf16's rounding.
            let exact = reference::conv1d(x.clone(), &w, bias, s, p, d);
            let err = max_rel_err(got, exact);
            assert!(err < 2e-2, "case {i} vs f32: {err}");
        }
    }
}

#[test]
fn snake_conv1d_with_a_bf16_kernel_matches_snake_then_the_rounded_conv() {
    for (i, &(b, cin, cout, t, k, s, p, d)) in CONV_CASES.iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        let x = seeded::<3>(seed, [b, cin, t], 2.0);
        let alpha = seeded::<1>(seed + 1, [cin], 0.5);
        let beta = seeded::<1>(seed + 2, [cin], 0.5);
        let w = seeded::<3>(seed + 3, [cout, cin, k], 0.3);
        let bias = seeded::<1>(seed + 4, [cout], 0.3);
        let before = to_vec(x.clone());
        let got = snake_conv1d(x.clone(), &alpha, &beta, &held(&w), Some(&bias), s, p, d);
        assert_eq!(to_vec(x.clone()), before, "case {i}: input modified");
        // The fused activation is the kernels' `snake` (same arithmetic per element): burn's
        // composed one differs by float rounding, which the bf16 rounding can turn into a
        // whole bf16 step on a few elements.
        let act = snake(x, &alpha, &beta);
        let act = if activations_rounded(s) {
            rounded(&act)
        } else {
            act
        };
        let want = reference::conv1d(act, &rounded(&w), Some(&bias), s, p, d);
        let err = max_rel_err(got, want);
        assert!(err < 3e-5, "case {i}: {err}");
    }
}

/// The residual unit's last convolution: accumulated into a unique residual in place, into a
/// copy of a shared one (which stays untouched).
#[test]
fn snake_conv1d_residual_with_a_bf16_kernel_adds_into_the_residual() {
    for (i, &(b, c, t, k, p, d)) in [
        (1, 4, 17, 7, 3, 1),
        (2, 3, 2500, 7, 27, 9),
        (1, 8, 1030, 1, 0, 1),
    ]
    .iter()
    .enumerate()
    {
        let seed = 950 + 10 * i as u64;
        let x = seeded::<3>(seed, [b, c, t], 2.0);
        let alpha = seeded::<1>(seed + 1, [c], 0.5);
        let beta = seeded::<1>(seed + 2, [c], 0.5);
        let w = seeded::<3>(seed + 3, [c, c, k], 0.3);
        let bias = seeded::<1>(seed + 4, [c], 0.3);
        let act = snake(x.clone(), &alpha, &beta);
        let act = if activations_rounded(1) {
            rounded(&act)
        } else {
            act
        };
        let residual = || seeded::<3>(seed + 5, [b, c, t], 1.0);
        let want = residual() + reference::conv1d(act, &rounded(&w), Some(&bias), 1, p, d);
        let got = snake_conv1d_residual(
            Some(residual()),
            x.clone(),
            &alpha,
            &beta,
            &held(&w),
            Some(&bias),
            1,
            p,
            d,
        );
        let err = max_rel_err(got, want.clone());
        assert!(err < 3e-5, "case {i}: unique: {err}");
        let shared = residual();
        let kept = to_vec(shared.clone());
        let got = snake_conv1d_residual(
            Some(shared.clone()),
            x,
            &alpha,
            &beta,
            &held(&w),
            Some(&bias),
            1,
            p,
            d,
        );
        assert!(max_rel_err(got, want) < 3e-5, "case {i}: shared");
        assert_eq!(to_vec(shared), kept, "case {i}: shared residual modified");
    }
}

#[test]
fn conv_transpose1d_with_a_bf16_kernel_matches_the_rounded_conv() {
    let cases = [
        // (b, cin, cout, t, stride, kernel, padding): the VAE's (kernel 2s, padding ceil(s/2))
        // and others (kernel shorter than, equal to and not a multiple of the stride).
        (1usize, 4usize, 3usize, 11usize, 2usize, 4usize, 1usize),
        (2, 8, 4, 300, 4, 8, 2),
        (1, 6, 5, 1500, 8, 16, 4),
        (1, 3, 2, 1, 8, 16, 4),
        (1, 4, 4, 7, 3, 6, 2),
        (1, 5, 9, 40, 4, 3, 0),
        (1, 7, 3, 33, 3, 3, 1),
        (1, 16, 16, 129, 2, 5, 0),
        (1, 33, 17, 200, 8, 16, 4),
    ];
    for (i, &(b, cin, cout, t, s, k, p)) in cases.iter().enumerate() {
        let x = seeded(400 + i as u64, [b, cin, t], 1.0);
        let w = seeded(500 + i as u64, [cin, cout, k], 0.3);
        let bias = seeded(600 + i as u64, [cout], 0.1);
        let xr = if native_available() {
            rounded(&x)
        } else {
            x.clone()
        };
        let got = conv_transpose1d(x.clone(), &held(&w), Some(&bias), s, p);
        let want = reference::conv_transpose1d(xr, &rounded(&w), Some(&bias), s, p);
        let err = max_rel_err(got, want);
        assert!(err < 2e-5, "case {i}: {err}");
    }
}

#[test]
fn bf16_convolutions_do_not_depend_on_the_thread_count() {
    let x = seeded(7, [1, 16, 5000], 1.0);
    let w = held(&seeded(8, [16, 16, 7], 0.2));
    let wt = held(&seeded(9, [16, 8, 8], 0.2));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = conv1d(x.clone(), &w, None, 1, 9, 3);
            to_vec(conv_transpose1d(y, &wt, None, 4, 2))
        })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

#[test]
fn non_finite_activations_stay_non_finite() {
    // A NaN in the input must not turn into a finite value on the bf16 path.
    let mut v = to_vec(seeded(11, [1, 4, 50], 1.0));
    v[2 * 50 + 20] = f32::NAN;
    let x: Tensor<3> = from_vec(v, [1, 4, 50], &Device::flex()).unwrap();
    let w = held(&seeded(12, [3, 4, 3], 0.3));
    let y = to_vec(conv1d(x, &w, None, 1, 1, 1));
    for col in 19..=21 {
        for row in 0..3 {
            assert!(y[row * 50 + col].is_nan(), "row {row}, column {col}");
        }
    }
    assert!(y[0].is_finite());
}
