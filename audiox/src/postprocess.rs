//! Sound-effect output options, applied to decoded audio: sample-rate conversion, mono
//! down-mix, silence trimming, fade-out, loudness normalisation (EBU R128) and the sample
//! format of written files.
//!
//! Set them on a request with [`Request::output`](crate::Request::output), or apply them to
//! any [`Audio`] with [`OutputOptions::apply`]:
//!
//! ```
//! use audiox::Audio;
//! use audiox::postprocess::OutputOptions;
//!
//! let rate = 44_100;
//! let tone: Vec<f32> = (0..rate).map(|i| (i as f32 * 0.05).sin() * 0.5).collect();
//! let audio = Audio::new(rate as u32, vec![tone.clone(), tone])?;
//! let game_ready = OutputOptions::new()
//!     .sample_rate(48_000)
//!     .mono(true)
//!     .loudness(-16.0)
//!     .fade_out(0.1)
//!     .apply(&audio)?;
//! assert_eq!(game_ready.sample_rate(), 48_000);
//! assert_eq!(game_ready.num_channels(), 1);
//! # Ok::<(), audiox::Error>(())
//! ```

use audiox_core::audio::{Audio, WavFormat};
use audiox_core::{Error, Result};

/// The silence threshold [`OutputOptions::trim_silence`] uses when given `None`, in dBFS.
pub const DEFAULT_SILENCE_THRESHOLD_DB: f32 = -50.0;

/// What to do to decoded audio before it is returned. Every option is off by default (the
/// model's rate and channels, the reference's peak normalisation, f32 samples).
///
/// The steps run in this order: resampling, down-mix, silence trimming, fade-out, loudness
/// normalisation (last, so the measured loudness of the result is the target).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutputOptions {
    /// Output sample rate in Hz (`None`: the model's, 44.1 kHz for the official one).
    pub sample_rate: Option<u32>,
    /// Down-mix to one channel (the mean of the channels).
    pub mono: bool,
    /// Trim leading and trailing samples quieter than this level, in dBFS (e.g. -50).
    pub trim_silence_db: Option<f32>,
    /// Linear fade to zero over the last this-many seconds (the whole clip if shorter).
    pub fade_out_seconds: Option<f64>,
    /// Scale to this integrated loudness in LUFS (EBU R128 / ITU-R BS.1770), instead of the
    /// reference's peak normalisation. Samples are not clipped: with a loud target, peaks may
    /// exceed 1.0 in f32 output (16-bit PCM clamps them).
    pub loudness_lufs: Option<f64>,
    /// Sample format of written files and of [`pcm16_interleaved`] users (default f32).
    pub format: WavFormat,
}

impl OutputOptions {
    /// Every option off.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resample the output to `hz`.
    pub fn sample_rate(mut self, hz: u32) -> Self {
        self.sample_rate = Some(hz);
        self
    }

    /// Down-mix to mono (`true`) or keep the model's channels.
    pub fn mono(mut self, on: bool) -> Self {
        self.mono = on;
        self
    }

    /// Trim leading and trailing silence below `threshold_db` dBFS
    /// (default [`DEFAULT_SILENCE_THRESHOLD_DB`]).
    pub fn trim_silence(mut self, threshold_db: Option<f32>) -> Self {
        self.trim_silence_db = Some(threshold_db.unwrap_or(DEFAULT_SILENCE_THRESHOLD_DB));
        self
    }

    /// Fade out linearly over the last `seconds`.
    pub fn fade_out(mut self, seconds: f64) -> Self {
        self.fade_out_seconds = Some(seconds);
        self
    }

    /// Normalise to `lufs` integrated loudness (e.g. -16 for game SFX, -23 for broadcast).
    pub fn loudness(mut self, lufs: f64) -> Self {
        self.loudness_lufs = Some(lufs);
        self
    }

    /// The sample format of written files.
    pub fn format(mut self, format: WavFormat) -> Self {
        self.format = format;
        self
    }

    /// Whether loudness normalisation replaces the reference's peak normalisation.
    pub fn replaces_peak_normalisation(&self) -> bool {
        self.loudness_lufs.is_some()
    }

    /// Checks every value (an error names the bad one).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if let Some(rate) = self.sample_rate
            && !(1000..=384_000).contains(&rate)
        {
            return bad(format!(
                "output sample rate {rate} Hz is outside 1000..=384000"
            ));
        }
        if let Some(db) = self.trim_silence_db
            && !(db.is_finite() && db <= 0.0)
        {
            return bad(format!(
                "silence threshold {db} dBFS must be a finite level at or below 0"
            ));
        }
        if let Some(s) = self.fade_out_seconds
            && !(s.is_finite() && s >= 0.0)
        {
            return bad(format!("fade-out of {s} s must be a non-negative number"));
        }
        if let Some(l) = self.loudness_lufs
            && !(l.is_finite() && (-70.0..=0.0).contains(&l))
        {
            return bad(format!("loudness target {l} LUFS is outside -70..=0"));
        }
        Ok(())
    }

    /// Applies the options to `audio` (see the type's docs for the order).
    pub fn apply(&self, audio: &Audio) -> Result<Audio> {
        self.validate()?;
        let mut out = match self.sample_rate {
            Some(rate) => audio.resample(rate)?,
            None => audio.clone(),
        };
        if self.mono {
            out = downmix_mono(&out)?;
        }
        if let Some(db) = self.trim_silence_db {
            out = trim_silence(&out, db)?;
        }
        if let Some(s) = self.fade_out_seconds {
            out = fade_out(&out, s)?;
        }
        if let Some(target) = self.loudness_lufs {
            out = normalize_loudness(&out, target)?;
        }
        Ok(out)
    }
}

/// One channel, the mean of all channels.
pub fn downmix_mono(audio: &Audio) -> Result<Audio> {
    let channels = audio.channels();
    let n = channels.len().max(1) as f32;
    let mixed = (0..audio.num_frames())
        .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() / n)
        .collect();
    Audio::new(audio.sample_rate(), vec![mixed])
}

/// Removes leading and trailing frames whose loudest channel is below `threshold_db` dBFS.
/// An all-silent clip becomes empty.
pub fn trim_silence(audio: &Audio, threshold_db: f32) -> Result<Audio> {
    let threshold = 10f32.powf(threshold_db / 20.0);
    let channels = audio.channels();
    let loud = |i: usize| channels.iter().any(|c| c[i].abs() >= threshold);
    let frames = audio.num_frames();
    let Some(first) = (0..frames).find(|&i| loud(i)) else {
        return Audio::silence(audio.sample_rate(), audio.num_channels(), 0);
    };
    let last = (0..frames).rev().find(|&i| loud(i)).unwrap_or(first);
    Audio::new(
        audio.sample_rate(),
        channels.iter().map(|c| c[first..=last].to_vec()).collect(),
    )
}

/// A linear fade to zero over the last `seconds` (the whole clip when it is shorter).
pub fn fade_out(audio: &Audio, seconds: f64) -> Result<Audio> {
    let frames = audio.num_frames();
    let len = ((seconds * audio.sample_rate() as f64).round() as usize).min(frames);
    let start = frames - len;
    let channels = audio
        .channels()
        .iter()
        .map(|c| {
            c.iter()
                .enumerate()
                .map(|(i, &x)| {
                    if i < start {
                        x
                    } else {
                        // Reaches exactly 0 on the last frame.
                        let left = (frames - 1 - i) as f32;
                        x * left / len.saturating_sub(1).max(1) as f32
                    }
                })
                .collect()
        })
        .collect();
    Audio::new(audio.sample_rate(), channels)
}

/// Integrated loudness in LUFS (EBU R128, gated), measured with the `ebur128` crate. `None`
/// for clips too short (under 0.4 s) or too quiet to have a gated loudness.
pub fn loudness_lufs(audio: &Audio) -> Result<Option<f64>> {
    let err = |e: ebur128::Error| Error::Audio {
        path: None,
        message: format!("loudness measurement: {e}"),
    };
    if audio.num_frames() == 0 {
        return Ok(None);
    }
    let mut meter = ebur128::EbuR128::new(
        audio.num_channels() as u32,
        audio.sample_rate(),
        ebur128::Mode::I,
    )
    .map_err(err)?;
    let planar: Vec<&[f32]> = audio.channels().iter().map(|c| c.as_slice()).collect();
    meter.add_frames_planar_f32(&planar).map_err(err)?;
    let l = meter.loudness_global().map_err(err)?;
    Ok(l.is_finite().then_some(l))
}

/// `audio` scaled so its integrated loudness is `target` LUFS. A clip without a gated
/// loudness (silent or under 0.4 s) is returned unchanged.
pub fn normalize_loudness(audio: &Audio, target: f64) -> Result<Audio> {
    let Some(measured) = loudness_lufs(audio)? else {
        return Ok(audio.clone());
    };
    let gain = 10f64.powf((target - measured) / 20.0) as f32;
    Audio::new(
        audio.sample_rate(),
        audio
            .channels()
            .iter()
            .map(|c| c.iter().map(|&x| x * gain).collect())
            .collect(),
    )
}

/// Interleaved 16-bit PCM samples (clamped to [-1, 1], scaled by 32767, rounded).
pub fn pcm16_interleaved(audio: &Audio) -> Vec<i16> {
    audio
        .to_interleaved()
        .into_iter()
        .map(|x| (x.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 44_100;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        let n = (seconds * RATE as f64) as usize;
        (0..n)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / RATE as f32).sin() * amp)
            .collect()
    }

    /// `pad` seconds of silence, `body` seconds of tone, `pad` seconds of silence.
    fn padded(pad: f64, body: f64) -> Audio {
        let p = vec![0.0; (pad * RATE as f64) as usize];
        let mut c = p.clone();
        c.extend(tone(body, 0.5));
        c.extend(&p);
        Audio::new(RATE, vec![c.clone(), c]).unwrap()
    }

    #[test]
    fn trimming_removes_exactly_the_silence() {
        let body = (1.5 * RATE as f64) as usize;
        let audio = padded(0.7, 1.5);
        let trimmed = trim_silence(&audio, -50.0).unwrap();
        // The sine starts at 0 and its first samples are below -50 dBFS: allow those few.
        let lost = body - trimmed.num_frames();
        assert!(lost < 10, "trimmed {} of {body}", trimmed.num_frames());
        assert!(trimmed.num_frames() < audio.num_frames() - RATE as usize);
        let silent = Audio::silence(RATE, 2, 1000).unwrap();
        assert_eq!(trim_silence(&silent, -50.0).unwrap().num_frames(), 0);
    }

    #[test]
    fn loudness_reaches_the_target_within_half_a_lu() {
        let audio = padded(0.2, 3.0);
        for target in [-14.0, -23.0, -30.0] {
            let out = OutputOptions::new().loudness(target).apply(&audio).unwrap();
            let got = loudness_lufs(&out).unwrap().unwrap();
            assert!((got - target).abs() < 0.5, "target {target}, got {got}");
        }
        // A different input level gives the same result level.
        let quiet = normalize_loudness(&audio, -40.0).unwrap();
        let back = normalize_loudness(&quiet, -20.0).unwrap();
        assert!((loudness_lufs(&back).unwrap().unwrap() + 20.0).abs() < 0.5);
        // Silence has no loudness and is left alone.
        let silent = Audio::silence(RATE, 2, RATE as usize).unwrap();
        assert_eq!(loudness_lufs(&silent).unwrap(), None);
        assert_eq!(normalize_loudness(&silent, -16.0).unwrap(), silent);
    }

    #[test]
    fn output_rate_and_length_are_exact() {
        let audio = padded(0.0, 2.0);
        for rate in [48_000u32, 22_050, 16_000] {
            let out = OutputOptions::new()
                .sample_rate(rate)
                .apply(&audio)
                .unwrap();
            assert_eq!(out.sample_rate(), rate);
            let expected = (audio.num_frames() as f64 * rate as f64 / RATE as f64).round() as usize;
            assert_eq!(out.num_frames(), expected);
        }
    }

    #[test]
    fn mono_fade_and_pcm16() {
        let left = tone(1.0, 0.5);
        let right: Vec<f32> = left.iter().map(|x| -x * 0.5).collect();
        let audio = Audio::new(RATE, vec![left.clone(), right.clone()]).unwrap();
        let mono = downmix_mono(&audio).unwrap();
        assert_eq!(mono.num_channels(), 1);
        assert_eq!(mono.channels()[0][100], (left[100] + right[100]) / 2.0);

        let faded = fade_out(&audio, 0.5).unwrap();
        let n = faded.num_frames();
        assert_eq!(faded.channels()[0][n - 1], 0.0);
        assert_eq!(faded.channels()[0][..n / 2], left[..n / 2]);
        let mid = n * 3 / 4;
        assert!(faded.channels()[0][mid].abs() < left[mid].abs());

        let pcm = pcm16_interleaved(&audio);
        assert_eq!(pcm.len(), 2 * audio.num_frames());
        assert_eq!(pcm[2], (left[1] * 32767.0).round() as i16);
    }

    #[test]
    fn bad_options_are_refused() {
        let audio = padded(0.0, 0.5);
        for o in [
            OutputOptions::new().sample_rate(0),
            OutputOptions::new().loudness(f64::NAN),
            OutputOptions::new().loudness(10.0),
            OutputOptions::new().fade_out(-1.0),
            OutputOptions::new().trim_silence(Some(6.0)),
        ] {
            assert!(
                matches!(o.apply(&audio), Err(Error::InvalidRequest(_))),
                "{o:?}"
            );
        }
    }
}
