//! The fast kernels against burn's own ops (the reference path), over shapes that cover every
//! edge: strides, dilations, paddings, batches, blocks boundaries, short inputs.

use audiox_core::noise::{NoiseSource, SeededNoise};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_kernels::{conv_transpose1d, conv1d, reference, snake};
use burn::tensor::{Device, Tensor};

fn seeded<const D: usize>(seed: u64, shape: [usize; D], scale: f32) -> Tensor<D> {
    let v = SeededNoise::new(seed)
        .normal("t", &shape)
        .unwrap()
        .into_iter()
        .map(|x| x * scale)
        .collect();
    from_vec(v, shape, &Device::flex()).unwrap()
}

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

#[test]
fn snake_matches_the_composed_ops() {
    for (shape, seed) in [([1, 3, 5], 1), ([2, 4, 3000], 2), ([1, 1, 1], 3)] {
        let x = seeded(seed, shape, 3.0);
        let alpha = seeded(seed + 10, [shape[1]], 0.5);
        let beta = seeded(seed + 20, [shape[1]], 0.5);
        let fast = snake(x.clone(), &alpha, &beta);
        let slow = reference::snake(x.clone(), &alpha, &beta);
        assert!(max_rel_err(fast, slow) < 2e-6, "{shape:?}");
    }
    // In place when the input is not shared: a shared input is left untouched.
    let x = seeded(4, [1, 2, 64], 1.0);
    let before = to_vec(x.clone());
    let _ = snake(x.clone(), &seeded(5, [2], 0.3), &seeded(6, [2], 0.3));
    assert_eq!(to_vec(x), before);
}

/// Every value of `fast` within `rel` of `slow`'s, relative to the value's own size (with an
/// absolute floor for results near 0).
fn assert_each_close(fast: Tensor<3>, slow: Tensor<3>, rel: f32, what: &str) {
    assert_eq!(fast.dims(), slow.dims(), "{what}");
    for (i, (f, s)) in to_vec(fast).iter().zip(&to_vec(slow)).enumerate() {
        assert!(
            (f - s).abs() <= rel * s.abs() + 1e-30,
            "{what} value {i}: {f} vs {s}"
        );
    }
}

/// Far tails, tiny values, zero, infinities and NaN, for the activations' edge cases.
const EDGES: [f32; 10] = [
    -200.0,
    -90.0,
    -1e-30,
    0.0,
    1e-30,
    60.0,
    200.0,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

fn edges() -> Tensor<3> {
    from_vec(EDGES.to_vec(), [1, 1, EDGES.len()], &Device::flex()).unwrap()
}

#[test]
fn quick_gelu_matches_the_composed_ops() {
    // Every value to within a few f32 ulp of burn's `x * sigmoid(1.702 x)`.
    for (shape, seed, scale) in [
        ([1, 3, 5], 1, 3.0),
        ([2, 50, 3072], 2, 4.0),
        ([1, 1, 1], 3, 1.0),
    ] {
        let x = seeded(seed, shape, scale);
        let fast = audiox_kernels::quick_gelu(x.clone());
        let slow = reference::quick_gelu(x);
        assert_each_close(fast, slow, 4e-7, &format!("{shape:?}"));
    }
    let got = to_vec(audiox_kernels::quick_gelu(edges()));
    // Far negative (and -inf): the limit 0.
    assert_eq!(&got[..2], &[-0.0, -0.0]);
    assert_eq!(got[2], -5e-31);
    assert_eq!(&got[3..8], &[0.0, 5e-31, 60.0, 200.0, f32::INFINITY]);
    assert_eq!(got[8], 0.0);
    assert!(got[9].is_nan());
    // In place when the input is not shared: a shared input is left untouched.
    let x = seeded(4, [1, 2, 64], 1.0);
    let before = to_vec(x.clone());
    let _ = audiox_kernels::quick_gelu(x.clone());
    assert_eq!(to_vec(x), before);
}

#[test]
fn silu_mul_matches_the_composed_ops() {
    // Every value to within a few f32 ulp of burn's `silu(gate) * up`.
    for (shape, seed, scale) in [
        ([1, 3, 5], 1, 3.0),
        ([1, 237, 4096], 2, 6.0),
        ([1, 1, 1], 3, 1.0),
    ] {
        let gate = seeded(seed, shape, scale);
        let up = seeded(seed + 50, shape, 2.0);
        let fast = audiox_kernels::silu_mul(gate.clone(), up.clone());
        let slow = reference::silu_mul(gate, up);
        assert_each_close(fast, slow, 6e-7, &format!("{shape:?}"));
    }
    let twos = from_vec(vec![2.0; EDGES.len()], [1, 1, EDGES.len()], &Device::flex()).unwrap();
    let got = to_vec(audiox_kernels::silu_mul(edges(), twos));
    // Far negative (and -inf): the limit 0.
    assert_eq!(&got[..2], &[-0.0, -0.0]);
    assert_eq!(got[2], -1e-30);
    assert_eq!(&got[3..8], &[0.0, 1e-30, 120.0, 400.0, f32::INFINITY]);
    assert_eq!(got[8], 0.0);
    assert!(got[9].is_nan());
    // In the gate's buffer when it is not shared: shared inputs are left untouched, and gates
    // and ups of different shapes take the composed ops.
    let (gate, up) = (seeded(4, [1, 2, 64], 1.0), seeded(5, [1, 2, 64], 1.0));
    let before = to_vec(gate.clone());
    let _ = audiox_kernels::silu_mul(gate.clone(), up.clone());
    assert_eq!(to_vec(gate), before);
    let (gate, up) = (seeded(6, [1, 2, 64], 1.0), seeded(7, [1, 1, 64], 1.0));
    let fast = to_vec(audiox_kernels::silu_mul(gate.clone(), up.clone()));
    assert_eq!(fast, to_vec(reference::silu_mul(gate, up)));
}

#[test]
fn conv1d_matches_burn_for_strides_dilations_and_paddings() {
    let cases = [
        // (b, cin, cout, t, k, stride, padding, dilation)
        (1, 4, 5, 17, 7, 1, 3, 1),
        (2, 3, 6, 2500, 7, 1, 27, 9),
        (1, 8, 8, 1030, 1, 1, 0, 1),
        (1, 4, 8, 61, 4, 2, 1, 1),
        (2, 8, 16, 3001, 16, 8, 4, 1),
        (1, 5, 3, 9, 3, 1, 1, 3),
        (1, 2, 2, 3, 7, 1, 3, 1),
        (1, 6, 4, 2049, 3, 1, 0, 2),
    ];
    for (i, &(b, cin, cout, t, k, s, p, d)) in cases.iter().enumerate() {
        let x = seeded(100 + i as u64, [b, cin, t], 1.0);
        let w = seeded(200 + i as u64, [cout, cin, k], 0.3);
        let bias = seeded(300 + i as u64, [cout], 0.1);
        for with_bias in [true, false] {
            let bias = with_bias.then_some(&bias);
            let fast = conv1d(x.clone(), &w, bias, s, p, d);
            let slow = reference::conv1d(x.clone(), &w, bias, s, p, d);
            let err = max_rel_err(fast, slow);
            assert!(err < 1e-5, "case {i}: {err}");
        }
    }
}

#[test]
fn conv_transpose1d_matches_burn() {
    let cases = [
        // (b, cin, cout, t, stride, k, padding): first kernel 2 * stride and padding
        // ceil(stride / 2), as the VAE, then other kernels and paddings (a padding above the
        // stride, a kernel shorter than the stride: phases with no tap)
        (1usize, 4usize, 3usize, 11usize, 2usize, 4usize, 1usize),
        (2, 8, 4, 300, 4, 8, 2),
        (1, 6, 5, 1500, 8, 16, 4),
        (1, 3, 2, 1, 8, 16, 4),
        (1, 4, 4, 7, 3, 6, 2),
        (1, 3, 4, 50, 2, 7, 3),
        (1, 2, 3, 40, 4, 3, 0),
        (1, 4, 600, 2100, 2, 4, 1),
    ];
    for (i, &(b, cin, cout, t, s, k, p)) in cases.iter().enumerate() {
        let x = seeded(400 + i as u64, [b, cin, t], 1.0);
        let w = seeded(500 + i as u64, [cin, cout, k], 0.3);
        let bias = seeded(600 + i as u64, [cout], 0.1);
        let fast = conv_transpose1d(x.clone(), &w, Some(&bias), s, p);
        let slow = reference::conv_transpose1d(x.clone(), &w, Some(&bias), s, p);
        let err = max_rel_err(fast, slow);
        assert!(err < 1e-5, "case {i}: {err}");
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let x = seeded(7, [1, 16, 5000], 1.0);
    let w = seeded(8, [16, 16, 7], 0.2);
    let (wt, bias) = (seeded(11, [16, 8, 8], 0.2), seeded(12, [8], 0.1));
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let y = conv1d(x.clone(), &w, None, 1, 9, 3);
            let y = snake(y, &seeded(9, [16], 0.3), &seeded(10, [16], 0.3));
            to_vec(conv_transpose1d(y, &wt, Some(&bias), 4, 2))
        })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

#[test]
fn attention_matches_burn() {
    for (i, &(b, h, n, m, d, dv, scale)) in [
        (1usize, 64usize, 237usize, 237usize, 24usize, 24usize, None),
        (2, 3, 5, 7, 8, 6, Some(1.0f64)),
        (1, 2, 1, 9, 4, 4, Some(0.125)),
    ]
    .iter()
    .enumerate()
    {
        let q = seeded::<4>(700 + i as u64, [b, h, n, d], 1.0);
        let k = seeded::<4>(710 + i as u64, [b, h, m, d], 1.0);
        let v = seeded::<4>(720 + i as u64, [b, h, m, dv], 1.0);
        let fast = audiox_kernels::attention(q.clone(), k.clone(), v.clone(), scale);
        let slow = reference::attention(q, k, v, scale);
        let [fb, fh, fn_, fd] = fast.dims();
        let err = max_rel_err(
            fast.reshape([fb * fh, fn_, fd]),
            slow.reshape([fb * fh, fn_, fd]),
        );
        assert!(err < 2e-6, "case {i}: {err}");
    }
}

/// Head-split views (the layout the models pass: `[B, N, 3, H, d]` projections narrowed and
/// transposed, so strided with an offset) give the same result as contiguous copies.
#[test]
fn attention_reads_strided_views() {
    let (b, n, h, d) = (2usize, 9usize, 4usize, 6usize);
    let packed = seeded::<3>(800, [b, n, 3 * h * d], 1.0);
    let split = |i: usize| {
        packed
            .clone()
            .narrow(2, i * h * d, h * d)
            .reshape([b, n, h, d])
            .swap_dims(1, 2)
    };
    let (q, k, v) = (split(0), split(1), split(2));
    let fast = audiox_kernels::attention(q.clone(), k.clone(), v.clone(), None);
    let slow = reference::attention(q, k, v, None);
    assert_eq!(fast.dims(), [b, h, n, d]);
    // The fast path ran: it returns a head view of a merged-heads buffer (the reference
    // returns a contiguous tensor).
    let layout = fast
        .clone()
        .try_into_primitive::<burn::backend::Flex>()
        .unwrap();
    assert!(!layout.is_contiguous(), "fell back to the reference path");
    let err = max_rel_err(fast.reshape([b * h, n, d]), slow.reshape([b * h, n, d]));
    assert!(err < 2e-6, "{err}");
}

/// The fused SnakeBeta -> convolution equals the two reference ops, across block boundaries,
/// strides, dilations and paddings; the input is left untouched.
#[test]
fn snake_conv1d_matches_snake_then_conv1d() {
    let cases = [
        // (b, cin, cout, t, k, stride, padding, dilation)
        (1, 4, 5, 17, 7, 1, 3, 1),
        (2, 3, 6, 2500, 7, 1, 27, 9),
        (1, 8, 8, 1030, 1, 1, 0, 1),
        (2, 8, 16, 3001, 16, 8, 4, 1),
        (1, 2, 2, 3, 7, 1, 3, 1),
        (1, 6, 4, 2049, 3, 1, 0, 2),
    ];
    for (i, &(b, cin, cout, t, k, s, p, d)) in cases.iter().enumerate() {
        let seed = 900 + 10 * i as u64;
        let x = seeded::<3>(seed, [b, cin, t], 2.0);
        let alpha = seeded::<1>(seed + 1, [cin], 0.5);
        let beta = seeded::<1>(seed + 2, [cin], 0.5);
        let w = seeded::<3>(seed + 3, [cout, cin, k], 0.3);
        let bias = seeded::<1>(seed + 4, [cout], 0.3);
        let before = to_vec(x.clone());
        let fused =
            audiox_kernels::snake_conv1d(x.clone(), &alpha, &beta, &w, Some(&bias), s, p, d);
        assert_eq!(to_vec(x.clone()), before, "case {i}: input modified");
        let slow = reference::conv1d(reference::snake(x, &alpha, &beta), &w, Some(&bias), s, p, d);
        let err = max_rel_err(fused, slow);
        assert!(err < 2e-5, "case {i}: {err}");
    }
}

/// `residual + conv1d(snake(x))` accumulating into the residual: in place when the residual is
/// not shared, into a copy (leaving it untouched) when it is.
#[test]
fn snake_conv1d_residual_adds_into_the_residual() {
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
        let want = to_vec(
            seeded::<3>(seed + 5, [b, c, t], 1.0)
                + reference::conv1d(
                    reference::snake(x.clone(), &alpha, &beta),
                    &w,
                    Some(&bias),
                    1,
                    p,
                    d,
                ),
        );
        let check = |got: Tensor<3>, label: &str| {
            let got = to_vec(got);
            let peak = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
                / peak;
            assert!(err < 2e-5, "case {i} ({label}): {err}");
        };
        // Unique residual: accumulated in place.
        let unique = seeded::<3>(seed + 5, [b, c, t], 1.0);
        let got = audiox_kernels::snake_conv1d_residual(
            Some(unique),
            x.clone(),
            &alpha,
            &beta,
            &w,
            Some(&bias),
            1,
            p,
            d,
        );
        check(got, "unique");
        // Shared residual: the caller's tensor keeps its values.
        let shared = seeded::<3>(seed + 5, [b, c, t], 1.0);
        let before = to_vec(shared.clone());
        let got = audiox_kernels::snake_conv1d_residual(
            Some(shared.clone()),
            x.clone(),
            &alpha,
            &beta,
            &w,
            Some(&bias),
            1,
            p,
            d,
        );
        check(got, "shared");
        assert_eq!(to_vec(shared), before, "case {i}: shared residual modified");
    }
}

/// `y[co, c] = bias[co] + sum_ci sum_j w[co, ci, j] x[ci, c + j d - pad]` in f64, for one item.
fn conv1d_f64(
    x: &[f32],
    [cin, t]: [usize; 2],
    w: &[f32],
    [cout, k]: [usize; 2],
    bias: &[f32],
    (pad, d): (usize, usize),
) -> Vec<f64> {
    let tout = t + 2 * pad - (k - 1) * d;
    let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let mut y = vec![0.0f64; cout * tout];
    for (co, row) in y.chunks_exact_mut(tout).enumerate() {
        row.fill(f64::from(bias[co]));
        for ci in 0..cin {
            for j in 0..k {
                let weight = f64::from(w[(co * cin + ci) * k + j]);
                let shift = (j * d) as isize - pad as isize;
                // Output columns whose input column c + shift lies in [0, t).
                let lo = (-shift).clamp(0, tout as isize) as usize;
                let hi = (t as isize - shift).clamp(lo as isize, tout as isize) as usize;
                let src = &x[ci * t..(ci + 1) * t];
                for c in lo..hi {
                    row[c] += weight * src[(c as isize + shift) as usize];
                }
            }
        }
    }
    y
}

/// The minimal-filtering path, asked for explicitly (it runs on any CPU; the default takes it
/// only on some), against an f64 reference: every tap count it takes, dilations, paddings
/// below, at and above `(k - 1) d / 2`, inputs shorter than a tile, several blocks (a block
/// holds 2^20 / ((k + 1) C) tiles of two columns), lengths that end mid-tile, batches, wide
/// layers, with and without SnakeBeta and a residual.
#[test]
fn winograd_convolutions_match_an_f64_reference() {
    use audiox_kernels::ConvAlgorithm::Winograd;
    let cases = [
        // (b, cin, cout, t, k, padding, dilation)
        (1usize, 16usize, 24usize, 37usize, 7usize, 3usize, 1usize),
        (1, 16, 16, 17001, 7, 3, 1),
        (1, 16, 16, 17001, 7, 27, 9),
        (2, 16, 16, 50, 7, 9, 3),
        (1, 16, 16, 5, 7, 9, 3),
        (1, 20, 17, 333, 3, 1, 1),
        (1, 16, 18, 700, 5, 0, 2),
        (1, 17, 16, 300, 7, 10, 1),
        (1, 16, 16, 1, 7, 3, 1),
        (1, 24, 16, 260, 4, 3, 1),
        (1, 2, 3, 40, 7, 3, 1),
        (1, 256, 256, 20, 7, 27, 9),
    ];
    for (i, &(b, cin, cout, t, k, p, d)) in cases.iter().enumerate() {
        let seed = 1100 + 10 * i as u64;
        let x = seeded::<3>(seed, [b, cin, t], 1.5);
        let w = seeded::<3>(seed + 1, [cout, cin, k], 1.0 / ((cin * k) as f32).sqrt());
        let bias = seeded::<1>(seed + 2, [cout], 0.3);
        let alpha = seeded::<1>(seed + 3, [cin], 0.5);
        let beta = seeded::<1>(seed + 4, [cin], 0.5);
        let tout = t + 2 * p - (k - 1) * d;
        let residual = seeded::<3>(seed + 5, [b, cout, tout], 1.0);
        let (ws, bs) = (to_vec(w.clone()), to_vec(bias.clone()));
        let reference = |input: &Tensor<3>| -> Vec<Vec<f64>> {
            let xs = to_vec(input.clone());
            (0..b)
                .map(|item| {
                    let x = &xs[item * cin * t..(item + 1) * cin * t];
                    conv1d_f64(x, [cin, t], &ws, [cout, k], &bs, (p, d))
                })
                .collect()
        };
        let plain = reference(&x);
        let activated = reference(&reference::snake(x.clone(), &alpha, &beta));
        let rs = to_vec(residual.clone());
        let with_residual: Vec<Vec<f64>> = activated
            .iter()
            .enumerate()
            .map(|(item, y)| {
                let r = &rs[item * cout * tout..(item + 1) * cout * tout];
                y.iter().zip(r).map(|(y, &r)| y + f64::from(r)).collect()
            })
            .collect();
        let snake_conv = |residual: Option<Tensor<3>>| {
            audiox_kernels::snake_conv1d_residual_using(
                Winograd,
                residual,
                x.clone(),
                &alpha,
                &beta,
                &w,
                Some(&bias),
                1,
                p,
                d,
            )
        };
        let runs = [
            (
                "plain",
                audiox_kernels::conv1d_using(Winograd, x.clone(), &w, Some(&bias), 1, p, d),
                &plain,
            ),
            ("snake", snake_conv(None), &activated),
            (
                "snake + residual",
                snake_conv(Some(residual.clone())),
                &with_residual,
            ),
        ];
        for (variant, got, want) in runs {
            assert_eq!(got.dims(), [b, cout, tout], "case {i} {variant}");
            let got = to_vec(got);
            for (item, want) in want.iter().enumerate() {
                let got = &got[item * cout * tout..(item + 1) * cout * tout];
                let peak = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
                let err = got
                    .iter()
                    .zip(want)
                    .fold(0.0f64, |m, (&g, &w)| m.max((f64::from(g) - w).abs()))
                    / peak;
                assert!(err < 1e-5, "case {i} {variant} item {item}: {err}");
            }
        }
    }
}

/// Dilation 0 (every tap reads the same column) is not minimal filtering's case: asked for, the
/// convolution still equals the shifted GEMMs' (a sum over the taps of that column).
#[test]
fn winograd_leaves_dilation_zero_to_the_shifted_gemms() {
    use audiox_kernels::ConvAlgorithm::{Shifted, Winograd};
    let (x, w) = (
        seeded(1320, [1, 16, 30], 1.0),
        seeded(1321, [16, 16, 7], 0.1),
    );
    let run = |algorithm| {
        to_vec(audiox_kernels::conv1d_using(
            algorithm,
            x.clone(),
            &w,
            None,
            1,
            2,
            0,
        ))
    };
    assert_eq!(run(Winograd), run(Shifted));
}

/// The minimal-filtering path splits its work by blocks of the shape only: the same bits for
/// any thread count, across several blocks.
#[test]
fn winograd_results_do_not_depend_on_the_thread_count() {
    use audiox_kernels::ConvAlgorithm::Winograd;
    let x = seeded(1300, [1, 16, 17001], 1.0);
    let w = seeded(1301, [16, 16, 7], 0.1);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            to_vec(audiox_kernels::conv1d_using(
                Winograd,
                x.clone(),
                &w,
                None,
                1,
                9,
                3,
            ))
        })
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(3));
}

/// The default choice: minimal filtering only for stride-1 kernels of 3 to 7 taps with enough
/// channels, and only on CPUs where this process takes it; `conv1d` gives the convolution
/// either way.
#[test]
fn winograd_is_taken_only_where_it_applies() {
    use audiox_kernels::{ConvAlgorithm, WINOGRAD_MIN_CHANNELS as MIN};
    let on = ConvAlgorithm::for_shape(MIN, MIN, 7, 1);
    for (cin, cout, k, stride) in [(MIN - 1, MIN, 7, 1), (MIN, MIN - 1, 7, 1), (MIN, MIN, 7, 2)]
        .into_iter()
        .chain([(MIN, MIN, 1, 1), (MIN, MIN, 2, 1), (MIN, MIN, 8, 1)])
    {
        let got = ConvAlgorithm::for_shape(cin, cout, k, stride);
        assert_eq!(got, ConvAlgorithm::Shifted, "{cin} {cout} {k} {stride}");
    }
    #[cfg(target_arch = "x86_64")]
    if std::env::var(audiox_kernels::CONV_ALGORITHM_ENV).is_err() {
        let class = std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && !std::is_x86_feature_detected!("avx512f");
        assert_eq!(on == ConvAlgorithm::Winograd, class);
    }
    let (x, w) = (
        seeded(1310, [1, MIN, 21], 1.0),
        seeded(1311, [MIN, MIN, 7], 0.05),
    );
    let want = conv1d_f64(
        &to_vec(x.clone()),
        [MIN, 21],
        &to_vec(w.clone()),
        [MIN, 7],
        &[0.0; MIN],
        (3, 1),
    );
    let got = to_vec(conv1d(x, &w, None, 1, 3, 1));
    let peak = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&want)
        .fold(0.0f64, |m, (&g, &w)| m.max((f64::from(g) - w).abs()));
    assert!(err / peak < 1e-5, "{on:?}: {err}");
}
