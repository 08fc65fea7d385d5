//! The multi-resolution STFT loss, as convolutions against fixed cosine and sine bases (burn's
//! autodiff differentiates through them; burn's own `stft` needs the `signal` feature, which
//! the workspace does not enable).

use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};

/// One resolution: Hann-windowed DFT bases for `n_fft` (hop `n_fft / 4`, centred frames with
/// zero padding of `n_fft / 2`).
#[derive(Clone, Debug)]
pub struct StftBasis {
    n_fft: usize,
    hop: usize,
    /// `[bins, 1, n_fft]`: window x cos.
    cos: Tensor<3>,
    /// `[bins, 1, n_fft]`: window x sin.
    sin: Tensor<3>,
    /// `[bands, bins, 1]`: mel filters applied to the magnitudes ([`StftBasis::with_mel`]).
    mel: Option<Tensor<3>>,
}

/// The real and imaginary DFT bases of an `n_fft`-point frame under a periodic Hann window:
/// `(window x cos, -window x sin)`, each `n_fft / 2 + 1` rows of `n_fft` taps.
pub fn hann_dft_bases(n_fft: usize) -> (Vec<f32>, Vec<f32>) {
    let bins = n_fft / 2 + 1;
    let mut cos = Vec::with_capacity(bins * n_fft);
    let mut sin = Vec::with_capacity(bins * n_fft);
    let tau = 2.0 * std::f64::consts::PI;
    for k in 0..bins {
        for n in 0..n_fft {
            let w = 0.5 - 0.5 * (tau * n as f64 / n_fft as f64).cos();
            let phase = tau * (k * n % n_fft) as f64 / n_fft as f64;
            cos.push((w * phase.cos()) as f32);
            sin.push((-w * phase.sin()) as f32);
        }
    }
    (cos, sin)
}

/// Triangular filters on the mel scale (HTK formula) over the `n_fft / 2 + 1` bins of an
/// `n_fft`-point DFT at `sample_rate` Hz: `bands` rows, from `lowest_hz` to Nyquist, each
/// summing to 1. A band narrower than a bin takes the bin nearest its centre. With
/// `lowest_hz` 0 the first band is a shelf, flat from DC (bin 0 included) to its centre: a
/// triangle from 0 Hz would give the DC bin no weight, and a constant offset would go unseen.
pub fn mel_filters(n_fft: usize, bands: usize, sample_rate: u32, lowest_hz: f64) -> Vec<f32> {
    let hz_to_mel = |hz: f64| 2595.0 * (1.0 + hz / 700.0).log10();
    let mel_to_hz = |mel: f64| 700.0 * (10f64.powf(mel / 2595.0) - 1.0);
    let bins = n_fft / 2 + 1;
    let bands = bands.max(1);
    let nyquist = sample_rate as f64 / 2.0;
    let (lo, hi) = (hz_to_mel(lowest_hz.min(nyquist / 2.0)), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..bands + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (bands + 1) as f64))
        .collect();
    let bin_hz = sample_rate as f64 / n_fft as f64;
    let mut filters = vec![0f32; bands * bins];
    for b in 0..bands {
        let (l, c, r) = (edges[b], edges[b + 1], edges[b + 2]);
        let row = &mut filters[b * bins..(b + 1) * bins];
        for (k, w) in row.iter_mut().enumerate() {
            let f = k as f64 * bin_hz;
            let v = if b == 0 && l == 0.0 && f <= c {
                1.0
            } else if f > l && f <= c {
                (f - l) / (c - l)
            } else if f > c && f < r {
                (r - f) / (r - c)
            } else {
                0.0
            };
            *w = v as f32;
        }
        let sum: f32 = row.iter().sum();
        if sum == 0.0 {
            let k = ((c / bin_hz).round() as usize).min(bins - 1);
            row[k] = 1.0;
        } else {
            row.iter_mut().for_each(|w| *w /= sum);
        }
    }
    filters
}

/// The lowest band edge of the mel-scaled loss's filters, in Hz: 0, so that the lowest band
/// (a shelf from DC, see [`mel_filters`]) sees infrasound and a DC offset. (Run P320 started
/// with 40 Hz: nothing in its loss but the waveform L1 saw below 40 Hz, and its reconstructions
/// carried 20-45 dB too much energy at 0-20 Hz; a first version from 0 Hz still gave the DC bin
/// no weight, and a resume with it grew a constant offset that the event detector counts as an
/// event at 0 s; `docs/training.md`.)
pub const MEL_LOWEST_HZ: f64 = 0.0;

impl StftBasis {
    /// The bases for `n_fft` (>= 4) on `device`.
    pub fn new(n_fft: usize, device: &Device) -> Self {
        let bins = n_fft / 2 + 1;
        let (cos, sin) = hann_dft_bases(n_fft);
        StftBasis {
            n_fft,
            hop: n_fft / 4,
            cos: Tensor::from_data(TensorData::new(cos, [bins, 1, n_fft]), device),
            sin: Tensor::from_data(TensorData::new(sin, [bins, 1, n_fft]), device),
            mel: None,
        }
    }

    /// The bases for `n_fft`, with the magnitudes summed into `min(bands, bins)` mel bands
    /// ([`mel_filters`] from [`MEL_LOWEST_HZ`]) before the loss compares them. The loss
    /// averages its log-magnitude term over bins: at 16 kHz, 2.5 % of the linear bins lie below
    /// 400 Hz, where the corpus's low tones are, against a sixth of the mel bands.
    pub fn with_mel(n_fft: usize, bands: usize, sample_rate: u32, device: &Device) -> Self {
        let mut basis = Self::new(n_fft, device);
        let bins = n_fft / 2 + 1;
        let bands = bands.clamp(1, bins);
        let filters = mel_filters(n_fft, bands, sample_rate, MEL_LOWEST_HZ);
        basis.mel = Some(Tensor::from_data(
            TensorData::new(filters, [bands, bins, 1]),
            device,
        ));
        basis
    }

    /// The device the bases live on.
    pub fn device(&self) -> Device {
        self.cos.device()
    }

    /// Magnitude spectrogram of `x` `[N, T]`: `[N, bins, frames]`.
    pub fn magnitude(&self, x: Tensor<2>) -> Tensor<3> {
        let x = x.unsqueeze_dim::<3>(1);
        let opts = || ConvOptions::new([self.hop], [self.n_fft / 2], [1], 1);
        let re = conv1d(x.clone(), self.cos.clone(), None, opts());
        let im = conv1d(x, self.sin.clone(), None, opts());
        (re.clone() * re + im.clone() * im + 1e-8).sqrt()
    }

    /// What the loss compares: the magnitude spectrogram of `x` `[N, T]`, summed into mel
    /// bands when the basis has them: `[N, bins or bands, frames]`.
    pub fn spectrum(&self, x: Tensor<2>) -> Tensor<3> {
        let magnitude = self.magnitude(x);
        match &self.mel {
            Some(filters) => conv1d(
                magnitude,
                filters.clone(),
                None,
                ConvOptions::new([1], [0], [1], 1),
            ),
            None => magnitude,
        }
    }
}

/// How the log-magnitude floor of [`multi_resolution_stft_loss`] applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloorMode {
    /// `log(|S| + floor)` on both spectra: every bin keeps a gradient, also below the floor.
    #[default]
    Added,
    /// `log(max(|S|, floor))` on both spectra: bins below the floor cost nothing and get no
    /// log-magnitude gradient (a dead zone around digital silence).
    Max,
}

/// The log-magnitude floor of [`multi_resolution_stft_loss`]: `ratio` (an amplitude ratio, e.g.
/// `1e-3` for -60 dB) times the target's loudest bin, applied as `mode` says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LogFloor {
    /// The floor relative to the target's loudest bin (per signal and resolution).
    pub ratio: f32,
    /// Added to the magnitudes, or taken as their minimum.
    pub mode: FloorMode,
}

impl LogFloor {
    /// A floor of `ratio` added to both magnitudes ([`FloorMode::Added`]).
    pub fn added(ratio: f32) -> Self {
        LogFloor {
            ratio,
            mode: FloorMode::Added,
        }
    }
}

/// The level, in dB relative to full scale, of the white noise whose spectral energy floors the
/// denominator of the spectral-convergence term (see [`multi_resolution_stft_loss`]).
pub const SC_FLOOR_DBFS: f64 = -60.0;

/// The multi-resolution STFT loss: per resolution, spectral convergence
/// `||S_y - S_x||_F / sqrt(||S_y||_F^2 + E_floor)` (`E_floor`: the spectral energy of white
/// noise at [`SC_FLOOR_DBFS`] over the same bins, which keeps the term bounded on silent
/// targets) plus the mean absolute difference of log magnitudes; averaged
/// over resolutions. `x` (prediction) and `y` (target) are `[B, C, T]`; channels are treated
/// as separate signals.
///
/// With `log_floor`, its `ratio` times the target's loudest bin (per signal and resolution) is
/// added to both magnitudes before the logarithm, or taken as their minimum (see
/// [`FloorMode`]). Without it, bins where the target is digital silence (the procedural corpus
/// has exact zeros between events) weigh as much as the events: any leakage there costs
/// several nepers, and the cheapest fit is to output near-silence everywhere.
pub fn multi_resolution_stft_loss(
    bases: &[StftBasis],
    x: Tensor<3>,
    y: Tensor<3>,
    log_floor: Option<LogFloor>,
) -> Tensor<1> {
    let [b, c, t] = x.dims();
    let x = x.reshape([b * c, t]);
    let y = y.reshape([b * c, t]);
    let mut total: Option<Tensor<1>> = None;
    for basis in bases {
        let sx = basis.spectrum(x.clone());
        let sy = basis.spectrum(y.clone());
        // Spectral convergence with the target's energy floored at that of noise at
        // `SC_FLOOR_DBFS` (a Hann-windowed frame of white noise of RMS `a` has an expected
        // squared magnitude of `a^2 x 3 n_fft / 8` per bin). The procedural corpus has exact
        // digital silence between events, so a crop can be all zeros: with a bare `||S_y||`
        // denominator the loss of such a batch is `||S_x|| / 1e-7`, thousands, and the update
        // it makes undoes the training (measured: tests/vae_stability.rs).
        let floor_amp = 10f64.powf(SC_FLOOR_DBFS / 20.0);
        let bin_floor = floor_amp * floor_amp * 3.0 * basis.n_fft as f64 / 8.0;
        let target_energy =
            sy.clone().powi_scalar(2).sum() + bin_floor * sy.shape().num_elements() as f64;
        let sc = (sy.clone() - sx.clone()).powi_scalar(2).sum().sqrt() / target_energy.sqrt();
        let (sx, sy) = match log_floor {
            Some(LogFloor { ratio, mode }) => {
                let dims = sy.dims();
                let floor = sy
                    .clone()
                    .max_dim(1)
                    .max_dim(2)
                    .mul_scalar(ratio)
                    .detach()
                    .expand(dims);
                match mode {
                    FloorMode::Added => (sx + floor.clone(), sy + floor),
                    FloorMode::Max => (sx.max_pair(floor.clone()), sy.max_pair(floor)),
                }
            }
            None => (sx, sy),
        };
        let log_mag = (sy.log() - sx.log()).abs().mean();
        let term = sc + log_mag;
        total = Some(match total {
            Some(t) => t + term,
            None => term,
        });
    }
    total.map_or_else(
        || Tensor::zeros([1], &x.device()),
        |t| t / bases.len() as f64,
    )
}
