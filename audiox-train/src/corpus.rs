//! The procedural sound-event corpus.
//!
//! Every clip is a [`Scene`] (one or two groups of identical events, or one event at a given
//! time) rendered by our own synthesis code from a seeded random stream, so the same
//! configuration and index always give the same samples, and every event's kind, pitch, level
//! and onset is known. The caption grammar covers counts from one to five in words ("three high
//! beeps", "a knock"), sequences ("two knocks, then a low thud", "a chirp followed by three
//! clicks") and times ("a bell at 4 seconds").
//!
//! A fixed share of the captions (chosen by a hash of the caption text, so the split does not
//! depend on how many clips are drawn) is held out: [`Corpus::training_scene`] never yields
//! them and [`Corpus::held_out_scenes`] yields only them.

use std::f32::consts::PI;
use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::Serialize;

use crate::{Error, Result};

/// The kinds of sound event the corpus renders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A steady sine tone, 0.15-0.3 s.
    Beep,
    /// A few milliseconds of broadband noise.
    Click,
    /// A short damped wooden resonance (160-260 Hz) with a noise tick.
    Knock,
    /// A rising tone (exponential sweep to about twice its start frequency).
    Chirp,
    /// A low impact: a 50-90 Hz sine with a falling pitch and a fast decay.
    Thud,
    /// A ringing, inharmonic tone (partials at 1, 2.76, 5.40 and 8.93 times the fundamental).
    Bell,
    /// A swell of noise whose band sweeps upwards.
    Whoosh,
    /// A band-limited square wave.
    Buzz,
}

impl EventKind {
    /// Every kind, in a fixed order.
    pub const ALL: [EventKind; 8] = [
        EventKind::Beep,
        EventKind::Click,
        EventKind::Knock,
        EventKind::Chirp,
        EventKind::Thud,
        EventKind::Bell,
        EventKind::Whoosh,
        EventKind::Buzz,
    ];

    /// The singular noun used in captions.
    pub fn noun(self) -> &'static str {
        match self {
            EventKind::Beep => "beep",
            EventKind::Click => "click",
            EventKind::Knock => "knock",
            EventKind::Chirp => "chirp",
            EventKind::Thud => "thud",
            EventKind::Bell => "bell",
            EventKind::Whoosh => "whoosh",
            EventKind::Buzz => "buzz",
        }
    }

    /// The plural noun used in captions.
    pub fn plural(self) -> &'static str {
        match self {
            EventKind::Beep => "beeps",
            EventKind::Click => "clicks",
            EventKind::Knock => "knocks",
            EventKind::Chirp => "chirps",
            EventKind::Thud => "thuds",
            EventKind::Bell => "bells",
            EventKind::Whoosh => "whooshes",
            EventKind::Buzz => "buzzes",
        }
    }

    /// Whether the kind has a pitch that captions may name (`high`/`low`).
    pub fn is_tonal(self) -> bool {
        matches!(
            self,
            EventKind::Beep | EventKind::Chirp | EventKind::Bell | EventKind::Buzz
        )
    }

    /// Seconds from one onset to the next inside a group, before the random extra.
    fn base_spacing(self) -> f32 {
        match self {
            EventKind::Beep => 0.4,
            EventKind::Click => 0.3,
            EventKind::Knock => 0.35,
            EventKind::Chirp => 0.5,
            EventKind::Thud => 0.5,
            EventKind::Bell => 0.75,
            EventKind::Whoosh => 0.75,
            EventKind::Buzz => 0.6,
        }
    }
}

/// The pitch register of a tonal event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pitch {
    /// Fundamental at or above 900 Hz.
    High,
    /// Fundamental at or below 450 Hz.
    Low,
}

impl Pitch {
    /// The adjective used in captions.
    pub fn word(self) -> &'static str {
        match self {
            Pitch::High => "high",
            Pitch::Low => "low",
        }
    }
}

/// One group of identical events in a scene: "three high beeps".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventGroup {
    /// What sounds.
    pub kind: EventKind,
    /// How many times, 1 to 5.
    pub count: u8,
    /// The named pitch register (tonal kinds only; `None`: the caption names none and the
    /// renderer picks one).
    pub pitch: Option<Pitch>,
    /// The onset of the (single) event in whole seconds, when the caption names a time.
    pub at_seconds: Option<u32>,
}

/// How a caption joins two groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connective {
    /// "A, then B".
    Then,
    /// "A followed by B".
    FollowedBy,
}

/// What a clip contains: one or two groups, in order.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scene {
    /// The groups, in the order they sound.
    pub groups: Vec<EventGroup>,
    /// How the caption joins the groups (unused for one group).
    pub connective: Connective,
}

/// One event of a scene as the metric expects it (see [`Scene::expected_events`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpectedEvent {
    /// The kind.
    pub kind: EventKind,
    /// The pitch register the caption names, if any.
    pub pitch: Option<Pitch>,
    /// The onset in seconds the caption names, if any.
    pub onset_s: Option<f32>,
    /// Index of the event's group in [`Scene::groups`].
    pub group: usize,
}

const COUNT_WORDS: [&str; 5] = ["a", "two", "three", "four", "five"];

impl EventGroup {
    /// The group's phrase: "three high beeps", "a knock", "a bell at 4 seconds".
    pub fn phrase(&self) -> String {
        let mut s = String::from(COUNT_WORDS[usize::from(self.count.clamp(1, 5)) - 1]);
        if let Some(p) = self.pitch {
            s.push(' ');
            s.push_str(p.word());
        }
        s.push(' ');
        s.push_str(if self.count == 1 {
            self.kind.noun()
        } else {
            self.kind.plural()
        });
        if let Some(t) = self.at_seconds {
            s.push_str(&format!(" at {t} second{}", if t == 1 { "" } else { "s" }));
        }
        s
    }
}

impl Scene {
    /// The caption: the groups' phrases joined by the connective.
    pub fn caption(&self) -> String {
        let join = match self.connective {
            Connective::Then => ", then ",
            Connective::FollowedBy => " followed by ",
        };
        self.groups
            .iter()
            .map(EventGroup::phrase)
            .collect::<Vec<_>>()
            .join(join)
    }

    /// Every event the caption asks for, in order.
    pub fn expected_events(&self) -> Vec<ExpectedEvent> {
        let mut out = Vec::new();
        for (g, group) in self.groups.iter().enumerate() {
            for i in 0..group.count {
                out.push(ExpectedEvent {
                    kind: group.kind,
                    pitch: group.pitch,
                    onset_s: group.at_seconds.filter(|_| i == 0).map(|t| t as f32),
                    group: g,
                });
            }
        }
        out
    }
}

/// One rendered event: the ground truth of a clip.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RenderedEvent {
    /// The kind.
    pub kind: EventKind,
    /// The register actually rendered (tonal kinds; also when the caption named none).
    pub pitch: Option<Pitch>,
    /// Onset in seconds from the clip's start.
    pub onset_s: f32,
    /// Length of the event's sound in seconds.
    pub duration_s: f32,
    /// The event's (start) fundamental frequency in Hz, where it has one.
    pub frequency_hz: Option<f32>,
    /// The event's peak level in dBFS.
    pub level_db: f32,
}

/// A captioned, rendered clip (mono).
#[derive(Clone, Debug)]
pub struct Clip {
    /// The caption.
    pub caption: String,
    /// What the caption describes.
    pub scene: Scene,
    /// What was rendered, in onset order.
    pub events: Vec<RenderedEvent>,
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
    /// Samples per second.
    pub sample_rate: u32,
}

impl Clip {
    /// Writes the clip as a 32-bit float mono WAV file.
    pub fn write_wav(&self, path: impl AsRef<Path>) -> Result<()> {
        write_mono_wav(path, self.sample_rate, &self.samples)
    }
}

/// Writes `samples` as a 32-bit float mono WAV file at `sample_rate` (a clip's format; also
/// for generated audio that the metric scores).
pub fn write_mono_wav(path: impl AsRef<Path>, sample_rate: u32, samples: &[f32]) -> Result<()> {
    let path = path.as_ref();
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let wav_err = |source| Error::Wav {
        path: path.to_path_buf(),
        source,
    };
    let mut w = hound::WavWriter::create(path, spec).map_err(wav_err)?;
    for &s in samples {
        w.write_sample(s).map_err(wav_err)?;
    }
    w.finalize().map_err(wav_err)
}

/// The version of the corpus's synthesis: raised whenever the same `(configuration, index)`
/// renders other samples, so that data derived from clips (the teacher's stored latents) is
/// not reused across it. 2: whooshes through a stable filter.
pub const CORPUS_VERSION: u32 = 2;

/// Settings of a [`Corpus`].
#[derive(Clone, Debug, PartialEq)]
pub struct CorpusConfig {
    /// Samples per second (8,000-96,000; default 16,000).
    pub sample_rate: u32,
    /// Clip length in seconds (10-60; default 10: the layout is sized for 10 s).
    pub duration_s: f32,
    /// The seed every clip is derived from (default 0).
    pub seed: u64,
    /// One caption in this many is held out (2-1,000; default 10).
    pub held_out_every: u64,
    /// How much of the layout's random range is used (0-1; default 1): the first onset is
    /// drawn from `0.3 + 0.9 * timing_jitter` s and each event of a group adds up to
    /// `0.25 * timing_jitter` s to its kind's spacing (up to `0.5 * timing_jitter` s between
    /// groups). 0 gives every caption one fixed layout; the random draws are made whatever the
    /// value, so only the onsets change with it. A named time ("a bell at 4 seconds") is exact
    /// at every value.
    pub timing_jitter: f32,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            duration_s: 10.0,
            seed: 0,
            held_out_every: 10,
            timing_jitter: 1.0,
        }
    }
}

/// The corpus: a deterministic function from (configuration, index) to clips.
#[derive(Clone, Debug)]
pub struct Corpus {
    cfg: CorpusConfig,
}

// Independent random streams, one per use.
const STREAM_TRAIN_SCENE: u64 = 1;
const STREAM_TRAIN_RENDER: u64 = 2;
const STREAM_HELD_SCENE: u64 = 3;
const STREAM_HELD_RENDER: u64 = 4;

impl Corpus {
    /// Checks the configuration and makes the corpus.
    pub fn new(cfg: CorpusConfig) -> Result<Self> {
        if !(8_000..=96_000).contains(&cfg.sample_rate) {
            return Err(Error::InvalidConfig {
                field: "sample_rate",
                value: cfg.sample_rate.to_string(),
                reason: "must be within 8000..=96000 Hz",
            });
        }
        if !(cfg.duration_s.is_finite() && (10.0..=60.0).contains(&cfg.duration_s)) {
            return Err(Error::InvalidConfig {
                field: "duration_s",
                value: cfg.duration_s.to_string(),
                reason: "must be within 10..=60 s",
            });
        }
        if !(2..=1000).contains(&cfg.held_out_every) {
            return Err(Error::InvalidConfig {
                field: "held_out_every",
                value: cfg.held_out_every.to_string(),
                reason: "must be within 2..=1000",
            });
        }
        if !(cfg.timing_jitter.is_finite() && (0.0..=1.0).contains(&cfg.timing_jitter)) {
            return Err(Error::InvalidConfig {
                field: "timing_jitter",
                value: cfg.timing_jitter.to_string(),
                reason: "must be within 0..=1",
            });
        }
        Ok(Self { cfg })
    }

    /// The configuration.
    pub fn config(&self) -> &CorpusConfig {
        &self.cfg
    }

    /// Whether a caption belongs to the held-out set (a hash of its text, so the split is the
    /// same whatever is drawn).
    pub fn is_held_out(&self, caption: &str) -> bool {
        fnv1a(caption.as_bytes()).is_multiple_of(self.cfg.held_out_every)
    }

    /// The training scene at `index`: never a held-out caption.
    pub fn training_scene(&self, index: u64) -> Scene {
        let mut rng = self.rng(STREAM_TRAIN_SCENE, index);
        loop {
            let scene = random_scene(&mut rng);
            if !self.is_held_out(&scene.caption()) {
                return scene;
            }
        }
    }

    /// The training clip at `index`.
    pub fn training_clip(&self, index: u64) -> Clip {
        let scene = self.training_scene(index);
        self.render(&scene, &mut self.rng(STREAM_TRAIN_RENDER, index))
    }

    /// The first `n` distinct held-out scenes (a fixed list for a given configuration), or
    /// fewer when the grammar runs out of distinct held-out captions (the search stops after a
    /// bounded number of draws; [`Corpus::try_held_out_scenes`] makes that an error).
    pub fn held_out_scenes(&self, n: usize) -> Vec<Scene> {
        let mut rng = self.rng(STREAM_HELD_SCENE, 0);
        first_distinct(
            n,
            || random_scene(&mut rng),
            |caption| self.is_held_out(caption),
        )
    }

    /// The first `n` training scenes with distinct captions, in index order (the scene of
    /// [`Corpus::training_scene`]`(0)` first; a caption drawn again later is skipped): the
    /// training side's counterpart of [`Corpus::held_out_scenes`], for comparing seen and
    /// unseen captions like for like. Fewer when the grammar runs out of distinct training
    /// captions (the same bounded search).
    pub fn distinct_training_scenes(&self, n: usize) -> Vec<Scene> {
        self.distinct_training(n)
            .into_iter()
            .map(|(_, scene)| scene)
            .collect()
    }

    /// The indices of [`Corpus::distinct_training_scenes`]: the first `n` training indices
    /// whose captions no earlier index had, ascending, so that the clip of each
    /// ([`Corpus::training_clip`]) renders its caption. A longer list starts with a shorter
    /// one. Fewer when the grammar runs out of distinct training captions.
    pub fn distinct_training_indices(&self, n: usize) -> Vec<u64> {
        self.distinct_training(n)
            .into_iter()
            .map(|(index, _)| index)
            .collect()
    }

    fn distinct_training(&self, n: usize) -> Vec<(u64, Scene)> {
        let mut index = 0;
        let draw = || {
            let scene = self.training_scene(index);
            index += 1;
            scene
        };
        first_distinct_draws(n, draw, |_| true)
    }

    /// [`Corpus::held_out_scenes`], failing when fewer than `n` distinct held-out captions
    /// exist.
    pub fn try_held_out_scenes(&self, n: usize) -> Result<Vec<Scene>> {
        let scenes = self.held_out_scenes(n);
        if scenes.len() < n {
            return Err(Error::InvalidConfig {
                field: "held-out clip count",
                value: n.to_string(),
                reason: "more than the distinct held-out captions of the grammar",
            });
        }
        Ok(scenes)
    }

    /// The reference rendering of the `index`-th held-out scene.
    pub fn held_out_clip(&self, scene: &Scene, index: u64) -> Clip {
        self.render(scene, &mut self.rng(STREAM_HELD_RENDER, index))
    }

    fn rng(&self, stream: u64, index: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.cfg.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&stream.to_le_bytes());
        seed[16..24].copy_from_slice(&index.to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// Renders a scene with the given random stream (levels, pitches, spacing and waveforms).
    pub fn render(&self, scene: &Scene, rng: &mut impl Rng) -> Clip {
        let sr = self.cfg.sample_rate;
        let len = (self.cfg.duration_s * sr as f32).round() as usize;
        let mut samples = vec![0.0f32; len];
        let mut events = Vec::new();
        let onsets = layout(scene, self.cfg.duration_s, self.cfg.timing_jitter, rng);
        for (g, group) in scene.groups.iter().enumerate() {
            let group_level = uniform(rng, -16.0, -4.0);
            // One register for the whole group: the caption speaks of "three high beeps".
            let pitch = group.pitch.or_else(|| {
                group.kind.is_tonal().then(|| {
                    if rng.next_u32() & 1 == 0 {
                        Pitch::High
                    } else {
                        Pitch::Low
                    }
                })
            });
            for &onset_s in &onsets[g] {
                let level_db = group_level + uniform(rng, -1.5, 1.5);
                let (mut wave, frequency_hz) = synthesize(group.kind, pitch, sr, rng);
                fade_tail(&mut wave, (0.01 * sr as f32) as usize);
                let start = (onset_s * sr as f32).round() as usize;
                let gain = 10f32.powf(level_db / 20.0);
                for (d, &w) in samples[start.min(len)..].iter_mut().zip(&wave) {
                    *d += gain * w;
                }
                events.push(RenderedEvent {
                    kind: group.kind,
                    pitch,
                    onset_s,
                    duration_s: wave.len() as f32 / sr as f32,
                    frequency_hz,
                    level_db,
                });
            }
        }
        let peak = samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        if peak > 0.99 {
            samples.iter_mut().for_each(|s| *s *= 0.99 / peak);
        }
        Clip {
            caption: scene.caption(),
            scene: scene.clone(),
            events,
            samples,
            sample_rate: sr,
        }
    }
}

/// 64-bit FNV-1a: stable across platforms and versions, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn unit(rng: &mut impl Rng) -> f32 {
    (rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32)
}

fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * unit(rng)
}

fn pick<T: Copy>(rng: &mut impl Rng, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn random_group(rng: &mut impl Rng, kind: EventKind) -> EventGroup {
    let pitch = if kind.is_tonal() && unit(rng) < 0.7 {
        Some(pick(rng, &[Pitch::High, Pitch::Low]))
    } else {
        None
    };
    EventGroup {
        kind,
        count: 1 + (rng.next_u32() % 5) as u8,
        pitch,
        at_seconds: None,
    }
}

/// The first `n` scenes from `draw` whose captions pass `keep`, each caption once. The search
/// ends after this many draws in a row without a new caption: far more than the rarest caption
/// of the grammar needs, so it only ends a search for more captions than the grammar has.
fn first_distinct(
    n: usize,
    draw: impl FnMut() -> Scene,
    keep: impl Fn(&str) -> bool,
) -> Vec<Scene> {
    first_distinct_draws(n, draw, keep)
        .into_iter()
        .map(|(_, scene)| scene)
        .collect()
}

/// The first `n` kept draws with distinct captions, each with its position among the draws
/// (0 for the first draw); the search stops after a bounded run of draws that add nothing.
fn first_distinct_draws(
    n: usize,
    mut draw: impl FnMut() -> Scene,
    keep: impl Fn(&str) -> bool,
) -> Vec<(u64, Scene)> {
    const STALE_DRAWS: u32 = 200_000;
    let mut seen = std::collections::HashSet::new();
    // Not `n`: the grammar may hold far fewer captions than asked for.
    let mut out = Vec::with_capacity(n.min(1 << 16));
    let mut stale = 0;
    let mut position = 0;
    while out.len() < n && stale < STALE_DRAWS {
        stale += 1;
        let scene = draw();
        let caption = scene.caption();
        if keep(&caption) && seen.insert(caption) {
            out.push((position, scene));
            stale = 0;
        }
        position += 1;
    }
    out
}

fn random_scene(rng: &mut impl Rng) -> Scene {
    let connective = pick(rng, &[Connective::Then, Connective::FollowedBy]);
    let r = unit(rng);
    let first = pick(rng, &EventKind::ALL);
    let groups = if r < 0.35 {
        vec![random_group(rng, first)]
    } else if r < 0.45 {
        let mut g = random_group(rng, first);
        g.count = 1;
        g.at_seconds = Some(1 + rng.next_u32() % 8);
        vec![g]
    } else {
        let mut second = pick(rng, &EventKind::ALL);
        while second == first {
            second = pick(rng, &EventKind::ALL);
        }
        vec![random_group(rng, first), random_group(rng, second)]
    };
    Scene { groups, connective }
}

/// Onset times per group; always inside the clip with at least 0.3 s of tail. `jitter` scales
/// the random parts (see [`CorpusConfig::timing_jitter`]).
fn layout(scene: &Scene, duration_s: f32, jitter: f32, rng: &mut impl Rng) -> Vec<Vec<f32>> {
    let try_layout = |rng: &mut dyn FnMut() -> f32, minimal: bool| -> (Vec<Vec<f32>>, f32) {
        let mut t = if minimal {
            0.3
        } else {
            0.3 + 0.9 * jitter * rng()
        };
        let mut out = Vec::new();
        let mut end = 0.0f32;
        for group in &scene.groups {
            if let Some(at) = group.at_seconds {
                t = at as f32;
            }
            let mut onsets = Vec::new();
            for i in 0..group.count {
                if i > 0 {
                    t += group.kind.base_spacing()
                        + if minimal { 0.0 } else { 0.25 * jitter * rng() };
                }
                onsets.push(t);
            }
            end = t + max_duration(group.kind);
            t = end
                + if minimal {
                    0.4
                } else {
                    0.4 + 0.5 * jitter * rng()
                };
            out.push(onsets);
        }
        (out, end)
    };
    let mut draw = || unit(rng);
    for _ in 0..8 {
        let (onsets, end) = try_layout(&mut draw, false);
        if end <= duration_s - 0.3 {
            return onsets;
        }
    }
    try_layout(&mut draw, true).0
}

fn max_duration(kind: EventKind) -> f32 {
    match kind {
        EventKind::Beep => 0.3,
        EventKind::Click => 0.01,
        EventKind::Knock => 0.15,
        EventKind::Chirp => 0.35,
        EventKind::Thud => 0.35,
        EventKind::Bell => 1.0,
        EventKind::Whoosh => 0.6,
        EventKind::Buzz => 0.45,
    }
}

/// Attack/release envelope value at sample `i` of `n`.
fn ar_envelope(i: usize, n: usize, attack: usize, release: usize) -> f32 {
    let a = if i < attack {
        i as f32 / attack as f32
    } else {
        1.0
    };
    let r = if i + release > n {
        (n - i) as f32 / release as f32
    } else {
        1.0
    };
    a.min(r)
}

/// A linear fade over the last `n` samples (at most a quarter of the event), so that no event
/// ends in a step.
fn fade_tail(wave: &mut [f32], n: usize) {
    let n = n.min(wave.len() / 4).max(1);
    let len = wave.len();
    for (i, s) in wave[len.saturating_sub(n)..].iter_mut().enumerate() {
        *s *= 1.0 - (i + 1) as f32 / n as f32;
    }
}

fn noise(rng: &mut impl Rng) -> f32 {
    2.0 * unit(rng) - 1.0
}

/// One event's waveform (peak about 1) and its (start) fundamental frequency.
fn synthesize(
    kind: EventKind,
    pitch: Option<Pitch>,
    sr: u32,
    rng: &mut impl Rng,
) -> (Vec<f32>, Option<f32>) {
    let fs = sr as f32;
    let samples = |secs: f32| ((secs * fs) as usize).max(1);
    let high = pitch == Some(Pitch::High);
    let mut phase = 0.0f32;
    let mut osc = |f: f32| {
        phase = (phase + f / fs).fract();
        (2.0 * PI * phase).sin()
    };
    match kind {
        EventKind::Beep => {
            let f = if high {
                uniform(rng, 950.0, 1800.0)
            } else {
                uniform(rng, 220.0, 420.0)
            };
            let n = samples(uniform(rng, 0.15, 0.3));
            let (a, r) = (samples(0.005), samples(0.01));
            let w = (0..n).map(|i| ar_envelope(i, n, a, r) * osc(f)).collect();
            (w, Some(f))
        }
        EventKind::Click => {
            let n = samples(0.006);
            let tau = 0.0006 * fs;
            let mut prev = 0.0;
            let w = (0..n)
                .map(|i| {
                    let x = noise(rng) * (-(i as f32) / tau).exp();
                    let y = x - 0.5 * prev;
                    prev = x;
                    y
                })
                .collect();
            (w, None)
        }
        EventKind::Knock => {
            let f = uniform(rng, 160.0, 260.0);
            let tau = uniform(rng, 0.025, 0.04) * fs;
            let n = samples(0.15);
            let tick = samples(0.004);
            let mut phase2 = 0.0f32;
            let w = (0..n)
                .map(|i| {
                    phase2 = (phase2 + 2.3 * f / fs).fract();
                    let env = (-(i as f32) / tau).exp();
                    let body = osc(f) + 0.3 * (2.0 * PI * phase2).sin();
                    let t = if i < tick { 0.3 * noise(rng) } else { 0.0 };
                    env * body / 1.3 + t
                })
                .collect();
            (w, Some(f))
        }
        EventKind::Chirp => {
            let f0 = if high {
                uniform(rng, 1000.0, 1400.0)
            } else {
                uniform(rng, 220.0, 320.0)
            };
            let ratio = uniform(rng, 1.8, 2.2);
            let n = samples(uniform(rng, 0.25, 0.35));
            let (a, r) = (samples(0.005), samples(0.02));
            let w = (0..n)
                .map(|i| {
                    let f = f0 * ratio.powf(i as f32 / n as f32);
                    ar_envelope(i, n, a, r) * osc(f)
                })
                .collect();
            (w, Some(f0))
        }
        EventKind::Thud => {
            let f0 = uniform(rng, 50.0, 90.0);
            let tau = uniform(rng, 0.08, 0.12) * fs;
            let n = samples(0.35);
            let a = samples(0.002);
            let w = (0..n)
                .map(|i| {
                    let t = i as f32 / fs;
                    let f = f0 * (0.7 + 0.3 * (-t / 0.03).exp());
                    let att = if i < a { i as f32 / a as f32 } else { 1.0 };
                    att * (-(i as f32) / tau).exp() * osc(f)
                })
                .collect();
            (w, Some(f0))
        }
        EventKind::Bell => {
            let f = if high {
                uniform(rng, 900.0, 1300.0)
            } else {
                uniform(rng, 260.0, 400.0)
            };
            let partials = [
                (1.0, 1.0, 0.3),
                (2.76, 0.5, 0.2),
                (5.40, 0.3, 0.12),
                (8.93, 0.15, 0.08),
            ];
            let n = samples(1.0);
            let a = samples(0.002);
            let w = (0..n)
                .map(|i| {
                    let t = i as f32 / fs;
                    let att = if i < a { i as f32 / a as f32 } else { 1.0 };
                    let s: f32 = partials
                        .iter()
                        .filter(|(r, _, _)| r * f < 0.45 * fs)
                        .map(|&(r, amp, tau)| amp * (-t / tau).exp() * (2.0 * PI * r * f * t).sin())
                        .sum();
                    att * s / 1.95
                })
                .collect();
            (w, Some(f))
        }
        EventKind::Whoosh => {
            let n = samples(uniform(rng, 0.4, 0.6));
            let (a, r) = (samples(0.08), samples(0.15));
            let (lo, hi) = (uniform(rng, 250.0, 400.0), uniform(rng, 2500.0, 3500.0));
            // A state-variable band-pass (Q 1) whose centre sweeps from `lo` to `hi`, in the
            // trapezoidal (zero-delay feedback) form, stable for every centre below Nyquist.
            // (Corpus version 1 used the explicit Chamberlin form, which is unstable once its
            // coefficient passes 1, i.e. above fs / 6: NaN at 8 kHz; at 16 kHz every sweep
            // ended louder than its middle, and those ending above about 3.4 kHz, a tenth of
            // them, by one to three orders of magnitude: after normalisation, a burst.)
            let (mut s1, mut s2) = (0.0f32, 0.0f32);
            let w: Vec<f32> = (0..n)
                .map(|i| {
                    let fc = (lo * (hi / lo).powf(i as f32 / n as f32)).min(0.45 * fs);
                    let g = (PI * fc / fs).tan();
                    let x = noise(rng);
                    let high_pass = (x - (1.0 + g) * s1 - s2) / (1.0 + g + g * g);
                    let band = g * high_pass + s1;
                    s1 = g * high_pass + band;
                    let low = g * band + s2;
                    s2 = g * band + low;
                    ar_envelope(i, n, a, r) * band
                })
                .collect();
            let peak = w.iter().fold(1e-9f32, |m, s| m.max(s.abs()));
            (w.into_iter().map(|s| s / peak).collect(), None)
        }
        EventKind::Buzz => {
            let f = if high {
                uniform(rng, 900.0, 1100.0)
            } else {
                uniform(rng, 110.0, 180.0)
            };
            let n = samples(uniform(rng, 0.3, 0.45));
            let (a, r) = (samples(0.01), samples(0.01));
            let harmonics: Vec<f32> = (0..)
                .map(|k| (2 * k + 1) as f32)
                .take_while(|&h| h * f < 0.45 * fs)
                .collect();
            let w = (0..n)
                .map(|i| {
                    let t = i as f32 / fs;
                    let s: f32 = harmonics
                        .iter()
                        .map(|&h| (2.0 * PI * h * f * t).sin() / h)
                        .sum();
                    ar_envelope(i, n, a, r) * s * (4.0 / PI) / 1.18
                })
                .collect();
            (w, Some(f))
        }
    }
}
