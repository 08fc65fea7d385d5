//! The bounds every request and input is checked against before any work or allocation.
//!
//! One [`Limits`] value holds them all. The defaults accept everything the official model can
//! use and refuse what would only cost time or memory (a four-billion-step schedule, a
//! gigapixel image, a prompt sampled at two gigahertz). A server lowers the ones it cares about
//! (`AudioX::builder().limits(..)` in the `audiox` crate); `docs/guide.md` lists them in one
//! table. A value outside its bound is an [`Error::OutOfRange`] naming the field, the value and
//! the bound.

use std::time::Duration;

use crate::error::{Error, Result};

/// Bounds on request values and input sizes. Every field is public: start from
/// [`Limits::default`] and change what you need.
///
/// ```
/// use audiox_core::limits::Limits;
/// let server = Limits {
///     max_steps: 64,
///     max_num_samples: 4,
///     ..Limits::default()
/// };
/// assert!(server.check_count("steps", 100, server.max_steps).is_err());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Most sampler steps (default 1000; the teacher's default is 250).
    pub max_steps: usize,
    /// Most samples in one request (default 16).
    pub max_num_samples: usize,
    /// Longest text or negative prompt, in characters (default 10,000; T5 reads the first 128
    /// tokens only).
    pub max_prompt_chars: usize,
    /// Latest start offset into a video or an audio prompt, in seconds (default 86,400: a day).
    pub max_start_seconds: f64,
    /// Longest audio prompt held in a request, in seconds (default 600). Decoding a file
    /// with `Audio::read_window` keeps only the window that is used.
    pub max_prompt_audio_seconds: f64,
    /// Highest sample rate of an audio prompt, in Hz (default 384,000).
    pub max_sample_rate: u32,
    /// Most channels of an audio prompt (default 32).
    pub max_channels: usize,
    /// Largest side of an image or a video frame, in pixels (default 8192).
    pub max_image_side: usize,
    /// Most pixels of an image or a video frame (default 8192 x 4320, 8K).
    pub max_image_pixels: usize,
    /// Most frames of caller-decoded video (default 100,000).
    pub max_video_frames: usize,
    /// Highest classifier-free guidance scale (default 100; must also be finite and >= 0).
    pub max_guidance: f32,
    /// Longest run of one ffmpeg or ffprobe call (default 600 s); the child is killed then.
    pub ffmpeg_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 1000,
            max_num_samples: 16,
            max_prompt_chars: 10_000,
            max_start_seconds: 86_400.0,
            max_prompt_audio_seconds: 600.0,
            max_sample_rate: 384_000,
            max_channels: 32,
            max_image_side: 8192,
            max_image_pixels: 8192 * 4320,
            max_video_frames: 100_000,
            max_guidance: 100.0,
            ffmpeg_timeout: Duration::from_secs(600),
        }
    }
}

impl Limits {
    /// `value <= limit`, else an [`Error::OutOfRange`] for `field`.
    pub fn check_count(&self, field: &str, value: usize, limit: usize) -> Result<()> {
        if value > limit {
            return Err(Error::out_of_range(
                field,
                value,
                format!("at most {limit}"),
            ));
        }
        Ok(())
    }

    /// `value` finite and in `[min, max]`, else an [`Error::OutOfRange`] for `field`.
    pub fn check_range(&self, field: &str, value: f64, min: f64, max: f64) -> Result<()> {
        if !(value.is_finite() && value >= min && value <= max) {
            return Err(Error::out_of_range(
                field,
                short(value),
                format!("a finite number in [{min}, {max}]"),
            ));
        }
        Ok(())
    }

    /// A start offset in seconds: finite, `>= 0` and at most [`Limits::max_start_seconds`].
    pub fn check_start(&self, field: &str, seconds: f64) -> Result<()> {
        self.check_range(field, seconds, 0.0, self.max_start_seconds)
    }

    /// An image or frame size: both sides positive and at most [`Limits::max_image_side`],
    /// the area at most [`Limits::max_image_pixels`]. Checked before any pixel is decoded.
    pub fn check_image(&self, what: &str, width: usize, height: usize) -> Result<()> {
        let value = format!("{width} x {height}");
        if width == 0 || height == 0 {
            return Err(Error::out_of_range(
                format!("{what} size"),
                value,
                "both sides positive",
            ));
        }
        let side = self.max_image_side;
        if width > side || height > side {
            return Err(Error::out_of_range(
                format!("{what} size"),
                value,
                format!("each side at most {side} pixels"),
            ));
        }
        let pixels = self.max_image_pixels;
        if width.saturating_mul(height) > pixels {
            return Err(Error::out_of_range(
                format!("{what} size"),
                value,
                format!("at most {pixels} pixels"),
            ));
        }
        Ok(())
    }

    /// The rate and channel count of an audio prompt.
    pub fn check_audio_format(&self, what: &str, rate: u32, channels: usize) -> Result<()> {
        if rate == 0 || rate > self.max_sample_rate {
            return Err(Error::out_of_range(
                format!("{what} sample rate"),
                format!("{rate} Hz"),
                format!("between 1 and {} Hz", self.max_sample_rate),
            ));
        }
        if channels == 0 || channels > self.max_channels {
            return Err(Error::out_of_range(
                format!("{what} channels"),
                channels,
                format!("between 1 and {}", self.max_channels),
            ));
        }
        Ok(())
    }
}

/// `value` in plain notation when short, in scientific notation when huge or tiny.
fn short(value: f64) -> String {
    let a = value.abs();
    if a != 0.0 && a.is_finite() && !(1e-6..1e9).contains(&a) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

/// The first non-finite value of planar `channels`, as an [`Error::OutOfRange`] for `what`.
pub fn check_finite(what: &str, channels: &[Vec<f32>]) -> Result<()> {
    for (c, samples) in channels.iter().enumerate() {
        if let Some(i) = samples.iter().position(|x| !x.is_finite()) {
            return Err(Error::out_of_range(
                format!("{what} (channel {c}, sample {i})"),
                samples[i],
                "a finite number",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bound_is_an_error_naming_field_value_and_limit() {
        let l = Limits::default();
        let e = l
            .check_count("steps", l.max_steps + 1, l.max_steps)
            .unwrap_err();
        let text = e.to_string();
        assert!(text.contains("steps"), "{text}");
        assert!(text.contains(&(l.max_steps + 1).to_string()), "{text}");
        assert!(text.contains(&l.max_steps.to_string()), "{text}");
        assert!(l.check_count("steps", l.max_steps, l.max_steps).is_ok());
        for bad in [f64::NAN, f64::INFINITY, -1.0, l.max_start_seconds * 2.0] {
            assert!(matches!(
                l.check_start("start", bad),
                Err(Error::OutOfRange { .. })
            ));
        }
        assert!(l.check_start("start", 0.0).is_ok());
        let side = l.max_image_side;
        assert!(l.check_image("image", side, 1).is_ok());
        assert!(l.check_image("image", side + 1, 1).is_err());
        assert!(l.check_image("image", 0, 1).is_err());
        assert!(l.check_image("image", side, side).is_err() || side * side <= l.max_image_pixels);
        assert!(l.check_audio_format("prompt", 1_999_999_973, 2).is_err());
        assert!(l.check_audio_format("prompt", l.max_sample_rate, 2).is_ok());
        assert!(l.check_audio_format("prompt", 44100, 0).is_err());
        assert!(check_finite("x", &[vec![0.0, 1.0], vec![f32::NAN]]).is_err());
        assert!(check_finite("x", &[vec![f32::NEG_INFINITY]]).is_err());
        assert!(check_finite("x", &[vec![0.0, -1.0]]).is_ok());
    }
}
