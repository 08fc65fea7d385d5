//! Stride-1 convolutions over time by minimal filtering (Winograd / Toom-Cook `F(2, k)`): two
//! outputs of a `k`-tap filter from `k + 1` products instead of `2k`, so the channel-mixing
//! GEMMs do `(k + 1) / 2k` of the shifted GEMMs' multiply-adds (4 / 7 for the VAE's 7-tap
//! kernels).
//!
//! For a dilation `d`, the outputs `c` and `c + d` read inputs `c + (s - 3) d` for `s` in
//! `0..k + 1` (the 7-tap case): a *tile*. With `S = 2d`, tile `(r, q)` holds the outputs
//! `c0 + r + S q` and `c0 + r + d + S q`; its `k + 1` inputs are transformed (`Bᵀ`), multiplied
//! point by point with the transformed kernel (`G w`, once per call), and the two outputs
//! recovered (`Aᵀ`). Over all channels the point-wise products are `k + 1` GEMMs
//! `[C_out, C_in] x [C_in, tiles]`, one per interpolation point.
//!
//! The transforms come from the interpolation points `0, 1, -1, 2, -2, 1/2, -1/2` (as many as
//! the kernel needs) and infinity, built in f64 when first used (points farther out, such as
//! `±3`, made the f32 error about seven times larger in a NumPy trial). A 7-tap convolution
//! between 256 to 1,024 channels is then within 1.4-2.1e-6 of an f64 reference (relative to the
//! output's norm; the direct f32 convolution 3.8-4.1e-7): `docs/performance.md`; the tests hold
//! every case within 1e-5 of its largest value, as the shifted GEMMs' tests do.
//!
//! The transforms' element loops are compiled twice, for AVX2 with FMA (taken at run time) and
//! for the baseline; the GEMMs are the `gemm` crate's, as for the shifted path.
//!
//! Blocks of output columns are independent (in parallel, each with its own buffers); the
//! split depends on the shapes only, so the result does not depend on the thread count.

use rayon::prelude::*;

use crate::send_ptr::SendPtr;

/// Outputs per tile (`m` of `F(m, k)`).
const OUTPUTS: usize = 2;

/// The finite interpolation points in the order they are taken; infinity is always the last.
const POINTS: [f64; 7] = [0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5];

/// The fewest and most taps the transform is built for (more would need points farther from
/// the unit circle, and lose accuracy).
pub(crate) const TAPS: std::ops::RangeInclusive<usize> = 3..=7;

/// Transformed input values a block holds (`n x C x tiles`, 4 MiB): large enough that each
/// of its GEMMs packs its `[C_out, C_in]` operand for many tiles, small enough to stay in the
/// last-level cache with the products.
const BLOCK_VALUES: usize = 1 << 20;

/// The fewest tiles per residue class in a block (the input transform runs along them).
const MIN_ROUNDS: usize = 16;

/// The transform matrices of `F(2, k)`.
struct Transform {
    /// Taps.
    k: usize,
    /// Points (`k + 1`).
    n: usize,
    /// `Aᵀ`, `[2, n]`: outputs from the products.
    at: Vec<f32>,
    /// `G`, `[n, k]` (f64: the kernel transform is computed in f64 and rounded once).
    g: Vec<f64>,
    /// `Bᵀ`, `[n, n]`: transformed inputs from a tile's `n` inputs.
    bt: Vec<f32>,
}

impl Transform {
    /// The transform for `k` taps, built once per `k`.
    fn get(k: usize) -> &'static Transform {
        static BUILT: [std::sync::OnceLock<Transform>; 8] =
            [const { std::sync::OnceLock::new() }; 8];
        assert!(TAPS.contains(&k), "no transform for {k} taps");
        BUILT[k].get_or_init(|| Transform::new(k))
    }

    fn new(k: usize) -> Transform {
        let n = OUTPUTS + k - 1;
        // Row `a` of `eval(cols)`: the powers 0..cols of point `a`; the last row (infinity)
        // picks the leading coefficient.
        let eval = |cols: usize| -> Vec<f64> {
            let mut v = vec![0.0; n * cols];
            for (a, &p) in POINTS.iter().take(n - 1).enumerate() {
                for j in 0..cols {
                    v[a * cols + j] = p.powi(j as i32);
                }
            }
            v[(n - 1) * cols + cols - 1] = 1.0;
            v
        };
        let vm = eval(OUTPUTS);
        let at = (0..OUTPUTS)
            .flat_map(|i| (0..n).map(move |a| (i, a)))
            .map(|(i, a)| vm[a * OUTPUTS + i] as f32)
            .collect();
        let inv = invert(eval(n), n);
        let bt = (0..n)
            .flat_map(|p| (0..n).map(move |s| (p, s)))
            .map(|(p, s)| inv[s * n + p] as f32)
            .collect();
        Transform {
            k,
            n,
            at,
            g: eval(k),
            bt,
        }
    }
}

/// The inverse of the `[n, n]` row-major matrix `a` (Gauss-Jordan with partial pivoting, f64;
/// the Vandermonde matrices here are small and well conditioned).
fn invert(mut a: Vec<f64>, n: usize) -> Vec<f64> {
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs()))
            .expect("a non-empty range");
        for j in 0..n {
            a.swap(col * n + j, pivot * n + j);
            inv.swap(col * n + j, pivot * n + j);
        }
        let d = a[col * n + col];
        for j in 0..n {
            a[col * n + j] /= d;
            inv[col * n + j] /= d;
        }
        for row in 0..n {
            let f = a[row * n + col];
            if row != col && f != 0.0 {
                for j in 0..n {
                    a[row * n + j] -= f * a[col * n + j];
                    inv[row * n + j] -= f * inv[col * n + j];
                }
            }
        }
    }
    inv
}

/// The kernel `[C_out, C_in, k]` transformed, `[n][C_out][C_in]` (one GEMM operand per point).
fn transform_kernel(tf: &Transform, w: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let (k, n) = (tf.k, tf.n);
    let mut out = vec![0.0f32; n * cout * cin];
    let plane = cout * cin;
    let out_ptr = SendPtr(out.as_mut_ptr());
    (0..cout).into_par_iter().for_each(|co| {
        let out_ptr = &out_ptr;
        for ci in 0..cin {
            let taps = &w[(co * cin + ci) * k..][..k];
            for p in 0..n {
                let g = &tf.g[p * k..][..k];
                let v: f64 = g.iter().zip(taps).map(|(g, &w)| g * f64::from(w)).sum();
                // SAFETY: task `co` alone writes row `co` of every point's plane.
                unsafe { *out_ptr.0.add(p * plane + co * cin + ci) = v as f32 };
            }
        }
    });
    out
}

/// Whether [`conv1d_item`] takes a convolution with `k` taps at stride `stride` and dilation
/// `dilation` (0, where every tap reads the same column, stays with the shifted GEMMs).
pub(crate) fn applies(k: usize, stride: usize, dilation: usize) -> bool {
    stride == 1 && dilation > 0 && TAPS.contains(&k)
}

/// One batch item's stride-1 convolution, by blocks of tiles in parallel: output column `c` of
/// row `co` is `bias[co] + sum_ci sum_j w[co, ci, j] act(x[ci, c + j d - pad])` (zero outside
/// the input), written over `out`'s row (or added to it when `accumulate`). `act` is SnakeBeta
/// with the per-channel `(freq, inv_mag)` factors when given, else the identity.
///
/// # Safety
/// `out` must point to `cout * tout` writable f32 that no other thread touches during the call;
/// `x` holds `[cin, t]` and `w` `[cout, cin, k]` row-major with `k` in [`TAPS`] and a
/// dilation of at least 1 ([`applies`]), and `tout`
/// is at most `t + 2 pad - (k - 1) d` (each output reads at least one column of the padded
/// input).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn conv1d_item(
    x: &[f32],
    [cin, t]: [usize; 2],
    w: &[f32],
    [cout, k]: [usize; 2],
    bias: Option<&[f32]>,
    (pad, dilation): (usize, usize),
    snake: Option<(&[f32], &[f32])>,
    (out, tout): (*mut f32, usize),
    accumulate: bool,
) {
    let tf = Transform::get(k);
    let n = tf.n;
    let d = dilation;
    // About BLOCK_VALUES transformed inputs per block, a multiple of 8 rounds (whole AVX2
    // vectors in the transforms).
    let block_tiles = BLOCK_VALUES / (n * cin.max(cout)).max(1);
    let rounds = (block_tiles / d).max(MIN_ROUNDS).next_multiple_of(8);
    let plan = Plan {
        tf,
        x,
        cin,
        t,
        wt: transform_kernel(tf, w, cout, cin),
        cout,
        bias,
        pad,
        d,
        stride: OUTPUTS * d,
        rounds,
        span_rounds: rounds + (n - 1) / OUTPUTS,
        snake,
        out: SendPtr(out),
        tout,
        accumulate,
    };
    let width = rounds * plan.stride;
    let tiles = d * rounds;
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
    (0..tout.div_ceil(width)).into_par_iter().for_each_init(
        || {
            Scratch::new(
                plan.stride * plan.span_rounds,
                n * cin * tiles,
                n * cout * tiles,
                rounds,
            )
        },
        |s, block| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA; the caller's contract covers the block.
                unsafe { block_avx2(&plan, s, block) };
                return;
            }
            // SAFETY: the caller's contract covers the block.
            unsafe { run_block(&plan, s, block) };
        },
    );
}

/// One call's sizes and buffers, shared by its blocks.
struct Plan<'a> {
    tf: &'static Transform,
    x: &'a [f32],
    cin: usize,
    t: usize,
    /// The transformed kernel, `[n][C_out][C_in]`.
    wt: Vec<f32>,
    cout: usize,
    bias: Option<&'a [f32]>,
    pad: usize,
    /// Dilation.
    d: usize,
    /// Columns between two tiles of one residue class (`2d`).
    stride: usize,
    /// Tiles per residue class in a block.
    rounds: usize,
    /// Rounds of input a block reads.
    span_rounds: usize,
    snake: Option<(&'a [f32], &'a [f32])>,
    out: SendPtr,
    tout: usize,
    accumulate: bool,
}

/// [`run_block`] compiled for AVX2 and FMA (its element loops vectorise eight wide).
///
/// # Safety
/// As [`run_block`]; the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn block_avx2(plan: &Plan<'_>, s: &mut Scratch, block: usize) {
    // SAFETY: forwarded.
    unsafe { run_block(plan, s, block) }
}

/// Output columns `[block * width, (block + 1) * width)` of every row (`width` = rounds x
/// stride), clipped to `tout`.
///
/// # Safety
/// [`conv1d_item`]'s contract, and no other task may run the same block concurrently.
#[inline(always)]
unsafe fn run_block(plan: &Plan<'_>, s: &mut Scratch, block: usize) {
    let Plan {
        tf,
        x,
        cin,
        t,
        cout,
        d,
        stride,
        rounds,
        span_rounds,
        ..
    } = *plan;
    let n = tf.n;
    let tiles = d * rounds;
    let c0 = block * rounds * stride;
    let start = c0 as isize - plan.pad as isize;
    // 1. Every channel's input span, activated and deinterleaved, then transformed.
    for ci in 0..cin {
        let row = &x[ci * t..(ci + 1) * t];
        let span = &mut s.span;
        let lo = (-start).clamp(0, span.len() as isize) as usize;
        let hi = (t as isize - start).clamp(lo as isize, span.len() as isize) as usize;
        span[..lo].fill(0.0);
        span[hi..].fill(0.0);
        if hi > lo {
            let src = (start + lo as isize) as usize;
            span[lo..hi].copy_from_slice(&row[src..src + hi - lo]);
            if let Some((freq, inv_mag)) = plan.snake {
                crate::snake::snake_row(&mut span[lo..hi], freq[ci], inv_mag[ci]);
            }
        }
        // Offset `o`, round `v` at `lanes[o * span_rounds + v]`.
        for o in 0..stride {
            let lane = &mut s.lanes[o * span_rounds..][..span_rounds];
            for (v, y) in lane.iter_mut().enumerate() {
                *y = span[o + stride * v];
            }
        }
        for r in 0..d {
            for p in 0..n {
                let dst = &mut s.inputs[(p * cin + ci) * tiles + r * rounds..][..rounds];
                let mut first = true;
                for q in 0..n {
                    let b = tf.bt[p * n + q];
                    if b == 0.0 {
                        continue;
                    }
                    let o = r + d * (q % OUTPUTS);
                    let lane = &s.lanes[o * span_rounds + q / OUTPUTS..][..rounds];
                    if first {
                        dst.iter_mut().zip(lane).for_each(|(y, &v)| *y = b * v);
                        first = false;
                    } else {
                        dst.iter_mut().zip(lane).for_each(|(y, &v)| *y += b * v);
                    }
                }
                if first {
                    dst.fill(0.0);
                }
            }
        }
    }
    // 2. One GEMM per point: products[p] = wt[p] x inputs[p].
    for p in 0..n {
        // SAFETY: the three buffers hold `[cout, cin]`, `[cin, tiles]` and `[cout, tiles]`
        // row-major values at these offsets.
        unsafe {
            gemm::gemm(
                cout,
                tiles,
                cin,
                s.products.as_mut_ptr().add(p * cout * tiles),
                1,
                tiles as isize,
                false,
                plan.wt.as_ptr().add(p * cout * cin),
                1,
                cin as isize,
                s.inputs.as_ptr().add(p * cin * tiles),
                1,
                tiles as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    }
    // 3. The outputs of every tile, laid out in column order in `stage`, then written (or
    // added) to the block's columns of each row.
    let c1 = (c0 + rounds * stride).min(plan.tout);
    for co in 0..cout {
        for r in 0..d {
            for i in 0..OUTPUTS {
                let acc = &mut s.row;
                let mut first = true;
                for p in 0..n {
                    let a = tf.at[i * n + p];
                    if a == 0.0 {
                        continue;
                    }
                    let m = &s.products[(p * cout + co) * tiles + r * rounds..][..rounds];
                    if first {
                        acc.iter_mut().zip(m).for_each(|(y, &v)| *y = a * v);
                        first = false;
                    } else {
                        acc.iter_mut().zip(m).for_each(|(y, &v)| *y += a * v);
                    }
                }
                let lane = &mut s.stage[r + d * i..];
                for (q, &v) in acc.iter().enumerate() {
                    lane[stride * q] = v;
                }
            }
        }
        let b = plan.bias.map_or(0.0, |b| b[co]);
        // SAFETY: this block alone writes columns [c0, c1) of row `co`.
        let dst =
            unsafe { std::slice::from_raw_parts_mut(plan.out.0.add(co * plan.tout + c0), c1 - c0) };
        let stage = &s.stage[..c1 - c0];
        if plan.accumulate {
            dst.iter_mut().zip(stage).for_each(|(y, &v)| *y += v + b);
        } else {
            dst.iter_mut().zip(stage).for_each(|(y, &v)| *y = v + b);
        }
    }
}

/// One task's buffers.
struct Scratch {
    /// One channel's input span.
    span: Vec<f32>,
    /// The span deinterleaved by offset within a round.
    lanes: Vec<f32>,
    /// Transformed inputs `[n][C_in][tiles]`.
    inputs: Vec<f32>,
    /// Products `[n][C_out][tiles]`.
    products: Vec<f32>,
    /// One output phase of one residue class.
    row: Vec<f32>,
    /// One row's outputs of the block, in column order.
    stage: Vec<f32>,
}

impl Scratch {
    fn new(span: usize, inputs: usize, products: usize, rounds: usize) -> Scratch {
        Scratch {
            span: vec![0.0; span],
            lanes: vec![0.0; span],
            inputs: vec![0.0; inputs],
            products: vec![0.0; products],
            row: vec![0.0; rounds],
            stage: vec![0.0; span],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct f64 correlation of a random row with a random kernel, against the transform.
    #[test]
    fn the_transform_computes_two_outputs_of_the_correlation() {
        for k in TAPS {
            let tf = Transform::get(k);
            let taps: Vec<f64> = (0..k).map(|j| (j as f64 * 0.37 - 1.1).sin()).collect();
            let input: Vec<f64> = (0..tf.n).map(|s| (s as f64 * 0.91 + 0.3).cos()).collect();
            let gw: Vec<f64> = (0..tf.n)
                .map(|p| (0..k).map(|j| tf.g[p * k + j] * taps[j]).sum())
                .collect();
            let bd: Vec<f64> = (0..tf.n)
                .map(|p| {
                    (0..tf.n)
                        .map(|s| f64::from(tf.bt[p * tf.n + s]) * input[s])
                        .sum()
                })
                .collect();
            for i in 0..OUTPUTS {
                let got: f64 = (0..tf.n)
                    .map(|p| f64::from(tf.at[i * tf.n + p]) * gw[p] * bd[p])
                    .sum();
                let want: f64 = (0..k).map(|j| taps[j] * input[i + j]).sum();
                assert!(
                    (got - want).abs() < 1e-5,
                    "k {k}, output {i}: {got} vs {want}"
                );
            }
        }
    }
}
