//! The int8-weight product: quantisation round trip, the native path against an independent
//! integer reference (per-row symmetric activation quantisation), both paths against the f32
//! product within the quantisation error, shapes at every packing edge.

use audiox_kernels::int8::{
    Int8Kernel, QuantizedView, QuantizedWeight, TRANSPOSED_COLUMNS, TRANSPOSED_ROWS,
    TransposedView, hold_values_transposed, linear, linear_transposed, linear_view, matmul,
    matmul_dequantized, matmul_transposed, matmul_transposed_with, matmul_view, matmul_view_with,
    native_available, prefers_transposed, quantize_weight, quantize_weight_blocked, transpose,
    transposed_values,
};

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

fn reference(x: &[f64], w: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                out[i * n + j] += x[i * k + p] * w[p * n + j];
            }
        }
    }
    out
}

/// Per-row symmetric quantisation to [-127, 127], dequantised (written here independently).
fn fake_quantized_rows(x: &[f32], k: usize) -> Vec<f64> {
    x.chunks(k.max(1))
        .flat_map(|row| {
            let s = row.iter().fold(0f32, |p, v| p.max(v.abs())) / 127.0;
            row.iter().map(move |&v| {
                if s > 0.0 {
                    (v / s).round() as f64 * s as f64
                } else {
                    0.0
                }
            })
        })
        .collect()
}

fn worst(out: &[f32], want: &[f64], scale: &[f64]) -> f64 {
    out.iter()
        .zip(want)
        .zip(scale)
        .map(|((&o, &w), &s)| (o as f64 - w).abs() / s.max(1e-30))
        .fold(0.0, f64::max)
}

/// Σ |x| |w| per output: the scale an accumulated error is measured against.
fn magnitude(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let xa: Vec<f64> = x.iter().map(|v| v.abs() as f64).collect();
    let wa: Vec<f64> = w.iter().map(|v| v.abs() as f64).collect();
    reference(&xa, &wa, m, k, n)
}

const SHAPES: [(usize, usize, usize); 8] = [
    (1, 1, 1),
    (3, 5, 7),
    (8, 64, 32),
    (9, 65, 33),
    (17, 130, 95),
    (40, 257, 64),
    (7, 1023, 31),
    (64, 96, 160),
];

#[test]
fn weight_quantisation_is_per_column_and_within_half_a_step() {
    for &(_, k, n) in &SHAPES {
        let w = values(k * n, (k * 31 + n) as u64);
        let q = quantize_weight(&w, k, n);
        assert_eq!(q.bytes(), k * n + 4 * n);
        let back = q.to_f32();
        for c in 0..n {
            let peak = (0..k).map(|r| w[r * n + c].abs()).fold(0f32, f32::max);
            assert!((q.scale[c] - peak / 127.0).abs() <= 1e-9, "column {c}");
            // The largest value of each column maps to +-127 exactly.
            assert!((0..k).any(|r| q.q[r * n + c].unsigned_abs() == 127) || peak == 0.0);
            for r in 0..k {
                let err = (back[r * n + c] - w[r * n + c]).abs();
                assert!(err <= q.scale[c] * 0.5 + 1e-7, "[{r},{c}]: {err}");
            }
        }
    }
}

#[test]
fn the_chosen_kernel_is_exact_on_the_quantised_operands() {
    if !Int8Kernel::current().quantizes_activations() {
        eprintln!("no int8 kernel here: the portable path is tested below");
        return;
    }
    for &(m, k, n) in &SHAPES {
        let x = values(m * k, m as u64 + 3);
        let w = values(k * n, (k * 31 + n) as u64);
        let q = quantize_weight(&w, k, n);
        let mut out = vec![f32::NAN; m * n];
        matmul(&x, m, &q, &mut out);
        let wq: Vec<f64> = q.to_f32().iter().map(|&v| v as f64).collect();
        let want = reference(&fake_quantized_rows(&x, k), &wq, m, k, n);
        let err = worst(&out, &want, &magnitude(&x, &w, m, k, n));
        assert!(err < 1e-5, "[{m},{k}]x[{k},{n}]: {err}");
    }
}

/// The AVX2 and AVX-VNNI kernels (for CPUs without AVX512-VNNI) compute the exact integer sums
/// of the quantised operands, and turn them into the VNNI kernel's floats bit for bit:
/// per-column and blocked scales, shapes at every tile and panel edge, large activations that
/// would saturate `vpmaddubsw` with the VNNI path's unsigned bytes.
#[test]
fn avx2_path_is_exact_and_gives_the_vnni_floats() {
    if !Int8Kernel::Avx2.is_supported() {
        eprintln!("no AVX2 here: the portable path is tested below");
        return;
    }
    let mut cases: Vec<(usize, usize, usize, usize)> =
        SHAPES.iter().map(|&(m, k, n)| (m, k, n, 0)).collect();
    cases.extend([(5, 128, 40, 64), (13, 260, 17, 4), (237, 1536, 48, 128)]);
    for (m, k, n, block) in cases {
        let mut x = values(m * k, (m * 7 + k) as u64);
        // Rows with a few large values: quantised bytes near +-127 everywhere.
        for row in x.chunks_mut(k).step_by(2) {
            row.iter_mut()
                .for_each(|v| *v = v.signum() * (0.9 + 0.1 * v.abs()));
        }
        let w = values(k * n, (k * 13 + n) as u64);
        let q = if block == 0 {
            quantize_weight(&w, k, n)
        } else {
            quantize_weight_blocked(&w, k, n, block)
        };
        let mut avx2 = vec![f32::NAN; m * n];
        matmul_view_with(Int8Kernel::Avx2, &x, m, q.view(), &mut avx2);
        if Int8Kernel::AvxVnni.is_supported() {
            let mut avx_vnni = vec![f32::NAN; m * n];
            matmul_view_with(Int8Kernel::AvxVnni, &x, m, q.view(), &mut avx_vnni);
            assert_same_bits(
                &avx_vnni,
                &avx2,
                &format!("AVX-VNNI vs AVX2 [{m},{k}]x[{k},{n}] block {block}"),
            );
        }
        if block == 0 {
            let wq: Vec<f64> = q.to_f32().iter().map(|&v| v as f64).collect();
            let want = reference(&fake_quantized_rows(&x, k), &wq, m, k, n);
            let err = worst(&avx2, &want, &magnitude(&x, &w, m, k, n));
            assert!(err < 1e-5, "AVX2 [{m},{k}]x[{k},{n}]: {err}");
        }
        if native_available() {
            let mut vnni = vec![f32::NAN; m * n];
            matmul_view_with(Int8Kernel::Vnni, &x, m, q.view(), &mut vnni);
            assert_same_bits(
                &avx2,
                &vnni,
                &format!("AVX2 vs VNNI [{m},{k}]x[{k},{n}] block {block}"),
            );
        }
    }
}

/// Asserts that two outputs are the same floats bit for bit (a NaN left unwritten in either
/// shows), naming the first element that differs.
fn assert_same_bits(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!("{what}: element {i} is {} and {}", a[i], b[i]);
    }
}

/// AMX and VNNI compute the same exact integer sums and rescale them the same way: where the
/// CPU runs both, their floats are identical, for one scale block per column and for blocks
/// of 64 and 192 rows (the DiT's), at sizes off every tile edge; both match the integer
/// reference.
#[test]
fn amx_and_vnni_give_the_same_floats() {
    if !Int8Kernel::Amx.is_supported() {
        eprintln!(
            "no AMX int8 here (kernel: {})",
            Int8Kernel::current().name()
        );
        return;
    }
    for &(m, k, n, block) in &[
        (1, 1, 1, 0),
        (9, 65, 33, 0),
        (33, 130, 95, 0),
        (70, 257, 64, 0),
        (40, 256, 96, 64),
        (37, 576, 70, 192),
        (65, 1536, 129, 192),
    ] {
        let x = values(m * k, m as u64 + 5);
        let w = values(k * n, (k * 7 + n) as u64);
        let q = if block == 0 {
            quantize_weight(&w, k, n)
        } else {
            quantize_weight_blocked(&w, k, n, block)
        };
        let run = |kernel| {
            let mut out = vec![f32::NAN; m * n];
            matmul_view_with(kernel, &x, m, q.view(), &mut out);
            out
        };
        let amx = run(Int8Kernel::Amx);
        assert_same_bits(
            &amx,
            &run(Int8Kernel::Vnni),
            &format!("AMX vs VNNI [{m},{k}]x[{k},{n}] block {block}"),
        );
        let wq: Vec<f64> = q.to_f32().iter().map(|&v| v as f64).collect();
        let want = reference(&fake_quantized_rows(&x, k), &wq, m, k, n);
        let err = worst(&amx, &want, &magnitude(&x, &w, m, k, n));
        assert!(err < 1e-5, "[{m},{k}]x[{k},{n}] block {block}: {err}");
    }
}

#[test]
fn both_paths_are_within_the_quantisation_error_of_f32() {
    for &(m, k, n) in &SHAPES {
        let x = values(m * k, m as u64 + 3);
        let w = values(k * n, (k * 31 + n) as u64);
        let q = quantize_weight(&w, k, n);
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let wd: Vec<f64> = w.iter().map(|&v| v as f64).collect();
        let exact = reference(&xd, &wd, m, k, n);
        // Each activation is off by at most half a step (sa / 2, sa = its row's peak / 127),
        // each weight by sw / 2: |a w - a' w'| <= |a| sw/2 + |w| sa/2 + sa sw / 4 per term.
        let sa: Vec<f64> = x
            .chunks(k)
            .map(|r| r.iter().fold(0f32, |p, v| p.max(v.abs())) as f64 / 127.0)
            .collect();
        let sw: Vec<f64> = q.scale.iter().map(|&s| s as f64).collect();
        let mut bound = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                bound[i * n + j] = (0..k)
                    .map(|p| {
                        xd[i * k + p].abs() * sw[j] / 2.0
                            + wd[p * n + j].abs() * sa[i] / 2.0
                            + sa[i] * sw[j] / 4.0
                    })
                    .sum::<f64>();
            }
        }
        let scale = magnitude(&x, &w, m, k, n);
        for (name, f) in [
            (
                "default",
                matmul as fn(&[f32], usize, &QuantizedWeight, &mut [f32]),
            ),
            ("dequantized", matmul_dequantized),
        ] {
            let mut out = vec![f32::NAN; m * n];
            f(&x, m, &q, &mut out);
            for e in 0..m * n {
                let err = (out[e] as f64 - exact[e]).abs();
                assert!(
                    err <= bound[e] + 1e-5 * scale[e],
                    "{name} [{m},{k}]x[{k},{n}] at {e}: {err} > {}",
                    bound[e]
                );
            }
            // And typically far inside the bound: the errors are independent and cancel.
            let rel = worst(&out, &exact, &scale);
            assert!(rel < 2e-2, "{name} [{m},{k}]x[{k},{n}]: {rel}");
        }
    }
}

#[test]
fn the_result_does_not_depend_on_the_thread_count() {
    let (m, k, n) = (37, 300, 200);
    let x = values(m * k, 5);
    let q = quantize_weight(&values(k * n, 6), k, n);
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0f32; m * n];
        pool.install(|| matmul(&x, m, &q, &mut out));
        out
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn zero_rows_and_empty_dimensions() {
    let (m, k, n) = (3, 10, 5);
    let q = quantize_weight(&values(k * n, 1), k, n);
    let mut out = vec![f32::NAN; m * n];
    matmul(&vec![0.0; m * k], m, &q, &mut out);
    assert!(
        out.iter().all(|&v| v == 0.0),
        "an all-zero row has scale 0 and gives zeros"
    );
    let zero = quantize_weight(&vec![0.0; k * n], k, n);
    matmul(&values(m * k, 2), m, &zero, &mut out);
    assert!(
        out.iter().all(|&v| v == 0.0),
        "an all-zero weight gives zeros"
    );
    let empty = quantize_weight(&[], 0, 4);
    let mut out = vec![f32::NAN; 12];
    matmul(&[], 3, &empty, &mut out);
    assert!(out.iter().all(|&v| v == 0.0));
    matmul(&[], 0, &q, &mut []);
}

#[test]
fn linear_on_burn_tensors_adds_the_bias() {
    use burn::tensor::{Device, Tensor, TensorData};
    let device = Device::flex();
    let (b, t, k, n) = (2, 3, 20, 9);
    let x = values(b * t * k, 1);
    let q = quantize_weight(&values(k * n, 2), k, n);
    let bias = values(n, 3);
    let xt = Tensor::<3>::from_data(TensorData::new(x.clone(), [b, t, k]), &device);
    let got: Vec<f32> = linear(&xt, &q, Some(&bias))
        .expect("flex f32 input")
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let mut want = vec![0f32; b * t * n];
    matmul(&x, b * t, &q, &mut want);
    for row in want.chunks_mut(n) {
        row.iter_mut().zip(&bias).for_each(|(o, b)| *o += b);
    }
    assert_eq!(got, want);
    assert!(
        linear(&xt, &quantize_weight(&values(9, 1), 3, 3), None).is_none(),
        "k mismatch"
    );
}

#[test]
fn block_scales_match_the_dequantised_product() {
    // Blocks of 8 rows (native path: groups of four inside a block), of 6 rows (not a multiple
    // of four: the portable path), and a short last block.
    for (m, k, n, block) in [
        (9, 64, 33, 8),
        (5, 70, 40, 8),
        (4, 36, 17, 6),
        (3, 256, 64, 128),
    ] {
        let x = values(m * k, 11);
        let w = values(k * n, 12);
        let q = quantize_weight_blocked(&w, k, n, block);
        assert_eq!(q.scale.len(), k.div_ceil(block) * n);
        // Every value within half a step of its own block's scale.
        let back = q.to_f32();
        for r in 0..k {
            for c in 0..n {
                let s = q.scale[(r / block) * n + c];
                assert!((back[r * n + c] - w[r * n + c]).abs() <= s * 0.5 + 1e-7);
            }
        }
        let mut out = vec![f32::NAN; m * n];
        matmul(&x, m, &q, &mut out);
        let wq: Vec<f64> = back.iter().map(|&v| v as f64).collect();
        let xs = if Int8Kernel::current().quantizes_activations() && block % 4 == 0 {
            fake_quantized_rows(&x, k)
        } else {
            x.iter().map(|&v| v as f64).collect()
        };
        let want = reference(&xs, &wq, m, k, n);
        let err = worst(&out, &want, &magnitude(&x, &w, m, k, n));
        assert!(err < 1e-5, "[{m},{k}]x[{k},{n}] block {block}: {err}");
    }
    assert!(QuantizedWeight::from_parts(4, 2, 3, vec![0; 8], vec![0.0; 4]).is_some());
    assert!(QuantizedWeight::from_parts(4, 2, 3, vec![0; 8], vec![0.0; 2]).is_none());
    assert!(QuantizedWeight::from_parts(4, 2, 0, vec![0; 8], vec![0.0; 4]).is_none());
}

#[test]
fn a_view_of_borrowed_parts_multiplies_like_the_owned_weight() {
    use burn::tensor::{Device, Tensor, TensorData};
    // Native (block of 8), portable (block of 6) and one block per column.
    for (m, k, n, block) in [(7, 64, 45, 8), (3, 42, 19, 6), (5, 33, 70, 33)] {
        let owned = quantize_weight_blocked(&values(k * n, 21), k, n, block);
        // The parts held elsewhere (as burn holds them), borrowed.
        let (q, scale) = (owned.q.clone(), owned.scale.clone());
        let view = QuantizedView::from_parts(k, n, block, &q, &scale).expect("consistent");
        assert_eq!(view, owned.view());
        assert_eq!((view.k(), view.n(), view.block()), (k, n, block));
        assert_eq!(view.values().as_ptr(), q.as_ptr(), "borrowed, not copied");
        assert_eq!(view.bytes(), owned.bytes());
        assert_eq!(view.to_f32(), owned.to_f32());

        let x = values(m * k, 22);
        let mut want = vec![f32::NAN; m * n];
        matmul(&x, m, &owned, &mut want);
        let mut got = vec![f32::NAN; m * n];
        matmul_view(&x, m, view, &mut got);
        assert_eq!(got, want);

        let bias = values(n, 23);
        let xt = Tensor::<2>::from_data(TensorData::new(x, [m, k]), &Device::flex());
        let a = linear(&xt, &owned, Some(&bias)).expect("flex f32 input");
        let b = linear_view(&xt, view, Some(&bias)).expect("flex f32 input");
        assert_eq!(a.into_data(), b.into_data());
    }
    let (q, s) = (vec![0i8; 8], vec![0f32; 4]);
    assert!(QuantizedView::from_parts(4, 2, 3, &q, &s).is_some());
    assert!(QuantizedView::from_parts(4, 2, 3, &q, &s[..2]).is_none());
    assert!(QuantizedView::from_parts(4, 2, 0, &q, &s).is_none());
    assert!(QuantizedView::from_parts(4, 3, 3, &q, &s).is_none());
}

/// A weight held transposed gives, on every kernel, exactly the floats of the row-major weight
/// on that kernel; on AMX it is multiplied in place (the direct tiles) and still agrees bit for
/// bit with VNNI, and VNNI (AVX2, AVX-VNNI) packs its panels from it (16 x 16, 8 x 8 word
/// transposes), at token counts off every tile and slab edge, blocks of 64, 128 and 192 rows
/// and one block for all rows, narrow and wide outputs.
#[test]
fn a_transposed_weight_gives_the_row_major_floats_on_every_kernel() {
    for &(m, k, n, block) in &[
        (1, 64, 32, 0),
        (5, 128, 64, 64),
        (33, 192, 96, 192),
        (237, 1536, 160, 192),
        (300, 256, 32, 128),
        (520, 384, 64, 0),
    ] {
        let x = values(m * k, (m * 3 + k) as u64);
        let w = values(k * n, (k * 5 + n) as u64);
        let q = if block == 0 {
            quantize_weight(&w, k, n)
        } else {
            quantize_weight_blocked(&w, k, n, block)
        };
        let qt = transpose(&q.q, k, n);
        let view = TransposedView::from_parts(k, n, q.block, &qt, &q.scale).unwrap();
        assert_eq!(view.to_row_major(), q);
        assert_eq!((view.k(), view.n(), view.block()), (k, n, q.block));
        for kernel in Int8Kernel::ALL {
            let mut want = vec![f32::NAN; m * n];
            matmul_view_with(kernel, &x, m, q.view(), &mut want);
            let mut got = vec![f32::NAN; m * n];
            matmul_transposed_with(kernel, &x, m, view, &mut got);
            assert_eq!(
                got,
                want,
                "{} [{m},{k}]x[{k},{n}] block {block}",
                kernel.name()
            );
        }
        if Int8Kernel::Amx.is_supported() {
            let mut vnni = vec![f32::NAN; m * n];
            matmul_view_with(Int8Kernel::Vnni, &x, m, q.view(), &mut vnni);
            let mut amx = vec![f32::NAN; m * n];
            matmul_transposed(&x, m, view, &mut amx);
            assert_eq!(
                amx, vnni,
                "AMX transposed vs VNNI [{m},{k}]x[{k},{n}] block {block}"
            );
        }
    }
    // Sizes the tiles do not take: another kernel through the row-major copy.
    let (m, k, n) = (3, 96, 40);
    let q = quantize_weight(&values(k * n, 9), k, n);
    let qt = transpose(&q.q, k, n);
    let view = TransposedView::from_parts(k, n, q.block, &qt, &q.scale).unwrap();
    let x = values(m * k, 10);
    let (mut got, mut want) = (vec![0f32; m * n], vec![0f32; m * n]);
    matmul_transposed(&x, m, view, &mut got);
    matmul_view(&x, m, q.view(), &mut want);
    assert_eq!(got, want);
    assert!(
        !prefers_transposed(k, n, q.block),
        "k = 96 is not a multiple of 64"
    );
    assert!(!prefers_transposed(128, 64, 96), "blocks of 96 rows");
    assert_eq!(
        prefers_transposed(128, 64, 64),
        Int8Kernel::current() != Int8Kernel::Dequantized
    );
    assert_eq!((TRANSPOSED_ROWS, TRANSPOSED_COLUMNS), (64, 32));
    assert!(TransposedView::from_parts(4, 2, 3, &[0; 8], &[0.0; 2]).is_none());
}

#[test]
fn the_transposed_product_does_not_depend_on_the_thread_count() {
    let (m, k, n) = (70, 384, 256);
    let x = values(m * k, 11);
    let q = quantize_weight_blocked(&values(k * n, 12), k, n, 128);
    let qt = transpose(&q.q, k, n);
    let view = TransposedView::from_parts(k, n, q.block, &qt, &q.scale).unwrap();
    let run = |threads| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut out = vec![0f32; m * n];
        pool.install(|| matmul_transposed(&x, m, view, &mut out));
        out
    };
    assert_eq!(run(1), run(2));
    assert_eq!(run(1), run(5));
}

/// The held values are a strided view of the `[n, k]` buffer that reads as the logical tensor,
/// for a `Linear` weight and a `TokenConv` kernel `[taps, c_in, c_out]`; other layouts are not
/// taken for it; `linear_transposed` adds the bias like `linear_view`.
#[test]
fn values_held_transposed_are_recognised_and_read_as_the_logical_tensor() {
    use burn::backend::flex::FlexTensor;
    use burn::tensor::{Device, Tensor, TensorData};
    let (taps, c_in, n) = (3, 64, 32);
    let k = taps * c_in;
    let q: Vec<i8> = (0..k * n).map(|i| (i % 251) as i8).collect();
    let held = hold_values_transposed(&q, [taps, c_in, n]);
    assert_eq!(transposed_values(&held), Some(&transpose(&q, k, n)[..]));
    let logical: Vec<i8> = held.to_contiguous().storage::<i8>().to_vec();
    assert_eq!(logical, q);
    let plain = FlexTensor::from_data(TensorData::new(q.clone(), [k, n]));
    assert_eq!(transposed_values(&plain), None);
    let floats = FlexTensor::from_data(TensorData::new(vec![0f32; 4], [2, 2]));
    assert_eq!(transposed_values(&floats), None);

    let (m, k, n) = (4, 128, 64);
    let w = quantize_weight_blocked(&values(k * n, 13), k, n, 64);
    let qt = transpose(&w.q, k, n);
    let view = TransposedView::from_parts(k, n, w.block, &qt, &w.scale).unwrap();
    let bias = values(n, 14);
    let x = Tensor::<3>::from_data(
        TensorData::new(values(m * k, 15), [2, 2, k]),
        &Device::flex(),
    );
    let got = linear_transposed(&x, view, Some(&bias)).unwrap();
    let want = linear_view(&x, w.view(), Some(&bias)).unwrap();
    assert_eq!(got.into_data(), want.into_data());
    assert!(linear_transposed(&x, view, Some(&bias[..3])).is_none());
}
