//! How well a trained VAE reconstructs held-out clips: signal-to-noise ratio and the
//! instruction-following metric on the reconstructions (the ceiling the generator can reach
//! through this VAE).

use burn::tensor::{Device, Tensor, TensorData};

use audiox_vae::Vae;

use super::error::TrainResult;
use crate::corpus::Corpus;
use crate::metric::{DetectedEvent, DetectorConfig, Report, detect_events, score_clip};

/// Reconstruction quality over held-out clips.
#[derive(Clone, Debug, PartialEq)]
pub struct ReconstructionReport {
    /// Clips evaluated.
    pub clips: usize,
    /// Median signal-to-noise ratio of the reconstructions in dB (capped at 100 dB).
    pub median_snr_db: f64,
    /// Median level of the reconstructions relative to the originals, in dB (RMS over RMS): a
    /// decoder that collapsed towards silence shows tens of dB below 0.
    pub median_level_db: f64,
    /// Median correlation coefficient between reconstruction and original: near 0 when the
    /// output does not follow the input (a decoder that ignores its latent).
    pub median_correlation: f64,
    /// Median absolute mean (constant offset) of the reconstructions, in sample units (the
    /// corpus's clips have none). The metric's detector removes it, so it shows here.
    pub median_offset: f64,
    /// The metric on the reconstructions, scored against each clip's caption.
    pub reconstructed: Report,
    /// The metric on the original clips (the detector's ceiling on the same clips).
    pub original: Report,
    /// Per clip, in order: what the caption asks for and what the detector found in the
    /// original and in the reconstruction (for finding out which events a VAE loses).
    pub per_clip: Vec<ClipDetections>,
}

/// What the detector found in one held-out clip and in its reconstruction.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipDetections {
    /// The clip's caption.
    pub caption: String,
    /// Number of events the caption describes.
    pub expected_events: usize,
    /// Events detected in the original clip.
    pub original: Vec<DetectedEvent>,
    /// Events detected in the reconstruction.
    pub reconstructed: Vec<DetectedEvent>,
    /// Signal-to-noise ratio of the reconstruction in dB.
    pub snr_db: f64,
    /// Level of the reconstruction relative to the original, in dB.
    pub level_db: f64,
    /// Mean of the reconstruction (its constant offset), in sample units.
    pub offset: f64,
}

/// Evaluates `reconstruct` (mono samples in, mono samples of the same length out) on the first
/// `n` held-out scenes of `corpus`.
pub fn reconstruction_report(
    corpus: &Corpus,
    n: usize,
    reconstruct: &mut dyn FnMut(&[f32]) -> TrainResult<Vec<f32>>,
) -> TrainResult<ReconstructionReport> {
    reconstruction_report_with(corpus, n, &DetectorConfig::default(), reconstruct)
}

/// [`reconstruction_report`] with the detector's settings given (e.g. an earlier detector, to
/// compare with a ceiling measured before a change of the defaults).
pub fn reconstruction_report_with(
    corpus: &Corpus,
    n: usize,
    cfg: &DetectorConfig,
    reconstruct: &mut dyn FnMut(&[f32]) -> TrainResult<Vec<f32>>,
) -> TrainResult<ReconstructionReport> {
    let mut snrs = Vec::with_capacity(n);
    let (mut levels, mut correlations) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut rec_scores, mut ref_scores) = (Vec::new(), Vec::new());
    let mut per_clip = Vec::with_capacity(n);
    let mut offsets = Vec::with_capacity(n);
    for (i, scene) in corpus.held_out_scenes(n).iter().enumerate() {
        let clip = corpus.held_out_clip(scene, i as u64);
        let out = reconstruct(&clip.samples)?;
        let len = out.len().min(clip.samples.len());
        let signal: f64 = clip.samples[..len]
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum();
        let noise: f64 = clip.samples[..len]
            .iter()
            .zip(&out[..len])
            .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
            .sum();
        let snr_db = (10.0 * (signal / noise.max(1e-30)).log10()).min(100.0);
        snrs.push(snr_db);
        let output: f64 = out[..len].iter().map(|&y| (y as f64).powi(2)).sum();
        let level_db = 10.0 * (output.max(1e-30) / signal.max(1e-30)).log10();
        levels.push(level_db);
        correlations.push(correlation(&clip.samples[..len], &out[..len]));
        let offset = out[..len].iter().map(|&y| y as f64).sum::<f64>() / len.max(1) as f64;
        offsets.push(offset.abs());
        let reconstructed = detect_events(&out, clip.sample_rate, cfg);
        let original = detect_events(&clip.samples, clip.sample_rate, cfg);
        rec_scores.push(score_clip(scene, &reconstructed, cfg));
        ref_scores.push(score_clip(scene, &original, cfg));
        per_clip.push(ClipDetections {
            caption: clip.caption.clone(),
            expected_events: scene.expected_events().len(),
            original,
            reconstructed,
            snr_db,
            level_db,
            offset,
        });
    }
    Ok(ReconstructionReport {
        clips: snrs.len(),
        median_snr_db: median(snrs),
        median_level_db: median(levels),
        median_correlation: median(correlations),
        median_offset: median(offsets),
        reconstructed: Report::from_scores(&rec_scores),
        original: Report::from_scores(&ref_scores),
        per_clip,
    })
}

/// The median of `v` (NaN when empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Pearson's correlation coefficient of `a` and `b` (0 when either is constant).
fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len().min(b.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(a), mean(b));
    let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64 - ma, y as f64 - mb);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        ab / (aa * bb).sqrt()
    }
}

/// A reconstruction through `vae` on `device`: the mono clip copied to every input channel,
/// cut to a whole number of latent frames, encoded to the posterior mean, decoded, and the
/// output channels averaged; the cut tail is returned as silence.
pub fn vae_reconstructor<'a>(
    vae: &'a Vae,
    device: &'a Device,
) -> impl FnMut(&[f32]) -> TrainResult<Vec<f32>> + 'a {
    move |samples: &[f32]| {
        let ratio = vae.encoder.downsampling_ratio();
        let channels = vae.encoder.channels_in();
        let len = samples.len() / ratio * ratio;
        let mut input = Vec::with_capacity(channels * len);
        for _ in 0..channels {
            input.extend_from_slice(&samples[..len]);
        }
        let x = Tensor::<3>::from_data(TensorData::new(input, [1, channels, len]), device);
        let latent = vae.posterior(x)?.mean;
        let y = vae.decode(latent)?;
        let [_, _, out_len] = y.dims();
        let mono = y.mean_dim(1).reshape([out_len]);
        let mut out = mono
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| audiox_core::Error::InvalidRequest(format!("{e:?}")))?;
        out.resize(samples.len(), 0.0);
        Ok(out)
    }
}
