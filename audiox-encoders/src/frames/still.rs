//! A PNG/JPEG still image used as a still video.

use std::path::Path;

use super::resize::planar_f32;
use super::{CHANNELS, FrameSampling, Pixels, Resizer, SampledFrames, VideoFrames};
use audiox_core::limits::Limits;
use audiox_core::{Error, Result};

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
    /// Reads a PNG or JPEG file (alpha dropped, grey expanded to RGB), within the default
    /// [`Limits`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with_limits(path, &Limits::default())
    }

    /// [`StillImage::open`] within `limits`: the size in the file's header is checked
    /// ([`Limits::check_image`]) before any pixel is decoded.
    pub fn open_with_limits(path: impl AsRef<Path>, limits: &Limits) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::decode_with_limits(&bytes, limits).map_err(|e| match e {
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

    /// Decodes PNG or JPEG bytes, within the default [`Limits`].
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        Self::decode_with_limits(bytes, &Limits::default())
    }

    /// [`StillImage::decode`] within `limits`: the header's size is checked first, and the
    /// decoder's own allocation limit is set to what such an image needs.
    pub fn decode_with_limits(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let fail = |e: image::ImageError| Error::Image {
            path: None,
            message: e.to_string(),
        };
        let reader = || {
            image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| Error::Image {
                    path: None,
                    message: e.to_string(),
                })
        };
        let (w, h) = reader()?.into_dimensions().map_err(fail)?;
        limits.check_image("image", w as usize, h as usize)?;
        let mut decoder_limits = image::Limits::default();
        let side = u32::try_from(limits.max_image_side).unwrap_or(u32::MAX);
        decoder_limits.max_image_width = Some(side);
        decoder_limits.max_image_height = Some(side);
        // RGBA at 16 bits a channel, the widest layout the PNG and JPEG decoders produce.
        decoder_limits.max_alloc = Some((limits.max_image_pixels as u64).saturating_mul(8));
        let mut reader = reader()?;
        reader.limits(decoder_limits);
        let img = reader.decode().map_err(fail)?;
        let rgb = img.to_rgb8();
        let (w, h) = rgb.dimensions();
        Self::from_rgb(rgb.into_raw(), h as usize, w as usize)
    }

    /// An image from an interleaved `[H, W, 3]` u8 buffer.
    pub fn from_rgb(rgb: Vec<u8>, height: usize, width: usize) -> Result<Self> {
        let bytes = height
            .checked_mul(width)
            .and_then(|n| n.checked_mul(CHANNELS));
        if height == 0 || width == 0 || bytes != Some(rgb.len()) {
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
