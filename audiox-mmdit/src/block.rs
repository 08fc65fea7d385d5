//! One DiT block (official `MMDitSingleBlock` with cross-attention, kernel 3).
//!
//! ```text
//! (sh1, sc1, g1, sh2, sc2, g2) = split6(adaLN(SiLU(m)))      per position, from the context
//! h += linear1(SelfAttn(LN(h) * (1 + sc1) + sh1)) * g1
//! h += RMS_head(key half of to_kv(time))                     the degenerate cross-attention
//! h += ffn(LN(h) * (1 + sc2) + sh2) * g2
//! ```
//!
//! The modulation depends only on the context, so [`DitBlock::modulation`] runs once per
//! request ([`crate::Dit::prepare`]) and [`DitBlock::forward`] takes its result.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use audiox_core::Result;
use audiox_core::precision::linear;
use audiox_core::tensor::from_vec;

use crate::attention::{AttentionConfig, SelfAttention, TimeCrossAttention, to_interleaved};
use crate::ffn::{ConvSwiGlu, ConvSwiGluConfig};
use crate::rope::RotaryTable;
use crate::token_conv::{TokenConv, TokenConvConfig};
use crate::trace::{Trace, record, record_with};

/// Epsilon of the block's affine-free LayerNorms.
const NORM_EPS: f64 = 1e-5;

/// Configuration of a [`DitBlock`].
#[derive(Config, Debug)]
pub struct DitBlockConfig {
    /// Width `E`.
    pub width: usize,
    /// Attention heads (`E / heads` elements each).
    pub heads: usize,
    /// Feed-forward hidden width.
    pub ffn_hidden: usize,
    /// Kernel size of `linear1` and the feed-forward convolutions.
    #[config(default = 3)]
    pub kernel_size: usize,
}

/// One block. Field names follow the official ones (`adaLN_modulation.1` is
/// `ada_ln_modulation`, renamed by [`crate::Dit::layout`]).
#[derive(Module, Debug)]
pub struct DitBlock {
    /// Per-position modulation `E -> 6E` of `SiLU(m)`.
    pub ada_ln_modulation: Linear,
    /// Self-attention (no output projection).
    pub attn: SelfAttention,
    /// Kernel-3 token convolution after the attention (its output projection).
    pub linear1: TokenConv,
    /// The cross-attention to the time token.
    pub cross_attn: TimeCrossAttention,
    /// Convolutional SwiGLU.
    pub ffn: ConvSwiGlu,
}

/// The six per-position modulation tensors of one block, `[B, N, E]` each, prepared once per
/// request. The scales are stored as `1 + scale` (the form they are applied in).
#[derive(Debug, Clone)]
pub struct BlockModulation {
    /// Shift before the attention.
    pub shift_msa: Tensor<3>,
    /// `1 + scale` before the attention.
    pub scale_msa: Tensor<3>,
    /// Gate of the attention branch.
    pub gate_msa: Tensor<3>,
    /// Shift before the feed-forward.
    pub shift_mlp: Tensor<3>,
    /// `1 + scale` before the feed-forward.
    pub scale_mlp: Tensor<3>,
    /// Gate of the feed-forward branch.
    pub gate_mlp: Tensor<3>,
}

impl DitBlockConfig {
    /// Builds the block; parameters stay lazy.
    pub fn init(&self, device: &Device) -> DitBlock {
        let e = self.width;
        let attention = AttentionConfig::new(e, self.heads);
        DitBlock {
            ada_ln_modulation: LinearConfig::new(e, 6 * e).init(device),
            attn: attention.init_self(device),
            linear1: TokenConvConfig::new(e, e, self.kernel_size).init(device),
            cross_attn: attention.init_cross(device),
            ffn: ConvSwiGluConfig::new(e, self.ffn_hidden)
                .with_kernel_size(self.kernel_size)
                .init(device),
        }
    }
}

impl BlockModulation {
    /// Splits the packed modulation `[B, N, 6E]` (order shift, scale, gate for the attention,
    /// then for the feed-forward) and forms `1 + scale`.
    pub fn from_packed(packed: Tensor<3>) -> Result<Self> {
        let [_, _, six_e] = packed.dims();
        let e = six_e / 6;
        // One pass adds 1 to both scale parts; `x + 0` leaves the others bit-identical.
        let offsets: Vec<f32> = (0..6)
            .flat_map(|part| std::iter::repeat_n(if part % 3 == 1 { 1.0 } else { 0.0 }, e))
            .collect();
        let offsets = from_vec(offsets, [1, 1, six_e], &packed.device())?;
        let packed = packed + offsets;
        let part = |i: usize| packed.clone().narrow(2, i * e, e);
        Ok(BlockModulation {
            shift_msa: part(0),
            scale_msa: part(1),
            gate_msa: part(2),
            shift_mlp: part(3),
            scale_mlp: part(4),
            gate_mlp: part(5),
        })
    }

    /// Batch items `start .. start + len` (a view for contiguous storage).
    pub fn narrow_batch(&self, start: usize, len: usize) -> Self {
        let n = |t: &Tensor<3>| t.clone().narrow(0, start, len);
        BlockModulation {
            shift_msa: n(&self.shift_msa),
            scale_msa: n(&self.scale_msa),
            gate_msa: n(&self.gate_msa),
            shift_mlp: n(&self.shift_mlp),
            scale_mlp: n(&self.scale_mlp),
            gate_mlp: n(&self.gate_mlp),
        }
    }
}

/// LayerNorm over the last axis without weight or bias.
fn layer_norm_plain(x: Tensor<3>) -> Tensor<3> {
    let [_, _, e] = x.dims();
    let ones = Tensor::ones([e], &x.device());
    audiox_core::half::layer_norm(x, ones, None, NORM_EPS)
}

impl DitBlock {
    /// The packed modulation `[B, N, 6E]` of the activated conditioning `SiLU(m)` `[B, N, E]`.
    pub fn modulation(&self, activated_cond: Tensor<3>) -> Tensor<3> {
        linear(&self.ada_ln_modulation, activated_cond)
    }

    /// `h` `[B, N, E]` -> `[B, N, E]` with this block's prepared modulation, the rotary table
    /// and the time token `time` `[B, E]`. `index` names the trace entries.
    pub fn forward(
        &self,
        h: Tensor<3>,
        modulation: &BlockModulation,
        rope: &RotaryTable,
        time: Tensor<2>,
        index: usize,
        mut trace: Option<&mut Trace>,
    ) -> Tensor<3> {
        let m = modulation;

        // Self-attention branch.
        let a = layer_norm_plain(h.clone()) * m.scale_msa.clone() + m.shift_msa.clone();
        let qkv = self.attn.project(a);
        // The fixtures record the official interleaved layout.
        record_with(
            &mut trace,
            || format!("mid.block{index}.qkv"),
            || to_interleaved(qkv.clone(), 3),
        );
        let attended = self.attn.attend(qkv, rope);
        let projected = self.linear1.forward(attended);
        record(
            &mut trace,
            || format!("mid.block{index}.linear1"),
            &projected,
        );
        let h = h + projected * m.gate_msa.clone();

        // The degenerate cross-attention: one vector for every position.
        let cross = self.cross_attn.time_term(time);
        record_with(
            &mut trace,
            || format!("mid.block{index}.cross_attn"),
            || cross.clone().repeat_dim(1, h.dims()[1]),
        );
        let h = h + cross;

        // Feed-forward branch.
        let r = layer_norm_plain(h.clone()) * m.scale_mlp.clone() + m.shift_mlp.clone();
        let ffn = self.ffn.forward(r);
        record(&mut trace, || format!("mid.block{index}.ffn"), &ffn);
        h + ffn * m.gate_mlp.clone()
    }
}
