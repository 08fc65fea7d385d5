//! A matrix product with the weight held in bf16: `out[m, n] = x[m, k] · w[k, n]`, `x` in f32.
//!
//! The weight is held in bf16 (half the memory of f32), row-major as burn holds a `Linear`
//! weight (`[d_input, d_output]`). Four kernels ([`Bf16Kernel`]), one chosen per process:
//!
//! * **AMX** (Intel Xeons since Sapphire Rapids): bf16 tiles, `tdpbf16ps`, 8,192 multiply-adds
//!   per instruction; the activations are rounded to bf16 (to nearest even), sums in f32.
//! * **AVX512-BF16** (`vdpbf16ps`, chosen on AMD CPUs that have it): the activations rounded the
//!   same way, every pair of products accumulated in f32. On Zen 5 it runs at 1.6x the f32 GEMM;
//!   on the Intel Xeon we measured it runs at half the f32 GEMM's rate (measured; the cause,
//!   presumably a lower issue rate than FMA, was not examined), so Intel CPUs without AMX take
//!   the widened path.
//! * **AVX2** (CPUs with AVX2 and FMA but without AVX-512: Haswell to Alder Lake, Zen 1 to
//!   Zen 3): the weight widened to f32 block by block while it is packed, an f32 register tile
//!   at the full precision of the activations (`avx2`'s docs).
//! * **Widened** (every other CPU): the weight widened back to f32 for the product and
//!   multiplied by the `gemm` crate at the full f32 precision of the activations, so the paths
//!   differ by the rounding of the activations only.
//!
//! A row-major weight is packed panel by panel (32 columns) into pairs of rows, the layout both
//! native kernels read, for every product. Where the kernel is native the loader holds the
//! weight **transposed** instead ([`hold_transposed`], [`matmul_transposed`]): AMX then reads
//! its tiles where they lie, which at the student's 237 tokens makes the products 1.3-1.5x
//! faster (the repacking of the row-major weight cost about as much as the tile products; see
//! `transposed`'s docs), and AVX512-BF16 packs each panel from 32 contiguous rows instead of
//! 64 bytes from each of `k` rows far apart (1.1-1.6x faster products with the weight read
//! from memory, `reduced_gemm` on an AMD Zen 4). Work is split over output column blocks, never over the reduction,
//! so the result does not depend on the thread count.

use burn::backend::Flex;
use burn::tensor::{DType, FloatDType, Tensor, TensorData};
use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::send_ptr::SendPtr;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod transposed;
pub use transposed::{
    TRANSPOSED_MULTIPLE, hold_transposed, hold_transposed_from_f32, is_held_transposed,
    matmul_transposed, matmul_transposed_with, prefers_transposed,
};

/// Output columns per packed panel (two 16-lane vectors of f32 accumulators).
const NR: usize = 32;
/// Rows of `x` per micro-kernel call.
const MR: usize = 8;

/// Two bf16 in one 32-bit lane, `lo` in the low half (the element `vdpbf16ps` pairs first).
fn pair(lo: bf16, hi: bf16) -> u32 {
    (lo.to_bits() as u32) | ((hi.to_bits() as u32) << 16)
}

/// A bf16 product kernel (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bf16Kernel {
    /// Intel AMX bf16 tiles (activations rounded to bf16, sums in f32).
    Amx,
    /// AVX512-BF16 dot products (activations rounded to bf16, sums in f32).
    Avx512Bf16,
    /// AVX2 and FMA: the weight widened block by block into an f32 register tile (activations
    /// at full precision).
    Avx2,
    /// The weight widened to f32, the f32 GEMM (activations at full precision).
    Widened,
}

/// Environment variable that picks the bf16 kernel for this process (`amx`, `avx512bf16`,
/// `avx2` or `widened`), when the CPU has it; for measurements and tests.
pub const KERNEL_ENV: &str = "AUDIOX_BF16_KERNEL";

impl Bf16Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 4] = [
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx2,
        Bf16Kernel::Widened,
    ];

    /// The kernel this process uses, chosen once: [`KERNEL_ENV`] when it names a kernel this CPU
    /// runs, else AMX where the CPU (and the OS) offer it, AVX512-BF16 on AMD CPUs that have it,
    /// the AVX2 kernel on CPUs without AVX-512 (where the `gemm` crate's f32 kernel is AVX2
    /// too), the widened path everywhere else.
    pub fn current() -> Bf16Kernel {
        static CURRENT: std::sync::OnceLock<Bf16Kernel> = std::sync::OnceLock::new();
        *CURRENT.get_or_init(|| {
            let asked = std::env::var(KERNEL_ENV)
                .ok()
                .and_then(|v| Bf16Kernel::ALL.into_iter().find(|k| k.name() == v.trim()));
            match asked {
                Some(k) if k.is_supported() => k,
                _ => Bf16Kernel::default_for_cpu(),
            }
        })
    }

    fn default_for_cpu() -> Bf16Kernel {
        if Bf16Kernel::Amx.is_supported() {
            Bf16Kernel::Amx
        } else if Bf16Kernel::Avx512Bf16.is_supported() && cpu_is_amd() {
            Bf16Kernel::Avx512Bf16
        } else if Bf16Kernel::Avx2.is_supported() && !avx512f() {
            Bf16Kernel::Avx2
        } else {
            Bf16Kernel::Widened
        }
    }

    /// Whether this CPU (and OS) can run the kernel.
    pub fn is_supported(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => crate::amx::available() && avx512_bf16(),
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Amx => false,
            Bf16Kernel::Avx512Bf16 => avx512_bf16(),
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx2 => avx2::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Bf16Kernel::Avx2 => false,
            Bf16Kernel::Widened => true,
        }
    }

    /// Its name, as [`KERNEL_ENV`] takes it.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Avx2 => "avx2",
            Bf16Kernel::Widened => "widened",
        }
    }

    /// Whether the kernel rounds the activations to bf16 (the native ones do).
    pub fn rounds_activations(self) -> bool {
        matches!(self, Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16)
    }
}

/// Whether the CPU's vendor is AMD (CPUID leaf 0: "AuthenticAMD").
fn cpu_is_amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&id.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&id.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&id.ecx.to_le_bytes());
        &vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[m, n] = x[m, k] · w[k, n]`, row-major, `out` overwritten, on this process's kernel
/// ([`Bf16Kernel::current`]).
///
/// # Panics
/// If `x.len() != m * k`, `w.len() != k * n` or `out.len() != m * n`.
pub fn matmul(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    matmul_with(Bf16Kernel::current(), x, m, w, k, n, out);
}

/// [`matmul`] on a given kernel; one the CPU does not run takes the widened path.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_with(
    kernel: Bf16Kernel,
    x: &[f32],
    m: usize,
    w: &[bf16],
    k: usize,
    n: usize,
    out: &mut [f32],
) {
    check(x, m, w, k, n, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if kernel.is_supported() {
        match kernel {
            // SAFETY: the CPU runs AMX bf16 tiles and AVX512-BF16 (checked above).
            Bf16Kernel::Amx => return unsafe { matmul_amx(x, m, w, k, n, false, out) },
            // SAFETY: the CPU has the features the kernel is compiled for (checked above).
            Bf16Kernel::Avx512Bf16 => return unsafe { matmul_native(x, m, w, k, n, false, out) },
            // SAFETY: the CPU has AVX2 and FMA (checked above); the sizes are checked.
            Bf16Kernel::Avx2 => return unsafe { avx2::matmul(x, m, w, k, n, out) },
            Bf16Kernel::Widened => {}
        }
    }
    matmul_widened(x, m, w, k, n, out);
}

fn check(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &[f32]) {
    assert_eq!(
        x.len(),
        m * k,
        "input of {} values is not [{m}, {k}]",
        x.len()
    );
    assert_eq!(
        w.len(),
        k * n,
        "weight of {} values is not [{k}, {n}]",
        w.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "output of {} values is not [{m}, {n}]",
        out.len()
    );
}

/// The portable path of [`matmul`]: the weight widened to f32 (one transient copy), then the
/// `gemm` crate at the full f32 precision of the activations.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_widened(x: &[f32], m: usize, w: &[bf16], k: usize, n: usize, out: &mut [f32]) {
    check(x, m, w, k, n, out);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    let mut wide = vec![0f32; w.len()];
    wide.par_chunks_mut(1 << 16)
        .zip(w.par_chunks(1 << 16))
        .for_each(|(o, i)| i.convert_to_f32_slice(o));
    crate::gemm_f32(m, n, k, x, &wide, out);
}

/// The native path: the activations rounded to bf16 pairs once; then per panel of 32 output
/// columns (one task each) the panel of the weight packed into pairs of rows (lane j holds
/// `(w[2p][j], w[2p+1][j])`, odd `k` padded with a zero) and multiplied by 8-row tiles.
/// With `transposed` the weight is given as `[n, k]` ([`hold_transposed`]; `k` and `n`
/// multiples of 32) and each panel is packed from its 32 rows ([`pack_panel_transposed`]);
/// the panel, and so the result, is the same.
///
/// # Safety
/// The CPU must have AVX512-F/BW/BF16; the buffers sized as [`matmul`] checks; with
/// `transposed`, `k` and `n` multiples of [`TRANSPOSED_MULTIPLE`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(crate) unsafe fn matmul_native(
    x: &[f32],
    m: usize,
    w: &[bf16],
    k: usize,
    n: usize,
    transposed: bool,
    out: &mut [f32],
) {
    let pairs = k.div_ceil(2);
    let mut xa = vec![0u32; m * pairs];
    xa.par_chunks_mut(pairs)
        .zip(x.par_chunks(k))
        .for_each(|(dst, src)| {
            // SAFETY: same features as the caller.
            unsafe { native::round_row(src, dst) }
        });
    let panels = n.div_ceil(NR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let xa = &xa;
    (0..panels).into_par_iter().for_each_init(
        || vec![0u32; pairs * NR],
        |b, panel| {
            let c0 = panel * NR;
            let width = NR.min(n - c0);
            // SAFETY: AVX512-F/BW (caller); `b` holds one panel of `pairs` rows; with
            // `transposed`, `w` is `[n, k]` with `k`, `n` multiples of 32 (caller).
            unsafe {
                if transposed {
                    pack_panel_transposed(w, k, c0, b)
                } else {
                    pack_panels(w, k, n, c0, 1, pairs, b)
                }
            };
            let mut r = 0;
            while r < m {
                let rows = MR.min(m - r);
                let mut tile = [0f32; MR * NR];
                // SAFETY: same features as the caller; the slice holds `rows` rows of `pairs`.
                unsafe {
                    native::tile(
                        &xa[r * pairs..(r + rows) * pairs],
                        rows,
                        pairs,
                        b,
                        &mut tile,
                    )
                };
                for i in 0..rows {
                    // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task only.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.get().add((r + i) * n + c0), width)
                    };
                    dst.copy_from_slice(&tile[i * NR..i * NR + width]);
                }
                r += rows;
            }
        },
    );
}

/// Packs the weight's columns `c0..c0 + 32 * count` into `count` consecutive panels of
/// `panel_rows` rows of 32 words (`panels`), one row per pair of weight rows: lane `j` of row
/// `p` of panel `q` holds `(w[2p][c], w[2p + 1][c])` for `c = c0 + 32 q + j`, zero past the
/// last column and past row `k` (the AMX padding rows included). Row pairs are the outer loop,
/// so the weight is read row by row (`32 * count` contiguous values at a time); full panels
/// interleave two rows with one AVX512-BW permutation per 16 lanes.
///
/// # Safety
/// The CPU must have AVX512-F/BW; `w` is `[k, n]`; `panels` holds `count * panel_rows * 32`
/// words; `panel_rows >= k.div_ceil(2)`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pack_panels(
    w: &[bf16],
    k: usize,
    n: usize,
    c0: usize,
    count: usize,
    panel_rows: usize,
    panels: &mut [u32],
) {
    use std::arch::x86_64::{
        __m512i, _mm512_loadu_si512, _mm512_permutex2var_epi16, _mm512_storeu_si512,
    };
    // Word j of the first half: (lo[j], hi[j]) for j < 16; of the second: j + 16.
    let mut first = [0u16; 32];
    let mut second = [0u16; 32];
    for j in 0..16 {
        first[2 * j] = j as u16;
        first[2 * j + 1] = 32 + j as u16;
        second[2 * j] = 16 + j as u16;
        second[2 * j + 1] = 48 + j as u16;
    }
    // SAFETY: 64-byte arrays.
    let (first, second) = unsafe {
        (
            _mm512_loadu_si512(first.as_ptr() as *const _),
            _mm512_loadu_si512(second.as_ptr() as *const _),
        )
    };
    let panel_words = panel_rows * NR;
    for p in 0..panel_rows {
        for q in 0..count {
            let lanes = &mut panels[q * panel_words + p * NR..][..NR];
            if 2 * p >= k {
                lanes.fill(0);
                continue;
            }
            let c = c0 + q * NR;
            let width = NR.min(n - c);
            let lo = &w[2 * p * n + c..][..width];
            let hi = (2 * p + 1 < k).then(|| &w[(2 * p + 1) * n + c..][..width]);
            match hi {
                Some(hi) if width == NR => {
                    // SAFETY: 32 bf16 in each row slice, 32 words in `lanes`.
                    unsafe {
                        let a = _mm512_loadu_si512(lo.as_ptr() as *const _);
                        let b = _mm512_loadu_si512(hi.as_ptr() as *const _);
                        let out = lanes.as_mut_ptr() as *mut __m512i;
                        _mm512_storeu_si512(out, _mm512_permutex2var_epi16(a, first, b));
                        _mm512_storeu_si512(out.add(1), _mm512_permutex2var_epi16(a, second, b));
                    }
                }
                _ => {
                    for (j, lane) in lanes.iter_mut().enumerate() {
                        *lane = if j < width {
                            pair(lo[j], hi.map_or(bf16::ZERO, |h| h[j]))
                        } else {
                            0
                        };
                    }
                }
            }
        }
    }
}

/// [`pack_panels`] for one panel of a weight held transposed (`wt` `[n, k]`): lane `j` of row
/// `p` is the 32-bit word at channels `2p, 2p + 1` of row `c0 + j` of `wt`, so the panel is
/// the `[32, k / 2]` block of `wt`'s words transposed, 16 x 16 words at a time (16 rows of
/// `wt` read front to back at once). The same panel as [`pack_panels`] packs from the
/// row-major weight (tested through the products).
///
/// # Safety
/// The CPU must have AVX512-F; `wt` is `[n, k]` with `k` a multiple of 32 and
/// `c0 + 32 <= n`; `panel` holds at least `k / 2 * 32` words.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn pack_panel_transposed(wt: &[bf16], k: usize, c0: usize, panel: &mut [u32]) {
    use std::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_storeu_si512};
    let pairs = k / 2;
    debug_assert!(k.is_multiple_of(32) && wt.len() >= (c0 + NR) * k && panel.len() >= pairs * NR);
    for half in 0..NR / 16 {
        // Word `p` of row `c0 + 16 half + i` of `wt` is at `rows + i * 2k + 4p` bytes.
        let rows = wt[(c0 + 16 * half) * k..].as_ptr() as *const u8;
        for p0 in (0..pairs).step_by(16) {
            let mut r = [std::arch::x86_64::_mm512_setzero_si512(); 16];
            for (i, v) in r.iter_mut().enumerate() {
                // SAFETY: 16 words from word p0 of row c0 + 16 half + i lie in `wt` (p0 + 16 <=
                // k / 2, the row < n).
                *v = unsafe { _mm512_loadu_si512(rows.add(i * 2 * k + 4 * p0) as *const __m512i) };
            }
            // SAFETY: AVX512-F (caller).
            unsafe { crate::transpose16(&mut r) };
            for (i, v) in r.iter().enumerate() {
                // SAFETY: row p0 + i < k / 2 of the panel, lanes 16 half .. 16 half + 16.
                unsafe {
                    _mm512_storeu_si512(
                        panel.as_mut_ptr().add((p0 + i) * NR + 16 * half) as *mut __m512i,
                        *v,
                    )
                };
            }
        }
    }
}

/// Output column panels per AMX task: each task packs its panels once and runs every 32-row
/// block of the activations over all of them (the block stays in cache across the panels).
#[cfg(target_arch = "x86_64")]
const AMX_GROUP: usize = 4;

/// The AMX path: the activations rounded to bf16 pairs once (rows padded to 32, pairs to 16,
/// zero); per group of column panels (one task each) the weight packed as in
/// [`matmul_native`] (pairs padded to 16) and multiplied by 32 x 32 tile blocks.
///
/// # Safety
/// The CPU must run AMX bf16 tiles and AVX512-BF16 ([`Bf16Kernel::Amx`] supported).
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn matmul_amx(
    x: &[f32],
    m: usize,
    w: &[bf16],
    k: usize,
    n: usize,
    transposed: bool,
    out: &mut [f32],
) {
    use crate::amx;
    let pairs = k.div_ceil(2);
    let kp = pairs.next_multiple_of(amx::PAIRS);
    let mp = m.next_multiple_of(amx::BLOCK);
    let mut xa = vec![0u32; mp * kp];
    xa.par_chunks_mut(kp)
        .zip(x.par_chunks(k))
        .for_each(|(dst, src)| {
            // SAFETY: AVX512-BF16 (caller).
            unsafe { native::round_row(src, &mut dst[..pairs]) }
        });
    let panels = n.div_ceil(NR);
    let out_ptr = SendPtr(out.as_mut_ptr());
    let xa = &xa;
    (0..panels.div_ceil(AMX_GROUP))
        .into_par_iter()
        .for_each_init(
            || vec![0u32; AMX_GROUP * kp * NR],
            |b, group| {
                let first = group * AMX_GROUP;
                let count = AMX_GROUP.min(panels - first);
                // SAFETY: AVX512-BW (caller: AMX CPUs have AVX512-BF16 and BW); `b` holds
                // AMX_GROUP panels of `kp` rows.
                unsafe {
                    if transposed {
                        // `kp == k / 2` here: `k` is a multiple of 32 (caller).
                        for (q, panel) in b.chunks_mut(kp * NR).take(count).enumerate() {
                            pack_panel_transposed(w, k, (first + q) * NR, panel);
                        }
                    } else {
                        pack_panels(w, k, n, first * NR, count, kp, b)
                    }
                };
                // SAFETY: AMX is available (caller); this task uses the tiles only through `tiles`.
                let mut tiles = unsafe { amx::Tiles::new() };
                let mut block = [0f32; amx::BLOCK * amx::BLOCK];
                for r in (0..mp).step_by(amx::BLOCK) {
                    let rows = amx::BLOCK.min(m - r.min(m));
                    if rows == 0 {
                        break;
                    }
                    for (q, panel) in b.chunks(kp * NR).take(count).enumerate() {
                        let c0 = (first + q) * NR;
                        let width = NR.min(n - c0);
                        tiles.zero();
                        // SAFETY: 32 rows of `kp` words from row r of `xa` (padded to `mp` rows);
                        // `kp` rows of 32 words in the panel.
                        unsafe {
                            tiles.accumulate(
                                xa[r * kp..].as_ptr() as *const u8,
                                kp * 4,
                                panel.as_ptr() as *const u8,
                                NR * 4,
                                kp / amx::PAIRS,
                            );
                        }
                        tiles.store(&mut block);
                        for i in 0..rows {
                            // SAFETY: row r+i, columns c0..c0+width of `out`, written by this task
                            // only.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.get().add((r + i) * n + c0),
                                    width,
                                )
                            };
                            dst.copy_from_slice(&block[i * amx::BLOCK..i * amx::BLOCK + width]);
                        }
                    }
                }
            },
        );
}

/// `x · w + bias` for a matmul weight `w` held in bf16 on the flex backend, read as `[k, n]`
/// (a `Linear` weight `[k, n]`, or any rank: the last axis is `n`, the others flatten to `k`),
/// row-major or held transposed ([`hold_transposed`]); any leading axes of `x`; the bias, if
/// any, in f32 or bf16. `None` when this kernel does not apply (another backend, `x` not a
/// contiguous f32 tensor, `w` in another dtype or layout): the caller then takes the generic
/// path (widen the weight, burn's matmul).
pub fn linear<const D: usize, const W: usize>(
    x: &Tensor<D>,
    w: &Tensor<W>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    if W < 2 {
        return None;
    }
    let xf = crate::flex_f32(x)?;
    let wdims = w.dims();
    let n = wdims[W - 1];
    let k: usize = wdims[..W - 1].iter().product();
    let dims = x.dims();
    if dims[D - 1] != k {
        return None;
    }
    let m: usize = dims[..D - 1].iter().product();
    let mut out = vec![0f32; m * n];
    if let Some(wt) = transposed::transposed_view(w) {
        matmul_transposed(
            crate::values(&xf),
            m,
            &wt.storage::<bf16>()[..k * n],
            k,
            n,
            &mut out,
        );
    } else {
        let wf = w.clone().try_into_primitive::<Flex>().ok()?;
        if wf.dtype() != DType::BF16 {
            return None;
        }
        let weight = wf.as_slice::<bf16>()?;
        matmul(crate::values(&xf), m, weight, k, n, &mut out);
    }
    if let Some(b) = bias {
        let b: Vec<f32> = b
            .clone()
            .cast(FloatDType::F32)
            .into_data()
            .try_into_vec::<f32>()
            .ok()?;
        if b.len() != n {
            return None;
        }
        out.par_chunks_mut(n.max(1))
            .for_each(|row| row.iter_mut().zip(&b).for_each(|(o, b)| *o += b));
    }
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// Whether this process's bf16 kernel is a native one ([`Bf16Kernel::current`] is AMX or
/// AVX512-BF16): the activations are then rounded to bf16.
pub fn native_available() -> bool {
    Bf16Kernel::current().rounds_activations()
}

/// Whether the CPU has AVX512-F (the `gemm` crate's f32 kernel is then 512 bits wide).
fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the CPU has AVX512-BF16 (with AVX512-F/BW).
pub(crate) fn avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod native {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// One row of f32 rounded to bf16 pairs (round to nearest even, as `cvtne2ps2bf16`).
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn round_row(src: &[f32], dst: &mut [u32]) {
        let k = src.len();
        let full = k / 32;
        for c in 0..full {
            // SAFETY: 32 values from 32c are in `src`; 16 words from 16c are in `dst`.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(32 * c));
                let hi = _mm512_loadu_ps(src.as_ptr().add(32 * c + 16));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(16 * c) as *mut _, v);
            }
        }
        for p in 16 * full..dst.len() {
            let lo = half::bf16::from_f32(src[2 * p]);
            let hi = src
                .get(2 * p + 1)
                .map_or(half::bf16::ZERO, |&v| half::bf16::from_f32(v));
            dst[p] = super::pair(lo, hi);
        }
    }

    /// `tile[i, j] = sum_p x[i, p] · b[p, j]` for `rows` (<= MR) rows and one 32-column panel.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile(
        x: &[u32],
        rows: usize,
        pairs: usize,
        b: &[u32],
        tile: &mut [f32; MR * NR],
    ) {
        macro_rules! run {
            ($r:literal) => {
                // SAFETY: same features; `x` holds $r rows of `pairs` words.
                unsafe { kernel::<$r>(x, pairs, b, tile) }
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
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn kernel<const R: usize>(
        x: &[u32],
        pairs: usize,
        b: &[u32],
        tile: &mut [f32; MR * NR],
    ) {
        let mut acc0 = [_mm512_setzero_ps(); R];
        let mut acc1 = [_mm512_setzero_ps(); R];
        let bp = b.as_ptr();
        let xp = x.as_ptr();
        for p in 0..pairs {
            // SAFETY: b holds `pairs` rows of NR words; x holds R rows of `pairs` words.
            unsafe {
                let b0: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR) as *const _));
                let b1: __m512bh =
                    std::mem::transmute(_mm512_loadu_si512(bp.add(p * NR + 16) as *const _));
                for i in 0..R {
                    let a: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*xp.add(i * pairs + p) as i32));
                    acc0[i] = _mm512_dpbf16_ps(acc0[i], a, b0);
                    acc1[i] = _mm512_dpbf16_ps(acc1[i], a, b1);
                }
            }
        }
        for i in 0..R {
            // SAFETY: row i of the tile has NR = 32 floats.
            unsafe {
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR), acc0[i]);
                _mm512_storeu_ps(tile.as_mut_ptr().add(i * NR + 16), acc1[i]);
            }
        }
    }
}
