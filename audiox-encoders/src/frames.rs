//! Decoded video frames and what the reference does to them before the encoders see them.
//!
//! * [`VideoFrames`]: decoded RGB video, `[N, H, W, 3]` u8 plus its declared average frame rate
//!   (the layout a decoder returns; a host application with its own decoder builds it directly).
//! * [`FrameSampling`]: the reference's frame selection (`read_video`): decimation by an integer
//!   step, then padding by repeating the last frame (or truncation) to
//!   `int(duration * target_fps)` frames, and the square output size.
//! * [`Resizer`]: torchvision's antialiased bilinear resize of uint8 frames, reproduced
//!   operation by operation (float32 separable passes, width first, round half to even).
//! * [`SampledFrames`]: the result, `[N, 3, S, S]`, with the CLIP pre-processing
//!   ([`SampledFrames::clip_pixel_values`]) and the Synchformer pre-processing
//!   ([`SampledFrames::sync_pixel_values`]).
//! * [`StillImage`]: a PNG/JPEG image used as a still video, scaled like a video frame by default
//!   or, on request, the way the reference scales it ([`ImageScaling`]).
//!
//! `docs/video.md` describes the whole video path and where it departs from the reference.

use std::collections::HashMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use audiox_core::{Error, Result};

use crate::clip::{CLIP_MEAN, CLIP_STD};

/// Colour channels of every frame (RGB).
pub const CHANNELS: usize = 3;

// ---------------------------------------------------------------------------------------------
// Decoded video
// ---------------------------------------------------------------------------------------------

/// Decoded RGB video: `[N, H, W, 3]` u8, row-major (frame, row, column, channel), plus the
/// average frame rate the container declares.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoFrames {
    pixels: Vec<u8>,
    len: usize,
    height: usize,
    width: usize,
    fps: f64,
}

fn check_fps(fps: f64, what: &str) -> Result<()> {
    if fps.is_finite() && fps > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{what} must be a positive frame rate, got {fps}"
        )))
    }
}

impl VideoFrames {
    /// Frames from a `[N, H, W, C]` u8 buffer. `C` must be 3 (RGB: drop an alpha channel or
    /// expand grey frames first); `N`, `H`, `W` must be positive and `fps` a positive rate.
    pub fn new(pixels: Vec<u8>, shape: [usize; 4], fps: f64) -> Result<Self> {
        let [len, height, width, channels] = shape;
        let expected = "[N >= 1, H >= 1, W >= 1, 3] (RGB)";
        if channels != CHANNELS || len == 0 || height == 0 || width == 0 {
            return Err(Error::input_shape("video frames", expected, &shape));
        }
        if pixels.len() != len * height * width * channels {
            return Err(Error::input_shape(
                "video frame buffer",
                format!("{} bytes for {shape:?}", len * height * width * channels),
                &[pixels.len()],
            ));
        }
        check_fps(fps, "the video's frame rate")?;
        Ok(VideoFrames {
            pixels,
            len,
            height,
            width,
            fps,
        })
    }

    /// Frames from separate RGB images, which must all have the same size.
    pub fn from_images(images: &[image::RgbImage], fps: f64) -> Result<Self> {
        let first = images
            .first()
            .ok_or_else(|| Error::input_shape("video frames", "at least one frame", &[0]))?;
        let (width, height) = first.dimensions();
        let mut pixels = Vec::with_capacity(images.len() * first.as_raw().len());
        for (i, img) in images.iter().enumerate() {
            if img.dimensions() != (width, height) {
                return Err(Error::input_shape(
                    format!("video frame {i}"),
                    format!("{height}x{width} like frame 0"),
                    &[img.height() as usize, img.width() as usize],
                ));
            }
            pixels.extend_from_slice(img.as_raw());
        }
        Self::new(
            pixels,
            [images.len(), height as usize, width as usize, CHANNELS],
            fps,
        )
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a video has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Frame width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Declared average frame rate.
    pub fn fps(&self) -> f64 {
        self.fps
    }

    /// The whole buffer, `[N, H, W, 3]`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pixels
    }

    /// Frame `i` as `[H, W, 3]`.
    pub fn frame(&self, i: usize) -> Option<&[u8]> {
        let n = self.height * self.width * CHANNELS;
        self.pixels.get(i * n..(i + 1) * n)
    }

    /// The reference's `read_video` on these frames: selection, resize to `S x S`, padding.
    pub fn sample(&self, sampling: &FrameSampling) -> Result<SampledFrames> {
        let [frames] = self.sample_streams([*sampling])?;
        Ok(frames)
    }

    /// Several streams from the same video (the CLIP and Synchformer streams of a request);
    /// every source frame is resized once per output size, however many streams use it.
    pub fn sample_streams<const K: usize>(
        &self,
        samplings: [FrameSampling; K],
    ) -> Result<[SampledFrames; K]> {
        let mut selections = Vec::with_capacity(K);
        for s in &samplings {
            selections.push(s.selected_ids(self.fps, self.len)?);
        }
        let mut resized = ResizedFrames::default();
        for (s, ids) in samplings.iter().zip(&selections) {
            let resizer = Resizer::new(self.height, self.width, s.size)?;
            let todo: Vec<usize> = ids
                .iter()
                .copied()
                .filter(|&id| !resized.contains(id, s.size))
                .collect();
            let frames: Vec<&[u8]> = todo
                .iter()
                .map(|&id| {
                    self.frame(id)
                        .expect("selected ids are below the frame count")
                })
                .collect();
            for (id, out) in todo.iter().zip(resizer.resize_many_u8(&frames)?) {
                resized.insert(*id, s.size, out);
            }
        }
        let streams: Vec<SampledFrames> = samplings
            .iter()
            .zip(&selections)
            .map(|(s, ids)| resized.assemble(s, ids))
            .collect();
        Ok(streams
            .try_into()
            .unwrap_or_else(|_| unreachable!("one stream per sampling")))
    }
}

// ---------------------------------------------------------------------------------------------
// Frame selection
// ---------------------------------------------------------------------------------------------

/// Which frames of a video an encoder sees, and at what size: the reference's `read_video`
/// with `seek_time`, `duration` and `target_fps`, resizing to `size x size`.
///
/// Selection: `seek = int(seek_seconds * fps)`, `step = ceil(fps / target_fps)` (decimation by
/// an integer step, not resampling: a 30 fps clip read at 25 fps takes every second frame), frames
/// `seek, seek + step, ...` below `min(seek + int(target_fps * duration) * step, N)`; then the
/// last selected frame is repeated up to `int(duration * target_fps)` frames.
///
/// The reference also accepts `duration = -1` ("all frames"), where its truncation drops the
/// last `target_fps` frames; nothing in this crate reads a video without a duration, so that
/// case is refused here (see `docs/video.md`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameSampling {
    /// Output frames per second of video (5 for CLIP, 25 for Synchformer).
    pub target_fps: f64,
    /// Seconds of video wanted; the output has `int(duration_seconds * target_fps)` frames.
    pub duration_seconds: f64,
    /// Where reading starts, in seconds from the first frame.
    pub seek_seconds: f64,
    /// Side of the square output frames (224 for both encoders at full size).
    pub size: usize,
}

impl FrameSampling {
    /// `duration_seconds` of video from the start, at `target_fps`, resized to `size x size`.
    pub fn new(target_fps: f64, duration_seconds: f64, size: usize) -> Self {
        FrameSampling {
            target_fps,
            duration_seconds,
            seek_seconds: 0.0,
            size,
        }
    }

    /// Starts reading `seconds` into the video.
    pub fn with_seek(mut self, seconds: f64) -> Self {
        self.seek_seconds = seconds;
        self
    }

    /// Checks the numbers: positive rate, duration and size, a non-negative seek, and at
    /// least one output frame.
    pub fn validate(&self) -> Result<()> {
        check_fps(self.target_fps, "the target frame rate")?;
        if !(self.duration_seconds.is_finite() && self.duration_seconds > 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the video duration must be positive seconds, got {}",
                self.duration_seconds
            )));
        }
        if !(self.seek_seconds.is_finite() && self.seek_seconds >= 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the video start must be non-negative seconds, got {}",
                self.seek_seconds
            )));
        }
        if self.size == 0 {
            return Err(Error::InvalidRequest(
                "the frame size must be positive".into(),
            ));
        }
        if self.output_len() == 0 {
            return Err(Error::InvalidRequest(format!(
                "{} s at {} fps is less than one frame",
                self.duration_seconds, self.target_fps
            )));
        }
        Ok(())
    }

    /// Frames in the output: `int(duration * target_fps)`.
    pub fn output_len(&self) -> usize {
        (self.duration_seconds * self.target_fps) as usize
    }

    /// Decimation step for a source at `source_fps`: `ceil(source_fps / target_fps)`.
    pub fn step(&self, source_fps: f64) -> usize {
        // upstream: decimation by an integer step, not resampling (30 fps read at 25 fps takes
        // every second frame); the model was trained on frames picked this way.
        ((source_fps / self.target_fps).ceil() as usize).max(1)
    }

    /// First source frame: `int(seek_seconds * source_fps)`.
    pub fn seek_frame(&self, source_fps: f64) -> usize {
        (self.seek_seconds * source_fps) as usize
    }

    /// The frames the selection asks for before knowing the video's length (the selection is
    /// those below the frame count).
    pub fn candidate_ids(
        &self,
        source_fps: f64,
    ) -> Result<std::iter::StepBy<std::ops::Range<usize>>> {
        self.validate()?;
        check_fps(source_fps, "the video's frame rate")?;
        let step = self.step(source_fps);
        let start = self.seek_frame(source_fps);
        let wanted = (self.target_fps * self.duration_seconds) as usize;
        Ok((start..start + wanted * step).step_by(step))
    }

    /// Source frames selected from a video of `total_frames` frames at `source_fps`, before
    /// padding. Errors when the seek lies beyond the last frame.
    pub fn selected_ids(&self, source_fps: f64, total_frames: usize) -> Result<Vec<usize>> {
        let ids: Vec<usize> = self
            .candidate_ids(source_fps)?
            .take_while(|&id| id < total_frames)
            .collect();
        if ids.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "the video has {total_frames} frames at {source_fps} fps: nothing to read from {} s",
                self.seek_seconds
            )));
        }
        Ok(ids)
    }

    /// The source frame of every output frame: the selection, truncated or padded by repeating
    /// its last frame to [`FrameSampling::output_len`] frames.
    pub fn output_index(&self, selected: &[usize]) -> Vec<usize> {
        let n = self.output_len();
        let last = selected.last().copied().unwrap_or(0);
        (0..n)
            .map(|i| selected.get(i).copied().unwrap_or(last))
            .collect()
    }
}

/// Frames resized to square sizes, by source frame id and size (each `[3, S, S]` u8).
#[derive(Default)]
pub(crate) struct ResizedFrames {
    frames: HashMap<(usize, usize), Vec<u8>>,
}

impl ResizedFrames {
    pub(crate) fn contains(&self, id: usize, size: usize) -> bool {
        self.frames.contains_key(&(id, size))
    }

    pub(crate) fn insert(&mut self, id: usize, size: usize, frame: Vec<u8>) {
        self.frames.insert((id, size), frame);
    }

    /// The output of `sampling` whose selection is `selected` (every id must be present).
    pub(crate) fn assemble(&self, sampling: &FrameSampling, selected: &[usize]) -> SampledFrames {
        let index = sampling.output_index(selected);
        let plane = CHANNELS * sampling.size * sampling.size;
        let mut pixels = Vec::with_capacity(index.len() * plane);
        for id in &index {
            pixels.extend_from_slice(&self.frames[&(*id, sampling.size)]);
        }
        SampledFrames {
            pixels: Pixels::U8(pixels),
            source_index: index,
            size: sampling.size,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Resize
// ---------------------------------------------------------------------------------------------

/// The taps of one axis of the antialiased bilinear resize: for output `i`, input pixels
/// `start[i] .. start[i] + count[i]` with weights `weights[i * max_taps ..]`.
#[derive(Debug, Clone)]
struct AxisTaps {
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f32>,
    max_taps: usize,
}

impl AxisTaps {
    /// PyTorch's `_upsample_bilinear2d_aa` taps for `input -> output` (align_corners false),
    /// with its float32 arithmetic and rounding points.
    fn new(input: usize, output: usize) -> Self {
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
    fn taps(&self, i: usize) -> (usize, &[f32]) {
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
fn planar_f32(frame_hwc: &[u8], divisor: f32) -> Vec<f32> {
    let n = frame_hwc.len() / CHANNELS;
    let mut out = vec![0.0f32; frame_hwc.len()];
    for (p, px) in frame_hwc.chunks_exact(CHANNELS).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[c * n + p] = v as f32 / divisor;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Sampled frames and the encoders' pre-processing
// ---------------------------------------------------------------------------------------------

/// Pixel storage of [`SampledFrames`].
#[derive(Debug, Clone, PartialEq)]
pub enum Pixels {
    /// 0..255 values, as the reference's `read_video` returns for videos.
    U8(Vec<u8>),
    /// Float values in [0, 1]: the reference's still-image path ([`ImageScaling::Reference`]).
    Unit(Vec<f32>),
}

/// Frames ready for the encoders: `[N, 3, S, S]` (frame, channel, row, column), with the source
/// frame each one came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledFrames {
    pixels: Pixels,
    source_index: Vec<usize>,
    size: usize,
}

impl SampledFrames {
    /// Frames prepared elsewhere: `pixels` holds `[N, 3, size, size]` values, `source_index`
    /// one entry per frame (`N >= 1`).
    pub fn new(pixels: Pixels, size: usize, source_index: Vec<usize>) -> Result<Self> {
        let values = match &pixels {
            Pixels::U8(v) => v.len(),
            Pixels::Unit(v) => v.len(),
        };
        let n = source_index.len();
        if n == 0 || size == 0 || values != n * CHANNELS * size * size {
            return Err(Error::input_shape(
                "sampled frames",
                format!("[{n} >= 1, 3, {size}, {size}]"),
                &[values],
            ));
        }
        Ok(SampledFrames {
            pixels,
            source_index,
            size,
        })
    }

    /// Number of frames `N`.
    pub fn len(&self) -> usize {
        self.source_index.len()
    }

    /// Always false: a sampling has at least one frame.
    pub fn is_empty(&self) -> bool {
        self.source_index.is_empty()
    }

    /// Side `S` of the square frames.
    pub fn size(&self) -> usize {
        self.size
    }

    /// `[N, 3, S, S]`.
    pub fn shape(&self) -> [usize; 4] {
        [self.len(), CHANNELS, self.size, self.size]
    }

    /// The source frame of every output frame (0 for every frame of a still image).
    pub fn source_index(&self) -> &[usize] {
        &self.source_index
    }

    /// The pixel values.
    pub fn pixels(&self) -> &Pixels {
        &self.pixels
    }

    /// Whether every value is exactly zero (the video conditioner then uses its learned
    /// "no video" feature).
    pub fn is_all_zero(&self) -> bool {
        match &self.pixels {
            Pixels::U8(v) => v.iter().all(|&x| x == 0),
            Pixels::Unit(v) => v.iter().all(|&x| x == 0.0),
        }
    }

    /// The frames as the video conditioner receives them: `[N, 3, S, S]` float on the 0..255
    /// scale. upstream: frames from [`ImageScaling::Reference`] keep their [0, 1] values here,
    /// which the conditioner's `/ 255` then darkens a second time.
    pub fn pixel_values(&self) -> Vec<f32> {
        match &self.pixels {
            Pixels::U8(v) => v.iter().map(|&x| x as f32).collect(),
            Pixels::Unit(v) => v.clone(),
        }
    }

    /// [`SampledFrames::pixel_values`] as a tensor `[N, 3, S, S]`.
    pub fn to_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.pixel_values(), self.shape()), device)
    }

    /// The CLIP pre-processing of the video conditioner, `[N, 3, S, S]`: `x / 255.0`, then
    /// `(x - mean) / std` per channel, in float32.
    pub fn clip_pixel_values(&self) -> Vec<f32> {
        let plane = self.size * self.size;
        let mut out = self.pixel_values();
        for (i, v) in out.iter_mut().enumerate() {
            let c = (i / plane) % CHANNELS;
            *v = (*v / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
        out
    }

    /// [`SampledFrames::clip_pixel_values`] as a tensor `[N, 3, S, S]`.
    pub fn clip_tensor(&self, device: &Device) -> Tensor<4> {
        Tensor::from_data(
            TensorData::new(self.clip_pixel_values(), self.shape()),
            device,
        )
    }

    /// The Synchformer pre-processing (`encode_video_with_synchformer`): u8 values times
    /// float32(1/255) (floats in [0, 1] are not rescaled), then `(x - 0.5) / 0.5`; values in
    /// [-1, 1], `[N, 3, S, S]`.
    pub fn sync_pixel_values(&self) -> Vec<f32> {
        let scale = 1.0f32 / 255.0;
        let unit: Vec<f32> = match &self.pixels {
            Pixels::U8(v) => v.iter().map(|&x| x as f32 * scale).collect(),
            Pixels::Unit(v) => v.clone(),
        };
        unit.into_iter().map(|x| (x - 0.5) / 0.5).collect()
    }

    /// [`SampledFrames::sync_pixel_values`] with a leading batch axis: `[1, N, 3, S, S]`, the
    /// input of [`Synchformer::forward`](crate::synchformer::Synchformer::forward).
    pub fn sync_tensor(&self, device: &Device) -> Tensor<5> {
        let [n, c, h, w] = self.shape();
        Tensor::from_data(
            TensorData::new(self.sync_pixel_values(), [1, n, c, h, w]),
            device,
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Still images
// ---------------------------------------------------------------------------------------------

/// How a still image's pixels are scaled before the encoders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageScaling {
    /// Like a frame of a video: 0..255 values, resized with rounding to u8. CLIP sees the
    /// image as it sees video frames.
    #[default]
    LikeVideo,
    /// upstream: the reference reads images as floats in [0, 1] (`ToTensor`), resizes them in
    /// float without rounding, and its CLIP pre-processing divides by 255 again, so CLIP sees
    /// near-black frames. The Synchformer input is unaffected. Only for reproducing reference
    /// outputs.
    Reference,
}

/// An RGB still image (PNG or JPEG), used as a still video.
#[derive(Debug, Clone, PartialEq)]
pub struct StillImage {
    rgb: Vec<u8>,
    height: usize,
    width: usize,
}

impl StillImage {
    /// Reads a PNG or JPEG file (alpha dropped, grey expanded to RGB).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode(&bytes).map_err(|e| match e {
            Error::Image {
                path: None,
                message,
            } => Error::Image {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Decodes PNG or JPEG bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let img = image::load_from_memory(bytes).map_err(|e| Error::Image {
            path: None,
            message: e.to_string(),
        })?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        Self::from_rgb(rgb.into_raw(), h as usize, w as usize)
    }

    /// An image from an interleaved `[H, W, 3]` u8 buffer.
    pub fn from_rgb(rgb: Vec<u8>, height: usize, width: usize) -> Result<Self> {
        if height == 0 || width == 0 || rgb.len() != height * width * CHANNELS {
            return Err(Error::input_shape(
                "image",
                format!("[{height}, {width}, 3] with a positive size"),
                &[rgb.len()],
            ));
        }
        Ok(StillImage { rgb, height, width })
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// The pixels, `[H, W, 3]`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.rgb
    }

    /// A still video: the image repeated `frames` times at `fps`.
    pub fn to_video(&self, frames: usize, fps: f64) -> Result<VideoFrames> {
        VideoFrames::new(
            self.rgb.repeat(frames),
            [frames, self.height, self.width, CHANNELS],
            fps,
        )
    }

    /// The image as `int(duration * target_fps)` identical frames of `S x S` (the seek is
    /// irrelevant). [`ImageScaling::LikeVideo`] gives exactly what the same image as a still
    /// video gives; [`ImageScaling::Reference`] reproduces the reference's image path.
    pub fn sample(&self, sampling: &FrameSampling, scaling: ImageScaling) -> Result<SampledFrames> {
        sampling.validate()?;
        let n = sampling.output_len();
        let resizer = Resizer::new(self.height, self.width, sampling.size)?;
        let pixels = match scaling {
            ImageScaling::LikeVideo => Pixels::U8(resizer.resize_u8(&self.rgb)?.repeat(n)),
            ImageScaling::Reference => {
                // upstream: `ToTensor` (u8 / 255 in float32), then the resize on floats.
                let unit = resizer.resize_planar_f32(&planar_f32(&self.rgb, 255.0))?;
                Pixels::Unit(unit.repeat(n))
            }
        };
        Ok(SampledFrames {
            pixels,
            source_index: vec![0; n],
            size: sampling.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_normalised_and_cover_the_input() {
        for (input, output) in [(40, 32), (30, 32), (1920, 224), (224, 224), (7, 3), (3, 7)] {
            let taps = AxisTaps::new(input, output);
            for i in 0..output {
                let w = &taps.weights[i * taps.max_taps..i * taps.max_taps + taps.count[i]];
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{input}->{output} at {i}: {sum}");
                assert!(taps.start[i] + taps.count[i] <= input);
            }
        }
    }

    #[test]
    fn same_size_is_the_identity() {
        let frame: Vec<u8> = (0..5 * 5 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let r = Resizer::new(5, 5, 5).unwrap();
        let out = r.resize_u8(&frame).unwrap();
        // Channels first.
        for p in 0..25 {
            for c in 0..3 {
                assert_eq!(out[c * 25 + p], frame[p * 3 + c]);
            }
        }
    }

    #[test]
    fn a_constant_frame_stays_constant() {
        let frame = vec![77u8; 17 * 29 * 3];
        let out = Resizer::new(17, 29, 8).unwrap().resize_u8(&frame).unwrap();
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn halving_uses_the_stretched_triangle() {
        // 4 -> 2: scale 2, support 2. Output 0 is centred at input coordinate 1.0 and reads
        // pixels 0..3 (pixel 3 lies outside the support) at distances 0.5, 0.5, 1.5 from the
        // centre, i.e. weights 0.75, 0.75, 0.25, normalised by their sum 1.75.
        let taps = AxisTaps::new(4, 2);
        let src = [0.0f32, 100.0, 200.0, 100.0];
        let (start, weights) = taps.taps(0);
        assert_eq!((start, weights.len()), (0, 3));
        let got: f32 = weights.iter().zip(&src[start..]).map(|(w, x)| w * x).sum();
        let expect = (0.0 * 0.75 + 100.0 * 0.75 + 200.0 * 0.25) / 1.75;
        assert!((got - expect).abs() < 1e-4, "{got}");
    }

    #[test]
    fn selection_follows_the_reference_rule() {
        // 30 fps, 5 fps target, 2 s: step 6, 10 frames wanted, 37 available -> 7 + 3 padded.
        let s = FrameSampling::new(5.0, 2.0, 8);
        assert_eq!(s.step(30.0), 6);
        let ids = s.selected_ids(30.0, 37).unwrap();
        assert_eq!(ids, vec![0, 6, 12, 18, 24, 30, 36]);
        assert_eq!(
            s.output_index(&ids),
            vec![0, 6, 12, 18, 24, 30, 36, 36, 36, 36]
        );
        // 24 fps read at 5 fps: step ceil(4.8) = 5; seek 0.5 s -> frame 12.
        let s = FrameSampling::new(5.0, 1.0, 8).with_seek(0.5);
        assert_eq!(s.selected_ids(24.0, 100).unwrap(), vec![12, 17, 22, 27, 32]);
        // A source slower than the target repeats nothing: step 1.
        assert_eq!(FrameSampling::new(25.0, 1.0, 8).step(10.0), 1);
    }

    #[test]
    fn bad_samplings_are_refused() {
        for s in [
            FrameSampling::new(0.0, 1.0, 8),
            FrameSampling::new(5.0, -1.0, 8),
            FrameSampling::new(5.0, 0.1, 8),
            FrameSampling::new(5.0, 1.0, 0),
            FrameSampling::new(5.0, 1.0, 8).with_seek(-1.0),
            FrameSampling::new(f64::NAN, 1.0, 8),
        ] {
            assert!(
                matches!(s.validate(), Err(Error::InvalidRequest(_))),
                "{s:?}"
            );
        }
        // Seeking past the end.
        let s = FrameSampling::new(5.0, 1.0, 8).with_seek(10.0);
        assert!(matches!(
            s.selected_ids(30.0, 37),
            Err(Error::InvalidRequest(_))
        ));
    }

    #[test]
    fn bad_frame_buffers_are_refused() {
        let err = |r: Result<VideoFrames>| matches!(r, Err(Error::InputShape { .. }));
        assert!(err(VideoFrames::new(
            vec![0; 4 * 4 * 4],
            [1, 4, 4, 4],
            30.0
        )));
        assert!(err(VideoFrames::new(vec![], [0, 4, 4, 3], 30.0)));
        assert!(err(VideoFrames::new(vec![0; 10], [1, 4, 4, 3], 30.0)));
        assert!(matches!(
            VideoFrames::new(vec![0; 48], [1, 4, 4, 3], 0.0),
            Err(Error::InvalidRequest(_))
        ));
        assert!(err(VideoFrames::from_images(&[], 30.0)));
        let a = image::RgbImage::new(4, 4);
        let b = image::RgbImage::new(5, 4);
        assert!(err(VideoFrames::from_images(&[a, b], 30.0)));
    }
}
