//! A matrix product with an int8 weight: `out[m, n] = x[m, k] · w[k, n]`, `x` in f32.
//!
//! The weight is quantised once, symmetrically, with one f32 scale per output channel
//! ([`quantize_weight`]): `w[r, c] ≈ q[r, c] · scale[c]`, `q` in [-127, 127], a quarter of the
//! memory of f32. Where the CPU has AVX512-VNNI, the activations are quantised per row (per
//! token) at run time the same way and the product runs on `vpdpbusd` (four u8 x i8 products
//! summed into each i32 lane: four times the multiplies of an f32 FMA per instruction); the
//! integer sums are exact and are scaled back to f32 once per output. Where the CPU also has
//! Intel AMX, the same integer sums run on int8 tiles (`tdpbusd`, [`Int8Kernel::Amx`]) and are
//! rescaled the same way, so the result is the same bit for bit. On CPUs with AVX2 but without
//! AVX512-VNNI the same activations (signed) and the same exact integer sums run on
//! `vpmaddubsw` / `vpmaddwd` ([`Int8Kernel::Avx2`]), or on the 256-bit `vpdpbusd` of AVX-VNNI
//! where the CPU has it ([`Int8Kernel::AvxVnni`]), again the same floats. Elsewhere the weight
//! is dequantised to f32 and multiplied by the `gemm` crate with the activations unquantised.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so an activation `a` in [-127, 127] enters
//! as `a + 128`; the excess `128 · Σ_r q[r, c]` is subtracted per column. With `k` up to
//! 65,000 rows the i32 sums cannot overflow (255 · 127 · k < 2^31).
//!
//! The kernels read the weight through a borrowed [`QuantizedView`] ([`matmul_view`],
//! [`linear_view`]), so a weight held elsewhere (burn's own quantised tensor storage) is
//! multiplied where it lies; [`QuantizedWeight`] owns its values and lends such a view. Where
//! the kernel is an integer one, a weight can also be held transposed (values `[n, k]`,
//! [`TransposedView`], [`matmul_transposed`]): the AMX tiles then read it in place instead of
//! repacking it for every product, and VNNI (AVX2) packs each panel from 32 (16) contiguous
//! rows instead of 32 (16) bytes from each of `k` rows far apart, with the same floats as a
//! result.
//!
//! Work is split over output column panels, never over the reduction, so the result does not
//! depend on the thread count.

use burn::backend::Flex;
use burn::tensor::{DType, Tensor, TensorData};
use rayon::prelude::*;

use crate::send_ptr::SendPtr;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod transposed;
pub use transposed::{
    TRANSPOSED_COLUMNS, TRANSPOSED_ROWS, TransposedView, hold_transposed_values,
    hold_values_transposed, matmul_transposed, matmul_transposed_with, prefers_transposed,
    transpose, transposed_values,
};

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
/// integer dot products where the CPU has AVX512-VNNI (or AVX2); the dequantised weight
/// through an f32 GEMM elsewhere ([`matmul_dequantized`]). The same as [`matmul_view`] on `w.view()`.
///
/// # Panics
/// If `x.len() != m * k`, `out.len() != m * n`, `k > MAX_K` or `w` is inconsistent.
pub fn matmul(x: &[f32], m: usize, w: &QuantizedWeight, out: &mut [f32]) {
    matmul_view(x, m, w.view(), out);
}

/// Environment variable that picks the int8 kernel for this process (`amx`, `vnni`,
/// `avxvnni`, `avx2` or `dequantized`), when the CPU has it; for measurements and tests.
pub const KERNEL_ENV: &str = "AUDIOX_INT8_KERNEL";

/// An int8 product kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Int8Kernel {
    /// Intel AMX int8 tiles (`tdpbusd`): the same exact integer sums as VNNI, so the same
    /// result bit for bit, on 32 x 32 output blocks. Needs scale blocks of a multiple of 64
    /// rows (or one block for all rows); others take the VNNI path.
    Amx,
    /// AVX512-VNNI `vpdpbusd` on 8 x 32 register tiles.
    Vnni,
    /// AVX-VNNI: the 256-bit `vpdpbusd` (Intel since Alder Lake, AMD since Zen 5; many of
    /// these CPUs have no AVX-512) on the [`Int8Kernel::Avx2`] layout: the same exact integer
    /// sums, the same floats. Needs scale blocks of a multiple of four rows, as VNNI.
    AvxVnni,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` on 4 x 16 register tiles (signed activations, the
    /// weight's sign moved onto them so that no pair saturates): the same exact integer sums
    /// as VNNI, rescaled the same way, so the same result bit for bit. For CPUs without
    /// AVX512-VNNI. Needs scale blocks of a multiple of four rows, as VNNI.
    Avx2,
    /// The weight dequantised to f32, the f32 GEMM (activations unquantised).
    Dequantized,
}

impl Int8Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Int8Kernel; 5] = [
        Int8Kernel::Amx,
        Int8Kernel::Vnni,
        Int8Kernel::AvxVnni,
        Int8Kernel::Avx2,
        Int8Kernel::Dequantized,
    ];

    /// The kernel this process uses, chosen once: [`KERNEL_ENV`] when it names a kernel this
    /// CPU runs, else the fastest kernel this CPU (and OS) runs.
    pub fn current() -> Int8Kernel {
        static CURRENT: std::sync::OnceLock<Int8Kernel> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            let asked = std::env::var(KERNEL_ENV)
                .ok()
                .and_then(|v| Int8Kernel::ALL.into_iter().find(|k| k.name() == v.trim()));
            match asked {
                Some(k) if k.is_supported() => k,
                _ => Int8Kernel::ALL
                    .into_iter()
                    .find(|k| k.is_supported())
                    .unwrap_or(Int8Kernel::Dequantized),
            }
        })
    }

    /// Whether this CPU (and OS) can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Amx => crate::amx::available_int8() && native_available(),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Kernel::Amx => false,
            Int8Kernel::Vnni => native_available(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::AvxVnni => avx2::vnni_available(),
            #[cfg(target_arch = "x86_64")]
            Int8Kernel::Avx2 => avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Int8Kernel::AvxVnni | Int8Kernel::Avx2 => false,
            Int8Kernel::Dequantized => true,
        }
    }

    /// Whether the kernel quantises the activations per row (every kernel but the dequantised
    /// path, which multiplies them in f32).
    pub fn quantizes_activations(self) -> bool {
        self != Int8Kernel::Dequantized
    }

    /// Its name, as [`KERNEL_ENV`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Int8Kernel::Amx => "amx",
            Int8Kernel::Vnni => "vnni",
            Int8Kernel::AvxVnni => "avxvnni",
            Int8Kernel::Avx2 => "avx2",
            Int8Kernel::Dequantized => "dequantized",
        }
    }
}

/// [`matmul`] on a borrowed weight: nothing of the weight is copied (the native paths pack a
/// few 32-column panels at a time per thread; the portable path dequantises it to f32).
///
/// # Panics
/// If `x.len() != m * k`, `out.len() != m * n` or `k > MAX_K`.
pub fn matmul_view(x: &[f32], m: usize, w: QuantizedView<'_>, out: &mut [f32]) {
    matmul_view_with(Int8Kernel::current(), x, m, w, out);
}

/// [`matmul_view`] on a given kernel; one the CPU does not run (or, for AMX, a weight whose
/// scale blocks it cannot take) falls back to the next one.
///
/// # Panics
/// As [`matmul_view`].
pub fn matmul_view_with(
    kernel: Int8Kernel,
    x: &[f32],
    m: usize,
    w: QuantizedView<'_>,
    out: &mut [f32],
) {
    check(x, m, w, out);
    if m == 0 || w.n == 0 {
        return;
    }
    if w.k == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        // AMX steps cover 64 rows: a scale block must hold whole steps.
        let whole = w.block >= w.k;
        if kernel == Int8Kernel::Amx
            && Int8Kernel::Amx.is_supported()
            && (whole || w.block.is_multiple_of(64))
        {
            // SAFETY: the CPU runs AMX int8 tiles and AVX512-VNNI (checked above).
            unsafe { matmul_amx(x, m, w, out) };
            return;
        }
        // Groups of four rows must not straddle two scale blocks.
        let groups_fit = w.block.is_multiple_of(4) || whole;
        if matches!(kernel, Int8Kernel::Amx | Int8Kernel::Vnni) && native_available() && groups_fit
        {
            // SAFETY: the CPU has the features the kernel is compiled for (checked above); the
            // panel is the family's own.
            unsafe { run_panels(&Vnni, x, m, w, out, row_major_panels(&Vnni, w)) };
            return;
        }
        if kernel != Int8Kernel::Dequantized && avx2::available() && groups_fit {
            let vnni = kernel != Int8Kernel::Avx2 && avx2::vnni_available();
            let family = avx2::Avx2 { vnni };
            // SAFETY: the CPU has AVX2, and AVX-VNNI when `vnni` (checked above); the panel is
            // the family's own.
            unsafe { run_panels(&family, x, m, w, out, row_major_panels(&family, w)) };
            return;
        }
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
///
/// # Safety
/// The CPU must have AVX-512 F and BW; `dst` holds `src.len().div_ceil(4)` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_row(src: &[f32], dst: &mut [u32]) -> f32 {
    // SAFETY: the caller's features and sizes.
    unsafe {
        let (scale, inv) = row_scale(src);
        native::quantize_words(src, inv, true, dst);
        scale
    }
}

/// A row's activation scale `max |a| / 127` and its reciprocal (0 for a zero row); NaN
/// values are ignored, as `f32::max` ignores them.
///
/// # Safety
/// The CPU must have AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn row_scale(src: &[f32]) -> (f32, f32) {
    // SAFETY: the caller's features.
    let scale = unsafe { native::peak(src) } / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// The scalar definition that the vectorised quantisation reproduces bit for bit: each value
/// `round(a / scale)` (half away from zero), clamped to [-127, 127], NaN to 0, plus 128 when
/// `offset`; padding bytes are the zero activation.
#[cfg(all(test, target_arch = "x86_64"))]
fn quantize_row_scalar(src: &[f32], offset: bool, dst: &mut [u32]) -> f32 {
    let peak = src.iter().fold(0f32, |p, &v| p.max(v.abs()));
    let scale = peak / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    let zero = if offset { 128 } else { 0 };
    for (g, word) in dst.iter_mut().enumerate() {
        let mut bytes = [zero as u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            if let Some(&v) = src.get(4 * g + i) {
                *b = ((v * inv).round().clamp(-127.0, 127.0) as i32 + zero) as u8;
            }
        }
        *word = u32::from_le_bytes(bytes);
    }
    scale
}

/// One family of integer tile kernels run by [`run_panels`]: how a row of activations is
/// quantised, how a panel of the weight is packed, and how one scale block's tile of integer
/// dot products becomes floats. The driver (tasks, panels, row tiles, scale blocks, the output
/// copy) is the same for every family.
#[cfg(target_arch = "x86_64")]
trait TileKernel: Sync {
    /// Output columns per panel (one task each).
    const NR: usize;
    /// Rows of activations per tile.
    const MR: usize;

    /// Quantises one row of activations into `dst` (`src.len().div_ceil(4)` words, four bytes
    /// each) and returns the row's scale.
    ///
    /// # Safety
    /// The CPU must have the family's features.
    unsafe fn quantize_row(&self, src: &[f32], dst: &mut [u32]) -> f32;

    /// Packs the weight's columns `c0..c0 + NR` into `groups` rows of `NR` words (`b`) and,
    /// where the family needs them, the columns' sums per scale block of `block_groups`
    /// groups (`colsum`, `NR` per block).
    ///
    /// # Safety
    /// The CPU must have the family's features; `b` holds `groups * NR` words and `colsum`
    /// `NR` per scale block.
    unsafe fn pack(
        &self,
        w: QuantizedView<'_>,
        c0: usize,
        groups: usize,
        block_groups: usize,
        b: &mut [u32],
        colsum: &mut [i32],
    );

    /// Adds to `acc` (`row_scale.len()` rows of `NR`) the rows `x` (`row_scale.len()` rows of
    /// `stride` words) times the packed panel over the groups `g0..g1` of one scale block,
    /// rescaled by the rows' and the columns' (`scale`, <= `NR`) scales; `colsum` holds the
    /// block's column sums.
    ///
    /// # Safety
    /// The CPU must have the family's features; sizes as described.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        &self,
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
    );
}

/// `out[m, n] = x[m, k] · w` on one kernel family: activations quantised per row once; then
/// per panel of `NR` output columns (one task each) the panel packed, and tiles of `MR` rows,
/// each the sum over the weight's scale blocks of rescaled integer dot products. `w` gives the
/// sizes and scales; `pack(c0, groups, block_groups, b, colsum)` fills one panel as
/// [`TileKernel::pack`] does ([`TileKernel::pack`] itself on the row-major values, or
/// [`native::pack_panel_transposed`] on values held transposed).
///
/// # Safety
/// The CPU must have the family's features; `w.block >= w.k` or a multiple of four;
/// `m, n, k > 0` and the sizes of [`check`]; `pack` fills the panel the family's tiles read.
#[cfg(target_arch = "x86_64")]
unsafe fn run_panels<K: TileKernel>(
    kernel: &K,
    x: &[f32],
    m: usize,
    w: QuantizedView<'_>,
    out: &mut [f32],
    pack: impl Fn(usize, usize, usize, &mut [u32], &mut [i32]) + Sync,
) {
    let (k, n) = (w.k, w.n);
    let (nr, mr) = (K::NR, K::MR);
    let groups = k.div_ceil(4);
    let mut xa = vec![0u32; m * groups];
    let mut xs = vec![0f32; m];
    xa.par_chunks_mut(groups)
        .zip(xs.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((dst, s), src)| {
            // SAFETY: the caller's features; `groups` words per row.
            *s = unsafe { kernel.quantize_row(src, dst) }
        });
    // Scale blocks in groups of four rows (one block when it covers all of k).
    let block_groups = if w.block >= k { groups } else { w.block / 4 };
    let blocks = groups.div_ceil(block_groups);
    let panels = n.div_ceil(nr);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (xa, xs) = (&xa, &xs);
    (0..panels).into_par_iter().for_each_init(
        || {
            let b = vec![0u32; groups * nr];
            (b, vec![0i32; blocks * nr], vec![0f32; mr * nr])
        },
        |(b, colsum, acc), panel| {
            let c0 = panel * nr;
            let width = nr.min(n - c0);
            pack(c0, groups, block_groups, b, colsum);
            let mut r = 0;
            while r < m {
                let rows = mr.min(m - r);
                acc.fill(0.0);
                let x_rows = &xa[r * groups..(r + rows) * groups];
                for blk in 0..blocks {
                    let (g0, g1) = (blk * block_groups, ((blk + 1) * block_groups).min(groups));
                    let sums = &colsum[blk * nr..][..nr];
                    let scale = &w.scale[blk * n + c0..][..width];
                    // SAFETY: the caller's features; `x_rows` holds `rows` rows of `groups`
                    // words, `b` `groups` rows of NR words, `acc` MR rows of NR.
                    unsafe {
                        kernel.tile(
                            x_rows,
                            groups,
                            g0,
                            g1,
                            b,
                            sums,
                            scale,
                            &xs[r..r + rows],
                            acc,
                        )
                    };
                }
                for i in 0..rows {
                    // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((r + i) * n + c0), width)
                    };
                    dst.copy_from_slice(&acc[i * nr..i * nr + width]);
                }
                r += rows;
            }
        },
    );
}

/// The packing of [`run_panels`] from the row-major values of `w`: the family's own
/// [`TileKernel::pack`]. Only for a CPU with the family's features (as `run_panels`).
#[cfg(target_arch = "x86_64")]
fn row_major_panels<'a, K: TileKernel>(
    kernel: &'a K,
    w: QuantizedView<'a>,
) -> impl Fn(usize, usize, usize, &mut [u32], &mut [i32]) + Sync + 'a {
    move |c0, groups, block_groups, b, colsum| {
        // SAFETY: `run_panels` runs on a CPU with the family's features (its caller's
        // contract) and passes one panel's buffers.
        unsafe { kernel.pack(w, c0, groups, block_groups, b, colsum) }
    }
}

/// The AVX512-VNNI family: activations as unsigned bytes (`a + 128`), panels of 32 columns
/// with their column sums (the offset's correction), tiles of 8 rows of `vpdpbusd`.
#[cfg(target_arch = "x86_64")]
struct Vnni;

#[cfg(target_arch = "x86_64")]
impl TileKernel for Vnni {
    const NR: usize = NR;
    const MR: usize = MR;

    unsafe fn quantize_row(&self, src: &[f32], dst: &mut [u32]) -> f32 {
        // SAFETY: AVX-512 F and BW (the caller's features); the caller's sizes.
        unsafe { quantize_row(src, dst) }
    }

    unsafe fn pack(
        &self,
        w: QuantizedView<'_>,
        c0: usize,
        groups: usize,
        block_groups: usize,
        b: &mut [u32],
        colsum: &mut [i32],
    ) {
        // SAFETY: the caller's features and sizes; one panel.
        unsafe { native::pack_panels(w, c0, 1, groups, block_groups, b, colsum) }
    }

    unsafe fn tile(
        &self,
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
    ) {
        // SAFETY: the caller's features and sizes.
        unsafe { native::tile_rescaled(x, stride, g0, g1, b, colsum, scale, row_scale, acc) }
    }
}

/// Output column panels per AMX task (packed once, every 32-row block of activations run over
/// them).
#[cfg(target_arch = "x86_64")]
const AMX_GROUP: usize = 4;

/// The AMX path: the activations quantised per row as for VNNI (rows padded to 32, groups of
/// four to 16 words with the zero activation, byte 128); per group of column panels (one task)
/// the weight packed as for VNNI (padding rows zero) with its column sums per scale block, then
/// 32 x 32 blocks of `tdpbusd` per scale block, rescaled exactly as the VNNI path does (so the
/// two give the same floats).
///
/// # Safety
/// The CPU must run AMX int8 tiles and AVX512-VNNI; `w.block >= w.k` or a multiple of 64.
#[cfg(target_arch = "x86_64")]
unsafe fn matmul_amx(x: &[f32], m: usize, w: QuantizedView<'_>, out: &mut [f32]) {
    use crate::amx;
    let (k, n) = (w.k, w.n);
    let groups = k.div_ceil(4);
    let gp = groups.next_multiple_of(amx::PAIRS);
    let mp = m.next_multiple_of(amx::BLOCK);
    let mut xa = vec![0x8080_8080u32; mp * gp];
    let mut xs = vec![0f32; m];
    xa.par_chunks_mut(gp)
        .zip(xs.par_iter_mut())
        .zip(x.par_chunks(k))
        .for_each(|((dst, s), src)| {
            // SAFETY: AVX-512 F and BW (the caller's AVX512-VNNI implies them); `groups` words.
            *s = unsafe { quantize_row(src, &mut dst[..groups]) }
        });
    // Scale blocks in groups of four rows (one block for all when it covers k).
    let block_groups = if w.block >= k { gp } else { w.block / 4 };
    let blocks = gp.div_ceil(block_groups);
    let panels = n.div_ceil(NR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let (xa, xs) = (&xa, &xs);
    (0..panels.div_ceil(AMX_GROUP))
        .into_par_iter()
        .for_each_init(
            || {
                (
                    vec![0u32; AMX_GROUP * gp * NR],
                    vec![0i32; AMX_GROUP * blocks * NR],
                )
            },
            |(b, colsum), group| {
                let first = group * AMX_GROUP;
                let count = AMX_GROUP.min(panels - first);
                // SAFETY: AVX512-VNNI (caller); `b` and `colsum` hold AMX_GROUP panels.
                unsafe { native::pack_panels(w, first * NR, count, gp, block_groups, b, colsum) };
                // SAFETY: AMX is available (caller); this task uses the tiles only through `tiles`.
                let mut tiles = unsafe { amx::Tiles::new() };
                let mut sums = [0i32; amx::BLOCK * amx::BLOCK];
                let mut acc = [0f32; amx::BLOCK * NR];
                for r in (0..m).step_by(amx::BLOCK) {
                    let rows = amx::BLOCK.min(m - r);
                    for q in 0..count {
                        let c0 = (first + q) * NR;
                        let width = NR.min(n - c0);
                        let panel = &b[q * gp * NR..][..gp * NR];
                        acc.fill(0.0);
                        for blk in 0..blocks {
                            let (g0, g1) = (blk * block_groups, ((blk + 1) * block_groups).min(gp));
                            tiles.zero();
                            // SAFETY: 32 rows of `gp` words from row r of `xa` (padded to `mp`
                            // rows); rows g0..g1 of 32 words in the panel; g1 - g0 a multiple of 16.
                            unsafe {
                                tiles.accumulate_u8i8(
                                    xa[r * gp + g0..].as_ptr() as *const u8,
                                    gp * 4,
                                    panel[g0 * NR..].as_ptr() as *const u8,
                                    NR * 4,
                                    (g1 - g0) / amx::PAIRS,
                                );
                            }
                            tiles.store_i32(&mut sums);
                            let col = &colsum[(q * blocks + blk) * NR..][..NR];
                            let scale = &w.scale[blk * n + c0..][..width];
                            // SAFETY: AVX512-F (caller); `rows` rows of NR (= amx::BLOCK).
                            unsafe {
                                native::rescale(&sums, col, scale, &xs[r..r + rows], &mut acc)
                            };
                        }
                        for i in 0..rows {
                            // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task
                            // only.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.get().add((r + i) * n + c0),
                                    width,
                                )
                            };
                            dst.copy_from_slice(&acc[i * NR..i * NR + width]);
                        }
                    }
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
    linear_with(x, w.k, w.n, bias, |values, m, out| {
        matmul_view(values, m, w, out)
    })
}

/// [`linear_view`] on a weight held transposed ([`matmul_transposed`]).
pub fn linear_transposed<const D: usize>(
    x: &Tensor<D>,
    w: TransposedView<'_>,
    bias: Option<&[f32]>,
) -> Option<Tensor<D>> {
    linear_with(x, w.k(), w.n(), bias, |values, m, out| {
        matmul_transposed(values, m, w, out)
    })
}

/// `x · w + bias` on burn tensors with the product `matmul(x values, m, out)` of a `[k, n]`
/// weight; `None` as [`linear`] says.
fn linear_with<const D: usize>(
    x: &Tensor<D>,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
    matmul: impl FnOnce(&[f32], usize, &mut [f32]),
) -> Option<Tensor<D>> {
    let flex = x.clone().try_into_primitive::<Flex>().ok()?;
    if flex.dtype() != DType::F32 {
        return None;
    }
    let values = flex.as_slice::<f32>()?;
    let dims = x.dims();
    if dims[D - 1] != k || k > MAX_K || bias.is_some_and(|b| b.len() != n) {
        return None;
    }
    let m: usize = dims[..D - 1].iter().product();
    let mut out = vec![0f32; m * n];
    matmul(values, m, &mut out);
    if let Some(b) = bias {
        out.par_chunks_mut(n.max(1))
            .for_each(|row| row.iter_mut().zip(b).for_each(|(o, b)| *o += b));
    }
    let mut shape = dims;
    shape[D - 1] = n;
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

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR, QuantizedView};
    use std::arch::x86_64::*;

    /// Packs the weight's columns `c0..c0 + 32 * count` into `count` panels of `rows` rows of
    /// 32 words (`b`): word `j` of row `g` of panel `q` holds `q[4g..4g + 4, c0 + 32q + j]`
    /// (zero past `k` and past the last column), and `colsum[(q * blocks + blk) * 32 + j]` the
    /// column's sum over the rows of scale block `blk` (`block_groups` groups each). Rows are
    /// the outer loop, so the weight is read row by row; full panels are built from four
    /// 32-byte row loads with zero-extensions and shifts, the sums by `vpdpbusd` with ones.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn pack_panels(
        w: QuantizedView<'_>,
        c0: usize,
        count: usize,
        rows: usize,
        block_groups: usize,
        b: &mut [u32],
        colsum: &mut [i32],
    ) {
        let (k, n) = (w.k, w.n);
        let blocks = rows.div_ceil(block_groups);
        colsum[..count * blocks * NR].fill(0);
        let ones = _mm512_set1_epi32(0x0101_0101);
        for g in 0..rows {
            let blk = g / block_groups;
            for q in 0..count {
                let c = c0 + q * NR;
                let width = NR.min(n - c);
                let lanes = &mut b[(q * rows + g) * NR..][..NR];
                let sums = &mut colsum[(q * blocks + blk) * NR..][..NR];
                if 4 * g + 3 < k && width == NR {
                    // SAFETY: rows 4g..4g+4 have 32 values from column c; 32 words in `lanes`
                    // and 32 sums.
                    unsafe {
                        let row = |i: usize| w.q[(4 * g + i) * n + c..].as_ptr();
                        let mut halves = [_mm512_setzero_si512(); 2];
                        for (h, word) in halves.iter_mut().enumerate() {
                            for i in 0..4 {
                                let bytes = _mm_loadu_si128(row(i).add(16 * h) as *const _);
                                let wide = _mm512_cvtepu8_epi32(bytes);
                                let shifted = match i {
                                    0 => wide,
                                    1 => _mm512_slli_epi32::<8>(wide),
                                    2 => _mm512_slli_epi32::<16>(wide),
                                    _ => _mm512_slli_epi32::<24>(wide),
                                };
                                *word = _mm512_or_si512(*word, shifted);
                            }
                            let out = lanes.as_mut_ptr().add(16 * h);
                            _mm512_storeu_si512(out as *mut _, *word);
                            let total = sums.as_mut_ptr().add(16 * h);
                            let s = _mm512_loadu_si512(total as *const _);
                            _mm512_storeu_si512(
                                total as *mut _,
                                _mm512_dpbusd_epi32(s, ones, *word),
                            );
                        }
                    }
                    continue;
                }
                for (j, lane) in lanes.iter_mut().enumerate() {
                    let mut bytes = [0u8; 4];
                    if j < width {
                        for (i, byte) in bytes.iter_mut().enumerate() {
                            let r = 4 * g + i;
                            if r < k {
                                let v = w.q[r * n + c + j];
                                sums[j] += v as i32;
                                *byte = v as u8;
                            }
                        }
                    }
                    *lane = u32::from_le_bytes(bytes);
                }
            }
        }
    }

    /// [`pack_panels`] for one panel (columns `c0..c0 + 32`) of values held transposed (`qt`
    /// `[n, k]`): word `j` of row `g` is the four bytes at channels `4g..4g + 4` of row
    /// `c0 + j` of `qt`, so the panel is the `[32, k / 4]` block of `qt`'s words transposed, 16
    /// x 16 words at a time (16 rows of `qt` read front to back at once); the column sums per
    /// scale block as [`pack_panels`] forms them. The same panel and sums as [`pack_panels`]
    /// packs from the row-major values (tested through the products).
    ///
    /// # Safety
    /// The CPU must have AVX512-F/BW/VNNI; `k` a multiple of 64, `c0 + 32 <= n`, `qt` holds
    /// `n * k` values; `b` holds `k / 4 * 32` words, `colsum` 32 per scale block of
    /// `block_groups` groups.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn pack_panel_transposed(
        qt: &[i8],
        k: usize,
        c0: usize,
        block_groups: usize,
        b: &mut [u32],
        colsum: &mut [i32],
    ) {
        let groups = k / 4;
        let blocks = groups.div_ceil(block_groups);
        debug_assert!(k.is_multiple_of(64) && qt.len() >= (c0 + NR) * k);
        debug_assert!(b.len() >= groups * NR && colsum.len() >= blocks * NR);
        colsum[..blocks * NR].fill(0);
        let ones = _mm512_set1_epi32(0x0101_0101);
        for half in 0..NR / 16 {
            let rows = qt[(c0 + 16 * half) * k..].as_ptr();
            for g0 in (0..groups).step_by(16) {
                let mut r = [_mm512_setzero_si512(); 16];
                for (i, v) in r.iter_mut().enumerate() {
                    // SAFETY: 64 bytes from channel 4 g0 of row c0 + 16 half + i lie in `qt`
                    // (4 g0 + 64 <= k, the row < n).
                    *v = unsafe { _mm512_loadu_si512(rows.add(i * k + 4 * g0) as *const _) };
                }
                // SAFETY: AVX512-F (caller).
                unsafe { crate::transpose16(&mut r) };
                for (i, word) in r.iter().enumerate() {
                    let g = g0 + i;
                    // SAFETY: row g < k / 4 of the panel, lanes 16 half .. 16 half + 16; the
                    // sums of its scale block.
                    unsafe {
                        let lanes = b.as_mut_ptr().add(g * NR + 16 * half);
                        _mm512_storeu_si512(lanes as *mut _, *word);
                        let total = colsum.as_mut_ptr().add((g / block_groups) * NR + 16 * half);
                        let s = _mm512_loadu_si512(total as *const _);
                        _mm512_storeu_si512(total as *mut _, _mm512_dpbusd_epi32(s, ones, *word));
                    }
                }
            }
        }
    }

    /// The largest `|v|` of `src` (NaN values ignored, as `f32::max` ignores them; the maximum
    /// is exact in any order).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn peak(src: &[f32]) -> f32 {
        let chunks = src.chunks_exact(16);
        let rest = chunks.remainder();
        let mut acc = _mm512_setzero_ps();
        for c in chunks {
            // SAFETY: 16 values in `c`.
            let v = _mm512_abs_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) });
            // `vmaxps` returns its second operand when either is NaN: a NaN is skipped.
            acc = _mm512_max_ps(v, acc);
        }
        rest.iter()
            .fold(_mm512_reduce_max_ps(acc), |p, &v| p.max(v.abs()))
    }

    /// `src` quantised with the reciprocal scale `inv`, four values per word of `dst`
    /// (`src.len().div_ceil(4)` words, the last one padded with the zero activation): each
    /// value `round(v * inv)` half away from zero, clamped to [-127, 127], NaN to 0, as a
    /// signed byte, or with 128 added (an unsigned byte) when `offset`. Bit for bit the
    /// scalar `(v * inv).round().clamp(-127.0, 127.0) as i32`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_words(src: &[f32], inv: f32, offset: bool, dst: &mut [u32]) {
        debug_assert!(dst.len() >= src.len().div_ceil(4));
        let inv = _mm512_set1_ps(inv);
        let half = _mm512_set1_ps(0.5);
        let one = _mm512_set1_ps(1.0);
        let sign = _mm512_set1_epi32(i32::MIN);
        let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
        let flip = _mm_set1_epi8(if offset { i8::MIN } else { 0 });
        let mut i = 0;
        while i < src.len() {
            let len = 16.min(src.len() - i);
            let lanes: __mmask16 = if len == 16 { !0 } else { (1 << len) - 1 };
            // Missing lanes read as 0, which quantises to the padding byte.
            // SAFETY: `len` values from `i`; `len.div_ceil(4)` words of `dst` from `i / 4`.
            unsafe {
                let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(lanes, src.as_ptr().add(i)), inv);
                let x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(x, x), x);
                // Half away from zero: truncate, then one step outwards where the dropped
                // fraction (exact) is at least a half.
                let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
                let away =
                    _mm512_cmp_ps_mask::<_CMP_GE_OQ>(_mm512_abs_ps(_mm512_sub_ps(x, t)), half);
                let step = _mm512_castsi512_ps(_mm512_or_si512(
                    _mm512_and_si512(_mm512_castps_si512(x), sign),
                    _mm512_castps_si512(one),
                ));
                let r = _mm512_mask_add_ps(t, away, t, step);
                let r = _mm512_min_ps(_mm512_max_ps(r, lo), hi);
                let bytes = _mm_xor_si128(_mm512_cvtepi32_epi8(_mm512_cvtps_epi32(r)), flip);
                let keep = ((1u32 << (4 * len.div_ceil(4))) - 1) as __mmask16;
                _mm_mask_storeu_epi8(dst.as_mut_ptr().add(i / 4) as *mut i8, keep, bytes);
            }
            i += 16;
        }
    }

    /// `acc[i, j] += ((sums[i, j] - 128 colsum[j]) as f32 · row_scale[i]) · scale[j]` for the
    /// `row_scale.len()` rows and the `scale.len()` (<= 32) columns of a 32-column tile (rows
    /// 32 apart in `sums` and `acc`): the exact integer sums of one scale block turned into
    /// floats, in the same order of operations on every path (so AMX and VNNI agree bit for
    /// bit); columns past `scale.len()` get zero.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rescale(
        sums: &[i32],
        colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
    ) {
        let mut padded = [0f32; NR];
        padded[..scale.len()].copy_from_slice(scale);
        debug_assert!(colsum.len() >= NR && sums.len() >= row_scale.len() * NR);
        debug_assert!(acc.len() >= row_scale.len() * NR);
        // SAFETY: 32 values in `padded` and `colsum`; `row_scale.len()` rows of 32 in `sums`
        // and `acc` (checked above in debug builds, guaranteed by the callers).
        unsafe {
            let excess = [
                _mm512_mullo_epi32(
                    _mm512_set1_epi32(128),
                    _mm512_loadu_si512(colsum.as_ptr() as *const _),
                ),
                _mm512_mullo_epi32(
                    _mm512_set1_epi32(128),
                    _mm512_loadu_si512(colsum.as_ptr().add(16) as *const _),
                ),
            ];
            let cols = [
                _mm512_loadu_ps(padded.as_ptr()),
                _mm512_loadu_ps(padded.as_ptr().add(16)),
            ];
            for (i, &sa) in row_scale.iter().enumerate() {
                let sa = _mm512_set1_ps(sa);
                for h in 0..2 {
                    let at = i * NR + 16 * h;
                    let raw = _mm512_loadu_si512(sums.as_ptr().add(at) as *const _);
                    let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(raw, excess[h]));
                    let term = _mm512_mul_ps(_mm512_mul_ps(exact, sa), cols[h]);
                    let out = acc.as_mut_ptr().add(at);
                    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), term));
                }
            }
        }
    }

    /// `acc[i, j] += ((S[i, j] - 128 colsum[j]) as f32 · row_scale[i]) · scale[j]` with
    /// `S[i, j] = Σ_{g0<=g<g1} Σ_{t<4} x[i, g].byte(t) · b[g, j].byte(t)` (u8 x i8 into i32,
    /// `vpdpbusd`) over the groups of one scale block, for `row_scale.len()` (<= MR) rows of
    /// one 32-column panel: the integer sums stay in registers and are turned into floats by
    /// the operations of [`rescale`] in its order (so the floats are the AMX path's, which
    /// stores its sums first). Columns past `scale.len()` (<= 32) get zero added.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile_rescaled(
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
    ) {
        let rows = row_scale.len();
        debug_assert!(rows <= MR && x.len() >= rows * stride && g1 <= stride);
        debug_assert!(b.len() >= g1 * NR && colsum.len() >= NR && scale.len() <= NR);
        debug_assert!(acc.len() >= rows * NR);
        macro_rules! run {
            ($r:literal) => {
                // SAFETY: same features; the sizes checked above (debug) and by the callers.
                unsafe {
                    kernel_rescaled::<$r>(x, stride, g0, g1, b, colsum, scale, row_scale, acc)
                }
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

    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn kernel_rescaled<const R: usize>(
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
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
        // The scales of the columns present, zero past them (as `rescale`'s padding).
        let width = scale.len();
        let mask = |h: usize| -> __mmask16 {
            let n = width.saturating_sub(16 * h).min(16);
            ((1u32 << n) - 1) as __mmask16
        };
        // SAFETY: 32 sums in `colsum`; the masked loads read only the `width` scales present;
        // R rows of 32 in `acc` (callers).
        unsafe {
            let offset = _mm512_set1_epi32(128);
            let excess0 =
                _mm512_mullo_epi32(offset, _mm512_loadu_si512(colsum.as_ptr() as *const _));
            let excess1 = _mm512_mullo_epi32(
                offset,
                _mm512_loadu_si512(colsum.as_ptr().add(16) as *const _),
            );
            let cols0 = _mm512_maskz_loadu_ps(mask(0), scale.as_ptr());
            let cols1 = _mm512_maskz_loadu_ps(mask(1), scale.as_ptr().wrapping_add(16));
            for i in 0..R {
                let sa = _mm512_set1_ps(row_scale[i]);
                for (h, (sums, excess, cols)) in
                    [(acc0[i], excess0, cols0), (acc1[i], excess1, cols1)]
                        .into_iter()
                        .enumerate()
                {
                    let exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, excess));
                    let term = _mm512_mul_ps(_mm512_mul_ps(exact, sa), cols);
                    let out = acc.as_mut_ptr().add(i * NR + 16 * h);
                    _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), term));
                }
            }
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The vectorised quantisation gives the scalar definition's bytes and scale on rows with
    /// ties, values past the clamp, NaN, infinities, zeros and every tail length.
    #[test]
    fn vectorised_quantisation_matches_the_scalar_definition() {
        if !native_available() {
            return;
        }
        let mut rows: Vec<Vec<f32>> = Vec::new();
        for len in 0..70 {
            // Values on and near the half steps of a scale of 1 (peak 127).
            let row: Vec<f32> = (0..len)
                .map(|i| match i % 7 {
                    0 => 127.0,
                    1 => (i as f32) * 0.5 - 20.0,
                    2 => -((i as f32) * 0.5 + 0.5),
                    3 => 2.5,
                    4 => -0.0,
                    5 => 126.49999,
                    _ => (i as f32 * 1.37).sin() * 100.0,
                })
                .collect();
            rows.push(row);
        }
        rows.push(vec![0.0; 21]);
        rows.push(vec![1.0, f32::NAN, -3.0, 0.5, 7.25]);
        rows.push(vec![f32::INFINITY, 1.0, -2.0]);
        rows.push(vec![f32::NEG_INFINITY, f32::NAN, 3.0]);
        rows.push((0..33).map(|i| 1e-40 * i as f32).collect());
        for row in &rows {
            let words = row.len().div_ceil(4);
            for offset in [true, false] {
                let mut want = vec![0u32; words];
                let scale = quantize_row_scalar(row, offset, &mut want);
                let mut got = vec![0u32; words + 1];
                got[words] = 0xdead_beef;
                // SAFETY: AVX-512 F/BW (checked above); `words` words.
                let (s, inv) = unsafe { row_scale(row) };
                unsafe { native::quantize_words(row, inv, offset, &mut got[..words + 1]) };
                assert_eq!(s.to_bits(), scale.to_bits(), "scale of {row:?}");
                assert_eq!(&got[..words], &want[..], "{row:?} offset {offset}");
                assert_eq!(got[words], 0xdead_beef, "wrote past the row's words");
            }
        }
    }
}
