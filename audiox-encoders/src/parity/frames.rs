//! Parity check against the golden fixture `video_frames`: frame selection, resize, padding,
//! and the CLIP and Synchformer pixel pre-processing.

use burn::tensor::Device;
use serde_json::Value;

use audiox_core::fixtures::{Check, Fixture};
use audiox_core::{Error, Result};

use crate::frames::{
    FrameSampling, ImageScaling, Pixels, Resizer, SampledFrames, StillImage, VideoFrames,
};

/// Tolerance for the float32 resize before rounding when the fixture suggests none. Our kernel
/// reproduces the reference machine's bit for bit; a few float32 steps at 255 allow for a
/// reference built without fused multiply-adds.
const RESIZE_F32_ATOL: f64 = 1e-4;

/// One case of the fixture's JSON `cases`.
#[derive(Debug, Clone)]
pub struct FrameCase {
    /// Case name, the middle part of its tensor names.
    pub name: String,
    /// Target frame rate.
    pub target_fps: f64,
    /// Seconds wanted (-1: the reference's "all frames").
    pub duration: f64,
    /// Start in seconds.
    pub seek_time: f64,
    /// Frame rate the source declares.
    pub declared_fps: f64,
    /// A still image (frame 0 of the source clip) instead of the clip.
    pub image: bool,
}

impl FrameCase {
    /// Whether this crate can produce the case: the reference's `duration = -1` ("all frames",
    /// whose truncation drops the last `target_fps` frames) is refused by [`FrameSampling`],
    /// since nothing here reads a video without a duration.
    pub fn reachable(&self) -> bool {
        self.duration > 0.0
    }
}

/// The cases of a `video_frames` fixture.
pub fn frame_cases(fx: &Fixture) -> Result<Vec<FrameCase>> {
    let bad = |m: String| Error::Fixture {
        path: format!("{}.json", fx.name()).into(),
        message: m,
    };
    let cases = fx
        .field("cases")?
        .as_array()
        .ok_or_else(|| bad("`cases` is not a list".into()))?;
    cases
        .iter()
        .map(|c| {
            let num = |k: &str| {
                c.get(k)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad(format!("case without a number `{k}`")))
            };
            Ok(FrameCase {
                name: c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("case without a name".into()))?
                    .to_string(),
                target_fps: num("target_fps")?,
                duration: num("duration")?,
                seek_time: num("seek_time").unwrap_or(0.0),
                declared_fps: num("declared_fps")?,
                image: c.get("image").and_then(Value::as_bool).unwrap_or(false),
            })
        })
        .collect()
}

fn integers(fx: &Fixture, name: &str, got: &[usize], atol: f64) -> Result<Check> {
    let want = fx.i64(name)?;
    let want_f: Vec<f32> = want.values.iter().map(|&v| v as f32).collect();
    let got_f: Vec<f32> = got.iter().map(|&v| v as f32).collect();
    Ok(Check::compare(
        name,
        &want.shape,
        &want_f,
        &[got.len()],
        &got_f,
        atol,
        0.0,
    ))
}

fn bytes(fx: &Fixture, name: &str, shape: &[usize], got: &[u8]) -> Result<Check> {
    let want = fx.i64(name)?;
    let want_f: Vec<f32> = want.values.iter().map(|&v| v as f32).collect();
    let got_f: Vec<f32> = got.iter().map(|&v| v as f32).collect();
    let (atol, rtol) = fx.tolerance(name)?;
    Ok(Check::compare(
        name,
        &want.shape,
        &want_f,
        shape,
        &got_f,
        atol,
        rtol,
    ))
}

/// `video_frames`: every case of the fixture's JSON `cases` that this crate can produce (see
/// [`FrameCase::reachable`]).
///
/// Per video case: `mid.<case>.selected_ids` and `out.<case>.frame_index` (exact), the resized
/// frames `out.<case>.frames_u8` (within the fixture's tolerance of 1: only a bit-exact float32
/// kernel rounds every near-tie alike), `mid.<case>.resize_f32` (before rounding) where stored,
/// and the pixel pre-processing (`clip_pixel_values` / `sync_pixel_values`), which is computed
/// from the fixture's own uint8 frames so that it is tested in isolation from the resize.
/// The still-image case uses [`ImageScaling::Reference`].
pub fn check_video_frames(fx: &Fixture, _device: &Device) -> Result<Vec<Check>> {
    let size = fx.field("size")?.as_u64().ok_or_else(|| Error::Fixture {
        path: format!("{}.json", fx.name()).into(),
        message: "`size` is not an integer".into(),
    })? as usize;
    let source = fx.i64("in.source_frames")?;
    let shape: [usize; 4] = source
        .shape
        .clone()
        .try_into()
        .map_err(|_| Error::input_shape("in.source_frames", "[N, H, W, 3]", &source.shape))?;
    let pixels: Vec<u8> = source.values.iter().map(|&v| v as u8).collect();

    let mut checks = Vec::new();
    for case in frame_cases(fx)? {
        if !case.reachable() {
            continue;
        }
        let sampling =
            FrameSampling::new(case.target_fps, case.duration, size).with_seek(case.seek_time);
        let prefix = format!("out.{}", case.name);
        if case.image {
            let [_, h, w, _] = shape;
            let image = StillImage::from_rgb(pixels[..h * w * 3].to_vec(), h, w)?;
            let frames = image.sample(&sampling, ImageScaling::Reference)?;
            let name = format!("{prefix}.frames");
            if fx.has(&name) {
                checks.push(fx.check(&name, &frames.shape(), &frames.pixel_values())?);
            }
            let name = format!("{prefix}.clip_pixel_values");
            if fx.has(&name) {
                checks.push(fx.check(&name, &frames.shape(), &frames.clip_pixel_values())?);
            }
            continue;
        }

        let video = VideoFrames::new(pixels.clone(), shape, case.declared_fps)?;
        let selected = sampling.selected_ids(case.declared_fps, video.len())?;
        let name = format!("mid.{}.selected_ids", case.name);
        if fx.has(&name) {
            checks.push(integers(fx, &name, &selected, 0.0)?);
        }
        let name = format!("mid.{}.resize_f32", case.name);
        if fx.has(&name) {
            let resizer = Resizer::new(video.height(), video.width(), size)?;
            let mut values = Vec::new();
            for &id in &selected {
                let frame = video.frame(id).expect("selected ids exist");
                values.extend(resizer.resize_u8_unrounded(frame)?);
            }
            let (atol, rtol) = fx.tolerance(&name).unwrap_or((RESIZE_F32_ATOL, 0.0));
            checks.push(fx.check_with(
                &name,
                &[selected.len(), 3, size, size],
                &values,
                atol,
                rtol,
            )?);
        }

        let frames = video.sample(&sampling)?;
        let name = format!("{prefix}.frame_index");
        if fx.has(&name) {
            checks.push(integers(fx, &name, frames.source_index(), 0.0)?);
        }
        let name = format!("{prefix}.frames_u8");
        if !fx.has(&name) {
            continue;
        }
        let Pixels::U8(ours) = frames.pixels() else {
            unreachable!("video frames are u8")
        };
        checks.push(bytes(fx, &name, &frames.shape(), ours)?);

        // The pre-processing, from the reference's own frames.
        let reference: Vec<u8> = fx.i64(&name)?.values.iter().map(|&v| v as u8).collect();
        let reference =
            SampledFrames::new(Pixels::U8(reference), size, frames.source_index().to_vec())?;
        let name = format!("{prefix}.clip_pixel_values");
        if fx.has(&name) {
            checks.push(fx.check(&name, &reference.shape(), &reference.clip_pixel_values())?);
        }
        let name = format!("{prefix}.sync_pixel_values");
        if fx.has(&name) {
            let [n, c, h, w] = reference.shape();
            checks.push(fx.check(&name, &[1, n, c, h, w], &reference.sync_pixel_values())?);
        }
    }
    Ok(checks)
}
