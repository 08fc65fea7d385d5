//! The audio-prompt conditioner (`audio_autoencoder`, `AudioAutoencoderConditioner`).
//!
//! For a prompt `[B, C_in, S]` (S = the model's prompt length, 441000 at full size):
//!
//! 1. channels fixed up to the VAE's input channels: mono is repeated, extra channels are
//!    dropped (the first ones are kept);
//! 2. a span of every item is blanked (set to 0), see [`PromptMask`];
//! 3. the conditioner's **private** VAE encoder -> moments `[B, 2C, La]`, and a posterior
//!    sample `mean + eps * (softplus(scale) + 1e-4)` with `eps` drawn through the
//!    [`NoiseSource`] (label `vae_noise`, one `[B, C, La]` draw);
//! 4. `proj_features_128` along time (La -> Na) -> `[B, C, Na]`, transposed to `[B, Na, C]`,
//!    `proj_out` (C -> D) -> tokens `[B, Na, D]`. The mask is ones `[B, D]` (sic).
//!
//! **Random draws**, in the reference's order: with [`PromptMask::Random`] one uniform `[B]`
//! draw (`audio_mask_ratio`), then one integer per item (`audio_mask_start`), then the VAE
//! noise. [`PromptMask::Spans`] and [`PromptMask::Keep`] draw nothing for the mask, so only the
//! VAE noise is drawn: with the same seed, every later draw of the request (the VAE noise and
//! the sampler's) then comes from an earlier point of the stream than in the reference, and the
//! result differs from a `Random` request with that seed.
//!
//! **Silent prompts.** An item whose (masked) prompt is all zero -- a request without an audio
//! prompt passes zeros, as the reference does -- has an input-independent encoder output. It is
//! computed once per conditioner and reused, so such items never run the VAE encoder; the mask
//! and posterior draws still happen, so the draw order is unchanged.

use std::ops::Range;
use std::sync::OnceLock;

use audiox_core::noise::{NoiseSource, labels};
use audiox_core::weights::{Component, Layout, LoadReport, StateDict, WeightSource, load_module};
use audiox_core::{Error, Result};
use audiox_vae::{OobleckEncoder, OobleckEncoderConfig, Posterior, PretransformConfig};
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::Condition;

/// Official prefix of the conditioner's private VAE (relative to the conditioner).
pub const PRETRANSFORM_PREFIX: &str = "pretransform.model.";

fn official_samples() -> usize {
    AudioPromptConfig::OFFICIAL_SAMPLES
}
fn official_tokens() -> usize {
    AudioPromptConfig::OFFICIAL_TOKENS
}
fn official_cond_dim() -> usize {
    AudioPromptConfig::OFFICIAL_COND_DIM
}

/// Sizes and settings of an [`AudioPromptConditioner`]: the `config` of the official config's
/// `audio_autoencoder` conditioner, deserialized under its official names, plus what the
/// section does not hold -- the output token count the official constructor hard-codes, and
/// the prompt length and condition width of the model (set by the model config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudioPromptConfig {
    /// Sample rate of the prompt.
    pub sample_rate: u32,
    /// The conditioner's private VAE (only its encoder is used).
    pub pretransform_config: PretransformConfig,
    /// Where the official code loads that VAE from (relative to its working directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretransform_ckpt_path: Option<String>,
    /// Latent frames of a prompt (La, the input of `proj_features_128`; official
    /// `latent_seq_len`).
    #[serde(rename = "latent_seq_len")]
    pub latent_frames: usize,
    /// Lower bound of the random blanking ratio.
    pub mask_ratio_start: f64,
    /// Upper bound of the random blanking ratio.
    pub mask_ratio_end: f64,
    /// Prompt samples per item S (not in the section: the model's `sample_rate *
    /// conditioning_seconds`; default [`AudioPromptConfig::OFFICIAL_SAMPLES`]).
    #[serde(skip, default = "official_samples")]
    pub samples: usize,
    /// Output tokens Na (hard-coded upstream: [`AudioPromptConfig::OFFICIAL_TOKENS`]).
    #[serde(skip, default = "official_tokens")]
    pub tokens: usize,
    /// Condition width D (not in the section: `model.conditioning.cond_dim`; default
    /// [`AudioPromptConfig::OFFICIAL_COND_DIM`]).
    #[serde(skip, default = "official_cond_dim")]
    pub cond_dim: usize,
}

impl AudioPromptConfig {
    /// The conditioner's `type` in the official config.
    pub const TYPE: &str = "audio_autoencoder";
    /// Prompt samples of the official model (10 s at 44.1 kHz).
    pub const OFFICIAL_SAMPLES: usize = 441_000;
    /// Output tokens of the official conditioner (`proj_features_128` output).
    pub const OFFICIAL_TOKENS: usize = 128;
    /// Condition width of the official model.
    pub const OFFICIAL_COND_DIM: usize = 768;

    /// The private VAE's encoder.
    pub fn encoder(&self) -> &OobleckEncoderConfig {
        &self.pretransform_config.config.encoder
    }

    /// Latent channels C (half the encoder's output channels).
    pub fn latent_dim(&self) -> usize {
        self.encoder().latent_dim / 2
    }

    /// Checks the section: the prompt's sample rate and latent length positive, the private
    /// VAE valid, and the blanking ratios a range within [0, 1]. `at` is the section's dotted
    /// path in its file.
    pub fn validate(&self, at: &str) -> Result<()> {
        use audiox_core::config::positive;
        positive(format!("{at}.sample_rate"), self.sample_rate as usize)?;
        positive(format!("{at}.latent_seq_len"), self.latent_frames)?;
        self.pretransform_config
            .config
            .validate(&format!("{at}.pretransform_config.config"))?;
        if !(0.0..=1.0).contains(&self.mask_ratio_start)
            || !(0.0..=1.0).contains(&self.mask_ratio_end)
            || self.mask_ratio_start > self.mask_ratio_end
        {
            return Err(Error::config(
                format!("{at}.mask_ratio_start"),
                format!(
                    "[{}, {}] is not a ratio range",
                    self.mask_ratio_start, self.mask_ratio_end
                ),
            ));
        }
        Ok(())
    }

    /// Builds the weights (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> AudioPromptModel {
        AudioPromptModel {
            encoder: self.encoder().init(device),
            proj_features_128: LinearConfig::new(self.latent_frames, self.tokens).init(device),
            proj_out: LinearConfig::new(self.latent_dim(), self.cond_dim).init(device),
        }
    }
}

/// The weights of the audio-prompt conditioner.
#[derive(Module, Debug)]
pub struct AudioPromptModel {
    /// The private VAE's encoder (official `pretransform.model.encoder.*`).
    pub encoder: OobleckEncoder,
    /// Along time, `La -> Na`.
    pub proj_features_128: Linear,
    /// Per token, `C -> D`.
    pub proj_out: Linear,
}

impl AudioPromptModel {
    /// How our parameter paths map to the official names (relative to the conditioner: load
    /// with the prefix `conditioner.conditioners.audio_prompt.`). The private VAE's decoder is
    /// stored in the checkpoint but never used by the conditioner: its keys are declared ignored
    /// and not held.
    pub fn layout(&self) -> Layout {
        let encoder = self.encoder.layout();
        Layout::new()
            .rename_with(r"^encoder\.(.*)$", move |c| {
                format!(
                    "{PRETRANSFORM_PREFIX}encoder.{}",
                    encoder.official_path(&c[1])
                )
            })
            .ignore(r"^pretransform\.model\.decoder\.")
    }
}

/// Which part of each prompt is blanked before encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromptMask {
    /// The reference's behaviour: per item a random span of a random 25-75 % of the prompt
    /// (the config's ratio range). Draws `audio_mask_ratio` and `audio_mask_start`. With an
    /// empty ratio range (start = end) nothing is blanked and nothing is drawn, as in the
    /// reference.
    Random,
    /// Blank these sample ranges, one per item (an empty range blanks nothing); for
    /// continuation or inpainting. Draws nothing (see the docs at the top of
    /// `conditioners/audio.rs` for the effect on the draw order).
    Spans(Vec<Range<usize>>),
    /// Blank nothing. Draws nothing.
    Keep,
}

/// Intermediate values of one forward pass (parity checks).
#[derive(Debug, Clone)]
pub struct AudioPromptTrace {
    /// The prompt after the channel fix-up and the blanking `[B, C_in, S]`.
    pub masked_audio: Tensor<3>,
    /// The blanked span of every item.
    pub spans: Vec<Range<usize>>,
    /// Encoder output (posterior moments) `[B, 2C, La]`.
    pub moments: Tensor<3>,
    /// Posterior sample `[B, C, La]`.
    pub latent: Tensor<3>,
    /// `proj_features_128` output `[B, C, Na]`.
    pub proj_features: Tensor<3>,
    /// The condition.
    pub condition: Condition,
}

/// The audio-prompt conditioner. See the docs at the top of `conditioners/audio.rs`.
#[derive(Debug)]
pub struct AudioPromptConditioner {
    /// The weights.
    pub model: AudioPromptModel,
    /// Prompt samples per item (S).
    samples: usize,
    mask_ratio: (f64, f64),
    /// Encoder output of an all-zero prompt of `samples` samples `[1, 2C, La]`, computed on
    /// first use. (It depends on the length through the convolutions' zero padding.)
    silent_moments: OnceLock<Tensor<3>>,
}

impl AudioPromptConditioner {
    /// A conditioner from loaded weights and its settings.
    pub fn new(model: AudioPromptModel, config: &AudioPromptConfig) -> Self {
        AudioPromptConditioner {
            model,
            samples: config.samples,
            mask_ratio: (config.mask_ratio_start, config.mask_ratio_end),
            silent_moments: OnceLock::new(),
        }
    }

    /// The encoder half of a `vae.ckpt` state dict (names `encoder.*`) in the conditioner's
    /// names (`pretransform.model.encoder.*`). The official loader reads it first and lets the
    /// checkpoint's copy override it: pass it as the first source of
    /// [`AudioPromptConditioner::load`].
    pub fn vae_weights(vae: &StateDict) -> StateDict {
        vae.rename(|k, _| {
            k.starts_with("encoder.")
                .then(|| format!("{PRETRANSFORM_PREFIX}{k}"))
        })
    }

    /// Latent frames (La) the projection expects.
    pub fn latent_frames(&self) -> usize {
        self.model.proj_features_128.weight.shape().dims::<2>()[0]
    }

    /// Prompt samples per item (S) the conditioner was configured for (the model's rate times
    /// its duration).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Checks a prompt `[B, C, S]` and fixes its channels: mono is repeated to the VAE's
    /// input channels, extra channels are dropped.
    fn fix_channels(&self, audio: Tensor<3>) -> Result<Tensor<3>> {
        let [b, c, s] = audio.dims();
        let want = self.model.encoder.channels_in();
        let la = self.latent_frames();
        if b == 0 || c == 0 || self.model.encoder.output_length(s) != la {
            return Err(Error::input_shape(
                "audio prompt",
                format!(
                    "[B >= 1, channels >= 1, S] with S giving {la} latent frames (S = {} at the model's rate and duration)",
                    self.samples
                ),
                &[b, c, s],
            ));
        }
        Ok(if c == want {
            audio
        } else if c == 1 {
            audio.repeat_dim(1, want)
        } else if c > want {
            audio.narrow(1, 0, want)
        } else {
            return Err(Error::input_shape(
                "audio prompt",
                format!("[B, 1 or >= {want} channels, S]"),
                &[b, c, s],
            ));
        })
    }

    /// The span to blank per item, drawing from `noise` in [`PromptMask::Random`] mode.
    fn spans(
        &self,
        mask: &PromptMask,
        batch: usize,
        samples: usize,
        noise: &mut dyn NoiseSource,
    ) -> Result<Vec<Range<usize>>> {
        match mask {
            PromptMask::Keep => Ok(vec![0..0; batch]),
            PromptMask::Spans(spans) => {
                if spans.len() != batch {
                    return Err(Error::InvalidRequest(format!(
                        "{} audio-prompt mask spans for {batch} prompts",
                        spans.len()
                    )));
                }
                if let Some(bad) = spans.iter().find(|r| r.start > r.end || r.end > samples) {
                    return Err(Error::InvalidRequest(format!(
                        "audio-prompt mask span {bad:?} is not inside the {samples} prompt samples"
                    )));
                }
                Ok(spans.clone())
            }
            PromptMask::Random => {
                let (start, end) = self.mask_ratio;
                // upstream: no blanking (and no draw) unless start < end.
                if start >= end {
                    return Ok(vec![0..0; batch]);
                }
                let u = noise.uniform(labels::AUDIO_MASK_RATIO, &[batch])?;
                // float32 arithmetic as in the reference: ratio = u * (end - start) + start,
                // len = trunc(S * ratio).
                let lens: Vec<usize> = u
                    .iter()
                    .map(|&u| {
                        let ratio = u * (end - start) as f32 + start as f32;
                        (samples as f32 * ratio) as usize
                    })
                    .map(|len| len.min(samples))
                    .collect();
                let bounds: Vec<(i64, i64)> = lens
                    .iter()
                    .map(|&len| (0, (samples - len + 1) as i64))
                    .collect();
                let starts = noise.integers(labels::AUDIO_MASK_START, &bounds)?;
                Ok(starts
                    .iter()
                    .zip(&lens)
                    .map(|(&s, &len)| s as usize..s as usize + len)
                    .collect())
            }
        }
    }

    /// Encoder output of one all-zero prompt of `samples` samples `[1, 2C, La]` (cached for
    /// the configured length).
    fn silent_moments(&self, samples: usize, device: &Device) -> Tensor<3> {
        // Exploits the constant input: a short encoder run instead of the whole length.
        let compute = || self.model.encoder.forward_zeros(samples, device);
        if samples == self.samples {
            self.silent_moments.get_or_init(compute).clone()
        } else {
            compute()
        }
    }

    /// Encoder output `[B, 2C, La]` of prompts `[B, C_in, S]`, always running the encoder
    /// (the uncached path, for tests and benches).
    pub fn moments(&self, audio: Tensor<3>) -> Tensor<3> {
        self.model.encoder.forward(audio)
    }

    /// Tokens `[B, Na, D]` for a prompt `[B, C, S]` (see the docs at the top of
    /// `conditioners/audio.rs`).
    pub fn forward(
        &self,
        audio: Tensor<3>,
        mask: &PromptMask,
        noise: &mut dyn NoiseSource,
    ) -> Result<Condition> {
        Ok(self.forward_trace(audio, mask, noise)?.condition)
    }

    /// Tokens `[B, Na, D]` for `batch` requests without an audio prompt: the same result and the
    /// same draws as [`AudioPromptConditioner::forward`] on all-zero prompts, without the
    /// encoder (and without the zero prompts).
    pub fn forward_silent(
        &self,
        batch: usize,
        mask: &PromptMask,
        noise: &mut dyn NoiseSource,
        device: &Device,
    ) -> Result<Condition> {
        if batch == 0 {
            return Err(Error::InvalidRequest("no audio prompt to encode".into()));
        }
        self.spans(mask, batch, self.samples, noise)?;
        let silent = self.silent_moments(self.samples, device);
        let [_, two_c, la] = silent.dims();
        let moments = silent.expand([batch, two_c, la]);
        Ok(self.project(moments, noise)?.2)
    }

    /// [`AudioPromptConditioner::forward`] keeping the intermediates.
    pub fn forward_trace(
        &self,
        audio: Tensor<3>,
        mask: &PromptMask,
        noise: &mut dyn NoiseSource,
    ) -> Result<AudioPromptTrace> {
        let audio = self.fix_channels(audio)?;
        let device = audio.device();
        let [b, c, s] = audio.dims();
        let spans = self.spans(mask, b, s, noise)?;
        let mut masked_audio = audio;
        for (i, span) in spans.iter().enumerate() {
            if !span.is_empty() {
                masked_audio = masked_audio.slice_fill([i..i + 1, 0..c, span.clone()], 0.0);
            }
        }

        // Items that are all zero now use the cached encoder output of silence.
        let peaks: Vec<f32> =
            audiox_core::tensor::to_vec(masked_audio.clone().abs().reshape([b, c * s]).max_dim(1));
        let active: Vec<i64> = (0..b as i64)
            .filter(|&i| peaks[i as usize] != 0.0)
            .collect();
        let moments = if active.len() == b {
            self.model.encoder.forward(masked_audio.clone())
        } else {
            let silent = self.silent_moments(s, &device);
            let computed = (!active.is_empty()).then(|| {
                let idx = Tensor::<1, Int>::from_data(
                    TensorData::new(active.clone(), [active.len()]),
                    &device,
                );
                self.model
                    .encoder
                    .forward(masked_audio.clone().select(0, idx))
            });
            let mut next = 0;
            let parts = (0..b)
                .map(|i| {
                    if peaks[i] == 0.0 {
                        silent.clone()
                    } else {
                        next += 1;
                        computed
                            .clone()
                            .expect("an active item was encoded")
                            .narrow(0, next - 1, 1)
                    }
                })
                .collect();
            Tensor::cat(parts, 0)
        };
        let (latent, proj_features, condition) = self.project(moments.clone(), noise)?;
        Ok(AudioPromptTrace {
            masked_audio,
            spans,
            moments,
            latent,
            proj_features,
            condition,
        })
    }

    /// Posterior sample and projections of moments `[B, 2C, La]`: (latent, proj_features,
    /// condition).
    fn project(
        &self,
        moments: Tensor<3>,
        noise: &mut dyn NoiseSource,
    ) -> Result<(Tensor<3>, Tensor<3>, Condition)> {
        let latent = Posterior::from_encoder_output(moments).sample(noise)?;
        let proj_features = self.model.proj_features_128.forward(latent.clone()); // [B, C, Na]
        let tokens = self
            .model
            .proj_out
            .forward(proj_features.clone().swap_dims(1, 2)); // [B, Na, D]
        let [b, _, d] = tokens.dims();
        let device = tokens.device();
        Ok((
            latent,
            proj_features,
            Condition {
                tokens,
                mask: Tensor::ones([b, d], &device),
            },
        ))
    }
}

impl Component for AudioPromptConditioner {
    type Config = AudioPromptConfig;

    /// Builds the conditioner and loads its weights from `sources` (official names relative
    /// to the conditioner: prefix `conditioner.conditioners.audio_prompt.` for a checkpoint;
    /// see [`AudioPromptConditioner::vae_weights`] for the `vae.ckpt` copy of the encoder).
    fn load(
        config: &AudioPromptConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let model = config.init(device);
        let layout = model.layout();
        let (model, report) = load_module(model, &layout, sources)?;
        Ok((AudioPromptConditioner::new(model, config), report))
    }
}
