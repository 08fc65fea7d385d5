//! Checks of a [`Request`] against the model's [`Limits`], run first in
//! [`AudioX::generate`](crate::AudioX::generate): before the sampler's schedule, the noise, the
//! conditioners or any buffer sized by a request value exists.

use audiox_core::Result;
use audiox_core::limits::Limits;

use crate::request::{AudioPromptMask, Request, SamplerChoice, VideoInput};

/// Every bound of `limits` that `r` can break; `max_duration` is the model's longest output in
/// seconds. The first value out of range is the error ([`audiox_core::Error::OutOfRange`]).
pub(crate) fn check_request(limits: &Limits, r: &Request, max_duration: f64) -> Result<()> {
    let l = limits;
    if let Some(steps) = r.steps {
        l.check_count("steps", steps, l.max_steps)?;
    }
    if let SamplerChoice::Custom(s) = &r.sampler {
        l.check_count("custom sampler steps", s.steps(), l.max_steps)?;
    }
    // `num_samples == 0` and the duration (positive, at most the model's length) are refused
    // by the plan with `InvalidRequest`; their bounds do not depend on the limits.
    l.check_count("num_samples", r.num_samples, l.max_num_samples)?;
    check_text(l, "prompt", &r.prompt)?;
    if let Some(neg) = &r.negative_prompt {
        check_text(l, "negative prompt", neg)?;
    }
    if let Some(g) = r.guidance {
        l.check_range("guidance", g as f64, 0.0, l.max_guidance as f64)?;
    }
    l.check_range("cfg_rescale", r.cfg_rescale as f64, 0.0, 1.0)?;
    l.check_start("video start (seconds)", r.video_start_seconds)?;
    match &r.video {
        Some(VideoInput::Frames(v)) => {
            l.check_count("video frames", v.len(), l.max_video_frames)?;
            l.check_image("video frame", v.width(), v.height())?;
        }
        Some(VideoInput::Image(image)) => l.check_image("image", image.width(), image.height())?,
        // A file's size is checked on ffprobe's report, before ffmpeg decodes a frame.
        Some(VideoInput::File(_)) | None => {}
    }
    if let Some(p) = &r.audio_prompt {
        let a = &p.audio;
        l.check_audio_format("audio prompt", a.sample_rate(), a.num_channels())?;
        l.check_range(
            "audio prompt duration (seconds)",
            a.duration_secs(),
            0.0,
            l.max_prompt_audio_seconds,
        )?;
        l.check_start("audio prompt start (seconds)", p.start_seconds)?;
        if p.start_seconds >= a.duration_secs() {
            return Err(audiox_core::Error::out_of_range(
                "audio prompt start (seconds)",
                p.start_seconds,
                format!("before the end of the prompt ({} s)", a.duration_secs()),
            ));
        }
        a.check_finite("audio prompt sample")?;
        if let AudioPromptMask::Blank(span) = &p.mask {
            l.check_range("audio mask start (seconds)", span.start, 0.0, max_duration)?;
            l.check_range(
                "audio mask end (seconds)",
                span.end,
                span.start,
                max_duration,
            )?;
        }
    }
    Ok(())
}

/// A prompt's length in characters (counted only when its bytes could exceed the bound).
fn check_text(l: &Limits, field: &str, text: &str) -> Result<()> {
    if text.len() > l.max_prompt_chars {
        l.check_count(
            &format!("{field} length (characters)"),
            text.chars().count(),
            l.max_prompt_chars,
        )?;
    }
    Ok(())
}
