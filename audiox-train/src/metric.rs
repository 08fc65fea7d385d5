//! The instruction-following metric: does a clip contain what its caption asks for?
//!
//! [`detect_events`] finds events in mono audio (its mean removed: an offset is no sound):
//! an onset where the energy of a 10 ms frame rises by [`DetectorConfig::rise_db`] over the
//! lowest energy of the previous 50 ms, each of those measured over the 30 ms ending with it
//! ([`DetectorConfig::window_s`]), while within [`DetectorConfig::floor_below_peak_db`]
//! of the clip's loudest frame; then, on the
//! Hann-windowed ~128 ms after each onset, the strongest spectral peak (the pitch estimate)
//! and the share of the energy around it (the tonality). Each event gets a coarse
//! [`EventClass`]: `Noise` when the tonality is low, else `High` or `Low` by its pitch.
//!
//! [`score_clip`] compares the detected events with a [`Scene`]'s expected events:
//! * **count**: the number of events equals the caption's;
//! * **order**: for two-group scenes whose groups differ in class (for example "two knocks,
//!   then a high beep"), each event's class matches in order (a wrong count is a wrong order);
//! * **onset**: for events the caption places in time, the distance to the nearest detected
//!   onset;
//! * **pitch**: for events with a named register, the class of the event at the same position
//!   (only judged when the count is right; a wrong count makes every named pitch wrong).
//!
//! [`Report`] aggregates these over clips.

use realfft::RealFftPlanner;

use crate::corpus::{EventKind, ExpectedEvent, Pitch, Scene};

/// Settings of the detector.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectorConfig {
    /// Frame hop in seconds (default 0.01): onsets are found to this resolution.
    pub frame_s: f32,
    /// Length in seconds of the window over which the energy an onset must rise above is
    /// measured (default 0.03): the lowest of the energies of the previous 50 ms, each the mean
    /// square of the `window_s` ending with its frame (at most `frame_s`: the frame alone). It
    /// must hold a whole period of the lowest tone: the corpus's thuds fall to 35 Hz (a 29 ms
    /// period), and over a shorter window the energy follows the waveform's lobes rather than
    /// the loudness, so a generated thud with uneven lobes dips by 10-20 dB for one frame inside
    /// one event and counted as several (the 10 ms frames of the detector until 2026-12-05).
    /// The rising frame itself is measured alone, so a 10 ms click keeps its full level.
    pub window_s: f32,
    /// Energy rise in dB over the previous 50 ms that marks an onset (default 9).
    pub rise_db: f32,
    /// Frames quieter than the loudest frame by more than this (dB) start no event (default 32).
    pub floor_below_peak_db: f32,
    /// Shortest time between two onsets in seconds (default 0.15).
    pub min_gap_s: f32,
    /// Pitch estimates at or above this frequency are `High` (default 700 Hz).
    pub pitch_split_hz: f32,
    /// Events whose tonality is below this are `Noise` (default 0.25).
    pub min_tonality: f32,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            frame_s: 0.01,
            window_s: 0.03,
            rise_db: 9.0,
            floor_below_peak_db: 32.0,
            min_gap_s: 0.15,
            pitch_split_hz: 700.0,
            min_tonality: 0.25,
        }
    }
}

/// The coarse class of an event, which the metric can tell apart in generated audio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventClass {
    /// Tonal, pitch at or above the split.
    High,
    /// Tonal, pitch below the split (knocks and thuds included).
    Low,
    /// No dominant frequency (clicks, whooshes).
    Noise,
}

impl EventClass {
    /// The classes an expected event may show: a named register gives one class; a tonal kind
    /// with no named register, either tonal class.
    pub fn expected(kind: EventKind, pitch: Option<Pitch>) -> &'static [EventClass] {
        match (kind, pitch) {
            (EventKind::Click | EventKind::Whoosh, _) => &[EventClass::Noise],
            (EventKind::Knock | EventKind::Thud, _) => &[EventClass::Low],
            (_, Some(Pitch::High)) => &[EventClass::High],
            (_, Some(Pitch::Low)) => &[EventClass::Low],
            (_, None) => &[EventClass::High, EventClass::Low],
        }
    }
}

/// One event found in audio.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectedEvent {
    /// Onset in seconds.
    pub onset_s: f32,
    /// Level of the onset's loudest frame in the next 50 ms, dB relative to full scale RMS.
    pub level_db: f32,
    /// The strongest frequency after the onset, in Hz.
    pub pitch_hz: f32,
    /// Share of the spectrum's energy within three bins of that peak (0-1).
    pub tonality: f32,
    /// The coarse class.
    pub class: EventClass,
}

/// Finds the events in mono audio.
pub fn detect_events(
    samples: &[f32],
    sample_rate: u32,
    cfg: &DetectorConfig,
) -> Vec<DetectedEvent> {
    let hop = ((cfg.frame_s * sample_rate as f32).round() as usize).max(1);
    // The clip's mean is removed first: a constant offset is no sound (a decoder may leave one
    // in silence, and the clip's first frame would count as an onset).
    let finite: Vec<f32> = samples
        .iter()
        .map(|s| if s.is_finite() { *s } else { 0.0 })
        .collect();
    let mean = (finite.iter().map(|&s| s as f64).sum::<f64>() / finite.len().max(1) as f64) as f32;
    let samples: Vec<f32> = finite.iter().map(|&s| s - mean).collect();
    let energy: Vec<f32> = samples
        .chunks(hop)
        .map(|c| {
            let ms = c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32;
            10.0 * (ms + 1e-12).log10()
        })
        .collect();
    // The baseline onsets rise above: frame i's energy over the `window` samples ending with
    // it (fewer at the clip's start), from running sums of squares.
    let window = ((cfg.window_s * sample_rate as f32).round() as usize).max(hop);
    let mut squares = Vec::with_capacity(samples.len() + 1);
    squares.push(0.0f64);
    for &s in &samples {
        squares.push(squares.last().copied().unwrap_or(0.0) + (s as f64) * (s as f64));
    }
    let baseline: Vec<f32> = (0..energy.len())
        .map(|i| {
            let end = ((i + 1) * hop).min(samples.len());
            let start = end.saturating_sub(window);
            let ms = (squares[end] - squares[start]).max(0.0) / (end - start).max(1) as f64;
            (10.0 * (ms + 1e-12).log10()) as f32
        })
        .collect();
    let peak = energy.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Nothing louder than about -70 dBFS RMS counts as sound.
    let floor = (peak - cfg.floor_below_peak_db).max(-70.0);
    let lookback = ((0.05 / cfg.frame_s).round() as usize).max(1);
    let min_gap = (cfg.min_gap_s / cfg.frame_s).round() as usize;

    let mut onsets: Vec<usize> = Vec::new();
    for i in 0..energy.len() {
        if energy[i] < floor {
            continue;
        }
        if onsets.last().is_some_and(|&last| i < last + min_gap) {
            continue;
        }
        let from = i.saturating_sub(lookback);
        let min_before = baseline[from..i]
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        let min_before = if i == 0 { -120.0 } else { min_before };
        if energy[i] - min_before >= cfg.rise_db {
            onsets.push(i);
        }
    }

    let win = (0.128 * sample_rate as f32).round().max(64.0) as usize;
    let win = win.next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let fft = planner.plan_fft_forward(win);
    let mut spectrum = fft.make_output_vec();
    let hann: Vec<f32> = (0..win)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / win as f32).cos())
        .collect();
    let bin_hz = sample_rate as f32 / win as f32;
    let lo_bin = (40.0 / bin_hz).ceil() as usize;
    let hi_bin = ((5000.0f32.min(0.5 * sample_rate as f32)) / bin_hz) as usize;

    onsets
        .iter()
        .enumerate()
        .map(|(k, &frame)| {
            let start = frame * hop + (0.005 * sample_rate as f32) as usize;
            let stop = onsets
                .get(k + 1)
                .map_or(samples.len(), |&next| next * hop)
                .min(start + win)
                .min(samples.len());
            let mut buf = vec![0.0f32; win];
            for (i, b) in buf.iter_mut().enumerate().take(stop.saturating_sub(start)) {
                *b = samples[start + i] * hann[i];
            }
            // The buffer and spectrum have the planner's lengths, so this cannot fail.
            let _ = fft.process(&mut buf, &mut spectrum);
            let power: Vec<f32> = spectrum.iter().map(|c| c.norm_sqr()).collect();
            let band = &power[lo_bin..=hi_bin.min(power.len() - 1)];
            let (peak_i, _) = band
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (i, &p)| if p > m.1 { (i, p) } else { m },
                );
            let total: f32 = band.iter().sum::<f32>().max(1e-20);
            let near: f32 = band[peak_i.saturating_sub(3)..(peak_i + 4).min(band.len())]
                .iter()
                .sum();
            let tonality = near / total;
            let pitch_hz = (peak_i + lo_bin) as f32 * bin_hz;
            let class = if tonality < cfg.min_tonality {
                EventClass::Noise
            } else if pitch_hz >= cfg.pitch_split_hz {
                EventClass::High
            } else {
                EventClass::Low
            };
            let level_db = energy[frame..(frame + lookback).min(energy.len())]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max);
            DetectedEvent {
                onset_s: (frame * hop) as f32 / sample_rate as f32,
                level_db,
                pitch_hz,
                tonality,
                class,
            }
        })
        .collect()
}

/// How one clip scored against its scene.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipScore {
    /// The number of detected events equals the caption's.
    pub count_correct: bool,
    /// For two-group scenes whose groups differ in class: whether the classes came in order.
    pub order_correct: Option<bool>,
    /// For each event the caption places in time: seconds to the nearest detected onset
    /// (infinite when nothing was detected).
    pub onset_errors_s: Vec<f32>,
    /// For each event with a named register: whether its class matched.
    pub pitch_correct: Vec<bool>,
}

fn class_ok(expected: &ExpectedEvent, found: &DetectedEvent) -> bool {
    EventClass::expected(expected.kind, expected.pitch).contains(&found.class)
}

/// Scores detected events against the scene a caption describes.
pub fn score_clip(scene: &Scene, detected: &[DetectedEvent], _cfg: &DetectorConfig) -> ClipScore {
    let expected = scene.expected_events();
    let count_correct = detected.len() == expected.len();
    let order_correct = (scene.groups.len() > 1
        && EventClass::expected(scene.groups[0].kind, scene.groups[0].pitch)
            != EventClass::expected(scene.groups[1].kind, scene.groups[1].pitch))
    .then(|| count_correct && expected.iter().zip(detected).all(|(e, d)| class_ok(e, d)));
    let onset_errors_s = expected
        .iter()
        .filter_map(|e| e.onset_s)
        .map(|t| {
            detected
                .iter()
                .map(|d| (d.onset_s - t).abs())
                .fold(f32::INFINITY, f32::min)
        })
        .collect();
    let pitch_correct = expected
        .iter()
        .enumerate()
        .filter(|(_, e)| e.pitch.is_some())
        .map(|(i, e)| count_correct && class_ok(e, &detected[i]))
        .collect();
    ClipScore {
        count_correct,
        order_correct,
        onset_errors_s,
        pitch_correct,
    }
}

/// The metric over a set of clips.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Clips scored.
    pub clips: usize,
    /// Share of clips with the right number of events.
    pub event_count_accuracy: f32,
    /// Share of order-judged clips in the right order (`None` if no clip was judged).
    pub order_accuracy: Option<f32>,
    /// Median onset error in seconds over every timed event (`None` if there were none).
    pub median_onset_error_s: Option<f32>,
    /// Share of events with a named register whose class matched (`None` if there were none).
    pub pitch_accuracy: Option<f32>,
}

fn share(bools: impl Iterator<Item = bool>) -> Option<f32> {
    let (n, ok) = bools.fold((0usize, 0usize), |(n, ok), b| (n + 1, ok + usize::from(b)));
    (n > 0).then(|| ok as f32 / n as f32)
}

impl Report {
    /// Aggregates clip scores.
    pub fn from_scores(scores: &[ClipScore]) -> Self {
        let mut errors: Vec<f32> = scores
            .iter()
            .flat_map(|s| s.onset_errors_s.clone())
            .collect();
        errors.sort_by(f32::total_cmp);
        Self {
            clips: scores.len(),
            event_count_accuracy: share(scores.iter().map(|s| s.count_correct)).unwrap_or(0.0),
            order_accuracy: share(scores.iter().filter_map(|s| s.order_correct)),
            median_onset_error_s: (!errors.is_empty()).then(|| errors[errors.len() / 2]),
            pitch_accuracy: share(scores.iter().flat_map(|s| s.pitch_correct.clone())),
        }
    }

    /// One markdown table row: `| label | clips | count | order | onset | pitch |`.
    pub fn markdown_row(&self, label: &str) -> String {
        let pct = |v: Option<f32>| v.map_or("-".into(), |v| format!("{:.1} %", 100.0 * v));
        format!(
            "| {label} | {} | {} | {} | {} | {} |",
            self.clips,
            pct(Some(self.event_count_accuracy)),
            pct(self.order_accuracy),
            self.median_onset_error_s
                .map_or("-".into(), |v| format!("{v:.3} s")),
            pct(self.pitch_accuracy),
        )
    }
}

/// The metric for a generator on the first `n` held-out captions of `corpus`.
///
/// `generate` gets each caption and its index (use the index to derive the seed) and returns
/// mono audio at `sample_rate` (average the channels of a stereo result); every clip is
/// scored against the caption's scene with the default [`DetectorConfig`]. Fails (instead of
/// looping) when the corpus has fewer than `n` distinct held-out captions.
pub fn evaluate_generator<E, G>(
    corpus: &crate::corpus::Corpus,
    n: usize,
    sample_rate: u32,
    generate: &mut G,
) -> Result<Report, EvaluateError<E>>
where
    G: FnMut(&str, u64) -> Result<Vec<f32>, E> + ?Sized,
{
    let scenes = corpus
        .try_held_out_scenes(n)
        .map_err(EvaluateError::Corpus)?;
    evaluate_scenes(&scenes, sample_rate, generate)
}

/// The metric for a generator on the given scenes (e.g. training scenes, to tell a model that
/// has not learnt the task from one that has learnt only the captions it saw):
/// `generate` gets each scene's caption and its index in `scenes`, as for
/// [`evaluate_generator`].
pub fn evaluate_scenes<E, G>(
    scenes: &[crate::corpus::Scene],
    sample_rate: u32,
    generate: &mut G,
) -> Result<Report, EvaluateError<E>>
where
    G: FnMut(&str, u64) -> Result<Vec<f32>, E> + ?Sized,
{
    evaluate_scenes_with(scenes, sample_rate, &DetectorConfig::default(), generate)
}

/// [`evaluate_scenes`] with the detector's settings given (e.g. an earlier detector, to
/// compare a score with one measured before a change of the defaults).
pub fn evaluate_scenes_with<E, G>(
    scenes: &[crate::corpus::Scene],
    sample_rate: u32,
    cfg: &DetectorConfig,
    generate: &mut G,
) -> Result<Report, EvaluateError<E>>
where
    G: FnMut(&str, u64) -> Result<Vec<f32>, E> + ?Sized,
{
    let mut scores = Vec::with_capacity(scenes.len());
    for (i, scene) in scenes.iter().enumerate() {
        let audio = generate(&scene.caption(), i as u64).map_err(EvaluateError::Generate)?;
        scores.push(score_clip(
            scene,
            &detect_events(&audio, sample_rate, cfg),
            cfg,
        ));
    }
    Ok(Report::from_scores(&scores))
}

/// Why [`evaluate_generator`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError<E> {
    /// The corpus could not supply the captions.
    #[error("corpus: {0}")]
    Corpus(crate::Error),
    /// The generator failed.
    #[error("generation failed: {0}")]
    Generate(E),
}
