//! What to generate: a [`Request`] with its prompts and options.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use audiox_core::audio::Audio;
use audiox_core::noise::NoiseSource;
use audiox_encoders::frames::{ImageScaling, StillImage, VideoFrames};
use audiox_sampler::{Sampler, SamplerKind};

/// The video condition of a request.
#[derive(Debug, Clone)]
pub enum VideoInput {
    /// Frames decoded by the caller (a game engine, a camera pipeline...): RGB, any size and
    /// frame rate; the reference's frame selection and resize are applied.
    Frames(VideoFrames),
    /// A video file, decoded with the `ffmpeg` program (crate feature `video`).
    File(PathBuf),
    /// A still image, used as a video of one repeated frame.
    Image(StillImage),
}

/// Which part of the audio prompt the model sees.
#[derive(Debug, Clone, PartialEq)]
pub enum AudioPromptMask {
    /// The reference's behaviour: a random 25-75 % span of the prompt is blanked (as during
    /// training, where the prompt was the target clip itself). Consumes two random draws.
    Random,
    /// The whole prompt is context (continuation or style reference). Draws nothing.
    Keep,
    /// Blank this span, in seconds from the prompt start (inpainting: the model is told to
    /// fill it). Draws nothing.
    Blank(Range<f64>),
}

/// An audio prompt: the clip, where in it to start, and the mask.
#[derive(Debug, Clone)]
pub struct AudioPrompt {
    /// The audio; resampled to the model's rate and fixed to its channels.
    pub audio: Audio,
    /// Seconds into `audio` where the prompt window starts (reference: `seconds_start`).
    pub start_seconds: f64,
    /// What the model sees of the window.
    pub mask: AudioPromptMask,
}

impl AudioPrompt {
    /// A prompt from the start of `audio`, masked as the reference masks it.
    pub fn new(audio: Audio) -> Self {
        AudioPrompt {
            audio,
            start_seconds: 0.0,
            mask: AudioPromptMask::Random,
        }
    }
}

/// How the sampler is chosen. The defaults are `audiox_sampler::Defaults` (one table, shown in
/// `docs/samplers.md`).
#[derive(Debug, Clone, Default)]
pub enum SamplerChoice {
    /// The loaded model's default: the 4-step DMD sampler for the student, 250 Euler steps with
    /// guidance scale 6 for the teacher (`Defaults::STUDENT`, `Defaults::TEACHER`); the
    /// request's steps and guidance replace the default ones.
    #[default]
    Default,
    /// A built-in sampler, with the request's steps (default: `SamplerKind::default_steps`)
    /// and guidance (default: the model's).
    Builtin(SamplerKind),
    /// A sampler object, used as it is: it carries its own schedule and guidance, so a request
    /// that also sets steps, guidance or a CFG rescale is refused.
    Custom(Arc<dyn Sampler>),
}

impl From<SamplerKind> for SamplerChoice {
    fn from(kind: SamplerKind) -> Self {
        SamplerChoice::Builtin(kind)
    }
}

impl From<Arc<dyn Sampler>> for SamplerChoice {
    fn from(sampler: Arc<dyn Sampler>) -> Self {
        SamplerChoice::Custom(sampler)
    }
}

/// A noise source a request can copy (what [`Request::noise_source`] keeps).
pub(crate) trait RequestNoise: NoiseSource {
    fn boxed_clone(&self) -> Box<dyn RequestNoise>;
}

impl<N: NoiseSource + Clone + 'static> RequestNoise for N {
    fn boxed_clone(&self) -> Box<dyn RequestNoise> {
        Box::new(self.clone())
    }
}

impl Clone for Box<dyn RequestNoise> {
    fn clone(&self) -> Self {
        (**self).boxed_clone()
    }
}

/// One generation request. Build it with [`Request::text`] (or [`Request::new`]) and the
/// builder methods; every option has the reference's default.
///
/// ```
/// use audiox::Request;
/// let request = Request::text("a wooden door creaks open, then slams shut")
///     .seed(7)
///     .num_samples(2)
///     .duration(5.0);
/// assert_eq!(request.prompt(), "a wooden door creaks open, then slams shut");
/// // A request is a value: a clone generates the same audio (same seed or noise source).
/// let again = request.clone();
/// ```
#[derive(Clone)]
pub struct Request {
    pub(crate) prompt: String,
    pub(crate) negative_prompt: Option<String>,
    pub(crate) video: Option<VideoInput>,
    pub(crate) video_start_seconds: f64,
    pub(crate) image_scaling: ImageScaling,
    pub(crate) audio_prompt: Option<AudioPrompt>,
    pub(crate) seed: Option<u64>,
    pub(crate) steps: Option<usize>,
    pub(crate) sampler: SamplerChoice,
    pub(crate) guidance: Option<f32>,
    pub(crate) cfg_rescale: f32,
    pub(crate) num_samples: usize,
    pub(crate) duration: Option<f64>,
    pub(crate) normalize: bool,
    pub(crate) noise: Option<Box<dyn RequestNoise>>,
    pub(crate) keep_intermediates: bool,
    // Sound-effect output options (issue 18, see `postprocess.rs`).
    pub(crate) output: crate::postprocess::OutputOptions,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("prompt", &self.prompt)
            .field("negative_prompt", &self.negative_prompt)
            .field("video", &self.video.as_ref().map(|_| "..."))
            .field(
                "audio_prompt",
                &self.audio_prompt.as_ref().map(|p| p.audio.duration_secs()),
            )
            .field("seed", &self.seed)
            .field("steps", &self.steps)
            .field("sampler", &self.sampler)
            .field("guidance", &self.guidance)
            .field("num_samples", &self.num_samples)
            .field("duration", &self.duration)
            .field("normalize", &self.normalize)
            .field("noise", &self.noise.as_ref().map(|_| "custom"))
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Default for Request {
    fn default() -> Self {
        Request {
            prompt: String::new(),
            negative_prompt: None,
            video: None,
            video_start_seconds: 0.0,
            image_scaling: ImageScaling::default(),
            audio_prompt: None,
            seed: None,
            steps: None,
            sampler: SamplerChoice::Default,
            guidance: None,
            cfg_rescale: 0.0,
            num_samples: 1,
            duration: None,
            normalize: true,
            noise: None,
            keep_intermediates: false,
            output: crate::postprocess::OutputOptions::default(),
        }
    }
}

impl Request {
    /// A request with no text (video-, image- or audio-only generation; add the condition with
    /// the builder methods). An empty prompt is what the reference feeds for "no text".
    pub fn new() -> Self {
        Self::default()
    }

    /// A text-to-audio request.
    pub fn text(prompt: impl Into<String>) -> Self {
        Request {
            prompt: prompt.into(),
            ..Self::default()
        }
    }

    /// The text prompt.
    pub fn prompt(&self) -> &str {
        &self.prompt
    }

    /// Sets the text prompt.
    pub fn with_text(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = prompt.into();
        self
    }

    /// A negative prompt: with classifier-free guidance, the unconditional branch is the
    /// context of this text (with the request's video and audio conditions) instead of the
    /// all-zero context. Needs a guided sampler (guidance scale above 1).
    pub fn negative_prompt(mut self, text: impl Into<String>) -> Self {
        self.negative_prompt = Some(text.into());
        self
    }

    /// Conditions on video frames decoded by the caller.
    pub fn video_frames(mut self, frames: VideoFrames) -> Self {
        self.video = Some(VideoInput::Frames(frames));
        self
    }

    /// Conditions on a video file (decoded with `ffmpeg`; crate feature `video`).
    pub fn video_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.video = Some(VideoInput::File(path.into()));
        self
    }

    /// Seconds into the video where the conditioning window starts.
    pub fn video_start(mut self, seconds: f64) -> Self {
        self.video_start_seconds = seconds;
        self
    }

    /// Conditions on a still image (treated as a video of one repeated frame).
    pub fn image(mut self, image: StillImage) -> Self {
        self.video = Some(VideoInput::Image(image));
        self
    }

    /// How a still image's pixels are scaled: [`ImageScaling::LikeVideo`] (default, correct)
    /// or [`ImageScaling::Reference`] (the reference's double division by 255, near-black
    /// frames for CLIP; see `docs/video.md`).
    pub fn image_scaling(mut self, scaling: ImageScaling) -> Self {
        self.image_scaling = scaling;
        self
    }

    /// An audio prompt (continuation / inpainting context).
    pub fn audio_prompt(mut self, prompt: AudioPrompt) -> Self {
        self.audio_prompt = Some(prompt);
        self
    }

    /// The seed of the request's random generator (random when not set; the one used is
    /// reported in the output).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Sampler steps (default: the model's, 4 for the student and 250 for the teacher, or the
    /// named sampler's `SamplerKind::default_steps`; not allowed with a sampler object).
    pub fn steps(mut self, steps: usize) -> Self {
        self.steps = Some(steps);
        self
    }

    /// The sampler: a built-in ([`SamplerKind`], which also parses from its name) or a sampler
    /// object (`Arc<dyn Sampler>`, with its own schedule and guidance: the request's
    /// [`steps`](Self::steps), [`guidance`](Self::guidance) and
    /// [`cfg_rescale`](Self::cfg_rescale) must then stay unset, or the request is refused).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use audiox::Request;
    /// use audiox::sampler::{Dmd, Sampler, SamplerKind};
    ///
    /// let builtin = Request::text("rain").sampler(SamplerKind::Heun).steps(20);
    /// let object: Arc<dyn Sampler> = Arc::new(Dmd::new(2));
    /// let custom = Request::text("rain").sampler(object);
    /// ```
    pub fn sampler(mut self, sampler: impl Into<SamplerChoice>) -> Self {
        self.sampler = sampler.into();
        self
    }

    /// Classifier-free guidance scale (1 = none; default: none for the student, 6 for the
    /// teacher; not allowed with a sampler object).
    pub fn guidance(mut self, scale: f32) -> Self {
        self.guidance = Some(scale);
        self
    }

    /// CFG rescale factor `phi` in `[0, 1]` (0 = off, the reference's default; not allowed
    /// with a sampler object).
    pub fn cfg_rescale(mut self, phi: f32) -> Self {
        self.cfg_rescale = phi;
        self
    }

    /// How many variations to generate in one batch (different noise, same conditions).
    pub fn num_samples(mut self, n: usize) -> Self {
        self.num_samples = n;
        self
    }

    /// Seconds of audio to return (default: the model's `conditioning_seconds`, 10 s). The
    /// model always generates its trained length; shorter durations are trimmed from it, longer
    /// ones (up to `long_form::MAX_LONG_FORM_SECONDS`) are generated by windowed continuation
    /// with the default [`crate::LongFormOptions`] (see [`crate::long_form`]).
    pub fn duration(mut self, seconds: f64) -> Self {
        self.duration = Some(seconds);
        self
    }

    /// Whether to peak-normalise the output as the reference does (default true).
    pub fn normalize(mut self, on: bool) -> Self {
        self.normalize = on;
        self
    }

    /// Draws every random number from `noise` instead of a seeded generator (replaying
    /// recorded draws, or a generator of your own). The draws happen in the reference's order:
    /// initial noise, audio mask ratio and start, VAE posterior noise, then the sampler's.
    ///
    /// Each generation starts from a copy of `noise` as it is now, like a seed: generating
    /// the request (or a clone of it) twice draws the same numbers. (A source that shares
    /// state between its clones, through an `Arc`, shares it between those runs too.) Every
    /// draw is checked: a value that is not finite, a uniform outside `[0, 1)`, an integer
    /// outside its range or a draw of the wrong length is an `Error::Contract`.
    pub fn noise_source(mut self, noise: impl NoiseSource + Clone + 'static) -> Self {
        self.noise = Some(Box::new(noise));
        self
    }

    /// Keeps the intermediate tensors (tokens, condition streams, fused context, latent,
    /// untrimmed audio) in the output.
    pub fn keep_intermediates(mut self, keep: bool) -> Self {
        self.keep_intermediates = keep;
        self
    }

    // -- Sound-effect output options (issue 18) ------------------------------------------------

    /// Post-processing applied to every output clip after decoding: sample rate, mono,
    /// silence trimming, fade-out, loudness normalisation (which then replaces the peak
    /// normalisation). See [`OutputOptions`](crate::postprocess::OutputOptions).
    ///
    /// ```
    /// use audiox::{Request, postprocess::OutputOptions};
    /// let r = Request::text("a sword swing").output(
    ///     OutputOptions::new().sample_rate(48_000).mono(true).loudness(-16.0),
    /// );
    /// assert_eq!(r.output_options().sample_rate, Some(48_000));
    /// ```
    pub fn output(mut self, options: crate::postprocess::OutputOptions) -> Self {
        self.output = options;
        self
    }

    /// The output options of the request.
    pub fn output_options(&self) -> &crate::postprocess::OutputOptions {
        &self.output
    }
}
