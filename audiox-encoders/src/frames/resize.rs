//! torchvision's antialiased bilinear resize of uint8 frames, operation by operation.

use super::CHANNELS;
use audiox_core::{Error, Result};

/// The taps of one axis of the antialiased bilinear resize: for output `i`, input pixels
/// `start[i] .. start[i] + count[i]` with weights `weights[i * max_taps ..]`.
#[derive(Debug, Clone)]
pub(super) struct AxisTaps {
    pub(super) start: Vec<usize>,
    pub(super) count: Vec<usize>,
    pub(super) weights: Vec<f32>,
    pub(super) max_taps: usize,
}

impl AxisTaps {
    /// PyTorch's `_upsample_bilinear2d_aa` taps for `input -> output` (align_corners false),
    /// with its float32 arithmetic and rounding points.
    pub(super) fn new(input: usize, output: usize) -> Self {
        let scale = input as f32 / output as f32;
        // Triangle filter of half-width 1, stretched by the scale when shrinking.
        let support = if scale >= 1.0 { scale } else { 1.0 };
        let inv_scale = if scale >= 1.0 {
            (1.0f64 / scale as f64) as f32
        } else {
            1.0
        };
        let max_taps = support.ceil() as usize * 2 + 1;
        let mut start = Vec::with_capacity(output);
        let mut count = Vec::with_capacity(output);
        let mut weights = vec![0.0f32; output * max_taps];
        for i in 0..output {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            let lo = (((center - support) as f64 + 0.5) as i64).max(0);
            let hi = (((center + support) as f64 + 0.5) as i64).min(input as i64);
            let n = (hi - lo).clamp(0, max_taps as i64) as usize;
            let w = &mut weights[i * max_taps..i * max_taps + n];
            let mut total = 0.0f32;
            for (j, wj) in w.iter_mut().enumerate() {
                let d = (j as i64 + lo) as f32 - center;
                let x = (((d as f64) + 0.5) * inv_scale as f64) as f32;
                let x = x.abs();
                *wj = if x < 1.0 { 1.0 - x } else { 0.0 };
                total += *wj;
            }
            if total != 0.0 {
                for wj in w.iter_mut() {
                    *wj /= total;
                }
            }
            start.push(lo as usize);
            count.push(n);
        }
        AxisTaps {
            start,
            count,
            weights,
            max_taps,
        }
    }

    /// First input pixel and weights of output `i`.
    #[inline(always)]
    pub(super) fn taps(&self, i: usize) -> (usize, &[f32]) {
        let at = i * self.max_taps;
        (self.start[i], &self.weights[at..at + self.count[i]])
    }
}

/// torchvision's `Resize((S, S))` of an RGB frame (antialiased bilinear, aspect ratio not
/// kept), prepared once for one input size: separable float32 passes, first along the width,
/// then along the height, each pass skipped when that side already has the output size.
#[derive(Debug, Clone)]
pub struct Resizer {
    in_height: usize,
    in_width: usize,
    size: usize,
    /// Taps along the width, `None` when the width already equals the output size.
    width_taps: Option<AxisTaps>,
    /// Taps along the height, `None` when the height already equals the output size.
    height_taps: Option<AxisTaps>,
}

impl Resizer {
    /// A resizer from `in_height x in_width` to `size x size`.
    pub fn new(in_height: usize, in_width: usize, size: usize) -> Result<Self> {
        if in_height == 0 || in_width == 0 || size == 0 {
            return Err(Error::input_shape(
                "frame resize",
                "positive input and output sizes",
                &[in_height, in_width, size],
            ));
        }
        Ok(Resizer {
            in_height,
            in_width,
            size,
            width_taps: (in_width != size).then(|| AxisTaps::new(in_width, size)),
            height_taps: (in_height != size).then(|| AxisTaps::new(in_height, size)),
        })
    }

    /// Output side `S`.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Resizes planar float frames `[3, H, W]` to `[3, S, S]` (no rounding).
    pub fn resize_planar_f32(&self, planes: &[f32]) -> Result<Vec<f32>> {
        let (h, w) = (self.in_height, self.in_width);
        if planes.len() != CHANNELS * h * w {
            return Err(Error::input_shape(
                "frame to resize",
                format!("[3, {h}, {w}]"),
                &[planes.len()],
            ));
        }
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has the features `passes_avx2` is compiled for (checked above).
            return Ok(unsafe { self.passes_avx2(planes) });
        }
        Ok(self.passes(planes))
    }

    /// [`Resizer::passes`] compiled with hardware fused multiply-adds and 8-wide vectors (the
    /// results are identical; `mul_add` is otherwise a library call).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn passes_avx2(&self, planes: &[f32]) -> Vec<f32> {
        self.passes(planes)
    }

    /// The two separable passes on a checked `[3, H, W]` input. Every output pixel is
    /// accumulated in float32 in tap order as PyTorch's kernel does: the first product
    /// rounded, then one fused multiply-add per further tap (its vectorised CPU build contracts
    /// `acc += x * w`; with a separate multiply and add a quarter of the values differ in the
    /// last bits and some round to the other uint8).
    #[inline(always)]
    fn passes(&self, planes: &[f32]) -> Vec<f32> {
        let (h, w, s) = (self.in_height, self.in_width, self.size);
        // Width pass: [3, H, W] -> [3, H, S], eight rows at a time: the rows are interleaved
        // column by column so that one vector holds the same column of eight rows, and each
        // output column is the same per-pixel sum as `AxisTaps::apply`, eight pixels at once.
        let wide = match &self.width_taps {
            None => planes.to_vec(),
            Some(taps) => {
                const LANES: usize = 8;
                let rows = CHANNELS * h;
                let mut out = vec![0.0f32; rows * s];
                let mut columns = vec![[0.0f32; LANES]; w];
                for first in (0..rows).step_by(LANES) {
                    let lanes = LANES.min(rows - first);
                    for (r, row) in planes[first * w..(first + lanes) * w]
                        .chunks_exact(w)
                        .enumerate()
                    {
                        for (col, &v) in columns.iter_mut().zip(row) {
                            col[r] = v;
                        }
                    }
                    for x in 0..s {
                        let (start, weights) = taps.taps(x);
                        let src = &columns[start..start + weights.len()];
                        let mut acc = [0.0f32; LANES];
                        for (a, &v) in acc.iter_mut().zip(&src[0]) {
                            *a = v * weights[0];
                        }
                        for (col, &wk) in src.iter().zip(weights).skip(1) {
                            for (a, &v) in acc.iter_mut().zip(col) {
                                *a = v.mul_add(wk, *a);
                            }
                        }
                        for (r, &a) in acc[..lanes].iter().enumerate() {
                            out[(first + r) * s + x] = a;
                        }
                    }
                }
                out
            }
        };
        // Height pass: [3, H, S] -> [3, S, S], a whole output row at a time (the same
        // per-pixel operations in the same order, vectorised along the row).
        match &self.height_taps {
            None => wide,
            Some(taps) => {
                let mut out = vec![0.0f32; CHANNELS * s * s];
                for (plane_in, plane_out) in
                    wide.chunks_exact(h * s).zip(out.chunks_exact_mut(s * s))
                {
                    for (y, row_out) in plane_out.chunks_exact_mut(s).enumerate() {
                        let (start, weights) = taps.taps(y);
                        let row = |k: usize| &plane_in[(start + k) * s..(start + k + 1) * s];
                        for (o, &v) in row_out.iter_mut().zip(row(0)) {
                            *o = v * weights[0];
                        }
                        for (k, &wk) in weights.iter().enumerate().skip(1) {
                            for (o, &v) in row_out.iter_mut().zip(row(k)) {
                                *o = v.mul_add(wk, *o);
                            }
                        }
                    }
                }
                out
            }
        }
    }

    /// The float32 result of resizing an interleaved `[H, W, 3]` u8 frame, before rounding,
    /// as `[3, S, S]`.
    pub fn resize_u8_unrounded(&self, frame_hwc: &[u8]) -> Result<Vec<f32>> {
        self.resize_planar_f32(&planar_f32(frame_hwc, 1.0))
    }

    /// torchvision's uint8 path: `[H, W, 3]` u8 -> float32 resize -> round half to even ->
    /// `[3, S, S]` u8. A frame that already has the output size is copied unchanged.
    pub fn resize_u8(&self, frame_hwc: &[u8]) -> Result<Vec<u8>> {
        let resized = self.resize_u8_unrounded(frame_hwc)?;
        Ok(resized
            .iter()
            .map(|&v| v.round_ties_even().clamp(0.0, 255.0) as u8)
            .collect())
    }

    /// [`Resizer::resize_u8`] on many frames, spread over the available cores.
    pub fn resize_many_u8(&self, frames: &[&[u8]]) -> Result<Vec<Vec<u8>>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(frames.len().max(1));
        if threads <= 1 {
            return frames.iter().map(|f| self.resize_u8(f)).collect();
        }
        let chunk = frames.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = frames
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .map(|f| self.resize_u8(f))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            let mut out = Vec::with_capacity(frames.len());
            for h in handles {
                out.extend(h.join().expect("a resize worker panicked")?);
            }
            Ok(out)
        })
    }
}

/// `[H, W, 3]` u8 -> `[3, H, W]` f32, each value divided by `divisor` (true float32 division).
pub(super) fn planar_f32(frame_hwc: &[u8], divisor: f32) -> Vec<f32> {
    let n = frame_hwc.len() / CHANNELS;
    let mut out = vec![0.0f32; frame_hwc.len()];
    for (p, px) in frame_hwc.chunks_exact(CHANNELS).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * n + p] = v as f32 / divisor;
        }
    }
    out
}
