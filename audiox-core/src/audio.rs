//! The [`Audio`] buffer: planar f32 samples with a sample rate; decoding (WAV, FLAC, MP3,
//! Ogg/Vorbis through symphonia), resampling (rubato), the reference's channel and length
//! fix-ups, peak normalisation, and WAV output (32-bit float or 16-bit PCM, through hound).

use std::io::Cursor;
use std::path::Path;

use crate::error::{Error, Result};

/// Planar audio: one `Vec<f32>` per channel, all the same length, at `sample_rate` Hz.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    sample_rate: u32,
    channels: Vec<Vec<f32>>,
}

/// Sample format of a written WAV file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WavFormat {
    /// IEEE 32-bit float samples (what the reference writes).
    #[default]
    Float32,
    /// Signed 16-bit PCM, samples clamped to [-1, 1] and scaled by 32767.
    Pcm16,
}

impl Audio {
    /// Audio from planar channels. Every channel must have the same length; there must be at
    /// least one channel, and the rate must be positive.
    pub fn new(sample_rate: u32, channels: Vec<Vec<f32>>) -> Result<Self> {
        if sample_rate == 0 {
            return Err(Error::Audio {
                path: None,
                message: "sample rate must be positive".into(),
            });
        }
        let Some(first) = channels.first() else {
            return Err(Error::Audio {
                path: None,
                message: "audio needs at least one channel".into(),
            });
        };
        let len = first.len();
        if let Some((i, c)) = channels.iter().enumerate().find(|(_, c)| c.len() != len) {
            return Err(Error::Audio {
                path: None,
                message: format!("channel {i} has {} samples, channel 0 has {len}", c.len()),
            });
        }
        Ok(Audio {
            sample_rate,
            channels,
        })
    }

    /// Silence of `frames` samples per channel.
    pub fn silence(sample_rate: u32, channels: usize, frames: usize) -> Result<Self> {
        Self::new(sample_rate, vec![vec![0.0; frames]; channels.max(1)])
    }

    /// Audio from interleaved samples (`[l0, r0, l1, r1, ...]`).
    pub fn from_interleaved(sample_rate: u32, channels: usize, samples: &[f32]) -> Result<Self> {
        if channels == 0 || !samples.len().is_multiple_of(channels) {
            return Err(Error::Audio {
                path: None,
                message: format!(
                    "{} interleaved samples do not divide into {channels} channels",
                    samples.len()
                ),
            });
        }
        let frames = samples.len() / channels;
        let planar = (0..channels)
            .map(|c| (0..frames).map(|i| samples[i * channels + c]).collect())
            .collect();
        Self::new(sample_rate, planar)
    }

    /// Sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// Number of channels.
    pub fn num_channels(&self) -> usize {
        self.channels.len()
    }

    /// Samples per channel.
    pub fn num_frames(&self) -> usize {
        self.channels[0].len()
    }

    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.num_frames() as f64 / self.sample_rate as f64
    }

    /// The planar channels.
    pub fn channels(&self) -> &[Vec<f32>] {
        &self.channels
    }

    /// Consumes the buffer, returning its planar channels.
    pub fn into_channels(self) -> Vec<Vec<f32>> {
        self.channels
    }

    /// Interleaved samples (`[l0, r0, l1, r1, ...]`).
    pub fn to_interleaved(&self) -> Vec<f32> {
        let (c, n) = (self.num_channels(), self.num_frames());
        let mut out = Vec::with_capacity(c * n);
        for i in 0..n {
            for ch in &self.channels {
                out.push(ch[i]);
            }
        }
        out
    }

    /// Largest absolute sample over all channels; NaN when any sample is NaN (a NaN is never
    /// skipped, so a normalised buffer keeps it and [`Audio::check_finite`] reports it).
    pub fn peak(&self) -> f32 {
        self.channels
            .iter()
            .flat_map(|c| c.iter())
            .fold(0.0f32, |m, &x| {
                if x.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(x.abs())
                }
            })
    }

    /// An [`Error::OutOfRange`] naming `what`, the channel and the index of the first sample
    /// that is NaN or infinite.
    pub fn check_finite(&self, what: &str) -> Result<()> {
        crate::limits::check_finite(what, &self.channels)
    }

    // -----------------------------------------------------------------------------------------
    // Decoding
    // -----------------------------------------------------------------------------------------

    /// Decodes an audio file (WAV, FLAC, MP3, Ogg/Vorbis) at its native rate and channels.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        Self::decode_file(path.as_ref(), None)
    }

    /// Decodes a file, whole or over `window`, naming the file in decoding errors.
    fn decode_file(path: &Path, window: Option<&Window>) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_string);
        decode(Box::new(file), ext.as_deref(), window).map_err(|e| match e {
            Error::Audio {
                path: None,
                message,
            } => Error::Audio {
                path: Some(path.to_path_buf()),
                message,
            },
            other => other,
        })
    }

    /// Decodes only `seconds` of an audio file from `from_seconds` (at the file's rate): the
    /// samples before are decoded and dropped, decoding stops after the window, so memory is
    /// bounded by the window whatever the file's length. The file's sample rate and channel
    /// count are checked against `limits` before any sample is kept; a window starting at or
    /// after the end of the file is an [`Error::OutOfRange`] naming the file's duration.
    pub fn read_window(
        path: impl AsRef<Path>,
        from_seconds: f64,
        seconds: f64,
        limits: &crate::limits::Limits,
    ) -> Result<Self> {
        let path = path.as_ref();
        let window = Window::checked(from_seconds, seconds, limits)?;
        Self::decode_file(path, Some(&window))
    }

    /// [`Audio::read_window`] on an encoded file held in memory.
    pub fn decode_bytes_window(
        bytes: Vec<u8>,
        extension: Option<&str>,
        from_seconds: f64,
        seconds: f64,
        limits: &crate::limits::Limits,
    ) -> Result<Self> {
        let window = Window::checked(from_seconds, seconds, limits)?;
        decode(Box::new(Cursor::new(bytes)), extension, Some(&window))
    }

    /// Decodes an encoded audio file held in memory. `extension` (`"wav"`, `"mp3"`, ...) is a
    /// hint for the format probe.
    pub fn decode_bytes(bytes: Vec<u8>, extension: Option<&str>) -> Result<Self> {
        decode(Box::new(Cursor::new(bytes)), extension, None)
    }

    // -----------------------------------------------------------------------------------------
    // Processing
    // -----------------------------------------------------------------------------------------

    /// Resamples to `rate` Hz (anti-aliased; the startup delay is trimmed, so the output is
    /// aligned with the input). Returns a copy when the rate already matches.
    ///
    /// Rates with a small ratio (`48000 -> 44100` is 160/147) use rubato's synchronous FFT
    /// resampler, whose FFT sizes are the reduced ratio's terms; any other pair (a prime rate
    /// such as 44101 Hz would need FFTs of 44101 points per chunk) uses rubato's asynchronous
    /// windowed-sinc resampler, whose cost is a fixed number of taps per output sample. The
    /// cost is thus bounded by the input and output lengths for every pair of rates.
    pub fn resample(&self, rate: u32) -> Result<Self> {
        use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
        use rubato::{
            Async, Fft, FixedAsync, FixedSync, Resampler, SincInterpolationParameters,
            SincInterpolationType, WindowFunction,
        };
        if rate == 0 {
            return Err(Error::Audio {
                path: None,
                message: "target sample rate must be positive".into(),
            });
        }
        if rate == self.sample_rate {
            return Ok(self.clone());
        }
        // The resamplers' FFTs fail (and panic) on non-finite input: refused here.
        self.check_finite("sample to resample")?;
        let frames = self.num_frames();
        let channels = self.num_channels();
        if frames == 0 {
            return Self::silence(rate, channels, 0);
        }
        let err = |e: &dyn std::fmt::Display| Error::Audio {
            path: None,
            message: format!("resampling {} Hz -> {rate} Hz: {e}", self.sample_rate),
        };
        let g = gcd(self.sample_rate as u64, rate as u64);
        let (num, den) = (self.sample_rate as u64 / g, rate as u64 / g);
        let mut resampler: Box<dyn Resampler<f32>> = if num.max(den) <= MAX_FFT_RATIO_TERM {
            Box::new(
                Fft::<f32>::new(
                    self.sample_rate as usize,
                    rate as usize,
                    1024,
                    channels,
                    FixedSync::Input,
                )
                .map_err(|e| err(&e))?,
            )
        } else {
            let params = SincInterpolationParameters {
                sinc_len: 256,
                f_cutoff: None,
                oversampling_factor: 256,
                interpolation: SincInterpolationType::Cubic,
                window: WindowFunction::BlackmanHarris2,
            };
            // Input chunks of at most the clip's length: every call produces a whole chunk's
            // output, so a 1024-frame chunk at 1 Hz -> 44.1 kHz computed 45 million frames per
            // channel even for a clip of 200 (33 s in a debug build).
            Box::new(
                Async::<f32>::new_sinc(
                    rate as f64 / self.sample_rate as f64,
                    1.0,
                    &params,
                    frames.clamp(1, 1024),
                    channels,
                    FixedAsync::Input,
                )
                .map_err(|e| err(&e))?,
            )
        };
        let input =
            SequentialSliceOfVecs::new(&self.channels, channels, frames).map_err(|e| err(&e))?;
        let out = resampler
            .process_all(&input, frames, None)
            .map_err(|e| err(&e))?;
        let expected =
            ((frames as u64 * rate as u64) as f64 / self.sample_rate as f64).round() as usize;
        let data = out.take_data();
        let got = data.len() / channels;
        let mut planar: Vec<Vec<f32>> = (0..channels)
            .map(|c| (0..got).map(|i| data[i * channels + c]).collect())
            .collect();
        for ch in &mut planar {
            ch.resize(expected, 0.0);
        }
        Self::new(rate, planar)
    }

    /// The reference's channel fix-up: mono is repeated to `channels`, extra channels beyond
    /// `channels` are dropped (first ones kept).
    pub fn with_channels(&self, channels: usize) -> Result<Self> {
        if channels == 0 {
            return Err(Error::Audio {
                path: None,
                message: "cannot make audio with 0 channels".into(),
            });
        }
        let out = if self.num_channels() == 1 {
            vec![self.channels[0].clone(); channels]
        } else if self.num_channels() >= channels {
            self.channels[..channels].to_vec()
        } else {
            return Err(Error::Audio {
                path: None,
                message: format!(
                    "cannot make {channels} channels from {}",
                    self.num_channels()
                ),
            });
        };
        Self::new(self.sample_rate, out)
    }

    /// The reference's prompt window: samples `[start, start + len)`; when fewer remain, the
    /// window is **left**-padded with zeros to `len`.
    pub fn window(&self, start: usize, len: usize) -> Self {
        let channels = self
            .channels
            .iter()
            .map(|c| {
                let from = start.min(c.len());
                let to = start.saturating_add(len).min(c.len());
                let taken = &c[from..to];
                let mut v = vec![0.0; len - taken.len()];
                v.extend_from_slice(taken);
                v
            })
            .collect();
        Audio {
            sample_rate: self.sample_rate,
            channels,
        }
    }

    /// [`Audio::window`] of `len` samples at `rate` Hz from `start_seconds`, resampling only
    /// the part of the clip the window covers (plus a margin of [`RESAMPLE_MARGIN_SECONDS`] on
    /// each side for the resampler's filter): the cost is bounded by the window, not by the
    /// clip. Without a rate change this is exactly `window(start_seconds * rate, len)`; from
    /// the start of a clip the samples are those of resampling the whole clip.
    pub fn window_at_rate(&self, rate: u32, start_seconds: f64, len: usize) -> Result<Self> {
        if !(start_seconds.is_finite() && start_seconds >= 0.0) {
            return Err(Error::out_of_range(
                "window start (seconds)",
                start_seconds,
                "a finite number >= 0",
            ));
        }
        let at = |seconds: f64, rate: u32| (seconds * rate as f64).min(usize::MAX as f64) as usize;
        if rate == self.sample_rate {
            return Ok(self.window(at(start_seconds, rate), len));
        }
        let native = self.sample_rate;
        let from = at((start_seconds - RESAMPLE_MARGIN_SECONDS).max(0.0), native);
        let seconds = len as f64 / rate.max(1) as f64 + 2.0 * RESAMPLE_MARGIN_SECONDS;
        let until = from.saturating_add(at(seconds, native) + 1);
        let cropped = Audio {
            sample_rate: native,
            channels: self
                .channels
                .iter()
                .map(|c| c[from.min(c.len())..until.min(c.len())].to_vec())
                .collect(),
        };
        let resampled = cropped.resample(rate)?;
        let offset = start_seconds - from as f64 / native as f64;
        Ok(resampled.window(at(offset.max(0.0), rate), len))
    }

    /// The first `frames` samples of each channel (all of them if there are fewer).
    pub fn truncated(&self, frames: usize) -> Self {
        Audio {
            sample_rate: self.sample_rate,
            channels: self
                .channels
                .iter()
                .map(|c| c[..frames.min(c.len())].to_vec())
                .collect(),
        }
    }

    /// The reference's output normalisation: divide by the peak over all channels (at least
    /// 1e-8), then clamp to [-1, 1].
    pub fn peak_normalized(&self) -> Self {
        let peak = self.peak().max(1e-8);
        Audio {
            sample_rate: self.sample_rate,
            channels: self
                .channels
                .iter()
                .map(|c| c.iter().map(|&x| (x / peak).clamp(-1.0, 1.0)).collect())
                .collect(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Writing
    // -----------------------------------------------------------------------------------------

    /// Writes a WAV file of 32-bit float samples.
    pub fn write_wav(&self, path: impl AsRef<Path>) -> Result<()> {
        self.write_wav_as(path, WavFormat::Float32)
    }

    /// Writes a WAV file in the given sample format.
    pub fn write_wav_as(&self, path: impl AsRef<Path>, format: WavFormat) -> Result<()> {
        let path = path.as_ref();
        // Checked before the file is created: a non-finite buffer never becomes a WAV.
        self.check_finite("audio to write")?;
        let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
        self.write_wav_to(std::io::BufWriter::new(file), format)
            .map_err(|e| match e {
                Error::Audio {
                    path: None,
                    message,
                } => Error::Audio {
                    path: Some(path.to_path_buf()),
                    message,
                },
                other => other,
            })
    }

    /// Encodes a WAV file into memory.
    pub fn to_wav_bytes(&self, format: WavFormat) -> Result<Vec<u8>> {
        let mut cursor = Cursor::new(Vec::new());
        self.write_wav_to(&mut cursor, format)?;
        Ok(cursor.into_inner())
    }

    fn write_wav_to<W: std::io::Write + std::io::Seek>(
        &self,
        writer: W,
        format: WavFormat,
    ) -> Result<()> {
        let err = |e: hound::Error| Error::Audio {
            path: None,
            message: format!("writing WAV: {e}"),
        };
        let spec = hound::WavSpec {
            channels: self.num_channels() as u16,
            sample_rate: self.sample_rate,
            bits_per_sample: match format {
                WavFormat::Float32 => 32,
                WavFormat::Pcm16 => 16,
            },
            sample_format: match format {
                WavFormat::Float32 => hound::SampleFormat::Float,
                WavFormat::Pcm16 => hound::SampleFormat::Int,
            },
        };
        self.check_finite("audio to write")?;
        let mut w = hound::WavWriter::new(writer, spec).map_err(err)?;
        for i in 0..self.num_frames() {
            for c in &self.channels {
                match format {
                    WavFormat::Float32 => w.write_sample(c[i]).map_err(err)?,
                    WavFormat::Pcm16 => w
                        .write_sample((c[i].clamp(-1.0, 1.0) * 32767.0).round() as i16)
                        .map_err(err)?,
                }
            }
        }
        w.finalize().map_err(err)
    }
}

/// Seconds of context kept on each side of a window before resampling it
/// ([`Audio::window_at_rate`]): longer than the resamplers' filters and chunks.
pub const RESAMPLE_MARGIN_SECONDS: f64 = 1.0;

/// Largest term of the reduced rate ratio served by the FFT resampler (its FFT sizes are
/// multiples of the terms); larger ones take the windowed-sinc path.
const MAX_FFT_RATIO_TERM: u64 = 4096;

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The part of a file [`decode`] keeps.
struct Window<'a> {
    from_seconds: f64,
    seconds: f64,
    limits: &'a crate::limits::Limits,
}

impl<'a> Window<'a> {
    /// The window, once its start and length are within `limits`.
    fn checked(from_seconds: f64, seconds: f64, limits: &'a crate::limits::Limits) -> Result<Self> {
        limits.check_start("audio prompt start", from_seconds)?;
        limits.check_range(
            "audio prompt window",
            seconds,
            0.0,
            limits.max_prompt_audio_seconds,
        )?;
        Ok(Window {
            from_seconds,
            seconds,
            limits,
        })
    }
}

fn decode(
    source: Box<dyn symphonia::core::io::MediaSource>,
    extension: Option<&str>,
    window: Option<&Window<'_>>,
) -> Result<Audio> {
    use symphonia::core::codecs::CodecParameters;
    use symphonia::core::codecs::audio::AudioDecoderOptions;
    use symphonia::core::errors::Error as SymErr;
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
    use symphonia::core::meta::MetadataOptions;

    let fail = |message: String| Error::Audio {
        path: None,
        message,
    };
    let mss = MediaSourceStream::new(source, MediaSourceStreamOptions::default());
    let mut hint = Hint::new();
    if let Some(ext) = extension {
        hint.with_extension(ext);
    }
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| {
            fail(format!(
                "not a supported audio file (WAV, FLAC, MP3, Ogg/Vorbis): {e}"
            ))
        })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| fail("no audio track".into()))?;
    let track_id = track.id;
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(fail("the audio track has no codec parameters".into()));
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| fail(format!("unsupported codec: {e}")))?;

    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut rate = params.sample_rate.unwrap_or(0);
    let mut scratch: Vec<Vec<f32>> = Vec::new();
    // Frames of the stream decoded so far (kept or not), and the window in frames.
    let mut position: u64 = 0;
    let mut span: Option<(u64, u64)> = None;
    let frames_at =
        |seconds: f64, rate: u32| (seconds * rate as f64).floor().min(u64::MAX as f64) as u64;
    if let Some(w) = window {
        let n = params.channels.as_ref().map_or(1, |c| c.count());
        if rate != 0 {
            w.limits.check_audio_format("audio prompt", rate, n)?;
        }
    }
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymErr::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(fail(format!("reading packets: {e}"))),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            // A corrupt packet in the middle of a stream is skipped, as players do.
            Err(SymErr::DecodeError(_)) => continue,
            Err(e) => return Err(fail(format!("decoding: {e}"))),
        };
        if buf.spec().rate() != rate && span.is_some() {
            return Err(fail("the sample rate changes within the stream".into()));
        }
        rate = buf.spec().rate();
        buf.copy_to_vecs_planar::<f32>(&mut scratch);
        if channels.is_empty() {
            channels = vec![Vec::new(); scratch.len()];
        }
        if scratch.len() != channels.len() {
            return Err(fail("the channel count changes within the stream".into()));
        }
        let n = scratch.first().map_or(0, Vec::len) as u64;
        let Some(w) = window else {
            for (dst, src) in channels.iter_mut().zip(&scratch) {
                dst.extend_from_slice(src);
            }
            continue;
        };
        let (from, to) = match span {
            Some(s) => s,
            None => {
                w.limits
                    .check_audio_format("audio prompt", rate, scratch.len())?;
                let from = frames_at(w.from_seconds, rate);
                let s = (from, from.saturating_add(frames_at(w.seconds, rate).max(1)));
                span = Some(s);
                s
            }
        };
        let (lo, hi) = (position.max(from), position.saturating_add(n).min(to));
        if lo < hi {
            let (a, b) = ((lo - position) as usize, (hi - position) as usize);
            for (dst, src) in channels.iter_mut().zip(&scratch) {
                dst.extend_from_slice(&src[a..b]);
            }
        }
        position = position.saturating_add(n);
        if position >= to {
            break;
        }
    }
    if let (Some(w), Some((from, _))) = (window, span)
        && position <= from
    {
        return Err(Error::out_of_range(
            "audio prompt start",
            format!("{} s", w.from_seconds),
            format!(
                "before the end of the file ({} s)",
                position as f64 / rate.max(1) as f64
            ),
        ));
    }
    if channels.is_empty() || channels[0].is_empty() {
        return Err(fail("the file holds no audio samples".into()));
    }
    if rate == 0 {
        return Err(fail("unknown sample rate".into()));
    }
    Audio::new(rate, channels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, frames: usize) -> Vec<f32> {
        (0..frames)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn wav_round_trip_float_and_pcm16() {
        let a = Audio::new(8000, vec![sine(8000, 440.0, 800), sine(8000, 220.0, 800)]).unwrap();
        let f =
            Audio::decode_bytes(a.to_wav_bytes(WavFormat::Float32).unwrap(), Some("wav")).unwrap();
        assert_eq!(f, a);
        let p =
            Audio::decode_bytes(a.to_wav_bytes(WavFormat::Pcm16).unwrap(), Some("wav")).unwrap();
        assert_eq!(p.num_frames(), 800);
        let err = p.channels()[1]
            .iter()
            .zip(&a.channels()[1])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1.0 / 32767.0 + 1e-6, "pcm16 error {err}");
    }

    #[test]
    fn channel_fixup_follows_the_reference() {
        let mono = Audio::new(10, vec![vec![1.0, 2.0]]).unwrap();
        assert_eq!(
            mono.with_channels(2).unwrap().channels(),
            &[vec![1.0, 2.0], vec![1.0, 2.0]]
        );
        let three = Audio::new(10, vec![vec![1.0], vec![2.0], vec![3.0]]).unwrap();
        assert_eq!(
            three.with_channels(2).unwrap().channels(),
            &[vec![1.0], vec![2.0]]
        );
        let stereo = Audio::new(10, vec![vec![1.0], vec![2.0]]).unwrap();
        assert!(stereo.with_channels(3).is_err());
    }

    #[test]
    fn window_crops_and_left_pads() {
        let a = Audio::new(10, vec![vec![1.0, 2.0, 3.0, 4.0]]).unwrap();
        assert_eq!(a.window(1, 2).channels(), &[vec![2.0, 3.0]]);
        assert_eq!(a.window(2, 4).channels(), &[vec![0.0, 0.0, 3.0, 4.0]]);
        assert_eq!(a.window(9, 3).channels(), &[vec![0.0, 0.0, 0.0]]);
    }

    #[test]
    fn peak_normalisation_matches_the_reference() {
        let a = Audio::new(10, vec![vec![0.5, -2.0], vec![1.0, 0.0]]).unwrap();
        assert_eq!(
            a.peak_normalized().channels(),
            &[vec![0.25, -1.0], vec![0.5, 0.0]]
        );
        let silent = Audio::silence(10, 2, 3).unwrap();
        assert_eq!(silent.peak_normalized(), silent);
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        let a = Audio::new(22050, vec![sine(22050, 1000.0, 22050)]).unwrap();
        let b = a.resample(44100).unwrap();
        assert_eq!(b.sample_rate(), 44100);
        assert_eq!(b.num_frames(), 44100);
        // Compare with an ideal 1 kHz sine at the new rate, away from the edges.
        let ideal = sine(44100, 1000.0, 44100);
        let err = b.channels()[0][2000..42000]
            .iter()
            .zip(&ideal[2000..42000])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-2, "resampling error {err}");
    }

    #[test]
    fn bad_audio_is_a_typed_error() {
        assert!(matches!(
            Audio::decode_bytes(vec![], Some("wav")),
            Err(Error::Audio { .. })
        ));
        assert!(matches!(
            Audio::decode_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk".to_vec(), Some("wav")),
            Err(Error::Audio { .. })
        ));
        assert!(matches!(
            Audio::decode_bytes(vec![0x55; 4096], None),
            Err(Error::Audio { .. })
        ));
        // A valid header with no samples.
        let empty = Audio::new(8000, vec![vec![]])
            .unwrap()
            .to_wav_bytes(WavFormat::Float32)
            .unwrap();
        assert!(matches!(
            Audio::decode_bytes(empty, Some("wav")),
            Err(Error::Audio { .. })
        ));
        assert!(Audio::new(0, vec![vec![0.0]]).is_err());
        assert!(Audio::new(10, vec![]).is_err());
        assert!(Audio::new(10, vec![vec![0.0], vec![]]).is_err());
        assert!(matches!(
            Audio::read("/nonexistent/file.wav"),
            Err(Error::Io { .. })
        ));
    }
}
