//! The judge of `student.regression_filter`: a teacher result passes when its audio, decoded
//! by the run's VAE, has the events its scene asks for, as the instruction-following metric
//! sees them ([`crate::metric`]).

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use audiox::Audio;
use audiox_vae::Vae;

use super::dmd::PairJudge;
use super::error::{TrainError, TrainResult};
use super::run::RunDir;
use crate::corpus::Scene;
use crate::metric::{ClipScore, DetectorConfig, detect_events, score_clip};

/// Decodes a latent with a VAE and scores its events against the scene with the metric's
/// detector: it accepts a result whose event count is right, whose groups come in the
/// caption's order and whose tonal events are in the named register (every column of the
/// metric but the onset error, which the scene may not ask for).
pub struct DetectorJudge {
    vae: Vae,
    sample_rate: u32,
    samples: usize,
    detector: DetectorConfig,
    id: String,
    device: Device,
}

impl DetectorJudge {
    /// The judge of `run`: its exported VAE (`export/pretransform/vae.safetensors`, the one
    /// the shipped model decodes with: after the decoder stage, its decoder), the run's
    /// sample rate and clip length, the default detector. Runs on `device` (a device without
    /// autodiff is enough).
    pub fn of_run(run: &RunDir, device: &Device) -> TrainResult<Self> {
        let vae = super::teacher::load_trained_vae(run, device)?;
        let model = run.config().model_config()?;
        let path = super::vae::vae_export_path(run);
        Ok(DetectorJudge::new(
            vae,
            model.sample_rate,
            model.sample_size,
            &file_sha256(&path)?,
            device,
        ))
    }

    /// A judge decoding with `vae` to `samples` samples at `sample_rate`; `vae_id` names the
    /// weights in [`PairJudge::id`] (e.g. the file's SHA-256).
    pub fn new(vae: Vae, sample_rate: u32, samples: usize, vae_id: &str, device: &Device) -> Self {
        let detector = DetectorConfig::default();
        let id = format!("vae {vae_id}, {sample_rate} Hz, {samples} samples, {detector:?}");
        DetectorJudge {
            vae,
            sample_rate,
            samples,
            detector,
            id,
            device: device.clone(),
        }
    }

    /// The metric's score of `latent` `[C, L]` against `scene`.
    pub fn score(
        &self,
        scene: &Scene,
        values: &[f32],
        shape: [usize; 2],
    ) -> TrainResult<ClipScore> {
        let [c, l] = shape;
        if c.checked_mul(l) != Some(values.len()) {
            return Err(TrainError::config(
                "student.regression_filter",
                format!("a latent of {} values is not [{c}, {l}]", values.len()),
            ));
        }
        let latent =
            Tensor::<3>::from_data(TensorData::new(values.to_vec(), [1, c, l]), &self.device);
        let audio = self.vae.decode(latent)?;
        let [_, channels, n] = audio.dims();
        let keep = self.samples.min(n);
        let stereo = audio
            .narrow(2, 0, keep)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::config("student.regression_filter", format!("{e:?}")))?;
        score_audio(scene, &stereo, channels, self.sample_rate, &self.detector)
    }
}

/// The metric's score of decoded audio against `scene`: `channels` rows of equal length
/// (row-major), peak-normalised as `generate` normalises its output
/// ([`audiox::Audio::peak_normalized`]) and averaged into one (as the metric hears a
/// stereo clip). An error for rows that are not a clip (none, or of unequal length).
pub fn score_audio(
    scene: &Scene,
    audio: &[f32],
    channels: usize,
    sample_rate: u32,
    detector: &DetectorConfig,
) -> TrainResult<ClipScore> {
    let len = audio.len() / channels.max(1);
    let rows = audio.chunks(len.max(1)).map(<[f32]>::to_vec).collect();
    let clip = Audio::new(sample_rate, rows)?.peak_normalized();
    let n = clip.channels().len() as f32;
    let mono: Vec<f32> = (0..len)
        .map(|i| clip.channels().iter().map(|c| c[i]).sum::<f32>() / n)
        .collect();
    Ok(score_clip(
        scene,
        &detect_events(&mono, sample_rate, detector),
        detector,
    ))
}

/// Whether a clip's score has everything the scene asks for but onset times.
pub fn follows_caption(score: &ClipScore) -> bool {
    score.count_correct
        && score.order_correct != Some(false)
        && score.pitch_correct.iter().all(|&p| p)
}

fn file_sha256(path: &Path) -> TrainResult<String> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    Ok(super::checkpoint::sha256(&bytes))
}

impl PairJudge for DetectorJudge {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn accepts(&self, scene: &Scene, values: &[f32], shape: [usize; 2]) -> TrainResult<bool> {
        Ok(follows_caption(&self.score(scene, values, shape)?))
    }
}
