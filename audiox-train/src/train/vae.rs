//! The VAE stage: the project's Oobleck encoder and decoder (`audiox-vae`), at the sizes of the
//! model config's `pretransform` section, trained on crops of corpus clips.
//!
//! Loss: `l1_weight x |y - x|` (waveform) `+ dc_weight x` the same on each latent frame's
//! mean (the output's offset) `+ stft_weight x` multi-resolution STFT loss
//! (spectral convergence + log magnitude, see [`super::stft`]) `+ kl_weight x` the KL
//! divergence of the posterior from N(0, 1); the decoder reconstructs a sample of the
//! posterior (the reparameterisation trick), as the official VAE bottleneck does.
//!
//! Left out compared with the official autoencoder training: the adversarial loss and its
//! discriminators (and their feature-matching loss), the loudness/perceptual weighting, and
//! weight normalisation as a reparameterisation: the inference modules hold the fused kernel
//! `W = g v / ||v||`, and it is this fused kernel that is trained directly (a plain
//! convolution). The exported weights are fused kernels too, which the loader reads exactly as
//! it reads the output of `audiox convert`.
//!
//! Mono corpus audio is copied to every input channel of the encoder (the demo config is
//! stereo, like the official one).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

use audiox_core::weights::{Component, StateDict, Transform, WeightSource, param_specs};
use audiox_vae::{Vae, VaeConfig};

use super::checkpoint::Checkpoints;
use super::error::{TrainError, TrainResult};
use super::flow::normals;
use super::guide::LatentGuide;
use super::init::random_init_with;
use super::run::{LoopSettings, RunConfig, RunDir, StageName, VaeStageConfig};
use super::stage::{Stage, StepLoss};
use super::stft::{LogFloor, StftBasis, multi_resolution_stft_loss};
use crate::corpus::Corpus;

/// The VAE sizes of an official-schema model config (its `pretransform` section).
pub fn vae_config(model: &audiox::ModelConfig) -> VaeConfig {
    model.vae().clone()
}

/// Where a [`VaeStage`]'s first step starts from.
enum Start {
    /// Seeded random weights ([`Stage::init_model`]).
    Init,
    /// A VAE file (`vae.init_from`).
    File(PathBuf),
    /// The run's own VAE, the one its teacher was trained on (the decoder stage).
    RunVae(Box<RunDir>),
}

/// The VAE stage of a run, or its decoder stage (the same loss on the run's VAE, its encoder
/// frozen: [`VaeStage::decoder`]).
pub struct VaeStage {
    name: StageName,
    start: Start,
    seed: u64,
    corpus: Corpus,
    vae: VaeConfig,
    settings: VaeStageConfig,
    bases: Vec<StftBasis>,
    /// The features the decoder starts from, when the run has a latent guide.
    guide: Option<LatentGuide>,
}

impl VaeStage {
    /// The VAE stage for `run` (validated), with its STFT bases on `device`.
    pub fn new(run: &RunConfig, device: &Device) -> TrainResult<Self> {
        let start = match &run.vae.init_from {
            Some(path) => Start::File(path.clone()),
            None => Start::Init,
        };
        Self::with_settings(run, run.vae.clone(), StageName::Vae, start, device)
    }

    /// The decoder stage of `run` (its `decoder` section): the VAE loss of that section on the
    /// run's VAE, its encoder frozen. Its first step starts from the VAE the teacher was
    /// trained on: the VAE stage's trained weights, or the imported VAE (refused once the
    /// export's decoder is no longer the imported one). Its batches are the VAE stage's, step
    /// for step (the shipped decoder, run VD2, was trained as a VAE stage). Errors when the
    /// run has no decoder section.
    pub fn decoder(run: &RunDir, device: &Device) -> TrainResult<Self> {
        let Some(settings) = run.config().decoder.clone() else {
            return Err(TrainError::config(
                "decoder",
                "this run has no decoder section (no decoder stage)",
            ));
        };
        Self::with_settings(
            run.config(),
            settings,
            StageName::Decoder,
            Start::RunVae(Box::new(run.clone())),
            device,
        )
    }

    fn with_settings(
        run: &RunConfig,
        settings: VaeStageConfig,
        name: StageName,
        start: Start,
        device: &Device,
    ) -> TrainResult<Self> {
        run.validate()?;
        let model = run.model_config()?;
        let vae = vae_config(&model);
        let guide = settings.latent_guide.as_ref().map(|_| {
            LatentGuide::new(
                vae.encoder.strides.iter().product(),
                vae.decoder.latent_dim,
                model.sample_rate,
                device,
            )
        });
        Ok(VaeStage {
            name,
            start,
            seed: run.seed,
            corpus: Corpus::new((&run.corpus).into())?,
            vae,
            bases: settings
                .stft_sizes
                .iter()
                .map(|&n| match settings.stft_mel_bands {
                    Some(bands) => StftBasis::with_mel(n, bands, model.sample_rate, device),
                    None => StftBasis::new(n, device),
                })
                .collect(),
            settings,
            guide,
        })
    }

    /// The VAE's sizes.
    pub fn vae_config(&self) -> &VaeConfig {
        &self.vae
    }

    /// The random stream of step `step` (independent of every other step and of the other
    /// stages; the decoder stage draws the VAE stage's, see [`VaeStage::decoder`]).
    fn rng(&self, step: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&StageName::Vae.stream().to_le_bytes());
        seed[16..24].copy_from_slice(&step.to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// The STFT loss an all-zero output gets on the batch of step `step`: the value a decoder
    /// collapsed to silence scores there.
    pub fn silence_stft_loss(&self, step: u64) -> f64 {
        let (audio, dims) = self.step_batch(step);
        let device = self.bases.first().map_or_else(Device::flex, |b| b.device());
        let x = Tensor::<3>::from_data(TensorData::new(audio, dims), &device);
        multi_resolution_stft_loss(&self.bases, x.zeros_like(), x, self.settings.log_floor())
            .into_scalar::<f32>() as f64
    }

    /// Exactly the audio batch that the loss of step `step` trains on (see [`VaeStage::batch`]).
    pub fn step_batch(&self, step: u64) -> (Vec<f32>, [usize; 3]) {
        self.batch(step, &mut self.rng(step))
    }

    /// The audio batch of step `step`: `[batch, channels_in, crop]`. Clip `step x batch + j`
    /// of the training stream, cropped around one of its events (four crops in five) or
    /// anywhere (one in five), so that most crops hold sound.
    pub fn batch(&self, step: u64, rng: &mut ChaCha8Rng) -> (Vec<f32>, [usize; 3]) {
        let batch = self.settings.optim.batch;
        let crop = self.settings.crop;
        let channels = self.vae.encoder.channels_in;
        let mut out = Vec::with_capacity(batch * channels * crop);
        for j in 0..batch {
            let clip = self.corpus.training_clip(step * batch as u64 + j as u64);
            let len = clip.samples.len();
            let max_start = len.saturating_sub(crop);
            let pick = rng.next_u32();
            let start = if !pick.is_multiple_of(5) && !clip.events.is_empty() {
                let event = &clip.events[(rng.next_u32() as usize) % clip.events.len()];
                let onset = (event.onset_s * clip.sample_rate as f32) as usize;
                let lead = (rng.next_u32() as usize) % (crop / 4).max(1);
                onset.saturating_sub(lead).min(max_start)
            } else {
                (rng.next_u64() % (max_start as u64 + 1)) as usize
            };
            let piece = &clip.samples[start..(start + crop).min(len)];
            for _ in 0..channels {
                out.extend_from_slice(piece);
                out.extend(std::iter::repeat_n(0.0, crop - piece.len()));
            }
        }
        (out, [batch, channels, crop])
    }
}

impl Stage for VaeStage {
    type Model = Vae;

    fn name(&self) -> StageName {
        self.name
    }

    fn settings(&self) -> &LoopSettings {
        &self.settings.optim
    }

    fn init_model(&self, device: &Device) -> TrainResult<Vae> {
        let seed = self.seed ^ (StageName::Vae.stream() << 56);
        Ok(random_init_with(
            self.vae.init(device),
            seed,
            self.settings.init,
        ))
    }

    fn initial_model(&self, device: &Device) -> TrainResult<Vae> {
        match &self.start {
            Start::Init => self.init_model(device),
            Start::File(source) => load_vae_weights(&self.vae, source, device),
            Start::RunVae(run) => teachers_vae(run, device),
        }
    }

    fn loss(&self, model: &Vae, step: u64, device: &Device) -> TrainResult<StepLoss> {
        let mut rng = self.rng(step);
        let (audio, dims) = self.batch(step, &mut rng);
        let x = Tensor::<3>::from_data(TensorData::new(audio, dims), device);
        let posterior = model.posterior(x.clone())?;
        let eps_dims = posterior.mean.dims();
        let eps = normals(&mut rng, eps_dims.iter().product());
        let eps = Tensor::<3>::from_data(TensorData::new(eps, eps_dims), device);
        let stdev = posterior.stdev();
        let ramp = noise_ramp(self.settings.posterior_noise_warmup, step);
        let noise = eps * stdev.clone() * ramp;
        // The decoder's input: the posterior mean, or (curriculum) the guide's features
        // blending into it; the posterior's noise on top either way.
        let (latent, guide_loss) = match (&self.guide, &self.settings.latent_guide) {
            (Some(guide), Some(cfg)) if cfg.share(step) > 0.0 => {
                let (features, share) = (guide.features(x.clone()), cfg.share(step));
                let mse = (posterior.mean.clone() - features.clone())
                    .powi_scalar(2)
                    .mean();
                let mean = posterior.mean.clone() * (1.0 - share) + features * share;
                (mean + noise, Some((mse, share * cfg.weight)))
            }
            _ => (posterior.mean.clone() + noise, None),
        };
        let y = model.decode(latent)?;

        let y_level = y.clone();
        let l1 = (y.clone() - x.clone()).abs().mean();
        let [rows, channels, len] = y.dims();
        let hop = model.encoder.downsampling_ratio();
        let frame_means = |t: Tensor<3>| {
            t.reshape([rows, channels, len / hop, hop])
                .mean_dim(3)
                .reshape([rows, channels, len / hop])
        };
        let dc = (frame_means(y.clone()) - frame_means(x.clone()))
            .abs()
            .mean();
        let log_floor = self.settings.log_floor();
        let stft = multi_resolution_stft_loss(&self.bases, y, x.clone(), log_floor);
        let var = stdev.clone() * stdev.clone();
        let kl = ((posterior.mean.clone() * posterior.mean + var.clone() - var.log() - 1.0).mean())
            * 0.5;
        let s = &self.settings;
        let mut loss =
            l1.clone() * s.l1_weight + stft.clone() * s.stft_weight + kl.clone() * s.kl_weight;
        if s.dc_weight > 0.0 {
            loss = loss + dc.clone() * s.dc_weight;
        }
        let scalar = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
        let mut guide_term = None;
        if let Some((mse, weight)) = guide_loss {
            loss = loss + mse.clone() * weight;
            guide_term = Some(scalar(mse));
        }
        // Levels of the batch and of its reconstruction (not trained on): a decoder collapsing
        // towards silence shows as `y_rms` falling far below `x_rms`.
        let rms = |t: Tensor<3>| t.detach().powi_scalar(2).mean().sqrt();
        let mut terms = BTreeMap::from([
            ("l1".to_string(), scalar(l1)),
            ("dc".to_string(), scalar(dc)),
            ("stft".to_string(), scalar(stft)),
            ("kl".to_string(), scalar(kl)),
            ("x_rms".to_string(), scalar(rms(x))),
            ("y_rms".to_string(), scalar(rms(y_level))),
        ]);
        if let Some(mse) = guide_term {
            terms.insert("guide_mse".to_string(), mse);
        }
        Ok(StepLoss { loss, terms })
    }

    fn frozen(&self, model: &Vae) -> Vec<ParamId> {
        let mut frozen = Vec::new();
        if self.settings.zero_decoder_biases {
            // Initialised at zero (`random_init_with`) and never updated.
            let names = param_specs(&model.decoder);
            frozen.extend(
                super::stage::float_param_ids(&model.decoder)
                    .into_iter()
                    .zip(names)
                    .filter(|(_, spec)| spec.path.ends_with("bias"))
                    .map(|(id, _)| id),
            );
        }
        if self.settings.freeze_encoder {
            frozen.extend(super::stage::float_param_ids(&model.encoder));
        }
        frozen
    }
}

/// A named tensor: `(name, shape, values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Collects every float parameter's values in visiting order.
#[derive(Default)]
struct Values(Vec<(Vec<usize>, Vec<f32>)>);

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let shape = t.dims().to_vec();
        let data = t.into_data().convert::<f32>();
        self.0
            .push((shape, data.try_into_vec::<f32>().unwrap_or_default()));
    }
    fn visit_int<const D: usize>(&mut self, _param: &Param<Tensor<D, Int>>) {}
    fn visit_bool<const D: usize>(&mut self, _param: &Param<Tensor<D, Bool>>) {}
}

/// Every float parameter of `module` as `(path, shape, values)`, in visiting order.
pub fn parameters<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut values = Values::default();
    module.visit(&mut values);
    param_specs(module)
        .into_iter()
        .zip(values.0)
        .map(|(spec, (shape, v))| (spec.path, shape, v))
        .collect()
}

/// The trained VAE's tensors under their official names (`encoder.layers.0.weight`, ...), with
/// the weight-normalised kernels stored fused under `...weight` as `audiox convert` writes
/// them.
pub fn official_tensors(vae: &Vae) -> TrainResult<Vec<NamedTensor>> {
    let layout = vae.layout();
    let specs = param_specs(vae);
    let values = parameters(vae);
    specs
        .iter()
        .zip(values)
        .map(|(spec, (_, shape, v))| {
            let source = layout.source(spec);
            let name = match (&source.transform, source.keys.as_slice()) {
                (Transform::WeightNorm, [g, _]) => g.trim_end_matches("_g").to_string(),
                (Transform::Identity, [k]) => k.clone(),
                (t, keys) => {
                    return Err(TrainError::config(
                        "export",
                        format!("`{}`: no export for transform {t:?} of {keys:?}", spec.path),
                    ));
                }
            };
            Ok((name, shape, v))
        })
        .collect()
}

/// Writes the VAE to `out/pretransform/vae.safetensors` (f32, official names, fused weight
/// norm: the layout `audiox convert` writes, which `AudioX::builder().checkpoint_dir(out)`
/// and `Vae::load` read) and the run's model config to `out/config.json`. Returns the weight
/// file's path.
pub fn export_vae(vae: &Vae, run: &RunConfig, out: &Path) -> TrainResult<PathBuf> {
    let tensors = official_tensors(vae)?;
    let path = out.join("pretransform").join("vae.safetensors");
    super::export::write_safetensors(
        &path,
        &tensors,
        &[
            ("format", "pt"),
            ("audiox_precision", "f32"),
            ("audiox_weight_norm", "fused"),
        ],
    )?;
    let config = serde_json::to_string_pretty(&run.model)
        .map_err(|e| TrainError::config("model", e.to_string()))?;
    super::checkpoint::write_atomic(&out.join("config.json"), config.as_bytes())?;
    Ok(path)
}

/// Where a run records that its VAE was imported rather than trained: `vae/imported.json`.
pub fn imported_marker(run: &RunDir) -> PathBuf {
    run.stage_dir(StageName::Vae).join("imported.json")
}

/// Where a run's VAE export lives: `export/pretransform/vae.safetensors`.
pub fn vae_export_path(run: &RunDir) -> PathBuf {
    run.root()
        .join("export")
        .join("pretransform")
        .join("vae.safetensors")
}

/// What [`imported_marker`] holds.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ImportRecord {
    /// The file the VAE was read from, as given.
    source: String,
    /// SHA-256 of the export written from it (`export/pretransform/vae.safetensors`).
    export_sha256: String,
    /// Files whose decoders replaced the imported one since (see [`update_decoder`]), oldest
    /// first; the encoder is still the one from `source`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    decoder_updates: Vec<String>,
}

/// Loads a VAE file at `run`'s VAE sizes, refusing a file that holds tensors the VAE does not
/// have (another model's file).
fn load_vae_file(run: &RunDir, source: &Path, device: &Device) -> TrainResult<Vae> {
    load_vae_weights(&vae_config(&run.config().model_config()?), source, device)
}

/// Loads a VAE file at the sizes `config`, refusing a file that holds tensors the VAE does not
/// have (another model's file).
fn load_vae_weights(config: &VaeConfig, source: &Path, device: &Device) -> TrainResult<Vae> {
    let dict = StateDict::open(source)?;
    let (vae, report) = Vae::load(config, &[WeightSource::new(&dict)], device).map_err(|e| {
        TrainError::checkpoint(source, format!("not a VAE of the run's sizes: {e}"))
    })?;
    if let Some((_, key)) = report.unused.first() {
        return Err(TrainError::checkpoint(
            source,
            format!(
                "holds {} tensor(s) the run's VAE does not have (first: `{key}`): not a VAE of \
                 this run's sizes",
                report.unused.len()
            ),
        ));
    }
    Ok(vae)
}

/// Imports a trained VAE into `run` in place of its VAE stage: `source` is a `vae.safetensors`
/// of an earlier run's export (or any file in the layout `audiox convert` writes) whose sizes
/// are those of the run's `pretransform` section. It is loaded as the model builder loads it
/// (every tensor the VAE needs, with its shape) and must hold nothing else (a surplus tensor
/// means another model's file), then re-exported to the run's
/// `export/` and recorded in `vae/imported.json`; the teacher stage then starts on it as on a
/// VAE the run trained. This is how a run continues on a VAE trained elsewhere, e.g. in an
/// earlier session whose run folder is gone.
///
/// Refused when the run's VAE stage has checkpoints of its own (it trains its VAE) or its
/// teacher stage has started (the teacher's latents come from the VAE it started on).
pub fn import_vae(run: &RunDir, source: &Path, device: &Device) -> TrainResult<PathBuf> {
    for stage in [StageName::Vae, StageName::Teacher] {
        if let Some(step) = Checkpoints::new(&run.stage_dir(stage)).steps()?.last() {
            return Err(TrainError::config(
                "--import-vae",
                format!(
                    "{} has a {} checkpoint at step {step}: import into a new run folder",
                    run.root().display(),
                    stage.as_str()
                ),
            ));
        }
    }
    let vae = load_vae_file(run, source, device)?;
    let export = export_vae(&vae, run.config(), &run.root().join("export"))?;
    let bytes = std::fs::read(&export).map_err(|e| TrainError::io(&export, e))?;
    let record = ImportRecord {
        source: source.display().to_string(),
        export_sha256: super::checkpoint::sha256(&bytes),
        decoder_updates: Vec::new(),
    };
    write_import_record(run, &record, "--import-vae")?;
    Ok(export)
}

fn write_import_record(run: &RunDir, record: &ImportRecord, flag: &str) -> TrainResult<()> {
    let text = serde_json::to_string_pretty(record)
        .map_err(|e| TrainError::config(flag, e.to_string()))?;
    super::checkpoint::write_atomic(&imported_marker(run), text.as_bytes())
}

/// Replaces the decoder of `run`'s imported VAE with the decoder of `source`, a VAE file whose
/// **encoder is bit-identical** to the imported one: what a decoder-only fine-tune
/// (`vae.freeze_encoder`) of the imported VAE's own run produces. The teacher and the student
/// see only the encoder's latents, so they stay valid, and the export (the demo model's audio)
/// gets the better decoder. The run's export is rewritten and the new file recorded in
/// `vae/imported.json`.
///
/// Refused when the run's VAE was not imported (a VAE trained in the run is re-exported from its
/// own checkpoints), when `source` is not a VAE of the run's sizes, or when any encoder tensor
/// differs (named in the error): other latents would invalidate the teacher.
pub fn update_decoder(run: &RunDir, source: &Path, device: &Device) -> TrainResult<PathBuf> {
    const FLAG: &str = "--update-decoder";
    let marker = imported_marker(run);
    if !marker.exists() {
        return Err(TrainError::config(
            FLAG,
            format!(
                "{} has no imported VAE (no {}): only an imported VAE's decoder can be replaced",
                run.root().display(),
                marker.display()
            ),
        ));
    }
    if run.config().decoder.is_some() {
        return Err(TrainError::config(
            FLAG,
            format!(
                "{} fine-tunes its decoder itself (its decoder stage): the stage's export \
                 would replace this one",
                run.root().display()
            ),
        ));
    }
    // Checks that the export is still the recorded file.
    vae_ready(run)?;
    let mut record = read_import_record(&marker)?;
    let export = vae_export_path(run);
    let current = load_vae_file(run, &export, device)?;
    let update = load_vae_file(run, source, device)?;
    for ((name, _, a), (_, _, b)) in official_tensors(&current)?
        .into_iter()
        .zip(official_tensors(&update)?)
        .filter(|((name, _, _), _)| name.starts_with("encoder."))
    {
        if a != b {
            return Err(TrainError::checkpoint(
                source,
                format!(
                    "its encoder differs from the run's (first: `{name}`): the teacher's \
                     latents come from the run's encoder"
                ),
            ));
        }
    }
    let export = export_vae(&update, run.config(), &run.root().join("export"))?;
    let bytes = std::fs::read(&export).map_err(|e| TrainError::io(&export, e))?;
    record.export_sha256 = super::checkpoint::sha256(&bytes);
    record.decoder_updates.push(source.display().to_string());
    write_import_record(run, &record, FLAG)?;
    Ok(export)
}

/// Whether `run` has a VAE for the later stages, and where it came from: `Some(description)`
/// when its VAE stage has finished or a VAE was imported (and the export is still the file
/// imported), `None` otherwise.
pub fn vae_ready(run: &RunDir) -> TrainResult<Option<String>> {
    let marker = imported_marker(run);
    if marker.exists() {
        let record = read_import_record(&marker)?;
        let export = vae_export_path(run);
        let bytes = std::fs::read(&export).map_err(|e| TrainError::io(&export, e))?;
        if super::checkpoint::sha256(&bytes) != record.export_sha256 {
            let hint = match record.decoder_updates.last().map(String::as_str) {
                Some(DECODER_STAGE) => {
                    "; the decoder stage writes it: if its export was interrupted, \
                     `--stage decoder` writes it again"
                }
                _ => "",
            };
            return Err(TrainError::checkpoint(
                &export,
                format!(
                    "is not the VAE imported from {} (SHA-256 differs from {}){hint}",
                    record.source,
                    marker.display()
                ),
            ));
        }
        return Ok(Some(format!("imported from {}", record.source)));
    }
    let steps = run.config().vae.optim.steps;
    let trained = Checkpoints::new(&run.stage_dir(StageName::Vae))
        .newest()?
        .unwrap_or(0);
    Ok((trained >= steps).then(|| format!("trained here ({trained} steps)")))
}

/// The VAE `run`'s teacher was trained on, trainable on `device`: the VAE stage's trained
/// weights (what its export holds), or the imported file while the export is still the file
/// imported, decoder included. The decoder stage's starting point.
fn teachers_vae(run: &RunDir, device: &Device) -> TrainResult<Vae> {
    let marker = imported_marker(run);
    if marker.exists() {
        vae_ready(run)?;
        let record = read_import_record(&marker)?;
        let export = vae_export_path(run);
        if let Some(update) = record.decoder_updates.last() {
            return Err(TrainError::checkpoint(
                &export,
                format!(
                    "its decoder is no longer the imported one (replaced by {update}), and the \
                     decoder stage has no checkpoint to continue from: import the VAE again \
                     into a new run folder"
                ),
            ));
        }
        return load_vae_file(run, &export, device);
    }
    let stage = VaeStage::new(run.config(), device)?;
    let (step, vae) = super::stage::trained_weights(&stage, run, device)?;
    let steps = run.config().vae.optim.steps;
    if step < steps {
        return Err(TrainError::config(
            "decoder",
            format!("the vae stage is at step {step} of {steps}: finish it first (--stage vae)"),
        ));
    }
    Ok(vae)
}

/// Exports the decoder stage's VAE (see [`export_vae`]) into `run`'s export, where it replaces
/// the VAE the teacher was trained on (same encoder); a run that imported its VAE records it
/// in `vae/imported.json` as a decoder update, so that the export still passes [`vae_ready`].
pub fn export_decoder(vae: &Vae, run: &RunDir) -> TrainResult<PathBuf> {
    let marker = imported_marker(run);
    let mut record = match marker.exists() {
        true => Some(read_import_record(&marker)?),
        false => None,
    };
    // The decoder stage is recorded before the file changes, so that an export interrupted
    // between the two writes is reported as the decoder stage's (see `vae_ready`).
    if let Some(record) = &mut record
        && record.decoder_updates.last().map(String::as_str) != Some(DECODER_STAGE)
    {
        record.decoder_updates.push(DECODER_STAGE.to_string());
        write_import_record(run, record, "decoder")?;
    }
    let export = export_vae(vae, run.config(), &run.root().join("export"))?;
    if let Some(mut record) = record {
        let bytes = std::fs::read(&export).map_err(|e| TrainError::io(&export, e))?;
        record.export_sha256 = super::checkpoint::sha256(&bytes);
        write_import_record(run, &record, "decoder")?;
    }
    Ok(export)
}

/// How `vae/imported.json` names the decoder stage among its decoder updates.
const DECODER_STAGE: &str = "the decoder stage";

fn read_import_record(marker: &Path) -> TrainResult<ImportRecord> {
    let text = std::fs::read_to_string(marker).map_err(|e| TrainError::io(marker, e))?;
    serde_json::from_str(&text)
        .map_err(|e| TrainError::checkpoint(marker, format!("unreadable: {e}")))
}

/// The scale of the posterior noise at (0-based) step `step` with a warm-up of `warmup` steps:
/// `step / warmup`, then 1.
fn noise_ramp(warmup: Option<u64>, step: u64) -> f64 {
    match warmup {
        Some(w) if w > 0 && step < w => step as f64 / w as f64,
        _ => 1.0,
    }
}

impl VaeStageConfig {
    /// The STFT loss's log-magnitude floor: `log_floor_db` as an amplitude ratio (`-60` dB ->
    /// `1e-3`), applied as `log_floor_mode` says.
    pub fn log_floor(&self) -> Option<LogFloor> {
        self.log_floor_db.map(|db| LogFloor {
            ratio: 10f64.powf(db / 20.0) as f32,
            mode: self.log_floor_mode,
        })
    }
}
