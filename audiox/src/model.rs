//! [`AudioX`], the loaded model, and its builder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;

use audiox_core::limits::Limits;
use audiox_core::precision::{HeldBytes, WeightPrecision, held_bytes};
use audiox_core::weights::{
    Component, LoadReport, StateDict, WeightSource, official_names, resolve_official_keys,
};
use audiox_core::{Error, Result};
use audiox_encoders::clip::ClipVisionConfig;
use audiox_encoders::conditioners::{
    AudioPromptConditioner, AudioPromptConfig, T5ConditionerConfig, TextConditioner,
    VideoConditioner, VideoConditionerConfig,
};
use audiox_encoders::synchformer::{
    Synchformer, SynchformerConfig, WEIGHT_PREFIX as SYNCHFORMER_PREFIX,
};
use audiox_encoders::t5::{T5Config, T5Encoder};
use audiox_encoders::tokenizer::T5Tokenizer;
use audiox_mmdit::{Dit, DitConfig, MafBlock, MafBlockConfig};
use audiox_vae::{ChunkedDecode, OobleckDecoder, VaeConfig};

use crate::checkpoint::CheckpointPaths;
use crate::config::ModelConfig;
use crate::memory::{MemoryCheckpoint, names};

/// Key prefixes of the official model object (`ConditionedDiffusionModelWrapper.state_dict()`).
pub(crate) mod prefixes {
    pub const DIT: &str = "model.model.";
    pub const MAF: &str = "maf_block.";
    pub const VIDEO: &str = "conditioner.conditioners.video_prompt.";
    pub const AUDIO: &str = "conditioner.conditioners.audio_prompt.";
    pub const VAE: &str = "pretransform.model.";
}

/// Which checkpoint the denoiser comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenoiserKind {
    /// AudioX-Turbo, the 4-step distilled student (default sampler: DMD, 4 steps).
    Student,
    /// AudioX base, the teacher (default sampler: Euler, 250 steps, guidance 6).
    Teacher,
}

/// Every loaded part of the model.
pub(crate) struct Components {
    pub config: ModelConfig,
    pub device: Device,
    pub kind: DenoiserKind,
    pub text: TextConditioner,
    pub video: VideoConditioner,
    pub audio: AudioPromptConditioner,
    pub synchformer: Option<Synchformer>,
    pub maf: MafBlock,
    pub dit: Dit,
    pub decoder: OobleckDecoder,
    pub chunked_decode: Option<ChunkedDecode>,
    pub report: LoadReport,
    pub paths: CheckpointPaths,
    /// Bounds every request is checked against (`crate::limits`).
    pub limits: Limits,
    /// How the matmul weights are held.
    pub precision: WeightPrecision,
    /// The text conditions of the last prompts (T5 runs once per repeated prompt).
    pub text_cache: crate::text_cache::TextCache,
}

/// A loaded AudioX-Turbo model. Cheap to clone (shared), `Send + Sync`: several threads may
/// call [`AudioX::generate`] at once.
///
/// ```no_run
/// use audiox::{AudioX, Request};
/// let model = AudioX::builder().checkpoint_dir("checkpoints").build()?;
/// let out = model.generate(Request::text("a wooden door creaks open, then slams shut").seed(7))?;
/// out.audio[0].write_wav("door.wav")?;
/// # Ok::<(), audiox::Error>(())
/// ```
#[derive(Clone)]
pub struct AudioX {
    pub(crate) inner: Arc<Components>,
}

impl std::fmt::Debug for AudioX {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioX")
            .field("kind", &self.inner.kind)
            .field("sample_rate", &self.inner.config.sample_rate)
            .field("seconds", &self.inner.config.conditioning_seconds)
            .field("video", &self.inner.synchformer.is_some())
            .finish_non_exhaustive()
    }
}

impl AudioX {
    /// A builder (CPU device, official layout).
    pub fn builder() -> AudioXBuilder {
        AudioXBuilder::default()
    }

    /// The small demo model embedded in the binary (the `audiox-demo` crate, feature `demo`,
    /// on by default), on the CPU: loaded from memory, no file system and no network. It was
    /// trained by the project on procedural sound events ([`crate::demo`]); it is **not**
    /// AudioX-Turbo. Same as `AudioX::builder().demo().build()`; the builder also chooses the
    /// device, precision or the demo's teacher ([`AudioXBuilder::denoiser`]).
    ///
    /// Errors with [`Error::DemoModelMissing`] when this build carries no demo model (the
    /// message says how to produce it).
    ///
    /// ```no_run
    /// use audiox::{AudioX, Request};
    /// let model = AudioX::demo()?;
    /// let out = model.generate(Request::text("two knocks, then a low thud").seed(3))?;
    /// out.audio[0].write_wav("knocks.wav")?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn demo() -> Result<AudioX> {
        AudioX::builder().demo().build()
    }

    /// The model config.
    pub fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    /// Student or teacher.
    pub fn kind(&self) -> DenoiserKind {
        self.inner.kind
    }

    /// Output sample rate in Hz.
    pub fn sample_rate(&self) -> u32 {
        self.inner.config.sample_rate
    }

    /// Longest duration the model generates in one window, in seconds (10 for the official
    /// model); longer requests go through windowed continuation ([`crate::long_form`]).
    pub fn max_duration(&self) -> f64 {
        self.inner.config.conditioning_seconds as f64
    }

    /// Whether video (and image) requests can be served (the Synchformer weights are loaded).
    pub fn supports_video(&self) -> bool {
        self.inner.synchformer.is_some()
    }

    /// What the load did: every applied weight and its source, unused and dropped tensors.
    pub fn load_report(&self) -> &LoadReport {
        &self.inner.report
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The files the model was built from. For a model loaded from memory
    /// ([`AudioXBuilder::checkpoint_memory`], [`AudioX::demo`]) these are labels
    /// (`<label>/audiox_turbo/audiox_turbo.safetensors`), not files on disk.
    pub fn paths(&self) -> &CheckpointPaths {
        &self.inner.paths
    }

    /// The bounds every request is checked against (see [`AudioXBuilder::limits`]).
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// How the matmul weights are held (see [`AudioXBuilder::weights_precision`]).
    pub fn weights_precision(&self) -> WeightPrecision {
        self.inner.precision
    }

    /// How latents are decoded: `None` for the whole latent at once, else the chunks (see
    /// [`AudioXBuilder::chunked_decode`] for the default).
    pub fn decode_chunking(&self) -> Option<ChunkedDecode> {
        self.inner.chunked_decode
    }

    /// The bytes every loaded weight takes, by the type it is held in (read from the tensors
    /// themselves): what [`AudioXBuilder::weights_precision`] saved.
    ///
    /// ```no_run
    /// use audiox::{AudioX, WeightPrecision};
    /// let model = AudioX::builder()
    ///     .checkpoint_dir("checkpoints")
    ///     .weights_precision(WeightPrecision::Bf16)
    ///     .build()?;
    /// let held = model.held_weight_bytes();
    /// println!("{:.2} GB of weights, {:.2} GB in bf16", held.total() as f64 / 1e9, held.bf16 as f64 / 1e9);
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn held_weight_bytes(&self) -> HeldBytes {
        let c = &self.inner;
        let mut bytes = held_bytes(&c.dit);
        bytes.add(held_bytes(&c.maf));
        bytes.add(held_bytes(&c.text.encoder));
        bytes.add(held_bytes(&c.video));
        bytes.add(held_bytes(&c.audio.model));
        bytes.add(held_bytes(&c.decoder));
        if let Some(s) = &c.synchformer {
            bytes.add(held_bytes(s));
        }
        bytes
    }

    /// The bytes the diffusion transformer's weights take, by held type.
    pub fn held_dit_bytes(&self) -> HeldBytes {
        held_bytes(&self.inner.dit)
    }

    /// The bytes of the VAE decoder's parameters, by the type they are held in (its convolution
    /// kernels are bf16 under a reduced [`WeightPrecision`], the rest f32).
    pub fn held_decoder_bytes(&self) -> HeldBytes {
        held_bytes(&self.inner.decoder)
    }
}

/// Builds an [`AudioX`] from a checkpoint folder in the official layout (see
/// `docs/weights.md`) and/or individual files.
#[derive(Debug, Clone)]
pub struct AudioXBuilder {
    dir: Option<PathBuf>,
    files: CheckpointPaths,
    memory: Option<MemorySource>,
    denoiser: Option<DenoiserKind>,
    device: Device,
    decode: DecodeChoice,
    limits: Limits,
    precision: WeightPrecision,
}

/// How the builder was told to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
enum DecodeChoice {
    /// The whole latent at once (the default).
    Whole,
    /// In these chunks.
    Chunked(ChunkedDecode),
    /// In chunks of this many frames with the decoder's receptive radius as overlap.
    ExactChunks(usize),
}

/// Latent frames per chunk for a decode that bounds its activations on a machine short of
/// memory: `exact_chunked_decode(LOW_MEMORY_DECODE_CHUNK)` (each chunk gets the decoder's
/// receptive radius of context on both sides, so the result equals the whole decode up to
/// float rounding). Measured at full size with `int8` weights (AMX Xeon, 2 threads,
/// 2026-12-02): the 10 s request's peak resident memory 3.91 -> 3.62 GB, its time +0.9 s
/// (docs/performance.md, "int8 memory").
pub const LOW_MEMORY_DECODE_CHUNK: usize = 64;

/// Files held in memory instead of a folder.
#[derive(Debug, Clone)]
enum MemorySource {
    /// The caller's files.
    Files(MemoryCheckpoint),
    /// The embedded demo model (looked up when the model is built).
    Demo,
}

impl Default for AudioXBuilder {
    fn default() -> Self {
        AudioXBuilder {
            dir: None,
            files: CheckpointPaths::default(),
            memory: None,
            denoiser: None,
            device: Device::flex(),
            decode: DecodeChoice::Whole,
            limits: Limits::default(),
            precision: WeightPrecision::F32,
        }
    }
}

impl AudioXBuilder {
    /// A folder in the official layout (`audiox_turbo/`, `pretransform/`, `synchformer/`,
    /// `t5-base/`, `clip-vit-base-patch32/`, optional `config.json` and `pretrained_ckpt/`).
    pub fn checkpoint_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The files of a checkpoint folder in the official layout, held in memory (safetensors
    /// weights; see [`MemoryCheckpoint`] for the paths read). Nothing is read from disk; it
    /// cannot be combined with [`AudioXBuilder::checkpoint_dir`] or the single-file setters.
    ///
    /// ```no_run
    /// use audiox::{AudioX, MemoryCheckpoint};
    /// let files = MemoryCheckpoint::read_dir("converted")?; // or bytes from anywhere
    /// let model = AudioX::builder().checkpoint_memory(files).build()?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn checkpoint_memory(mut self, files: MemoryCheckpoint) -> Self {
        self.memory = Some(MemorySource::Files(files));
        self
    }

    /// The small demo model embedded in the binary ([`AudioX::demo`], [`crate::demo`]): its
    /// student by default, its teacher with [`AudioXBuilder::denoiser`]. [`AudioXBuilder::build`]
    /// returns [`Error::DemoModelMissing`] when this build carries none.
    ///
    /// ```no_run
    /// use audiox::{AudioX, DenoiserKind, WeightPrecision};
    /// let teacher = AudioX::builder()
    ///     .demo()
    ///     .denoiser(DenoiserKind::Teacher)
    ///     .weights_precision(WeightPrecision::Bf16)
    ///     .build()?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn demo(mut self) -> Self {
        self.memory = Some(MemorySource::Demo);
        self
    }

    /// Which denoiser to load. Default: the teacher when a file was set with
    /// [`AudioXBuilder::teacher_checkpoint`] or a folder holds only a teacher
    /// (`pretrained_ckpt/`); otherwise the student, also from a folder holding both (the
    /// 4-step AudioX-Turbo, not the teacher's hundreds of guided steps), from memory and for
    /// the demo model. `Student` ignores a teacher file; `Teacher` requires one.
    pub fn denoiser(mut self, kind: DenoiserKind) -> Self {
        self.denoiser = Some(kind);
        self
    }

    /// The model config file (default: the folder's `config.json`, else the built-in official
    /// inference config).
    pub fn config(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.config = Some(path.into());
        self
    }

    /// The student checkpoint (`audiox_turbo.ckpt` or a safetensors file with the same names).
    pub fn student_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.student = Some(path.into());
        self
    }

    /// The teacher checkpoint: when set, it is the denoiser (and the source of every weight the
    /// student file would provide), and the default sampler becomes Euler with guidance.
    pub fn teacher_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.teacher = Some(path.into());
        self
    }

    /// The VAE checkpoint (`vae.ckpt`).
    pub fn vae_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.vae = Some(path.into());
        self
    }

    /// The Synchformer checkpoint (`synchformer_state_dict.pth`); without it, video and image
    /// requests are refused.
    pub fn synchformer_checkpoint(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.synchformer = Some(path.into());
        self
    }

    /// The Hugging Face `t5-base` folder.
    pub fn t5_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.t5_dir = Some(path.into());
        self
    }

    /// The Hugging Face `clip-vit-base-patch32` folder.
    pub fn clip_dir(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.clip_dir = Some(path.into());
        self
    }

    /// The device to run on (default: the CPU backend, `Device::flex()`).
    pub fn device(mut self, device: Device) -> Self {
        self.device = device;
        self
    }

    /// Decodes latents in overlapping chunks to bound memory (exact with the default
    /// overlap, see `audiox_vae::ChunkedDecode`). Without this call, or
    /// [`AudioXBuilder::exact_chunked_decode`], the decode is whole ([`AudioX::decode_chunking`]
    /// says which); [`LOW_MEMORY_DECODE_CHUNK`] is a chunk size for machines short of memory.
    pub fn chunked_decode(mut self, chunking: ChunkedDecode) -> Self {
        self.decode = DecodeChoice::Chunked(chunking);
        self
    }

    /// Decodes latents in chunks of `frames` latent frames with just enough overlap (the
    /// decoder's receptive radius, known once it is loaded) to equal the whole decode up to
    /// float rounding. `frames` must be at least 1 ([`AudioXBuilder::build`] says so).
    pub fn exact_chunked_decode(mut self, frames: usize) -> Self {
        self.decode = DecodeChoice::ExactChunks(frames);
        self
    }

    /// Decodes the whole latent at once (the default; the fastest decode, its activations grow
    /// with the duration, which requests bound at 10 s).
    pub fn whole_decode(mut self) -> Self {
        self.decode = DecodeChoice::Whole;
        self
    }

    /// Bounds on requests and inputs (steps, samples, prompt sizes, image sizes, the ffmpeg
    /// time limit...; default [`Limits::default`], listed in `docs/guide.md`). A server lowers
    /// the ones it cares about:
    ///
    /// ```no_run
    /// use audiox::{AudioX, Limits};
    /// let model = AudioX::builder()
    ///     .checkpoint_dir("checkpoints")
    ///     .limits(Limits { max_steps: 64, max_num_samples: 4, ..Limits::default() })
    ///     .build()?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How the matmul weights are held in memory (default [`WeightPrecision::F32`], which
    /// computes exactly what the reference computes):
    ///
    /// * `Bf16`: the linear and token-convolution weights of the diffusion transformer, the
    ///   MAF block, T5, CLIP and the video conditioner in bfloat16 (half their memory),
    ///   multiplied on Intel AMX tiles or (on AMD) AVX512-BF16 dot products where the CPU has
    ///   them (activations rounded to bf16, sums in f32), on AVX2-only CPUs widened block by
    ///   block inside an f32 product, else widened to f32 for each product
    ///   (`audiox_kernels::bf16::Bf16Kernel` documents the choice).
    /// * `Int8`: the diffusion transformer's linear and token-convolution weights in int8 with
    ///   one f32 scale per output channel and block of up to 255 input rows (about a quarter of
    ///   their f32 memory), multiplied on AMX int8 tiles, AVX512-VNNI, AVX-VNNI or AVX2
    ///   integer products, the fastest the CPU has (activations quantised per token; all of
    ///   them give the same floats), else dequantised to f32 for each product; the others as
    ///   with `Bf16`.
    ///
    /// Under either reduced precision the VAE decoder's convolution kernels are held in bf16
    /// too, and run on the same native bf16 kernel (activations rounded to bf16, sums in f32;
    /// else widened to f32 per convolution). Biases, norms,
    /// embeddings, the audio-prompt encoder and the Synchformer stay f32. Each weight is
    /// converted as it is read, so loading never holds an f32 copy of the whole model. The
    /// error of each choice against f32 is measured in `docs/performance.md` ("Precision").
    ///
    /// ```no_run
    /// use audiox::{AudioX, WeightPrecision};
    /// let model = AudioX::builder()
    ///     .checkpoint_dir("checkpoints")
    ///     .weights_precision(WeightPrecision::Int8)
    ///     .build()?;
    /// # Ok::<(), audiox::Error>(())
    /// ```
    pub fn weights_precision(mut self, precision: WeightPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// Loads every file and builds the model.
    pub fn build(self) -> Result<AudioX> {
        if self.decode == DecodeChoice::ExactChunks(0)
            || matches!(self.decode, DecodeChoice::Chunked(c) if c.chunk == 0)
        {
            return Err(Error::InvalidRequest(
                "a chunked decode needs chunks of at least 1 latent frame".into(),
            ));
        }
        let files = match self.memory {
            Some(memory) => {
                if self.dir.is_some() || self.files != CheckpointPaths::default() {
                    return Err(Error::InvalidRequest(
                        "the builder was given both files in memory (checkpoint_memory or demo) \
                         and files on disk; choose one"
                            .into(),
                    ));
                }
                Files::Memory(match memory {
                    MemorySource::Files(files) => files,
                    MemorySource::Demo => crate::demo::checkpoint()?,
                })
            }
            None => Files::Disk(match &self.dir {
                Some(dir) => CheckpointPaths::from_dir(dir)?.overridden_by(&self.files),
                None => self.files.clone(),
            }),
        };
        // A teacher file set explicitly is what the caller wants to run.
        let denoiser = self.denoiser.or_else(|| {
            self.files
                .teacher
                .is_some()
                .then_some(DenoiserKind::Teacher)
        });
        let mut components = load(files, denoiser, self.device, self.decode, self.precision)?;
        components.limits = self.limits;
        Ok(AudioX {
            inner: Arc::new(components),
        })
    }
}

fn load(
    files: Files,
    denoiser: Option<DenoiserKind>,
    device: Device,
    decode: DecodeChoice,
    precision: WeightPrecision,
) -> Result<Components> {
    let started = Instant::now();
    let config = files.config()?;
    let (kind, main_label) = files.denoiser(denoiser)?;
    let paths = files.paths(kind);

    // Every component's config, built once; the official key rule needs the model's whole
    // key space with shapes.
    let parts = PartConfigs::from_configs(
        &config,
        files.clip_config()?,
        files.t5_config()?,
        files.tokenizer_label(),
    )?;
    let model_keys = model_key_space(&parts, &device)?;
    let stored = files.open_main(kind)?;
    let (checkpoint, dropped) = resolve_official_keys(&stored, &model_keys);
    let vae = files.open_vae()?;

    let mut report = LoadReport {
        dropped: dropped
            .into_iter()
            .map(|k| (main_label.clone(), k))
            .collect(),
        ..Default::default()
    };
    let ckpt = |prefix| WeightSource::with_prefix(&checkpoint, prefix);
    // The conditioners' matmul weights (T5, CLIP and the video conditioner, MAF) are held in
    // bf16 under either reduced precision; int8 is for the diffusion transformer only.
    let conditioners = precision.conditioners();

    // Every component loads the same way: `X::load(&config, &sources, &device)`. Where a
    // component has a file of its own, it comes first and the checkpoint's copy overrides it
    // (official order); each such file is released once its component is loaded.
    let text = {
        let tokenizer = files.tokenizer(parts.text.max_length)?;
        let t5 = files.open_t5()?;
        let encoder = loaded(
            T5Encoder::load(
                &parts.text.t5,
                &[WeightSource::new(&t5).with_precision(conditioners)],
                &device,
            ),
            &mut report,
        )?;
        TextConditioner::new(tokenizer, encoder, parts.text.cond_dim)?
    };
    let video = {
        let clip = files.open_clip()?;
        let mut sources: Vec<WeightSource<'_>> = clip
            .iter()
            .map(|d| WeightSource::new(d).with_precision(conditioners))
            .collect();
        sources.push(ckpt(prefixes::VIDEO).with_precision(conditioners));
        loaded(
            VideoConditioner::load(&parts.video, &sources, &device),
            &mut report,
        )?
    };
    let audio = {
        let prompt_vae = AudioPromptConditioner::vae_weights(&vae);
        loaded(
            AudioPromptConditioner::load(
                &parts.audio,
                &[WeightSource::new(&prompt_vae), ckpt(prefixes::AUDIO)],
                &device,
            ),
            &mut report,
        )?
    };
    let maf = loaded(
        MafBlock::load(
            &parts.maf,
            &[ckpt(prefixes::MAF).with_precision(conditioners)],
            &device,
        ),
        &mut report,
    )?;
    // Loaded (and checked against the official key set), then what never reaches the
    // output is freed (0.47 GB at full size).
    let dit = loaded(
        Dit::load(
            &parts.dit,
            &[ckpt(prefixes::DIT).with_precision(precision)],
            &device,
        ),
        &mut report,
    )?
    .without_dead_weights();
    // The main VAE: the checkpoint's copy, overridden by vae.ckpt (official order). Only the
    // decoder is used; the encoder half is not held. Its convolution kernels are held in bf16
    // under either reduced precision.
    let decoder = loaded(
        OobleckDecoder::load(
            &parts.vae.decoder,
            &[
                ckpt("pretransform.model.decoder.").with_precision(conditioners),
                WeightSource::with_prefix(&vae, "decoder.").with_precision(conditioners),
            ],
            &device,
        ),
        &mut report,
    )?;
    for key in checkpoint
        .keys()
        .filter(|k| k.starts_with("pretransform.model.encoder."))
    {
        report.ignored.push((main_label.clone(), key.to_string()));
    }
    let synchformer = match files.open_synchformer()? {
        Some(dict) => Some(loaded(
            Synchformer::load(
                &parts.synchformer,
                &[WeightSource::with_prefix(&dict, SYNCHFORMER_PREFIX)],
                &device,
            ),
            &mut report,
        )?),
        None => None,
    };
    log_load(&report, started.elapsed().as_secs_f64());
    let chunked_decode = match decode {
        DecodeChoice::Whole => None,
        DecodeChoice::Chunked(chunking) => Some(chunking),
        DecodeChoice::ExactChunks(frames) => Some(ChunkedDecode::exact(&decoder, frames)),
    };
    Ok(Components {
        config,
        device,
        kind,
        text,
        video,
        audio,
        synchformer,
        maf,
        dit,
        decoder,
        chunked_decode,
        report,
        paths,
        limits: Limits::default(),
        precision,
        text_cache: Default::default(),
    })
}

/// Where a model's files come from: a folder (or single files) on disk, or memory.
enum Files {
    Disk(CheckpointPaths),
    Memory(MemoryCheckpoint),
}

/// `e` with `path` as its config file when it names none.
fn config_at(e: Error, path: &Path) -> Error {
    match e {
        Error::Config {
            path: None,
            field,
            message,
        } => Error::Config {
            path: Some(path.to_path_buf()),
            field,
            message,
        },
        other => other,
    }
}

/// Parses the JSON text of `path` in `files`.
fn json_in(files: &MemoryCheckpoint, path: &str, what: &str) -> Result<serde_json::Value> {
    let text = files.require_text(path, what)?;
    serde_json::from_str(text).map_err(|e| Error::Config {
        path: Some(files.display_path(path)),
        field: String::new(),
        message: format!("not JSON: {e}"),
    })
}

impl Files {
    /// The model config: the given file, else the built-in official one (on disk); the
    /// required `config.json` (in memory).
    fn config(&self) -> Result<ModelConfig> {
        match self {
            Files::Disk(paths) => match &paths.config {
                Some(p) => ModelConfig::from_file(p),
                None => Ok(ModelConfig::official()),
            },
            Files::Memory(m) => {
                let text = m.require_text(names::CONFIG, "model config")?;
                ModelConfig::from_json_str(text)
                    .map_err(|e| config_at(e, &m.display_path(names::CONFIG)))
            }
        }
    }

    /// Which denoiser is loaded and the label of its file; errors if that file is missing.
    fn denoiser(&self, asked: Option<DenoiserKind>) -> Result<(DenoiserKind, PathBuf)> {
        match self {
            Files::Disk(paths) => {
                // A folder holding both runs the student (AudioX-Turbo itself, 4 steps); the
                // teacher when it is the only denoiser there or was asked for
                // (`denoiser`, or a file set with `teacher_checkpoint`).
                let kind = asked.unwrap_or(match (&paths.student, &paths.teacher) {
                    (None, Some(_)) => DenoiserKind::Teacher,
                    _ => DenoiserKind::Student,
                });
                let path = match kind {
                    DenoiserKind::Teacher => paths.require(
                        &paths.teacher,
                        "teacher checkpoint",
                        "pretrained_ckpt/pretrained_ckpt.ckpt",
                    )?,
                    DenoiserKind::Student => paths.require(
                        &paths.student,
                        "student checkpoint",
                        "audiox_turbo/audiox_turbo.ckpt",
                    )?,
                };
                // Every other required file is checked before any is read.
                paths.require(&paths.vae, "VAE checkpoint", "pretransform/vae.ckpt")?;
                paths.require(&paths.t5_dir, "T5 folder", "t5-base/")?;
                paths.require(&paths.clip_dir, "CLIP folder", "clip-vit-base-patch32/")?;
                Ok((kind, path.to_path_buf()))
            }
            Files::Memory(m) => {
                let kind = asked.unwrap_or(DenoiserKind::Student);
                let name = Self::memory_denoiser(kind);
                m.require(name, Self::memory_denoiser_what(kind))?;
                for (file, what) in [
                    (names::VAE, "VAE weights"),
                    (names::T5_WEIGHTS, "T5 weights"),
                    (names::T5_TOKENIZER, "T5 tokenizer"),
                ] {
                    m.require(file, what)?;
                }
                Ok((kind, m.display_path(name)))
            }
        }
    }

    fn memory_denoiser_what(kind: DenoiserKind) -> &'static str {
        match kind {
            DenoiserKind::Student => "student weights",
            DenoiserKind::Teacher => "teacher weights",
        }
    }

    fn memory_denoiser(kind: DenoiserKind) -> &'static str {
        match kind {
            DenoiserKind::Student => names::STUDENT,
            DenoiserKind::Teacher => names::TEACHER,
        }
    }

    /// The files the model is built from (labels for memory), as [`AudioX::paths`] reports.
    fn paths(&self, kind: DenoiserKind) -> CheckpointPaths {
        match self {
            Files::Disk(paths) => CheckpointPaths {
                teacher: match kind {
                    DenoiserKind::Teacher => paths.teacher.clone(),
                    DenoiserKind::Student => None,
                },
                ..paths.clone()
            },
            Files::Memory(m) => {
                let label = |name: &str| Some(m.display_path(name)).filter(|_| m.contains(name));
                CheckpointPaths {
                    config: label(names::CONFIG),
                    student: label(names::STUDENT).filter(|_| kind == DenoiserKind::Student),
                    vae: label(names::VAE),
                    synchformer: label(names::SYNCHFORMER),
                    t5_dir: Some(m.display_path("t5-base")),
                    clip_dir: Some(m.display_path("clip-vit-base-patch32")),
                    teacher: label(names::TEACHER).filter(|_| kind == DenoiserKind::Teacher),
                }
            }
        }
    }

    fn t5_dir(paths: &CheckpointPaths) -> Result<&Path> {
        paths.require(&paths.t5_dir, "T5 folder", "t5-base/")
    }

    fn clip_dir(paths: &CheckpointPaths) -> Result<&Path> {
        paths.require(&paths.clip_dir, "CLIP folder", "clip-vit-base-patch32/")
    }

    fn clip_config(&self) -> Result<ClipVisionConfig> {
        match self {
            Files::Disk(paths) => {
                ClipVisionConfig::from_hf_file(Self::clip_dir(paths)?.join("config.json"))
            }
            Files::Memory(m) => {
                let value = json_in(m, names::CLIP_CONFIG, "CLIP config")?;
                ClipVisionConfig::from_hf_json(&value)
                    .map_err(|e| config_at(e, &m.display_path(names::CLIP_CONFIG)))
            }
        }
    }

    fn t5_config(&self) -> Result<T5Config> {
        match self {
            Files::Disk(paths) => T5Config::from_hf_file(Self::t5_dir(paths)?.join("config.json")),
            Files::Memory(m) => {
                let value = json_in(m, names::T5_CONFIG, "T5 config")?;
                T5Config::from_hf_json(&value)
                    .map_err(|e| config_at(e, &m.display_path(names::T5_CONFIG)))
            }
        }
    }

    /// Names the tokenizer in the text conditioner's config.
    fn tokenizer_label(&self) -> PathBuf {
        match self {
            Files::Disk(paths) => paths
                .t5_dir
                .as_deref()
                .map(|d| d.join("tokenizer.json"))
                .unwrap_or_default(),
            Files::Memory(m) => m.display_path(names::T5_TOKENIZER),
        }
    }

    fn tokenizer(&self, max_length: usize) -> Result<T5Tokenizer> {
        match self {
            Files::Disk(paths) => {
                T5Tokenizer::from_file(Self::t5_dir(paths)?.join("tokenizer.json"), max_length)
            }
            Files::Memory(m) => {
                let bytes = m.require(names::T5_TOKENIZER, "T5 tokenizer")?;
                T5Tokenizer::from_bytes(bytes.as_slice(), max_length).map_err(|e| match e {
                    Error::Tokenizer {
                        path: None,
                        message,
                    } => Error::Tokenizer {
                        path: Some(m.display_path(names::T5_TOKENIZER)),
                        message,
                    },
                    other => other,
                })
            }
        }
    }

    fn open_main(&self, kind: DenoiserKind) -> Result<StateDict> {
        match self {
            Files::Disk(paths) => {
                let path = match kind {
                    DenoiserKind::Teacher => &paths.teacher,
                    DenoiserKind::Student => &paths.student,
                };
                StateDict::open(paths.require(path, "denoiser checkpoint", "")?)
            }
            Files::Memory(m) => m.require_weights(
                Self::memory_denoiser(kind),
                Self::memory_denoiser_what(kind),
            ),
        }
    }

    fn open_vae(&self) -> Result<StateDict> {
        match self {
            Files::Disk(paths) => StateDict::open(paths.require(
                &paths.vae,
                "VAE checkpoint",
                "pretransform/vae.ckpt",
            )?),
            Files::Memory(m) => m.require_weights(names::VAE, "VAE weights"),
        }
    }

    fn open_t5(&self) -> Result<StateDict> {
        match self {
            Files::Disk(paths) => StateDict::open(audiox_encoders::hf_weights_file(
                Self::t5_dir(paths)?,
                "T5",
            )?),
            Files::Memory(m) => m.require_weights(names::T5_WEIGHTS, "T5 weights"),
        }
    }

    /// The CLIP folder's weights in the video conditioner's names, if it has any.
    fn open_clip(&self) -> Result<Option<StateDict>> {
        match self {
            Files::Disk(paths) => VideoConditioner::clip_weights(Self::clip_dir(paths)?),
            Files::Memory(m) => Ok(m
                .optional_weights(names::CLIP_WEIGHTS)?
                .map(|d| VideoConditioner::clip_weights_of(&d))),
        }
    }

    fn open_synchformer(&self) -> Result<Option<StateDict>> {
        match self {
            Files::Disk(paths) => paths
                .synchformer
                .as_deref()
                .map(StateDict::open)
                .transpose(),
            Files::Memory(m) => m.optional_weights(names::SYNCHFORMER),
        }
    }
}

/// The component of a [`Component::load`] result, its report merged into `report`.
fn loaded<T>(result: Result<(T, LoadReport)>, report: &mut LoadReport) -> Result<T> {
    let (part, r) = result?;
    report.merge(r);
    Ok(part)
}

/// The config of every component: the model config's (already composed), completed by the
/// CLIP and T5 folders' `config.json`.
pub(crate) struct PartConfigs {
    pub text: T5ConditionerConfig,
    pub video: VideoConditionerConfig,
    pub audio: AudioPromptConfig,
    pub maf: MafBlockConfig,
    pub dit: DitConfig,
    /// The main VAE (only its decoder is held; both halves are official keys).
    pub vae: VaeConfig,
    /// The audio-prompt conditioner's private VAE (key space only).
    pub prompt_vae: VaeConfig,
    pub synchformer: SynchformerConfig,
}

impl PartConfigs {
    pub fn new(config: &ModelConfig, clip_dir: &Path, t5_dir: &Path) -> Result<Self> {
        let clip = ClipVisionConfig::from_hf_file(clip_dir.join("config.json"))?;
        let t5 = T5Config::from_hf_file(t5_dir.join("config.json"))?;
        Self::from_configs(config, clip, t5, t5_dir.join("tokenizer.json"))
    }

    /// The same from the CLIP and T5 sizes already read (`tokenizer` only names the
    /// tokenizer file).
    pub fn from_configs(
        config: &ModelConfig,
        clip: ClipVisionConfig,
        t5: T5Config,
        tokenizer: PathBuf,
    ) -> Result<Self> {
        let missing =
            |what: &str| Error::config("model.conditioning.configs", format!("no {what}"));
        let text = config
            .text_conditioner()
            .ok_or_else(|| missing("t5 text conditioner"))?;
        let video = config
            .video_conditioner()
            .ok_or_else(|| missing("video conditioner"))?;
        let audio = config
            .audio_conditioner()
            .ok_or_else(|| missing("audio_autoencoder conditioner"))?;
        let mut text = text.clone();
        text.t5 = t5;
        text.tokenizer = tokenizer;
        Ok(PartConfigs {
            text,
            video: video.clone().with_clip(clip),
            audio: audio.clone(),
            maf: config.maf().clone(),
            dit: config.dit().clone(),
            vae: config.vae().clone(),
            prompt_vae: audio.pretransform_config.config.clone(),
            synchformer: config.synchformer.clone(),
        })
    }
}

fn log_load(report: &LoadReport, seconds: f64) {
    if std::env::var_os("AUDIOX_LOG").is_some() {
        eprintln!("audiox: loaded in {seconds:.2} s: {}", report.summary());
    }
}

/// Official names and shapes of the whole model object (what a student or teacher checkpoint
/// may hold), for the official key rule. Nothing is allocated.
pub(crate) fn model_key_space(
    parts: &PartConfigs,
    device: &Device,
) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut keys = BTreeMap::new();
    let mut add = |prefix: &str, names: BTreeMap<String, Vec<usize>>| {
        keys.extend(names.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    };
    let dit = parts.dit.init(device)?;
    add(prefixes::DIT, official_names(&dit, &Dit::layout()));
    let maf = parts.maf.init(device);
    add(prefixes::MAF, maf.official_names());
    let video = parts.video.init(device);
    add(
        prefixes::VIDEO,
        official_names(&video, &VideoConditioner::layout()),
    );
    let audio = parts.audio.init(device);
    add(prefixes::AUDIO, official_names(&audio, &audio.layout()));
    // Both VAE copies in full (the halves we do not hold are still official keys).
    let prompt_vae = parts.prompt_vae.init(device);
    add(
        &format!("{}pretransform.model.", prefixes::AUDIO),
        official_names(&prompt_vae, &prompt_vae.layout()),
    );
    let main_vae = parts.vae.init(device);
    add(prefixes::VAE, official_names(&main_vae, &main_vae.layout()));
    Ok(keys)
}
