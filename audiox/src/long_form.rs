//! Audio longer than the model's window: windowed continuation, whole-video soundtracks and
//! streamed output.
//!
//! The model generates one window of `conditioning_seconds` (10 s at full size; every size here
//! comes from the model config). A longer request is cut into overlapping windows:
//!
//! ```text
//! window 0  |==========================|
//! window 1                   |~~~~~~~~~|=================|
//! window 2                                      |~~~~~~~~~|=====...
//!                            <-overlap->
//! ```
//!
//! - window `k` starts at `k * (window - overlap)` seconds;
//! - every window after the first is conditioned on the last `overlap` seconds of the previous
//!   window as an **audio prompt**: those seconds at the start of the prompt, kept, the rest of
//!   the prompt blank ([`AudioPromptMask::Blank`]), the masked-prompt form the model was trained
//!   with (the prompt lines up in time with the window it conditions);
//! - every window gets the request's text and its own span of the video (CLIP and Synchformer
//!   frames read from `video_start + k * (window - overlap)` seconds); a video file is decoded
//!   once for all the windows, by one ffmpeg process
//!   (`audiox_encoders::video_file::WindowedFrames`, feature `video`);
//! - consecutive windows are joined with an equal-power crossfade (`cos`/`sin` gains) over the
//!   last `crossfade` seconds of their overlap;
//! - window `k` runs with the seed [`window_seed`]`(seed, k)` (window 0 with the request's seed
//!   itself), so the whole result is deterministic.
//!
//! [`LongFormStream`] yields each span of the output as soon as no later window can change it
//! and holds at most one window of audio, so memory does not grow with the duration.
//! [`AudioX::generate_long`] collects the stream; [`AudioX::generate`] routes a request longer
//! than the window here with the default [`LongFormOptions`].
//!
//! What continuation cannot do: the model sees only the previous `overlap` seconds, so a
//! rhythm, melody or event longer than that is not remembered, and nothing guarantees that a
//! sound started in one window ends in the next the way it would in one take. See
//! `docs/guide.md` ("Longer than one window").

use std::path::Path;

use audiox_core::audio::{Audio, WavFormat};
use audiox_core::{Error, Result};
use audiox_encoders::frames::{FrameSampling, VideoFrames};
use audiox_sampler::{CancelToken, StepControl};

use crate::generate::{Generation, StageTimings};
use crate::model::AudioX;
use crate::request::{AudioPrompt, AudioPromptMask, Request, VideoInput};

/// The longest duration a long-form request may ask for, in seconds (one hour). The stream's
/// memory does not depend on the duration; the limit only keeps a mistyped duration from
/// running for days.
pub const MAX_LONG_FORM_SECONDS: f64 = 3600.0;

/// The default overlap as a share of the model's window: a tenth (1 s of 10 s). Measured
/// (`docs/guide.md`, "Longer than one window"): on the first demo teacher that continues its
/// audio prompt, 1 s kept the level of later windows closest to the first (3.2 dB mean drift,
/// against 9.1 dB at the earlier default of a quarter) with no silent window, at the lowest
/// cost per second of audio.
pub const DEFAULT_OVERLAP_SHARE: f64 = 0.1;

/// How a long request is cut into windows. The defaults are fractions of the model's window
/// (from its config), so they scale with the model.
///
/// ```
/// use audiox::LongFormOptions;
/// let options = LongFormOptions::default().overlap(3.0).crossfade(1.0);
/// assert_eq!(options.overlap_seconds, Some(3.0));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LongFormOptions {
    /// Seconds shared by consecutive windows: the context the next window is conditioned on.
    /// Default: [`DEFAULT_OVERLAP_SHARE`] of the window (1 s of 10 s). At most half the window.
    pub overlap_seconds: Option<f64>,
    /// Seconds of the equal-power crossfade, at the end of the overlap. Default: the whole
    /// overlap. At most the overlap; 0 joins the windows with a cut.
    pub crossfade_seconds: Option<f64>,
}

impl LongFormOptions {
    /// Sets the overlap (the continuation context) in seconds.
    pub fn overlap(mut self, seconds: f64) -> Self {
        self.overlap_seconds = Some(seconds);
        self
    }

    /// Sets the crossfade length in seconds.
    pub fn crossfade(mut self, seconds: f64) -> Self {
        self.crossfade_seconds = Some(seconds);
        self
    }
}

/// The seed of window `window` of a request seeded with `seed`: `seed` itself for window 0
/// (so a one-window request equals a plain one), a SplitMix64 mix of both for later windows.
pub fn window_seed(seed: u64, window: usize) -> u64 {
    if window == 0 {
        return seed;
    }
    let mut z = seed ^ (window as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Progress of a long-form request: the window and the sampler step within it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LongFormProgress {
    /// Window being sampled (from 0).
    pub window: usize,
    /// Windows in the request.
    pub windows: usize,
    /// Sampler step just finished within the window (from 0).
    pub step: usize,
    /// Sampler steps per window.
    pub steps: usize,
    /// Time of the step's start.
    pub t: f32,
    /// Time of the step's end.
    pub t_next: f32,
}

/// One finished span of a long-form output.
#[derive(Debug, Clone)]
pub struct Span {
    /// The window that finished it.
    pub window: usize,
    /// Its first sample, counted from the start of the output.
    pub start_frame: usize,
    /// The audio (model rate and channels).
    pub audio: Audio,
}

/// Where window `k` lies and which frames it reads.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowPlan {
    /// The window's number.
    pub index: usize,
    /// First output sample of the window.
    pub start_frame: usize,
    /// Seconds from the start of the output.
    pub start_seconds: f64,
    /// Where the window's video conditioning starts in the video (the request's video start
    /// plus `start_seconds`).
    pub video_start_seconds: f64,
    /// The CLIP frame selection of the window.
    pub clip_sampling: FrameSampling,
    /// The Synchformer frame selection of the window.
    pub sync_sampling: FrameSampling,
}

/// The window layout of a long-form request, in samples.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Layout {
    rate: u32,
    /// Samples per window.
    window: usize,
    overlap: usize,
    crossfade: usize,
    /// Samples of the whole output.
    total: usize,
    windows: usize,
}

impl Layout {
    fn new(rate: u32, window: usize, duration: f64, options: &LongFormOptions) -> Result<Self> {
        let window_seconds = window as f64 / rate as f64;
        let overlap_s = options
            .overlap_seconds
            .unwrap_or(window_seconds * DEFAULT_OVERLAP_SHARE);
        if !(overlap_s.is_finite() && overlap_s > 0.0 && overlap_s <= window_seconds / 2.0) {
            return Err(Error::InvalidRequest(format!(
                "a long-form overlap of {overlap_s} s is not supported: it must be above 0 and at \
                 most half the model's {window_seconds} s window"
            )));
        }
        let crossfade_s = options.crossfade_seconds.unwrap_or(overlap_s);
        if !(crossfade_s.is_finite() && (0.0..=overlap_s).contains(&crossfade_s)) {
            return Err(Error::InvalidRequest(format!(
                "a crossfade of {crossfade_s} s is not supported: it must lie between 0 and the \
                 {overlap_s} s overlap"
            )));
        }
        if !(duration.is_finite() && duration > 0.0 && duration <= MAX_LONG_FORM_SECONDS) {
            return Err(Error::InvalidRequest(format!(
                "a duration of {duration} s is not supported: long-form output is limited to \
                 {MAX_LONG_FORM_SECONDS} s"
            )));
        }
        let overlap = ((overlap_s * rate as f64).round() as usize).clamp(1, window / 2);
        let crossfade = ((crossfade_s * rate as f64).round() as usize).min(overlap);
        let total = ((duration * rate as f64).round() as usize).max(1);
        let hop = window - overlap;
        let windows = if total <= window {
            1
        } else {
            (total - window).div_ceil(hop) + 1
        };
        Ok(Layout {
            rate,
            window,
            overlap,
            crossfade,
            total,
            windows,
        })
    }

    fn hop(&self) -> usize {
        self.window - self.overlap
    }

    fn start(&self, k: usize) -> usize {
        k * self.hop()
    }
}

/// The request's video, held by the stream (a file is decoded once for all the windows, by
/// one ffmpeg process started at the first window; decoded frames are sliced per window).
enum Video {
    None,
    Frames(VideoFrames),
    File(std::path::PathBuf, Option<Box<FileFrames>>),
    Image(audiox_encoders::frames::StillImage),
}

/// The running decoder of a video file: every window's CLIP and Synchformer frames, in order.
#[cfg(feature = "video")]
type FileFrames = audiox_encoders::video_file::WindowedFrames<2>;
/// Without the `video` feature a file is refused before anything is decoded.
#[cfg(not(feature = "video"))]
type FileFrames = std::convert::Infallible;

/// The progress callback of a stream.
type ProgressFn<'a> = Box<dyn FnMut(&LongFormProgress) + Send + 'a>;

/// A long-form generation in progress: an iterator over the finished [`Span`]s of the output,
/// in order. Each call to `next` samples one window. A cancelled or failed window yields one
/// error, then the iterator ends.
///
/// ```no_run
/// use audiox::{AudioX, LongFormOptions, Request};
/// let model = AudioX::builder().checkpoint_dir("checkpoints").build()?;
/// let stream = model
///     .stream(Request::text("rain on a tin roof").duration(60.0).seed(1), LongFormOptions::default())?
///     .with_progress(|p| eprintln!("window {}/{}, step {}/{}", p.window + 1, p.windows, p.step + 1, p.steps));
/// let mut wav = audiox::WavStream::create("rain.wav", stream.sample_rate(), stream.channels(), audiox::WavFormat::Float32)?;
/// for span in stream {
///     wav.write(&span?.audio)?; // written as soon as it is final
/// }
/// wav.finish()?;
/// # Ok::<(), audiox::Error>(())
/// ```
pub struct LongFormStream<'a> {
    model: &'a AudioX,
    template: Request,
    video: Video,
    seed: u64,
    layout: Layout,
    next_window: usize,
    /// The previous window's raw (unnormalised) last `overlap` samples per channel, and its
    /// normalisation divisor.
    tail: Option<(Vec<Vec<f32>>, f32)>,
    channels: usize,
    done: bool,
    progress: Option<ProgressFn<'a>>,
    cancel: Option<CancelToken>,
    timings: StageTimings,
    sampler: String,
    /// Sampler steps per window, once a progress report has told (reported in a cancellation
    /// between windows; 0 before).
    steps_per_window: usize,
}

impl std::fmt::Debug for LongFormStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LongFormStream")
            .field("seed", &self.seed)
            .field("layout", &self.layout)
            .field("next_window", &self.next_window)
            .finish_non_exhaustive()
    }
}

impl AudioX {
    /// Starts a long-form generation of `request` (any duration up to
    /// [`MAX_LONG_FORM_SECONDS`]); see the [module docs](crate::long_form). Without a duration,
    /// a video request lasts as long as the video after its start (a whole-video soundtrack),
    /// any other request one window. Needs one sample per request and a seed (random when not
    /// set) rather than a custom noise source.
    pub fn stream(
        &self,
        mut request: Request,
        options: LongFormOptions,
    ) -> Result<LongFormStream<'_>> {
        let m = &*self.inner;
        if request.num_samples != 1 {
            return Err(Error::InvalidRequest(format!(
                "long-form generation makes one sample per request, not {}",
                request.num_samples
            )));
        }
        if request.output != crate::postprocess::OutputOptions::default() {
            return Err(Error::InvalidRequest(
                "sound-effect output options (resampling, loudness, trimming, fade-out) apply to \
                 one window's output; for long-form output apply `OutputOptions::apply` to the \
                 collected result"
                    .into(),
            ));
        }
        if request.noise.is_some() {
            return Err(Error::InvalidRequest(
                "long-form generation derives a seed per window: set a seed instead of a noise \
                 source"
                    .into(),
            ));
        }
        if !(request.video_start_seconds.is_finite() && request.video_start_seconds >= 0.0) {
            return Err(Error::InvalidRequest(format!(
                "the video start must be non-negative seconds, got {}",
                request.video_start_seconds
            )));
        }
        let rate = m.config.sample_rate;
        let window = m.config.prompt_samples();
        let duration = match request.duration {
            Some(d) => d,
            None => match &request.video {
                Some(v @ (VideoInput::Frames(_) | VideoInput::File(_))) => {
                    let length = video_seconds(v)?;
                    let left = length - request.video_start_seconds;
                    if left <= 0.0 {
                        return Err(Error::InvalidRequest(format!(
                            "the video lasts {length} s: nothing after the start at {} s",
                            request.video_start_seconds
                        )));
                    }
                    left
                }
                _ => window as f64 / rate as f64,
            },
        };
        let layout = Layout::new(rate, window, duration, &options)?;
        if request.duration.is_some()
            && let Some(v @ (VideoInput::Frames(_) | VideoInput::File(_))) = &request.video
        {
            // Every window must start inside the video (one running past its end repeats the
            // last frame, as a plain request does).
            let length = video_seconds(v)?;
            let last_start =
                request.video_start_seconds + layout.start(layout.windows - 1) as f64 / rate as f64;
            if last_start >= length {
                return Err(Error::InvalidRequest(format!(
                    "the video lasts {length} s: {duration} s of audio from {} s would read \
                     frames past its end (window {} starts at {last_start} s)",
                    request.video_start_seconds,
                    layout.windows - 1
                )));
            }
        }
        let seed = request.seed.unwrap_or_else(crate::generate::random_seed);
        let video = match request.video.take() {
            None => Video::None,
            Some(VideoInput::Frames(f)) => Video::Frames(f),
            Some(VideoInput::File(p)) => Video::File(p, None),
            Some(VideoInput::Image(i)) => Video::Image(i),
        };
        let channels = m.config.audio_channels;
        Ok(LongFormStream {
            model: self,
            template: request,
            video,
            seed,
            layout,
            next_window: 0,
            tail: None,
            channels,
            done: false,
            progress: None,
            cancel: None,
            timings: StageTimings::default(),
            sampler: String::new(),
            steps_per_window: 0,
        })
    }

    /// A long-form generation collected into one [`Generation`] (the audio of the whole
    /// duration; timings summed over the windows; no intermediates). Cancelling returns
    /// [`Error::Cancelled`] and no audio.
    pub fn generate_long(&self, request: Request, options: LongFormOptions) -> Result<Generation> {
        self.generate_long_with(request, options, None, |_| {})
    }

    /// [`AudioX::generate_long`] with a cancellation token and a progress callback.
    pub fn generate_long_with<'a>(
        &'a self,
        request: Request,
        options: LongFormOptions,
        cancel: Option<CancelToken>,
        progress: impl FnMut(&LongFormProgress) + Send + 'a,
    ) -> Result<Generation> {
        let mut stream = self.stream(request, options)?.with_progress(progress);
        if let Some(token) = cancel {
            stream = stream.with_cancel(token);
        }
        collect(stream, None)
    }
}

/// [`AudioX::generate_with`] of a request longer than one window: the long-form stream with
/// the default options, reporting every window's steps to `control`.
pub(crate) fn generate_routed(
    model: &AudioX,
    request: Request,
    control: &mut StepControl<'_>,
) -> Result<Generation> {
    collect(
        model.stream(request, LongFormOptions::default())?,
        Some(control),
    )
}

/// Runs `stream` to the end, gathering the audio.
fn collect(
    mut stream: LongFormStream<'_>,
    mut control: Option<&mut StepControl<'_>>,
) -> Result<Generation> {
    let mut channels = vec![Vec::with_capacity(stream.total_frames()); stream.channels()];
    loop {
        let span = match control.as_deref_mut() {
            Some(c) => stream.next_with(c),
            None => stream.next(),
        };
        let Some(span) = span else { break };
        for (out, part) in channels.iter_mut().zip(span?.audio.into_channels()) {
            out.extend(part);
        }
    }
    Ok(Generation {
        audio: vec![Audio::new(stream.sample_rate(), channels)?],
        seed: Some(stream.seed),
        sampler: stream.sampler.clone(),
        timings: stream.timings.clone(),
        intermediates: None,
    })
}

impl<'a> LongFormStream<'a> {
    /// Reports the window and step after every sampler step.
    pub fn with_progress(mut self, progress: impl FnMut(&LongFormProgress) + Send + 'a) -> Self {
        self.progress = Some(Box::new(progress));
        self
    }

    /// Stops at the next sampler step once `token` is cancelled (the stream then yields
    /// [`Error::Cancelled`] and ends).
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// The seed of the request (window 0's; see [`window_seed`]).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Output sample rate.
    pub fn sample_rate(&self) -> u32 {
        self.layout.rate
    }

    /// Output channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples (per channel) of the whole output.
    pub fn total_frames(&self) -> usize {
        self.layout.total
    }

    /// Number of windows.
    pub fn windows(&self) -> usize {
        self.layout.windows
    }

    /// Samples per channel the stream holds between windows (the previous window's overlap):
    /// never more than one window, whatever the duration.
    pub fn held_frames(&self) -> usize {
        self.tail
            .as_ref()
            .map_or(0, |(t, _)| t.first().map_or(0, Vec::len))
    }

    /// Time spent per stage, summed over the windows sampled so far.
    pub fn timings(&self) -> &StageTimings {
        &self.timings
    }

    /// Where window `k` lies and which video frames it reads.
    pub fn window_plan(&self, k: usize) -> Result<WindowPlan> {
        if k >= self.layout.windows {
            return Err(Error::InvalidRequest(format!(
                "window {k} of a request of {} windows",
                self.layout.windows
            )));
        }
        let m = &*self.model.inner;
        let start_frame = self.layout.start(k);
        let start_seconds = start_frame as f64 / self.layout.rate as f64;
        let video_start_seconds = self.template.video_start_seconds + start_seconds;
        let seconds = m.config.conditioning_seconds as f64;
        let clip_size = m.video.image_size();
        let clip_sampling = FrameSampling::new(m.config.video_fps as f64, seconds, clip_size)
            .with_seek(video_start_seconds);
        let (sync_rate, sync_size) = match &m.synchformer {
            Some(s) => (s.frame_rate(), s.image_size()),
            // No video is served then; the stream's sizes only fill the plan.
            None => (m.config.synchformer.frame_rate, clip_size),
        };
        let sync_sampling =
            FrameSampling::new(sync_rate as f64, seconds, sync_size).with_seek(video_start_seconds);
        Ok(WindowPlan {
            index: k,
            start_frame,
            start_seconds,
            video_start_seconds,
            clip_sampling,
            sync_sampling,
        })
    }

    /// The request of window `k`.
    fn window_request(&self, k: usize) -> Result<Request> {
        let t = &self.template;
        let plan = self.window_plan(k)?;
        let video = match &self.video {
            Video::None => None,
            Video::Image(i) => Some(VideoInput::Image(i.clone())),
            Video::File(p, _) => Some(VideoInput::File(p.clone())),
            Video::Frames(f) => Some(VideoInput::Frames(window_frames(f, &plan)?.0)),
        };
        let video_start = match &self.video {
            // The sliced frames start at the window's first frame.
            Video::Frames(_) => 0.0,
            _ => plan.video_start_seconds,
        };
        let audio_prompt = match (&self.tail, k) {
            (_, 0) => t.audio_prompt.clone(),
            (Some((tail, _)), _) => {
                let rate = self.layout.rate;
                let window = self.layout.window;
                let overlap = self.layout.overlap;
                let channels = tail
                    .iter()
                    .map(|c| {
                        let mut v = c.clone();
                        v.resize(window, 0.0);
                        v
                    })
                    .collect();
                Some(AudioPrompt {
                    audio: Audio::new(rate, channels)?,
                    start_seconds: 0.0,
                    // Half a sample past the context so the conversion back to samples
                    // (truncating) cannot blank its last sample.
                    mask: AudioPromptMask::Blank(
                        (overlap as f64 + 0.5) / rate as f64..window as f64 / rate as f64,
                    ),
                })
            }
            (None, _) => {
                return Err(Error::InvalidRequest(format!(
                    "window {k} has no previous window to continue"
                )));
            }
        };
        Ok(Request {
            prompt: t.prompt.clone(),
            negative_prompt: t.negative_prompt.clone(),
            video,
            video_start_seconds: video_start,
            image_scaling: t.image_scaling,
            audio_prompt,
            seed: Some(window_seed(self.seed, k)),
            steps: t.steps,
            sampler: t.sampler.clone(),
            guidance: t.guidance,
            cfg_rescale: t.cfg_rescale,
            num_samples: 1,
            duration: None,
            normalize: false,
            noise: None,
            keep_intermediates: false,
            output: Default::default(),
        })
    }

    /// Samples the next window reporting to and cancelled through `control` (which gets the
    /// sampler's own step reports, without the window number) instead of the stream's own
    /// progress callback and token; `None` once the output is complete.
    pub fn next_with(&mut self, control: &mut StepControl<'_>) -> Option<Result<Span>> {
        let k = self.begin()?;
        let result = self.run_window(k, Some(control));
        self.end(result)
    }

    fn begin(&mut self) -> Option<usize> {
        if self.done || self.next_window >= self.layout.windows {
            return None;
        }
        self.next_window += 1;
        Some(self.next_window - 1)
    }

    fn end(&mut self, result: Result<Span>) -> Option<Result<Span>> {
        if result.is_err() {
            self.done = true;
            self.tail = None;
            // Stops (kills and waits for) a file's decoder.
            if let Video::File(_, frames) = &mut self.video {
                *frames = None;
            }
        }
        Some(result)
    }

    /// Window `k`'s frames of a video file, from the stream's decoder (started at the first
    /// window; `cancel` is polled while frames are awaited). `None` for other inputs, and
    /// when no frames can be served (a model without Synchformer refuses the video itself).
    #[cfg(feature = "video")]
    fn file_frames(
        &mut self,
        k: usize,
        cancel: Option<CancelToken>,
    ) -> Result<Option<[audiox_encoders::frames::SampledFrames; 2]>> {
        if self.model.inner.synchformer.is_none() {
            return Ok(None);
        }
        let Video::File(path, None) = &self.video else {
            return self.next_file_frames(k, cancel);
        };
        let windows = (0..self.layout.windows)
            .map(|j| {
                let plan = self.window_plan(j)?;
                Ok([plan.clip_sampling, plan.sync_sampling])
            })
            .collect::<Result<Vec<_>>>()?;
        let frames = audiox_encoders::video_file::Ffmpeg::new()
            .with_limits(&self.model.inner.limits)
            .sample_windows(path, windows)?;
        if let Video::File(_, slot) = &mut self.video {
            *slot = Some(Box::new(frames));
        }
        self.next_file_frames(k, cancel)
    }

    /// The next window's frames from a started decoder (it serves the windows in order).
    #[cfg(feature = "video")]
    fn next_file_frames(
        &mut self,
        k: usize,
        cancel: Option<CancelToken>,
    ) -> Result<Option<[audiox_encoders::frames::SampledFrames; 2]>> {
        let Video::File(_, Some(frames)) = &mut self.video else {
            return Ok(None);
        };
        frames.set_cancel(cancel.map(|t| std::sync::Arc::new(move || t.is_cancelled()) as _));
        match frames.next_window() {
            Some(Ok(f)) => Ok(Some(f)),
            Some(Err(Error::Cancelled { .. })) => Err(Error::Cancelled {
                completed_steps: 0,
                total_steps: self.steps_per_window,
            }),
            Some(Err(e)) => Err(e),
            None => Err(Error::InvalidRequest(format!(
                "window {k}: the video decoder has no window left"
            ))),
        }
    }

    #[cfg(not(feature = "video"))]
    fn file_frames(
        &mut self,
        _k: usize,
        _cancel: Option<CancelToken>,
    ) -> Result<Option<[audiox_encoders::frames::SampledFrames; 2]>> {
        Ok(None)
    }

    /// Samples window `k` and returns its finished span.
    fn run_window(&mut self, k: usize, external: Option<&mut StepControl<'_>>) -> Result<Span> {
        // Cancelled between windows: stop before the next window's conditioners run.
        let token = match &external {
            Some(control) => control.cancel_token(),
            None => self.cancel.as_ref(),
        };
        if token.is_some_and(CancelToken::is_cancelled) {
            return Err(Error::Cancelled {
                completed_steps: 0,
                total_steps: self.steps_per_window,
            });
        }
        let request = self.window_request(k)?;
        let read = std::time::Instant::now();
        let frames = self.file_frames(k, token.cloned())?;
        // A file's frames are read here, outside the window's own generation: counted as
        // video conditioning time, and in the total.
        self.timings.video += read.elapsed();
        self.timings.total += read.elapsed();
        let windows = self.layout.windows;
        let steps_seen = &mut self.steps_per_window;
        let out = match external {
            Some(control) => self.model.generate_sampled(request, control, frames)?,
            None => {
                let mut control = StepControl::new();
                if let Some(token) = &self.cancel {
                    control = control.with_cancel(token.clone());
                }
                if let Some(progress) = self.progress.as_mut() {
                    control = control.with_progress(move |info| {
                        *steps_seen = info.total;
                        progress(&LongFormProgress {
                            window: k,
                            windows,
                            step: info.step,
                            steps: info.total,
                            t: info.t,
                            t_next: info.t_next,
                        })
                    });
                }
                self.model.generate_sampled(request, &mut control, frames)?
            }
        };
        add_timings(&mut self.timings, &out.timings);
        self.sampler = out.sampler;
        let audio = out
            .audio
            .into_iter()
            .next()
            .ok_or_else(|| Error::InvalidRequest("the window produced no audio".into()))?;
        let raw = audio.into_channels();
        let normalize = self.template.normalize;
        let peak = if normalize { peak_of(&raw) } else { 1.0 };
        let l = self.layout;
        let start = l.start(k);
        let last = k + 1 == l.windows;
        // This window's samples that are final: up to the next window's start (or the end).
        let end = if last { l.total - start } else { l.hop() };
        let end = end.min(raw.first().map_or(0, Vec::len));
        let mut channels: Vec<Vec<f32>> = raw
            .iter()
            .map(|c| c[..end].iter().map(|&x| x / peak).collect())
            .collect();
        if let Some((tail, tail_peak)) = self.tail.take() {
            let keep = l.overlap - l.crossfade;
            for (out, prev) in channels.iter_mut().zip(&tail) {
                let n = out.len().min(l.overlap);
                let mut mixed = prev[..n.min(keep)]
                    .iter()
                    .map(|&x| x / tail_peak)
                    .collect::<Vec<_>>();
                if n > keep {
                    let fade = crossfade(&prev[keep..n], tail_peak, &out[keep..n], l.crossfade);
                    mixed.extend(fade);
                }
                out[..n].copy_from_slice(&mixed);
            }
        }
        if normalize {
            for c in &mut channels {
                for x in c.iter_mut() {
                    *x = x.clamp(-1.0, 1.0);
                }
            }
        }
        if !last {
            let from = l.hop();
            self.tail = Some((
                raw.iter().map(|c| c[from..l.window].to_vec()).collect(),
                peak,
            ));
        }
        Ok(Span {
            window: k,
            start_frame: start,
            audio: Audio::new(l.rate, channels)?,
        })
    }
}

impl Iterator for LongFormStream<'_> {
    type Item = Result<Span>;

    fn next(&mut self) -> Option<Result<Span>> {
        let k = self.begin()?;
        let result = self.run_window(k, None);
        self.end(result)
    }
}

/// Equal-power crossfade of `prev / prev_peak` into `next` (already scaled) over `len` samples;
/// `prev` and `next` are the first samples of that span (shorter at the end of the output).
fn crossfade(prev: &[f32], prev_peak: f32, next: &[f32], len: usize) -> Vec<f32> {
    prev.iter()
        .zip(next)
        .enumerate()
        .map(|(i, (&a, &b))| {
            let theta = std::f64::consts::FRAC_PI_2 * (i as f64 + 0.5) / len as f64;
            ((a / prev_peak) as f64 * theta.cos() + b as f64 * theta.sin()) as f32
        })
        .collect()
}

/// The reference's normalisation divisor: `max(peak, 1e-8)`.
fn peak_of(channels: &[Vec<f32>]) -> f32 {
    let peak = channels
        .iter()
        .flatten()
        .fold(0.0f32, |m, &x| m.max(x.abs()));
    peak.max(1e-8)
}

fn add_timings(sum: &mut StageTimings, t: &StageTimings) {
    sum.video += t.video;
    sum.text += t.text;
    sum.audio_prompt += t.audio_prompt;
    sum.fusion += t.fusion;
    sum.sampling += t.sampling;
    sum.decode += t.decode;
    sum.post += t.post;
    sum.total += t.total;
}

/// Length in seconds of a video input (frames: count / rate; a file: what `ffprobe` reports).
/// A still image has no length.
pub fn video_seconds(video: &VideoInput) -> Result<f64> {
    match video {
        VideoInput::Frames(f) => Ok(f.len() as f64 / f.fps()),
        VideoInput::Image(_) => Err(Error::InvalidRequest(
            "a still image has no length: give the long-form request a duration".into(),
        )),
        #[cfg(feature = "video")]
        VideoInput::File(path) => {
            let info = audiox_encoders::video_file::probe(path)?;
            info.duration_seconds
                .or_else(|| info.frame_count.map(|n| n as f64 / info.fps))
                .ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "ffprobe reports no duration for {}: give the request a duration",
                        path.display()
                    ))
                })
        }
        #[cfg(not(feature = "video"))]
        VideoInput::File(_) => Err(Error::InvalidRequest(
            "video files need the `video` feature (ffmpeg); pass decoded frames instead".into(),
        )),
    }
}

/// The frames window `plan` reads from `video`, as a video of their own starting at the
/// window's first frame (read from 0 s it selects the same frames as the whole video read
/// from the window's start), and the index of that first frame in `video`.
pub fn window_frames(video: &VideoFrames, plan: &WindowPlan) -> Result<(VideoFrames, usize)> {
    let fps = video.fps();
    let first = plan.clip_sampling.seek_frame(fps);
    if first >= video.len() {
        return Err(Error::InvalidRequest(format!(
            "window {} starts at {} s of the video, past its {} frames at {fps} fps",
            plan.index,
            plan.video_start_seconds,
            video.len()
        )));
    }
    // One past the last frame either encoder may select.
    let end = [plan.clip_sampling, plan.sync_sampling]
        .iter()
        .map(|s| {
            let relative = FrameSampling {
                seek_seconds: 0.0,
                ..*s
            };
            relative
                .candidate_ids(fps)
                .map(|mut ids| ids.next_back().map_or(0, |id| id + 1))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .max()
        .unwrap_or(1);
    let last = (first + end).min(video.len());
    let frame_bytes = video.height() * video.width() * 3;
    let pixels = video.as_bytes()[first * frame_bytes..last * frame_bytes].to_vec();
    Ok((
        VideoFrames::new(
            pixels,
            [last - first, video.height(), video.width(), 3],
            fps,
        )?,
        first,
    ))
}

/// A WAV file written as the audio arrives (the header's sizes are patched when it is
/// finished), for streamed output.
pub struct WavStream {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    channels: usize,
    format: WavFormat,
    path: std::path::PathBuf,
}

impl std::fmt::Debug for WavStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WavStream")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WavStream {
    /// Creates `path` for audio of `rate` Hz and `channels` channels.
    pub fn create(
        path: impl AsRef<Path>,
        rate: u32,
        channels: usize,
        format: WavFormat,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let spec = hound::WavSpec {
            channels: channels as u16,
            sample_rate: rate,
            bits_per_sample: match format {
                WavFormat::Float32 => 32,
                WavFormat::Pcm16 => 16,
            },
            sample_format: match format {
                WavFormat::Float32 => hound::SampleFormat::Float,
                WavFormat::Pcm16 => hound::SampleFormat::Int,
            },
        };
        let writer = hound::WavWriter::create(&path, spec).map_err(|e| wav_error(&path, e))?;
        Ok(WavStream {
            writer,
            channels,
            format,
            path,
        })
    }

    /// Appends `audio` (same channels as the file).
    pub fn write(&mut self, audio: &Audio) -> Result<()> {
        if audio.num_channels() != self.channels {
            return Err(Error::InvalidRequest(format!(
                "{} channels written to a {}-channel WAV stream",
                audio.num_channels(),
                self.channels
            )));
        }
        let channels = audio.channels();
        for i in 0..audio.num_frames() {
            for c in channels {
                let x = c[i];
                let r = match self.format {
                    WavFormat::Float32 => self.writer.write_sample(x),
                    WavFormat::Pcm16 => self
                        .writer
                        .write_sample((x.clamp(-1.0, 1.0) * i16::MAX as f32).round() as i16),
                };
                r.map_err(|e| wav_error(&self.path, e))?;
            }
        }
        Ok(())
    }

    /// Completes the file (patches the header).
    pub fn finish(self) -> Result<()> {
        let path = self.path;
        self.writer.finalize().map_err(|e| wav_error(&path, e))
    }
}

fn wav_error(path: &Path, e: hound::Error) -> Error {
    Error::Audio {
        path: Some(path.to_path_buf()),
        message: format!("writing WAV: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_covers_the_duration_with_the_fewest_windows() {
        let (rate, window) = (20u32, 200usize);
        let l = Layout::new(rate, window, 60.0, &LongFormOptions::default()).unwrap();
        assert_eq!(
            l.overlap,
            (window as f64 * DEFAULT_OVERLAP_SHARE).round() as usize
        );
        assert_eq!(l.overlap, 20);
        assert_eq!(l.crossfade, l.overlap);
        assert_eq!(l.total, 60 * rate as usize);
        let last = l.start(l.windows - 1);
        assert!(last + window >= l.total, "the last window reaches the end");
        assert!(
            l.start(l.windows - 2) + window < l.total,
            "no window too many"
        );
        let one = Layout::new(rate, window, 4.0, &LongFormOptions::default()).unwrap();
        assert_eq!(one.windows, 1);
    }

    #[test]
    fn bad_options_are_refused() {
        let o = |ov: f64, cf: f64| LongFormOptions::default().overlap(ov).crossfade(cf);
        assert!(
            Layout::new(20, 200, 60.0, &o(6.0, 1.0)).is_err(),
            "overlap above half"
        );
        assert!(
            Layout::new(20, 200, 60.0, &o(0.0, 0.0)).is_err(),
            "no overlap"
        );
        assert!(
            Layout::new(20, 200, 60.0, &o(2.0, 3.0)).is_err(),
            "crossfade above overlap"
        );
        assert!(Layout::new(20, 200, f64::NAN, &o(2.0, 1.0)).is_err());
        assert!(Layout::new(20, 200, MAX_LONG_FORM_SECONDS + 1.0, &o(2.0, 1.0)).is_err());
    }

    #[test]
    fn window_seeds_differ_and_repeat() {
        assert_eq!(window_seed(7, 0), 7);
        assert_eq!(window_seed(7, 3), window_seed(7, 3));
        let seeds: std::collections::BTreeSet<u64> = (0..100).map(|k| window_seed(7, k)).collect();
        assert_eq!(seeds.len(), 100);
        assert_ne!(window_seed(7, 1), window_seed(8, 1));
    }

    #[test]
    fn equal_power_crossfade_keeps_the_power_of_uncorrelated_signals_and_is_smooth() {
        let n = 1000;
        // Two unit sines in quadrature are uncorrelated over whole periods.
        let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).sin()).collect();
        let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.3).cos()).collect();
        let mixed = crossfade(&a, 1.0, &b, n);
        let gains = |i: usize| {
            let th = std::f64::consts::FRAC_PI_2 * (i as f64 + 0.5) / n as f64;
            (th.cos(), th.sin())
        };
        for i in (0..n).step_by(97) {
            let (ga, gb) = gains(i);
            assert!((ga * ga + gb * gb - 1.0).abs() < 1e-9, "equal power");
        }
        let max_step = |x: &[f32]| {
            x.windows(2)
                .map(|w| (w[1] - w[0]).abs())
                .fold(0.0, f32::max)
        };
        assert!(max_step(&mixed) <= max_step(&a).max(max_step(&b)) * 1.5);
        assert!((mixed[0] - a[0]).abs() < 0.01 && (mixed[n - 1] - b[n - 1]).abs() < 0.01);
    }
}
