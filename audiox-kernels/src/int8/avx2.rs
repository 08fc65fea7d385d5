//! The int8 product on CPUs with AVX2 but without AVX512-VNNI (most x86 CPUs of the last
//! decade: Haswell to Alder Lake, Zen 1 to Zen 3).
//!
//! AVX2 has no four-byte dot product; `vpmaddubsw` multiplies unsigned by signed bytes and sums
//! each pair into a *saturating* i16. With the VNNI path's unsigned activations (`a + 128`, up
//! to 255) a pair can reach 255 · 127 · 2 = 64,770 and saturate, so this path keeps the
//! activations signed and moves the weight's sign onto them: `|q| · sign(a, q) = a · q`, where
//! `|q| <= 127` and `|a| <= 127` keep each pair within 2 · 127² = 32,258 < 2^15. `vpmaddwd` with
//! ones then widens the pairs into i32 lanes. The integer sums are exact and equal the VNNI
//! path's after its offset correction, and they are turned into floats in the same order of
//! operations, so the result is the VNNI (and AMX) result bit for bit.
//!
//! CPUs with AVX-VNNI (the 256-bit, VEX-encoded `vpdpbusd`: Intel since Alder Lake, AMD since
//! Zen 5), most of them without AVX-512, run the same layout with one `vpdpbusd` per pair of
//! vectors in place of `vpmaddubsw` + `vpmaddwd` + `vpaddd` (the sign trick again: no offset
//! correction is needed), and again the same floats.
//!
//! Layout: the activations quantised per row as the VNNI path does (the same bytes without
//! the offset, four per word); per task one panel of 16 output columns of the weight packed in
//! groups of four rows (word `j` of row `g` holds `q[4g..4g + 4, c0 + j]`), then tiles of 4
//! rows x 16 columns (eight accumulators of eight i32 lanes).

use std::arch::x86_64::*;

use super::{QuantizedView, TileKernel};

/// Output columns per panel (two vectors of eight i32 lanes).
const NR: usize = 16;
/// Rows of activations per tile.
const MR: usize = 4;

/// Whether this CPU runs the AVX2 kernel.
pub(super) fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
}

/// Whether this CPU runs the AVX-VNNI kernel (AVX2 and the VEX-encoded `vpdpbusd`).
pub(super) fn vnni_available() -> bool {
    available() && std::arch::is_x86_feature_detected!("avxvnni")
}

/// The AVX2 family for [`super::run_panels`]: signed activations, panels of 16 columns
/// (no column sums: no offset to correct), tiles of 4 rows; the dot products on AVX-VNNI when
/// `vnni`, else on AVX2.
pub(super) struct Avx2 {
    /// Whether the tiles use the VEX-encoded `vpdpbusd` (the CPU must have AVX-VNNI).
    pub(super) vnni: bool,
}

impl TileKernel for Avx2 {
    const NR: usize = NR;
    const MR: usize = MR;

    unsafe fn quantize_row(&self, src: &[f32], dst: &mut [u32]) -> f32 {
        // SAFETY: AVX2 (the caller's features); the caller's sizes.
        unsafe { quantize_row(src, dst) }
    }

    unsafe fn pack(
        &self,
        w: QuantizedView<'_>,
        c0: usize,
        groups: usize,
        _block_groups: usize,
        b: &mut [u32],
        _colsum: &mut [i32],
    ) {
        // SAFETY: AVX2 (the caller's features); `b` holds `groups` rows of NR words.
        unsafe { pack_panel(w, c0, groups, b) }
    }

    unsafe fn tile(
        &self,
        x: &[u32],
        stride: usize,
        g0: usize,
        g1: usize,
        b: &[u32],
        _colsum: &[i32],
        scale: &[f32],
        row_scale: &[f32],
        acc: &mut [f32],
    ) {
        let mut sums = [0i32; MR * NR];
        // SAFETY: AVX2, and AVX-VNNI when `vnni` (the caller's features); the caller's sizes.
        unsafe {
            tile(x, row_scale.len(), stride, g0, g1, b, &mut sums, self.vnni);
            rescale(&sums, scale, row_scale, acc);
        }
    }
}

/// One row of activations quantised as the VNNI path quantises it (the same scale and the
/// same bytes, here signed: no offset), four per word (the last padded with zeros); returns
/// the row's scale.
///
/// # Safety
/// The CPU must have AVX2; `dst` holds `src.len().div_ceil(4)` words.
#[target_feature(enable = "avx2")]
unsafe fn quantize_row(src: &[f32], dst: &mut [u32]) -> f32 {
    // The largest |v|, NaN ignored (`vmaxps` returns its second operand when either is NaN).
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let mut peak = _mm256_setzero_ps();
    let chunks = src.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        // SAFETY: eight values in `c`.
        let v = _mm256_and_ps(unsafe { _mm256_loadu_ps(c.as_ptr()) }, abs);
        peak = _mm256_max_ps(v, peak);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: eight floats in `lanes`.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), peak) };
    let peak = rest.iter().chain(&lanes).fold(0f32, |p, &v| p.max(v.abs()));
    let scale = peak / 127.0;
    let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
    // SAFETY: AVX2 (caller); `dst` as the caller says.
    unsafe { quantize_words(src, inv, dst) };
    scale
}

/// `src` times `inv`, each value rounded half away from zero, clamped to [-127, 127], NaN to
/// 0, as signed bytes four per word of `dst` (missing values are 0): bit for bit the scalar
/// `(v * inv).round().clamp(-127.0, 127.0) as i32`, as the AVX-512 quantisation is.
///
/// # Safety
/// The CPU must have AVX2; `dst` holds `src.len().div_ceil(4)` words.
#[target_feature(enable = "avx2")]
unsafe fn quantize_words(src: &[f32], inv: f32, dst: &mut [u32]) {
    let inv_v = _mm256_set1_ps(inv);
    let half = _mm256_set1_ps(0.5);
    let one = _mm256_set1_ps(1.0);
    let sign = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    let full = src.len() / 8;
    for c in 0..full {
        // SAFETY: eight values from 8c in `src`; two words from 2c in `dst`.
        unsafe {
            let x = _mm256_mul_ps(_mm256_loadu_ps(src.as_ptr().add(8 * c)), inv_v);
            let x = _mm256_and_ps(x, _mm256_cmp_ps::<_CMP_ORD_Q>(x, x));
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(x);
            let away = _mm256_cmp_ps::<_CMP_GE_OQ>(_mm256_and_ps(_mm256_sub_ps(x, t), abs), half);
            let step = _mm256_or_ps(_mm256_and_ps(x, sign), one);
            let r = _mm256_add_ps(t, _mm256_and_ps(away, step));
            let r = _mm256_min_ps(_mm256_max_ps(r, lo), hi);
            let i = _mm256_cvtps_epi32(r);
            // Eight i32 in [-127, 127] to eight bytes (in lane order).
            let w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
            let bytes = _mm_packs_epi16(w16, w16);
            _mm_storel_epi64(dst.as_mut_ptr().add(2 * c) as *mut __m128i, bytes);
        }
    }
    let done = 8 * full;
    for (g, word) in dst.iter_mut().enumerate().skip(done / 4) {
        let mut bytes = [0u8; 4];
        for (i, b) in bytes.iter_mut().enumerate() {
            if let Some(&v) = src.get(4 * g + i) {
                *b = ((v * inv).round().clamp(-127.0, 127.0) as i32) as i8 as u8;
            }
        }
        *word = u32::from_le_bytes(bytes);
    }
}

/// Packs the weight's columns `c0..c0 + 16` into `groups` rows of 16 words (`b`): word `j` of
/// row `g` holds `q[4g..4g + 4, c0 + j]`, zero past `k` and past the last column. Full groups
/// of a full panel interleave four 16-byte row loads (two rounds of unpacking).
///
/// # Safety
/// The CPU must have AVX2; `b` holds `groups * 16` words.
#[target_feature(enable = "avx2")]
unsafe fn pack_panel(w: QuantizedView<'_>, c0: usize, groups: usize, b: &mut [u32]) {
    let (k, n) = (w.k, w.n);
    let width = NR.min(n - c0);
    for g in 0..groups {
        let lanes = &mut b[g * NR..][..NR];
        if 4 * g + 3 < k && width == NR {
            // SAFETY: rows 4g..4g+4 have 16 values from column c0; 16 words in `lanes`.
            unsafe {
                let row =
                    |i: usize| _mm_loadu_si128(w.q[(4 * g + i) * n + c0..].as_ptr() as *const _);
                let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                let (a_lo, a_hi) = (_mm_unpacklo_epi8(r0, r1), _mm_unpackhi_epi8(r0, r1));
                let (b_lo, b_hi) = (_mm_unpacklo_epi8(r2, r3), _mm_unpackhi_epi8(r2, r3));
                let out = lanes.as_mut_ptr() as *mut __m128i;
                _mm_storeu_si128(out, _mm_unpacklo_epi16(a_lo, b_lo));
                _mm_storeu_si128(out.add(1), _mm_unpackhi_epi16(a_lo, b_lo));
                _mm_storeu_si128(out.add(2), _mm_unpacklo_epi16(a_hi, b_hi));
                _mm_storeu_si128(out.add(3), _mm_unpackhi_epi16(a_hi, b_hi));
            }
            continue;
        }
        for (j, lane) in lanes.iter_mut().enumerate() {
            let mut bytes = [0u8; 4];
            if j < width {
                for (i, byte) in bytes.iter_mut().enumerate() {
                    let r = 4 * g + i;
                    if r < k {
                        *byte = w.q[r * n + c0 + j] as u8;
                    }
                }
            }
            *lane = u32::from_le_bytes(bytes);
        }
    }
}

/// [`pack_panel`] for a weight held transposed (`qt` `[n, k]`): word `j` of row `g` is the four
/// bytes at channels `4g..4g + 4` of row `c0 + j` of `qt`, so the panel is the `[16, k / 4]`
/// block of `qt`'s words transposed, 8 x 8 words at a time (each of the 16 rows read front to
/// back, 32 bytes per load) instead of 16 bytes from each of `k` rows far apart. The same
/// panel as [`pack_panel`] builds from the row-major values (tested through the products).
///
/// # Safety
/// The CPU must have AVX2; `k` a multiple of 32, `c0 + 16 <= n` with `qt` holding `n * k`
/// values; `b` holds `k / 4 * 16` words.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_panel_transposed(qt: &[i8], k: usize, c0: usize, b: &mut [u32]) {
    let groups = k / 4;
    debug_assert!(k.is_multiple_of(32) && qt.len() >= (c0 + NR) * k);
    debug_assert!(b.len() >= groups * NR);
    for half in 0..NR / 8 {
        let rows = qt[(c0 + 8 * half) * k..].as_ptr();
        for g0 in (0..groups).step_by(8) {
            // SAFETY: 32 bytes from channel 4 g0 of each of the rows c0 + 8 half + i (i < 8)
            // lie in `qt` (4 g0 + 32 <= k, the rows < n).
            let r: [__m256; 8] = std::array::from_fn(|i| unsafe {
                _mm256_castsi256_ps(_mm256_loadu_si256(rows.add(i * k + 4 * g0) as *const _))
            });
            let words = transpose8(r);
            for (i, word) in words.iter().enumerate() {
                // SAFETY: row g0 + i < k / 4 of the panel, lanes 8 half .. 8 half + 8.
                unsafe {
                    _mm256_storeu_ps(
                        b.as_mut_ptr().add((g0 + i) * NR + 8 * half) as *mut f32,
                        *word,
                    )
                };
            }
        }
    }
}

/// An 8 x 8 block of 32-bit lanes transposed: lane `j` of the result's vector `i` is lane `i`
/// of `r[j]` (the lanes moved as bits; floats are only the registers' type here).
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // Pairs of rows interleaved, then pairs of pairs: each 128-bit half holds 4 x 4 blocks.
    let t: [__m256; 8] = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    let u: [__m256; 8] = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    // Low halves give lanes 0-3 of the columns, high halves lanes 4-7.
    [
        _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
        _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
        _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
        _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
        _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
    ]
}

/// `sums[i, j] = Σ_{g0<=g<g1} Σ_{t<4} xa[i, g].byte(t) · b[g, j].byte(t)` (signed bytes, exact
/// in i32) for `rows` (<= MR) rows and one 16-column panel.
///
/// # Safety
/// The CPU must have AVX2, and AVX-VNNI when `vnni`; `x` holds `rows` rows of `stride` words,
/// `b` at least `g1` rows of 16 words, `g1 <= stride`.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2")]
unsafe fn tile(
    x: &[u32],
    rows: usize,
    stride: usize,
    g0: usize,
    g1: usize,
    b: &[u32],
    sums: &mut [i32; MR * NR],
    vnni: bool,
) {
    debug_assert!(x.len() >= rows * stride && g1 <= stride && b.len() >= g1 * NR);
    // SAFETY (each arm): the caller's features and sizes.
    match (rows, vnni) {
        (4, false) => unsafe { kernel::<4>(x, stride, g0, g1, b, sums) },
        (3, false) => unsafe { kernel::<3>(x, stride, g0, g1, b, sums) },
        (2, false) => unsafe { kernel::<2>(x, stride, g0, g1, b, sums) },
        (_, false) => unsafe { kernel::<1>(x, stride, g0, g1, b, sums) },
        (4, true) => unsafe { kernel_vnni::<4>(x, stride, g0, g1, b, sums) },
        (3, true) => unsafe { kernel_vnni::<3>(x, stride, g0, g1, b, sums) },
        (2, true) => unsafe { kernel_vnni::<2>(x, stride, g0, g1, b, sums) },
        (_, true) => unsafe { kernel_vnni::<1>(x, stride, g0, g1, b, sums) },
    }
}

/// [`kernel`] with AVX-VNNI: one `vpdpbusd` (four `|q| · sign(a, q)` products into each i32
/// lane) per vector instead of three instructions.
#[inline]
#[target_feature(enable = "avx2,avxvnni")]
unsafe fn kernel_vnni<const R: usize>(
    x: &[u32],
    stride: usize,
    g0: usize,
    g1: usize,
    b: &[u32],
    sums: &mut [i32; MR * NR],
) {
    let mut acc0 = [_mm256_setzero_si256(); R];
    let mut acc1 = [_mm256_setzero_si256(); R];
    let bp = b.as_ptr();
    let xp = x.as_ptr();
    for g in g0..g1 {
        // SAFETY: b holds at least g1 rows of NR words; x holds R rows of `stride` words.
        unsafe {
            let b0 = _mm256_loadu_si256(bp.add(g * NR) as *const _);
            let b1 = _mm256_loadu_si256(bp.add(g * NR + 8) as *const _);
            let (m0, m1) = (_mm256_abs_epi8(b0), _mm256_abs_epi8(b1));
            for i in 0..R {
                let a = _mm256_set1_epi32(*xp.add(i * stride + g) as i32);
                acc0[i] = _mm256_dpbusd_avx_epi32(acc0[i], m0, _mm256_sign_epi8(a, b0));
                acc1[i] = _mm256_dpbusd_avx_epi32(acc1[i], m1, _mm256_sign_epi8(a, b1));
            }
        }
    }
    for i in 0..R {
        // SAFETY: row i of the tile has NR = 16 lanes.
        unsafe {
            _mm256_storeu_si256(sums.as_mut_ptr().add(i * NR) as *mut _, acc0[i]);
            _mm256_storeu_si256(sums.as_mut_ptr().add(i * NR + 8) as *mut _, acc1[i]);
        }
    }
}

#[inline]
#[target_feature(enable = "avx2")]
unsafe fn kernel<const R: usize>(
    x: &[u32],
    stride: usize,
    g0: usize,
    g1: usize,
    b: &[u32],
    sums: &mut [i32; MR * NR],
) {
    let ones = _mm256_set1_epi16(1);
    let mut acc0 = [_mm256_setzero_si256(); R];
    let mut acc1 = [_mm256_setzero_si256(); R];
    let bp = b.as_ptr();
    let xp = x.as_ptr();
    for g in g0..g1 {
        // SAFETY: b holds at least g1 rows of NR words; x holds R rows of `stride` words.
        unsafe {
            let b0 = _mm256_loadu_si256(bp.add(g * NR) as *const _);
            let b1 = _mm256_loadu_si256(bp.add(g * NR + 8) as *const _);
            let (m0, m1) = (_mm256_abs_epi8(b0), _mm256_abs_epi8(b1));
            for i in 0..R {
                let a = _mm256_set1_epi32(*xp.add(i * stride + g) as i32);
                // a · q = |q| · (a with q's sign); each pair within 2 · 127² (no saturation).
                let p0 = _mm256_maddubs_epi16(m0, _mm256_sign_epi8(a, b0));
                let p1 = _mm256_maddubs_epi16(m1, _mm256_sign_epi8(a, b1));
                acc0[i] = _mm256_add_epi32(acc0[i], _mm256_madd_epi16(p0, ones));
                acc1[i] = _mm256_add_epi32(acc1[i], _mm256_madd_epi16(p1, ones));
            }
        }
    }
    for i in 0..R {
        // SAFETY: row i of the tile has NR = 16 lanes.
        unsafe {
            _mm256_storeu_si256(sums.as_mut_ptr().add(i * NR) as *mut _, acc0[i]);
            _mm256_storeu_si256(sums.as_mut_ptr().add(i * NR + 8) as *mut _, acc1[i]);
        }
    }
}

/// `acc[i, j] += (sums[i, j] as f32 · row_scale[i]) · scale[j]` for the `row_scale.len()` rows
/// and `scale.len()` (<= 16) columns of a 16-column tile: the order of operations of the VNNI
/// and AMX paths' rescale (whose integer, after its offset correction, is this one), so the
/// floats agree bit for bit. Columns past `scale.len()` get zero.
///
/// # Safety
/// The CPU must have AVX2; `sums` and `acc` hold `row_scale.len()` rows of 16.
#[target_feature(enable = "avx2")]
unsafe fn rescale(sums: &[i32], scale: &[f32], row_scale: &[f32], acc: &mut [f32]) {
    let mut padded = [0f32; NR];
    padded[..scale.len()].copy_from_slice(scale);
    debug_assert!(sums.len() >= row_scale.len() * NR && acc.len() >= row_scale.len() * NR);
    // SAFETY: 16 values in `padded`; `row_scale.len()` rows of 16 in `sums` and `acc`.
    unsafe {
        let cols = [
            _mm256_loadu_ps(padded.as_ptr()),
            _mm256_loadu_ps(padded.as_ptr().add(8)),
        ];
        for (i, &sa) in row_scale.iter().enumerate() {
            let sa = _mm256_set1_ps(sa);
            for (h, col) in cols.iter().enumerate() {
                let at = i * NR + 8 * h;
                let exact =
                    _mm256_cvtepi32_ps(_mm256_loadu_si256(sums.as_ptr().add(at) as *const _));
                let term = _mm256_mul_ps(_mm256_mul_ps(exact, sa), *col);
                let out = acc.as_mut_ptr().add(at);
                _mm256_storeu_ps(out, _mm256_add_ps(_mm256_loadu_ps(out), term));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 quantisation gives the scalar definition's bytes (signed) and scale.
    #[test]
    fn quantisation_matches_the_scalar_definition() {
        if !available() {
            return;
        }
        let mut rows: Vec<Vec<f32>> = (0..70)
            .map(|len| {
                (0..len)
                    .map(|i| match i % 7 {
                        0 => 127.0,
                        1 => (i as f32) * 0.5 - 20.0,
                        2 => -((i as f32) * 0.5 + 0.5),
                        3 => 2.5,
                        4 => -0.0,
                        5 => 126.49999,
                        _ => (i as f32 * 1.37).sin() * 100.0,
                    })
                    .collect()
            })
            .collect();
        rows.push(vec![0.0; 21]);
        rows.push(vec![1.0, f32::NAN, -3.0, 0.5, 7.25, 1.0, 2.0, 3.0, -0.5]);
        rows.push(vec![f32::INFINITY, 1.0, -2.0]);
        rows.push(vec![
            f32::NEG_INFINITY,
            f32::NAN,
            3.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
            1.0,
        ]);
        rows.push((0..33).map(|i| 1e-40 * i as f32).collect());
        for row in &rows {
            let words = row.len().div_ceil(4);
            let mut want = vec![0u32; words];
            let scale = super::super::quantize_row_scalar(row, false, &mut want);
            let mut got = vec![0u32; words + 1];
            got[words] = 0xdead_beef;
            // SAFETY: AVX2 (checked above); `words` words.
            let s = unsafe { quantize_row(row, &mut got[..words]) };
            assert_eq!(s.to_bits(), scale.to_bits(), "scale of {row:?}");
            assert_eq!(&got[..words], &want[..], "{row:?}");
            assert_eq!(got[words], 0xdead_beef, "wrote past the row's words");
        }
    }
}
