//! The AudioX model of a text-only request with random weights built in memory (no checkpoint
//! file), at the official sizes or the shipped tiny model's, shared by the examples that
//! measure it (`gpu_bench`, `precision_error`). Included with `#[path]`; not an example itself.
//!
//! Weights are burn's default initialisation from the device's random generator, except the
//! VAE decoder's: its modules start at zero until loaded (inference modules), which would make
//! the decoded audio all zeros, so [`build`] draws them uniform within `1/sqrt(fan_in)`
//! (PyTorch's default scale for convolutions and transposed convolutions alike), Snake
//! parameters and biases staying zero. With the device seeded first, the weights are the same
//! in every process; on the CPU backend also in every precision (burn draws an f16 weight as
//! the f32 draw rounded there; its GPU random kernels draw in the tensor's own type).

use audiox::ModelConfig;
use audiox_core::fixtures::fixtures_dir;
use audiox_core::{Error, Result};
use audiox_encoders::clip::ClipVisionConfig;
use audiox_encoders::conditioners::{AudioPromptConditioner, TextConditioner, VideoConditioner};
use audiox_encoders::t5::T5Config;
use audiox_encoders::tokenizer::T5Tokenizer;
use audiox_mmdit::{Dit, MafBlock};
use audiox_vae::OobleckDecoder;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, Distribution, Tensor};

/// The components of a text-only request.
pub struct Model {
    pub config: ModelConfig,
    pub text: TextConditioner,
    pub video: VideoConditioner,
    pub audio: AudioPromptConditioner,
    pub maf: MafBlock,
    pub dit: Dit,
    pub decoder: OobleckDecoder,
    pub sync_rows: usize,
}

/// Builds the model: official sizes when `full`, else the shipped tiny model's
/// (`fixtures/tiny/bundle`).
pub fn build(full: bool, device: &Device) -> Result<Model> {
    let bundle = fixtures_dir().join("bundle");
    let (config, t5, clip) = if !full {
        (
            ModelConfig::from_file(bundle.join("config.json"))?,
            T5Config::from_hf_file(bundle.join("t5-base/config.json"))?,
            ClipVisionConfig::from_hf_file(bundle.join("clip-vit-base-patch32/config.json"))?,
        )
    } else {
        (
            ModelConfig::official(),
            T5Config::t5_base(),
            ClipVisionConfig::vit_b32(),
        )
    };
    let text_config = config
        .text_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no text conditioner"))?;
    // The tiny bundle's tokenizer: its ids are valid for both vocabularies.
    let tokenizer = T5Tokenizer::from_file(
        bundle.join("t5-base").join("tokenizer.json"),
        text_config.max_length,
    )?;
    let text = TextConditioner::new(
        tokenizer,
        t5.init(device),
        config.model.conditioning.cond_dim,
    )?;
    let video_config = config
        .video_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no video conditioner"))?
        .clone()
        .with_clip(clip);
    let video = video_config.init(device);
    let audio_config = config
        .audio_conditioner()
        .ok_or_else(|| Error::config("model.conditioning.configs", "no audio conditioner"))?
        .clone();
    let audio = AudioPromptConditioner::new(audio_config.init(device), &audio_config);
    let maf = config.maf().init(device);
    let dit = config.dit().init(device)?.without_dead_weights();
    let decoder = config.vae().decoder.init(device).map(&mut RandomConv);
    Ok(Model {
        config,
        text,
        video,
        audio,
        maf,
        dit,
        decoder,
        sync_rows: video_config.sync_rows,
    })
}

/// Draws every 3-D weight (convolution `[out, in, k]`, transposed convolution `[in, out, k]`)
/// uniform within `1/sqrt(dim1 x k)`, PyTorch's default `fan_in` for both; everything else is
/// left as it is.
struct RandomConv;

impl ModuleMapper for RandomConv {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.lazy_shape().to_vec();
        if D != 3 {
            return param;
        }
        let bound = 1.0 / ((shape[1] * shape[2]).max(1) as f64).sqrt();
        param.map(move |old| {
            Tensor::random(
                old.shape(),
                Distribution::Uniform(-bound, bound),
                &old.device(),
            )
        })
    }
}
