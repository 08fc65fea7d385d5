//! A picture of the sound: a log-mel spectrogram as a PNG, with a time axis in seconds, so a
//! designer can see a variation before listening and reviewers can compare outputs at a glance.
//!
//! ```
//! use audiox::Audio;
//! use audiox::spectrogram::SpectrogramOptions;
//!
//! let rate = 16_000u32;
//! let chirp: Vec<f32> = (0..2 * rate as usize)
//!     .map(|i| { let t = i as f32 / rate as f32; (t * t * 6000.0).sin() * 0.5 })
//!     .collect();
//! let audio = Audio::new(rate, vec![chirp])?;
//! let options = SpectrogramOptions::default();
//! let image = audiox::spectrogram::render(&audio, &options)?;
//! // One column per hop: the width follows the duration.
//! assert_eq!(image.width(), options.width_for(audio.duration_secs()));
//! # Ok::<(), audiox::Error>(())
//! ```

use std::path::Path;

use image::{Rgb, RgbImage};
use realfft::RealFftPlanner;

use audiox_core::audio::Audio;
use audiox_core::{Error, Result};

/// How the spectrogram is computed and drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectrogramOptions {
    /// Image columns per second of audio (the width follows the duration).
    pub pixels_per_second: u32,
    /// Mel bands (image rows of the plot, low frequencies at the bottom).
    pub mel_bands: usize,
    /// Pixel height of one mel band.
    pub band_height: u32,
    /// FFT window length in seconds (a Hann window).
    pub window_seconds: f64,
    /// Levels this many dB below the loudest cell are drawn black.
    pub dynamic_range_db: f32,
}

impl Default for SpectrogramOptions {
    fn default() -> Self {
        SpectrogramOptions {
            pixels_per_second: 100,
            mel_bands: 96,
            band_height: 2,
            window_seconds: 0.046,
            dynamic_range_db: 80.0,
        }
    }
}

/// Height of the time axis strip under the plot.
const AXIS_HEIGHT: u32 = 14;

impl SpectrogramOptions {
    /// Image width for a clip of `seconds`: one column per `1 / pixels_per_second` s (at least
    /// one).
    pub fn width_for(&self, seconds: f64) -> u32 {
        ((seconds * self.pixels_per_second as f64).round() as u32).max(1)
    }

    /// Image height: the plot and the time axis under it.
    pub fn height(&self) -> u32 {
        self.mel_bands as u32 * self.band_height + AXIS_HEIGHT
    }

    fn validate(&self) -> Result<()> {
        if self.pixels_per_second == 0
            || self.mel_bands == 0
            || self.band_height == 0
            || !(self.window_seconds > 0.0 && self.window_seconds.is_finite())
            || !(self.dynamic_range_db > 0.0 && self.dynamic_range_db.is_finite())
        {
            return Err(Error::InvalidRequest(format!(
                "spectrogram options {self:?}: every size must be positive"
            )));
        }
        Ok(())
    }
}

/// Log-mel power of `audio` (down-mixed to mono): `[columns][mel_bands]` in dB, one column per
/// `1 / pixels_per_second` s.
pub fn log_mel(audio: &Audio, options: &SpectrogramOptions) -> Result<Vec<Vec<f32>>> {
    options.validate()?;
    let rate = audio.sample_rate() as f64;
    let channels = audio.channels();
    let frames = audio.num_frames();
    let mono: Vec<f32> = (0..frames)
        .map(|i| channels.iter().map(|c| c[i]).sum::<f32>() / channels.len().max(1) as f32)
        .collect();
    let n_fft = ((options.window_seconds * rate).round() as usize).max(16);
    let bins = n_fft / 2 + 1;
    let window: Vec<f32> = (0..n_fft)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * i as f32 / n_fft as f32).cos())
        .collect();
    let filters = mel_filters(options.mel_bands, bins, rate);
    let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n_fft);
    let mut input = fft.make_input_vec();
    let mut spectrum = fft.make_output_vec();
    let columns = options.width_for(audio.duration_secs()) as usize;
    let mut out = Vec::with_capacity(columns);
    for col in 0..columns {
        // The window is centred on the column's time.
        let centre = ((col as f64 + 0.5) / options.pixels_per_second as f64 * rate) as isize;
        for (k, v) in input.iter_mut().enumerate() {
            let i = centre - (n_fft / 2) as isize + k as isize;
            *v = if i >= 0 && (i as usize) < frames {
                mono[i as usize] * window[k]
            } else {
                0.0
            };
        }
        fft.process(&mut input, &mut spectrum)
            .map_err(|e| Error::Audio {
                path: None,
                message: format!("spectrogram FFT: {e}"),
            })?;
        let power: Vec<f32> = spectrum.iter().map(|c| c.norm_sqr()).collect();
        out.push(
            filters
                .iter()
                .map(|f| {
                    let p: f32 = f.iter().map(|&(bin, w)| power[bin] * w).sum();
                    10.0 * (p + 1e-12).log10()
                })
                .collect(),
        );
    }
    Ok(out)
}

/// Triangular mel filters (HTK mel scale) from 0 Hz to Nyquist: per band, (bin, weight) pairs.
fn mel_filters(bands: usize, bins: usize, rate: f64) -> Vec<Vec<(usize, f32)>> {
    let mel = |f: f64| 2595.0 * (1.0 + f / 700.0).log10();
    let hz = |m: f64| 700.0 * (10f64.powf(m / 2595.0) - 1.0);
    let top = mel(rate / 2.0);
    let edges: Vec<f64> = (0..bands + 2)
        .map(|i| hz(top * i as f64 / (bands + 1) as f64))
        .collect();
    let bin_hz = rate / 2.0 / (bins - 1).max(1) as f64;
    (0..bands)
        .map(|b| {
            let (lo, mid, hi) = (edges[b], edges[b + 1], edges[b + 2]);
            let mut f: Vec<(usize, f32)> = (0..bins)
                .filter_map(|k| {
                    let x = k as f64 * bin_hz;
                    let w = if x <= lo || x >= hi {
                        0.0
                    } else if x <= mid {
                        (x - lo) / (mid - lo)
                    } else {
                        (hi - x) / (hi - mid)
                    };
                    (w > 0.0).then_some((k, w as f32))
                })
                .collect();
            if f.is_empty() {
                // Narrower than one bin: take the nearest bin.
                f.push((((mid / bin_hz).round() as usize).min(bins - 1), 1.0));
            }
            f
        })
        .collect()
}

/// Draws the log-mel spectrogram of `audio` with a time axis (a tick every second, labelled
/// in seconds; every 5 s or 10 s for long clips).
pub fn render(audio: &Audio, options: &SpectrogramOptions) -> Result<RgbImage> {
    let mel = log_mel(audio, options)?;
    let width = options.width_for(audio.duration_secs());
    let plot_h = options.mel_bands as u32 * options.band_height;
    let mut img = RgbImage::from_pixel(width, options.height(), Rgb([255, 255, 255]));
    let max = mel
        .iter()
        .flatten()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    for (x, column) in mel.iter().enumerate() {
        for (band, &db) in column.iter().enumerate() {
            let level = ((db - (max - options.dynamic_range_db)) / options.dynamic_range_db)
                .clamp(0.0, 1.0);
            let colour = colour_map(level);
            let y0 = plot_h - (band as u32 + 1) * options.band_height;
            for dy in 0..options.band_height {
                img.put_pixel(x as u32, y0 + dy, colour);
            }
        }
    }
    // Time axis: ticks with labels in seconds.
    let seconds = audio.duration_secs();
    let every = if seconds <= 12.0 {
        1
    } else if seconds <= 60.0 {
        5
    } else {
        10
    };
    let black = Rgb([0, 0, 0]);
    let mut s = 0u32;
    while s as f64 <= seconds {
        let x = ((s * options.pixels_per_second) as f64).min(width as f64 - 1.0) as u32;
        for dy in 0..4 {
            img.put_pixel(x, plot_h + dy, black);
        }
        let label = format!("{s}");
        let text_w = label.len() as u32 * 4;
        let left = x
            .saturating_sub(text_w / 2)
            .min(width.saturating_sub(text_w));
        draw_digits(&mut img, &label, left, plot_h + 6, black);
        s += every;
    }
    Ok(img)
}

/// Writes the spectrogram of `audio` to `path` as a PNG.
pub fn write_png(
    audio: &Audio,
    path: impl AsRef<Path>,
    options: &SpectrogramOptions,
) -> Result<()> {
    let path = path.as_ref();
    render(audio, options)?
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| Error::Image {
            path: Some(path.to_path_buf()),
            message: format!("writing the spectrogram: {e}"),
        })
}

/// Black -> purple -> orange -> light yellow (a magma-like ramp), `level` in [0, 1].
fn colour_map(level: f32) -> Rgb<u8> {
    const STOPS: [[f32; 3]; 5] = [
        [0.0, 0.0, 4.0],
        [81.0, 18.0, 124.0],
        [183.0, 55.0, 121.0],
        [252.0, 137.0, 97.0],
        [252.0, 253.0, 191.0],
    ];
    let x = level * (STOPS.len() - 1) as f32;
    let i = (x.floor() as usize).min(STOPS.len() - 2);
    let t = x - i as f32;
    let c = |k: usize| (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * t).round() as u8;
    Rgb([c(0), c(1), c(2)])
}

/// 3x5 pixel digits, one row per `u8` (3 low bits, leftmost pixel = bit 2).
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

fn draw_digits(img: &mut RgbImage, text: &str, x: u32, y: u32, colour: Rgb<u8>) {
    for (n, ch) in text.chars().enumerate() {
        let Some(d) = ch.to_digit(10) else { continue };
        for (row, bits) in DIGITS[d as usize].iter().enumerate() {
            for col in 0..3u32 {
                let (px, py) = (x + n as u32 * 4 + col, y + row as u32);
                if bits & (4 >> col) != 0 && px < img.width() && py < img.height() {
                    img.put_pixel(px, py, colour);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, seconds: f64, hz: f32) -> Audio {
        let n = (seconds * rate as f64) as usize;
        let wave = (0..n)
            .map(|i| (i as f32 * 2.0 * std::f32::consts::PI * hz / rate as f32).sin() * 0.5)
            .collect();
        Audio::new(rate, vec![wave]).unwrap()
    }

    #[test]
    fn width_follows_duration_and_axis_is_drawn() {
        let o = SpectrogramOptions::default();
        let short = render(&tone(22_050, 1.0, 440.0), &o).unwrap();
        let long = render(&tone(22_050, 3.0, 440.0), &o).unwrap();
        assert_eq!(short.width(), o.pixels_per_second);
        assert_eq!(long.width(), 3 * o.pixels_per_second);
        assert_eq!(long.height(), o.height());
        // A tick at 1 s under the plot.
        let plot_h = o.mel_bands as u32 * o.band_height;
        assert_eq!(
            *long.get_pixel(o.pixels_per_second, plot_h + 1),
            Rgb([0, 0, 0])
        );
    }

    #[test]
    fn a_tone_lights_the_band_of_its_frequency() {
        let o = SpectrogramOptions::default();
        let rate = 22_050;
        let low = log_mel(&tone(rate, 1.0, 300.0), &o).unwrap();
        let high = log_mel(&tone(rate, 1.0, 5000.0), &o).unwrap();
        let loudest = |m: &Vec<Vec<f32>>| {
            let c = &m[m.len() / 2];
            (0..c.len()).max_by(|&a, &b| c[a].total_cmp(&c[b])).unwrap()
        };
        assert!(loudest(&low) < loudest(&high));
    }
}
