//! A matrix product with an int8 weight: `out[m, n] = x[m, k] · w[k, n]`, `x` in f32.
//!
//! The weight is quantised once, symmetrically, with one f32 scale per output channel
//! ([`quantize_weight`]): `w[r, c] ≈ q[r, c] · scale[c]`, `q` in [-127, 127], a quarter of the
//! memory of f32. Where the CPU has AVX512-VNNI, the activations are quantised per row (per
//! token) at run time the same way and the product runs on `vpdpbusd` (four u8 x i8 products
//! summed into each i32 lane: four times the multiplies of an f32 FMA per instruction); the
//! integer sums are exact and are scaled back to f32 once per output. Elsewhere the weight is
//! dequantised to f32 and multiplied by the `gemm` crate with the activations unquantised.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so an activation `a` in [-127, 127] enters
//! as `a + 128`; the excess `128 · Σ_r q[r, c]` is subtracted per column. With `k` up to
//! 65,000 rows the i32 sums cannot overflow (255 · 127 · k < 2^31).
//!
//! The kernels read the weight through a borrowed [`QuantizedView`] ([`matmul_view`],
//! [`linear_view`]), so a weight held elsewhere (burn's own quantised tensor storage) is
//! multiplied where it lies; [`QuantizedWeight`] owns its values and lends such a view.
//!
//! Work is split over output column panels, never over the reduction, so the result does not
//! depend on the thread count.

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

/// Output columns per packed panel (two 16-lane vectors of i32 accumulators).
const NR: usize = 32;
/// Rows of `x` per micro-kernel call.
const MR: usize = 8;
/// The largest reduction length the i32 sums hold without overflow.
pub const MAX_K: usize = (i32::MAX as usize) / (255 * 127);

/// A weight `[k, n]` quantised to int8 (row-major `q`) with one scale per output column and
/// block of `block` rows (`block == k`: one scale per column).
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedWeight {
    /// Rows (the reduction length).
    pub k: usize,
    /// Columns (output channels).
    pub n: usize,
    /// Rows per scale block (at least 1; the last block may be shorter).
    pub block: usize,
    /// `q[r * n + c]`, in [-127, 127].
    pub q: Vec<i8>,
    /// `scale[(r / block) * n + c]`: `w[r, c] ≈ q[r, c] · scale[..]` (0 for an all-zero block).
    pub scale: Vec<f32>,
}

impl QuantizedWeight {
    /// A weight from its parts, checked: `q` of `k * n` values, `block >= 1`, and
    /// `k.div_ceil(block) * n` scales. `None` when they do not fit together.
    pub fn from_parts(
        k: usize,
        n: usize,
        block: usize,
        q: Vec<i8>,
        scale: Vec<f32>,
    ) -> Option<Self> {
        (block >= 1 && q.len() == k * n && scale.len() == k.div_ceil(block) * n).then_some(Self {
            k,
            n,
            block,
            q,
            scale,
        })
    }

    /// Bytes held (values and scales).
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }

    /// The dequantised weight, row-major f32 `[k, n]`.
    ///
    /// # Panics
    /// As [`QuantizedWeight::view`].
    pub fn to_f32(&self) -> Vec<f32> {
        self.view().to_f32()
    }

    /// The weight borrowed, for [`matmul_view`] and [`linear_view`].
    ///
    /// # Panics
    /// If the public fields were changed so that they no longer fit together (see
    /// [`QuantizedWeight::from_parts`]).
    pub fn view(&self) -> QuantizedView<'_> {
        QuantizedView::from_parts(self.k, self.n, self.block, &self.q, &self.scale)
            .expect("inconsistent quantised weight")
    }
}

/// A weight `[k, n]` quantised to int8, borrowed from wherever it is held: the layout of
/// [`QuantizedWeight`] (row-major values, one scale per output column and block of `block`
/// rows), checked once when made.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantizedView<'a> {
    k: usize,
    n: usize,
    block: usize,
    q: &'a [i8],
    scale: &'a [f32],
}

impl<'a> QuantizedView<'a> {
    /// A view of `q` (`k * n` values, row-major) and `scale` (`k.div_ceil(block) * n`, row
    /// block major) with `block >= 1`. `None` when they do not fit together.
    pub fn from_parts(
        k: usize,
        n: usize,
        block: usize,
        q: &'a [i8],
        scale: &'a [f32],
    ) -> Option<Self> {
        (block >= 1 && q.len() == k * n && scale.len() == k.div_ceil(block) * n).then_some(Self {
            k,
            n,
            block,
            q,
            scale,
        })
    }

    /// Rows (the reduction length).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (output channels).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Rows per scale block.
    pub fn block(&self) -> usize {
        self.block
    }

    /// The values, `q[r * n + c]`.
    pub fn values(&self) -> &'a [i8] {
        self.q
    }

    /// The scales, `scale[(r / block) * n + c]`.
    pub fn scales(&self) -> &'a [f32] {
        self.scale
    }

    /// Bytes viewed (values and scales).
    pub fn bytes(&self) -> usize {
        self.q.len() + 4 * self.scale.len()
    }

    /// The dequantised weight, row-major f32 `[k, n]`.
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.n.max(1);
        let mut w = vec![0f32; self.k * self.n];
        w.par_chunks_mut(n)
            .zip(self.q.par_chunks(n))
            .enumerate()
            .for_each(|(r, (row, q))| {
                let scale = &self.scale[(r / self.block) * n..];
                for ((o, &v), &s) in row.iter_mut().zip(q).zip(scale) {
                    *o = v as f32 * s;
                }
            });
        w
    }
}

/// Quantises a row-major f32 weight `[k, n]` with one scale per column: `scale = max |w| /
/// 127` and `q = round(w / scale)`. Non-finite values are the caller's to refuse (they give a
/// non-finite scale).
///
/// # Panics
/// If `w.len() != k * n`.
pub fn quantize_weight(w: &[f32], k: usize, n: usize) -> QuantizedWeight {
    quantize_weight_blocked(w, k, n, k.max(1))
}

/// As [`quantize_weight`], with one scale per column and block of `block` rows.
///
/// # Panics
/// If `w.len() != k * n` or `block == 0`.
pub fn quantize_weight_blocked(w: &[f32], k: usize, n: usize, block: usize) -> QuantizedWeight {
    assert_eq!(
        w.len(),
        k * n,
        "weight of {} values is not [{k}, {n}]",
        w.len()
    );
    assert!(block >= 1, "a scale block has at least one row");
    let cols = n.max(1);
    let blocks = k.div_ceil(block);
    let mut scale = vec![0f32; blocks * n];
    for (r, row) in w.chunks(cols).enumerate() {
        for (p, &v) in scale[(r / block) * n..].iter_mut().zip(row) {
            *p = p.max(v.abs());
        }
    }
    scale.iter_mut().for_each(|p| *p /= 127.0);
    let mut q = vec![0i8; k * n];
    q.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .enumerate()
        .for_each(|(r, (q, row))| {
            let s = &scale[(r / block) * n..];
            for ((q, &v), &s) in q.iter_mut().zip(row).zip(s) {
                *q = if s > 0.0 {
                    (v / s).round().clamp(-127.0, 127.0) as i8
                } else {
                    0
                };
            }
        });
    QuantizedWeight {
        k,
        n,
        block,
        q,
        scale,
    }
}

/// `out[m, n] = x[m, k] · w`, row-major, `out` overwritten. Activations quantised per row and
/// integer dot products where the CPU has AVX512-VNNI; the dequantised weight through an f32
/// GEMM elsewhere ([`matmul_dequantized`]). The same as [`matmul_view`] on `w.view()`.
///
/// # Panics
/// If `x.len() != m * k`, `out.len() != m * n`, `k > MAX_K` or `w` is inconsistent.
pub fn matmul(x: &[f32], m: usize, w: &QuantizedWeight, out: &mut [f32]) {
    matmul_view(x, m, w.view(), out);
}

/// [`matmul`] on a borrowed weight: nothing of the weight is copied (the native path packs one
/// 32-column panel at a time per thread; the portable path dequantises it to f32).
///
/// # Panics
/// If `x.len() != m * k`, `out.len() != m * n` or `k > MAX_K`.
pub fn matmul_view(x: &[f32], m: usize, w: QuantizedView<'_>, out: &mut [f32]) {
    check(x, m, w, out);
    if m == 0 || w.n == 0 {
        return;
    }
    if w.k == 0 {
        out.fill(0.0);
        return;
    }
    // Groups of four rows must not straddle two scale blocks.
    #[cfg(target_arch = "x86_64")]
    if native_available() && (w.block.is_multiple_of(4) || w.block >= w.k) {
        // SAFETY: the CPU has the features the kernel is compiled for (checked above).
        unsafe { matmul_native(x, m, w, out) };
        return;
    }
    dequantized(x, m, w, out);
}

fn check(x: &[f32], m: usize, w: QuantizedView<'_>, out: &[f32]) {
    assert!(
        w.block >= 1 && w.q.len() == w.k * w.n && w.scale.len() == w.k.div_ceil(w.block) * w.n,
        "inconsistent quantised weight"
    );
    assert_eq!(
        x.len(),
        m * w.k,
        "input of {} values is not [{m}, {}]",
        x.len(),
        w.k
    );
    assert_eq!(
        out.len(),
        m * w.n,
        "output of {} values is not [{m}, {}]",
        out.len(),
        w.n
    );
    assert!(w.k <= MAX_K, "reduction of {} rows exceeds {MAX_K}", w.k);
}

/// The portable path of [`matmul`]: the weight dequantised to f32 (one transient copy), then the
/// `gemm` crate with the activations unquantised.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_dequantized(x: &[f32], m: usize, w: &QuantizedWeight, out: &mut [f32]) {
    let w = w.view();
    check(x, m, w, out);
    dequantized(x, m, w, out);
}

fn dequantized(x: &[f32], m: usize, w: QuantizedView<'_>, out: &mut [f32]) {
    if m == 0 || w.n == 0 {
        return;
    }
    if w.k == 0 {
        out.fill(0.0);
        return;
    }
    let wide = w.to_f32();
    let (k, n) = (w.k, w.n);
    crate::gemm_f32(m, n, k, x, &wide, out);
}

/// One row of activations quantised symmetrically: `(a + 128)` as u8, four per u32 word (the
/// row's `k` padded to a multiple of four with zeros, i.e. the byte 128), and the row's scale.
fn quantize_row(src: &[f32], dst: &mut [u32]) -> f32 {
    let peak = src.iter().fold(0f32, |p, &v| p.max(v.abs()));
    let scale = peak / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    for (g, word) in dst.iter_mut().enumerate() {
        let mut bytes = [128u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            if let Some(&v) = src.get(4 * g + i) {
                *b = ((v * inv).round().clamp(-127.0, 127.0) as i32 + 128) as u8;
            }
        }
        *word = u32::from_le_bytes(bytes);
    }
    scale
}

/// The native path: activations quantised per row once; then per panel of 32 output columns
/// (one task each) the panel of the weight packed in groups of four rows (lane j holds
/// `q[4g..4g+4, j]`), its column sums, and 8-row tiles of integer dot products.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn matmul_native(x: &[f32], m: usize, w: QuantizedView<'_>, out: &mut [f32]) {
    let (k, n) = (w.k, w.n);
    let groups = k.div_ceil(4);
    let mut xa = vec![0u32; m * groups];
    let mut xs = vec![0f32; m];
    xa.par_chunks_mut(groups)
        .zip(xs.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((dst, s), src)| *s = quantize_row(src, dst));
    let panels = n.div_ceil(NR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (xa, xs) = (&xa, &xs);
    // Scale blocks in groups of four rows (one block when it covers all of k).
    let block_groups = if w.block >= k { groups } else { w.block / 4 };
    let blocks = groups.div_ceil(block_groups);
    (0..panels).into_par_iter().for_each_init(
        || (vec![0u32; groups * NR], vec![0i32; blocks * NR]),
        |(b, colsum), panel| {
            let c0 = panel * NR;
            let width = NR.min(n - c0);
            colsum.fill(0);
            for (g, lanes) in b.chunks_mut(NR).enumerate() {
                let sums = &mut colsum[(g / block_groups) * NR..][..NR];
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let mut bytes = [0u8; 4];
                    if j < width {
                        for (i, byte) in bytes.iter_mut().enumerate() {
                            let r = 4 * g + i;
                            if r < k {
                                let v = w.q[r * n + c0 + j];
                                sums[j] += v as i32;
                                *byte = v as u8;
                            }
                        }
                    }
                    *lane = u32::from_le_bytes(bytes);
                }
            }
            let mut r = 0;
            while r < m {
                let rows = MR.min(m - r);
                let mut acc = [0f32; MR * NR];
                let x_rows = &xa[r * groups..(r + rows) * groups];
                for blk in 0..blocks {
                    let (g0, g1) = (blk * block_groups, ((blk + 1) * block_groups).min(groups));
                    let mut tile = [0i32; MR * NR];
                    // SAFETY: same features as the caller; `x_rows` holds `rows` rows of
                    // `groups` words and `b` holds `groups` rows of NR words.
                    unsafe { native::tile(x_rows, rows, groups, g0, g1, b, &mut tile) };
                    let sums = &colsum[blk * NR..][..NR];
                    let scale = &w.scale[blk * n + c0..][..width];
                    for i in 0..rows {
                        let sa = xs[r + i];
                        for j in 0..width {
                            let exact = tile[i * NR + j] - 128 * sums[j];
                            acc[i * NR + j] += exact as f32 * sa * scale[j];
                        }
                    }
                }
                for i in 0..rows {
                    // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((r + i) * n + c0), width)
                    };
                    dst.copy_from_slice(&acc[i * NR..i * NR + width]);
                }
                r += rows;
            }
        },
    );
}

/// `x · w + bias` for a weight quantised with [`quantize_weight`], on burn tensors (any leading
/// axes of `x`; `bias` f32). `None` when `x` is not a contiguous f32 tensor on the flex backend
/// or the sizes do not match: the caller takes its generic path. The same as [`linear_view`] on
/// `w.view()`.
pub fn linear<const D: usize>(
    x: &Tensor<D>,
    w: &QuantizedWeight,
    bias: Option<&[f32]>,
) -> Option<Tensor<D>> {
    linear_view(x, w.view(), bias)
}

/// [`linear`] on a borrowed weight ([`matmul_view`]): nothing of the weight is copied.
pub fn linear_view<const D: usize>(
    x: &Tensor<D>,
    w: QuantizedView<'_>,
    bias: Option<&[f32]>,
) -> Option<Tensor<D>> {
    let flex = x.clone().try_into_primitive::<Flex>().ok()?;
    if flex.dtype() != DType::F32 {
        return None;
    }
    let values = flex.as_slice::<f32>()?;
    let dims = x.dims();
    if dims[D - 1] != w.k || w.k > MAX_K || bias.is_some_and(|b| b.len() != w.n) {
        return None;
    }
    let m: usize = dims[..D - 1].iter().product();
    let mut out = vec![0f32; m * w.n];
    matmul_view(values, m, w, &mut out);
    if let Some(b) = bias {
        out.par_chunks_mut(w.n.max(1))
            .for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    }
    let mut shape = dims;
    shape[D - 1] = w.n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Whether this CPU runs the native int8 kernel (AVX512-VNNI with AVX512-F/BW).
pub fn native_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each task writes a disjoint set of output elements.
unsafe impl Send for SendPtr {}
// SAFETY: as above.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `tile[i, j] = Σ_{g0<=g<g1} Σ_{t<4} xa[i, g].byte(t) · b[g, j].byte(t)` (u8 x i8 into i32) for
    /// `rows` (<= MR) rows and one 32-column panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(
        x: &[u32],
        rows: usize,
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        tile: &mut [i32; MR * NR],
    ) {
        debug_assert!(x.len() >= rows * stride && g1 <= stride && b.len() >= g1 * NR);
        macro_rules! run {
            ($r:literal) => {
                // SAFETY: same features; `x` holds $r rows of `stride` words.
                unsafe { kernel::<$r>(x, stride, g0, g1, b, tile) }
            };
        }
        match rows {
            8 => run!(8),
            7 => run!(7),
            6 => run!(6),
            5 => run!(5),
            4 => run!(4),
            3 => run!(3),
            2 => run!(2),
            _ => run!(1),
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel<const R: usize>(
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        tile: &mut [i32; MR * NR],
    ) {
        let mut acc0 = [_mm512_setzero_si512(); R];
        let mut acc1 = [_mm512_setzero_si512(); R];
        let bp = b.as_ptr();
        let xp = x.as_ptr();
        for g in g0..g1 {
            // SAFETY: b holds at least g1 rows of NR words; x holds R rows of `stride` words.
            unsafe {
                let b0 = _mm512_loadu_si512(bp.add(g * NR) as *const _);
                let b1 = _mm512_loadu_si512(bp.add(g * NR + 16) as *const _);
                for i in 0..R {
                    let a = _mm512_set1_epi32(*xp.add(i * stride + g) as i32);
                    acc0[i] = _mm512_dpbusd_epi32(acc0[i], a, b0);
                    acc1[i] = _mm512_dpbusd_epi32(acc1[i], a, b1);
                }
            }
        }
        for i in 0..R {
            // SAFETY: row i of the tile has NR = 32 lanes.
            unsafe {
                _mm512_storeu_si512(tile.as_mut_ptr().add(i * NR) as *mut _, acc0[i]);
                _mm512_storeu_si512(tile.as_mut_ptr().add(i * NR + 16) as *mut _, acc1[i]);
            }
        }
    }
}
