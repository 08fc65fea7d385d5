//! A compression curriculum for the VAE stage: the latent guide.
//!
//! A VAE decoder must turn a few values per latent frame (16 per 320 samples at the demo
//! sizes) into audio: it has to become a small vocoder. Trained jointly from the start, the encoder's latent carries nothing
//! useful yet, and the demo runs' decoders learned an input-independent output and gated their
//! input out (`docs/training.md`). With a guide, the decoder first decodes a fixed, informative
//! function of the audio — its log band energies at the latent's frame rate, one band per latent
//! channel ([`LatentGuide::features`]) — while the encoder learns to predict those features;
//! then the decoder's input blends from the guide to the encoder's posterior. The exported
//! architecture is unchanged: the guide exists only during training.

use burn::tensor::module::conv1d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::stft::{hann_dft_bases, mel_filters};

/// When and how strongly the guide applies (the `vae.latent_guide` section of a run config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentGuideConfig {
    /// Steps during which the decoder decodes the guide (plus the posterior's noise) instead
    /// of the posterior mean.
    pub steps: u64,
    /// Steps after those over which the decoder's input blends linearly from the guide to the
    /// posterior mean.
    pub blend: u64,
    /// Weight of the encoder's regression onto the guide (mean squared error of the posterior
    /// mean), scaled by the guide's share of the decoder's input (so it fades out with the
    /// blend).
    pub weight: f64,
}

impl LatentGuideConfig {
    /// The guide's share of the decoder's input at (0-based) step `step`: 1 for the first
    /// `steps` steps, then falling linearly to 0 over `blend` steps.
    pub fn share(&self, step: u64) -> f64 {
        if step < self.steps {
            1.0
        } else if step < self.steps + self.blend {
            1.0 - (step - self.steps) as f64 / self.blend as f64
        } else {
            0.0
        }
    }
}

/// The guide's features: log energies in mel-spaced bands, one band per latent channel, of
/// frames as long as two latent frames and centred on each latent frame.
#[derive(Clone, Debug)]
pub struct LatentGuide {
    hop: usize,
    /// `[bins, 1, 2 hop]`: Hann window x cos.
    cos: Tensor<3>,
    /// `[bins, 1, 2 hop]`: Hann window x sin.
    sin: Tensor<3>,
    /// `[bands, bins, 1]`: triangular mel filters, each summing to 1.
    filters: Tensor<3>,
}

/// The lowest band edge of the guide's filter bank, in Hz.
const LOWEST_HZ: f64 = 40.0;
/// Added to the band energies before the logarithm: -60 dB under a full-scale tone.
const ENERGY_FLOOR: f32 = 1e-6;
/// The features are `(log10(energy + ENERGY_FLOOR) + OFFSET) / SPREAD`: digital silence at
/// -1.67, a tone of amplitude 0.1 at about 1 (narrow low band) or 0 (wide high band).
const OFFSET: f32 = 3.5;
/// See [`OFFSET`].
const SPREAD: f32 = 1.5;

impl LatentGuide {
    /// The guide for a VAE of down-sampling ratio `hop` (>= 2) and `bands` latent channels
    /// (>= 1) at `sample_rate` Hz.
    pub fn new(hop: usize, bands: usize, sample_rate: u32, device: &Device) -> Self {
        let n_fft = 2 * hop.max(2);
        let bins = n_fft / 2 + 1;
        let (cos, sin) = hann_dft_bases(n_fft);
        let bands = bands.max(1);
        let filters = mel_filters(n_fft, bands, sample_rate, LOWEST_HZ);
        LatentGuide {
            hop,
            cos: Tensor::from_data(TensorData::new(cos, [bins, 1, n_fft]), device),
            sin: Tensor::from_data(TensorData::new(sin, [bins, 1, n_fft]), device),
            filters: Tensor::from_data(TensorData::new(filters, [bands, bins, 1]), device),
        }
    }

    /// The features of `audio` `[N, channels, T]` (channels averaged): `[N, bands, frames]`,
    /// `frames` being `T / hop` (the encoder's output length for `T` a multiple of `hop`).
    /// Frame `i` covers samples `[i hop - hop / 2, i hop + 3 hop / 2)`, centred on latent
    /// frame `i`; each value is `(log10(band energy + 1e-6) + 3.5) / 1.5`, the energy of a
    /// full-scale sine at a bin centre being 1 (digital silence: -1.67; a tone of amplitude 0.1
    /// in a narrow band: about 1). Not differentiated (the audio is the training target).
    pub fn features(&self, audio: Tensor<3>) -> Tensor<3> {
        let [n, _, t] = audio.dims();
        let frames = t / self.hop;
        let device = audio.device();
        let mono = audio.detach().mean_dim(1);
        let left = self.hop / 2;
        let right = 2 * self.hop - left;
        let padded = Tensor::cat(
            vec![
                Tensor::zeros([n, 1, left], &device),
                mono,
                Tensor::zeros([n, 1, right], &device),
            ],
            2,
        );
        let opts = || ConvOptions::new([self.hop], [0], [1], 1);
        let re = conv1d(padded.clone(), self.cos.clone(), None, opts());
        let im = conv1d(padded, self.sin.clone(), None, opts());
        // Energy per bin, normalised so that a full-scale sine at a bin centre has energy 1.
        let scale = (self.hop as f32 / 2.0).powi(2);
        let energy = (re.clone() * re + im.clone() * im) / scale;
        let bands = conv1d(
            energy,
            self.filters.clone(),
            None,
            ConvOptions::new([1], [0], [1], 1),
        );
        let bands = bands.narrow(2, 0, frames);
        ((bands + ENERGY_FLOOR).log() / std::f32::consts::LN_10 + OFFSET) / SPREAD
    }
}
