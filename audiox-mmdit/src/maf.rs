//! Multimodal Adaptive Fusion (official `MAF_Block`): fuses the three condition streams into
//! the DiT's context, once per request.
//!
//! ```text
//! w = sigmoid(L2(GELU(L0([mean X1, mean X2, mean X3]))))          [B, 3] stream gates
//! K = [X1 w1, X2 w2, X3 w3]                                        gated concatenation
//! U = LN1(P + MHA(query = P, key = value = K))                     P: the learned expert pool
//! U = fusion encoder layers (pre-norm, erf GELU)(U)
//! Y_k = X_k + sigmoid(bypass_k) LN_k(mean of the k-th third of U)  per-stream refinement
//! ```
//!
//! upstream: the reference wrapper calls the block as `maf_block(text, video, audio)` while
//! the block names its slots `(video, text, audio)`. The trained weights follow the call, so
//! slot 1 -- the first gate, the first third of the experts, `norm_v2`, `bypass_gate_v` --
//! belongs to the TEXT stream and slot 2 (`*_t*`) to the VIDEO stream. [`MafBlock::refine`]
//! takes the streams by their real names and places them in those slots; the context it
//! returns is ordered text, video, audio, as the reference's.

use std::collections::BTreeMap;

use burn::module::{Module, Param};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::{gelu, sigmoid};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::config::positive;
use audiox_core::nn::{
    TorchEncoderLayer, TorchEncoderLayerConfig, TorchMultiheadAttention,
    TorchMultiheadAttentionConfig, with_torch_mha_names,
};
use audiox_core::precision::linear;
use audiox_core::weights::{
    Component, Layout, LoadReport, WeightSource, load_module, official_names,
};
use audiox_core::{Error, Result};

use crate::trace::{Trace, record, record_with};

/// Official names of the three scalar bypass gates, in slot order.
/// Slot suffixes of the trace names (`mid.norm_v2`, ...).
const SLOT_NAMES: [&str; 3] = ["v", "t", "a"];

fn official_width() -> usize {
    MafBlockConfig::OFFICIAL_WIDTH
}
fn default_mlp_ratio() -> usize {
    4
}

/// Configuration of a [`MafBlock`]: the official `model.diffusion.gate_type_config` section,
/// deserialized under its official names. The stream width is not in the section (it is
/// `model.conditioning.cond_dim`, set by the model config; default [`MafBlockConfig::OFFICIAL_WIDTH`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MafBlockConfig {
    /// Width of the streams (`cond_dim`, 768 at full size; not in the section).
    #[serde(skip, default = "official_width")]
    pub width: usize,
    /// Learned experts per stream (64 at full size; official `num_experts_per_modality`).
    #[serde(rename = "num_experts_per_modality")]
    pub experts_per_modality: usize,
    /// Attention heads of the expert cross-attention and the fusion layers (24; official
    /// `num_heads`).
    #[serde(rename = "num_heads")]
    pub heads: usize,
    /// Fusion encoder layers (8; official `num_fusion_layers`).
    #[serde(rename = "num_fusion_layers")]
    pub fusion_layers: usize,
    /// Feed-forward width of the fusion layers as a multiple of `width` (4, hard-coded
    /// upstream).
    #[serde(skip, default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
}

impl MafBlockConfig {
    /// Width of the official model's condition streams (`cond_dim`).
    pub const OFFICIAL_WIDTH: usize = 768;

    /// A block of these sizes.
    pub fn new(
        width: usize,
        experts_per_modality: usize,
        heads: usize,
        fusion_layers: usize,
    ) -> Self {
        MafBlockConfig {
            width,
            experts_per_modality,
            heads,
            fusion_layers,
            mlp_ratio: default_mlp_ratio(),
        }
    }

    /// The same with streams of `width` (the model's `cond_dim`).
    pub fn with_width(mut self, width: usize) -> Self {
        self.width = width;
        self
    }

    /// Checks the sizes: at least one fusion layer and one expert, and the heads dividing the
    /// stream width. `at` is the section's dotted path in its file
    /// (`model.diffusion.gate_type_config`).
    pub fn validate(&self, at: &str) -> Result<()> {
        positive(format!("{at}.num_fusion_layers"), self.fusion_layers)?;
        if self.heads == 0 || !self.width.is_multiple_of(self.heads) {
            return Err(Error::config(
                format!("{at}.num_heads"),
                format!(
                    "{} does not divide the fusion width {}",
                    self.heads, self.width
                ),
            ));
        }
        positive(
            format!("{at}.num_experts_per_modality"),
            self.experts_per_modality,
        )
    }

    /// Builds the block. Parameters stay lazy; the expert pool is standard normal and the bypass
    /// gates -10 (practically closed) as upstream initialises them.
    pub fn init(&self, device: &Device) -> MafBlock {
        let d = self.width;
        let norm = || LayerNormConfig::new(d).init(device);
        let gate = || Initializer::Constant { value: -10.0 }.init([1], device);
        let layer = TorchEncoderLayerConfig::new(d, self.heads, self.mlp_ratio * d);
        MafBlock {
            gating_network: GatingNetwork {
                hidden: LinearConfig::new(3 * d, d).init(device),
                out: LinearConfig::new(d, 3).init(device),
            },
            unified_experts: Initializer::Normal {
                mean: 0.0,
                std: 1.0,
            }
            .init([3 * self.experts_per_modality, d], device),
            cross_attn: TorchMultiheadAttentionConfig::new(d, self.heads).init(device),
            norm1: norm(),
            fusion_transformer: FusionTransformer {
                layers: (0..self.fusion_layers)
                    .map(|_| layer.init(device))
                    .collect(),
            },
            norm_v2: norm(),
            norm_t2: norm(),
            norm_a2: norm(),
            bypass_gate_v: gate(),
            bypass_gate_t: gate(),
            bypass_gate_a: gate(),
        }
    }
}

/// `Linear(3D -> D)`, GELU, `Linear(D -> 3)`, sigmoid (official `gating_network.0` / `.2`).
#[derive(Module, Debug)]
pub struct GatingNetwork {
    /// `3D -> D`.
    pub hidden: Linear,
    /// `D -> 3`.
    pub out: Linear,
}

/// The fusion encoder (official `fusion_transformer`, no final norm).
#[derive(Module, Debug)]
pub struct FusionTransformer {
    /// Pre-norm encoder layers.
    pub layers: Vec<TorchEncoderLayer>,
}

/// The MAF block. Field names are the official ones (see [`MafBlock::layout`]).
#[derive(Module, Debug)]
pub struct MafBlock {
    /// Stream gates from the three mean-pooled streams.
    pub gating_network: GatingNetwork,
    /// The learned expert pool `[3 E_x, D]`, one third per slot.
    pub unified_experts: Param<Tensor<2>>,
    /// Experts attending to the gated streams.
    pub cross_attn: TorchMultiheadAttention,
    /// Norm after the cross-attention residual.
    pub norm1: LayerNorm,
    /// Fusion encoder over the experts.
    pub fusion_transformer: FusionTransformer,
    /// Refinement norm of slot 1 (the text stream).
    pub norm_v2: LayerNorm,
    /// Refinement norm of slot 2 (the video stream).
    pub norm_t2: LayerNorm,
    /// Refinement norm of slot 3 (the audio stream).
    pub norm_a2: LayerNorm,
    /// Logit of slot 1's refinement gate, `[1]` (a scalar `[]` in the checkpoint).
    pub bypass_gate_v: Param<Tensor<1>>,
    /// Logit of slot 2's refinement gate.
    pub bypass_gate_t: Param<Tensor<1>>,
    /// Logit of slot 3's refinement gate.
    pub bypass_gate_a: Param<Tensor<1>>,
}

/// The three refined streams; each keeps its input's shape.
#[derive(Debug, Clone)]
pub struct RefinedStreams {
    /// Refined text tokens `[B, Nt, D]`.
    pub text: Tensor<3>,
    /// Refined video tokens `[B, Nv, D]`.
    pub video: Tensor<3>,
    /// Refined audio-prompt tokens `[B, Na, D]`.
    pub audio: Tensor<3>,
}

impl RefinedStreams {
    /// The DiT context `[B, Nt + Nv + Na, D]`, in the reference's order text, video, audio.
    pub fn context(&self) -> Tensor<3> {
        Tensor::cat(
            vec![self.text.clone(), self.video.clone(), self.audio.clone()],
            1,
        )
    }
}

impl MafBlock {
    /// How our parameters map to the official `maf_block.*` names (use with the prefix
    /// `maf_block.`): PyTorch MultiheadAttention's packed `in_proj_weight`/`in_proj_bias`, the
    /// gating network's `nn.Sequential` indices, and the scalar bypass gates (`[]` in the
    /// checkpoint, `[1]` here).
    pub fn layout() -> Layout {
        with_torch_mha_names(Layout::new())
            .rename(r"^gating_network\.hidden\.", "gating_network.0.")
            .rename(r"^gating_network\.out\.", "gating_network.2.")
            .scalar(r"^bypass_gate_[vta]$")
    }

    /// Official names and shapes of every tensor the block loads, as the checkpoint stores
    /// them, without reading any weight.
    pub fn official_names(&self) -> BTreeMap<String, Vec<usize>> {
        official_names(self, &Self::layout())
    }

    /// Stream width `D`.
    pub fn width(&self) -> usize {
        self.norm1.gamma.lazy_shape()[0]
    }

    /// Fuses the streams into the DiT context `[B, Nt + Nv + Na, D]` (order text, video,
    /// audio). Each stream is `[B, N_k, D]`; token counts may differ, batch and width may not.
    pub fn forward(
        &self,
        text: Tensor<3>,
        video: Tensor<3>,
        audio: Tensor<3>,
    ) -> Result<Tensor<3>> {
        Ok(self.refine(text, video, audio)?.context())
    }

    /// The refined streams (see [`MafBlock::forward`]).
    pub fn refine(
        &self,
        text: Tensor<3>,
        video: Tensor<3>,
        audio: Tensor<3>,
    ) -> Result<RefinedStreams> {
        // upstream: slot order (text, video, audio), see the module docs.
        self.refine_impl([text, video, audio], None)
    }

    /// [`MafBlock::refine`], recording the fixture intermediates (`mid.gates`,
    /// `mid.cross_attn`, `mid.norm1`, `mid.fusion.{l}`, `mid.fused`, `mid.norm_{v,t,a}2`).
    pub fn refine_traced(
        &self,
        text: Tensor<3>,
        video: Tensor<3>,
        audio: Tensor<3>,
        trace: &mut Trace,
    ) -> Result<RefinedStreams> {
        // upstream: slot order (text, video, audio), see the module docs.
        self.refine_impl([text, video, audio], Some(trace))
    }

    fn check_streams(&self, streams: &[Tensor<3>; 3]) -> Result<()> {
        let d = self.width();
        let batch = streams[0].dims()[0];
        for (stream, name) in streams.iter().zip(["text", "video", "audio"]) {
            let [b, n, w] = stream.dims();
            if b != batch || b == 0 || n == 0 || w != d {
                return Err(Error::input_shape(
                    format!("MAF {name} tokens"),
                    format!("[{batch}, N >= 1, {d}] (batch of the text stream, width {d})"),
                    &[b, n, w],
                ));
            }
        }
        Ok(())
    }

    /// `streams` in slot order (text, video, audio; see the module docs).
    fn refine_impl(
        &self,
        streams: [Tensor<3>; 3],
        mut trace: Option<&mut Trace>,
    ) -> Result<RefinedStreams> {
        self.check_streams(&streams)?;
        let [batch, _, d] = streams[0].dims();

        // 1. Stream gates from the mean-pooled streams.
        // upstream: the mean runs over every token, zero-padded text positions included.
        let pooled = streams
            .iter()
            .map(|s| s.clone().mean_dim(1).reshape([batch, d]))
            .collect();
        let pooled = Tensor::cat(pooled, 1); // [B, 3D]
        let gates = sigmoid(linear(
            &self.gating_network.out,
            gelu(linear(&self.gating_network.hidden, pooled)),
        )); // [B, 3]
        record(&mut trace, || "mid.gates".into(), &gates);

        // 2. The gated concatenation.
        let gated = streams
            .iter()
            .enumerate()
            .map(|(k, s)| s.clone() * gates.clone().narrow(1, k, 1).reshape([batch, 1, 1]))
            .collect();
        let gated = Tensor::cat(gated, 1); // [B, Nctx, D]

        // 3. The expert pool attends to it.
        let experts = self
            .unified_experts
            .val()
            .unsqueeze_dim::<3>(0)
            .repeat_dim(0, batch); // [B, 3 E_x, D]
        let info = self.cross_attn.forward(experts.clone(), gated);
        record(&mut trace, || "mid.cross_attn".into(), &info);
        let mut fused = self.norm1.forward(experts + info);
        record(&mut trace, || "mid.norm1".into(), &fused);

        // 4. Fusion encoder.
        for (l, layer) in self.fusion_transformer.layers.iter().enumerate() {
            fused = layer.forward(fused);
            record(&mut trace, || format!("mid.fusion.{l}"), &fused);
        }
        record(&mut trace, || "mid.fused".into(), &fused);

        // 5-6. Per-slot refinement through the bypass gates.
        let [_, pool, _] = fused.dims();
        let per_slot = pool / 3;
        let norms = [&self.norm_v2, &self.norm_t2, &self.norm_a2];
        let bypass = [
            &self.bypass_gate_v,
            &self.bypass_gate_t,
            &self.bypass_gate_a,
        ];
        let mut refined = Vec::with_capacity(3);
        for (k, stream) in streams.into_iter().enumerate() {
            let mean = fused.clone().narrow(1, k * per_slot, per_slot).mean_dim(1); // [B, 1, D]
            let refinement = norms[k].forward(mean);
            record_with(
                &mut trace,
                || format!("mid.norm_{}2", SLOT_NAMES[k]),
                || refinement.clone().reshape([batch, d]),
            );
            let alpha = sigmoid(bypass[k].val()).reshape([1, 1, 1]);
            refined.push(stream + refinement * alpha);
        }
        let [text, video, audio]: [Tensor<3>; 3] =
            refined.try_into().expect("three slots were refined");
        Ok(RefinedStreams { text, video, audio })
    }
}

impl Component for MafBlock {
    type Config = MafBlockConfig;

    /// Builds the block and loads every weight from `sources` (typically
    /// `WeightSource::with_prefix(&dict, "maf_block.")`).
    fn load(
        config: &MafBlockConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        load_module(config.init(device), &Self::layout(), sources)
    }
}
