//! Layers shared by several models, written to the PyTorch modules they mirror.
//!
//! * [`TorchMultiheadAttention`]: `torch.nn.MultiheadAttention` (packed `in_proj_weight` whose
//!   rows are query | key | value, heads as consecutive column blocks, biases, output
//!   projection). Used by the MAF block and by Synchformer's aggregation layer.
//! * [`TorchEncoderLayer`]: `torch.nn.TransformerEncoderLayer` with `norm_first=True` and the
//!   exact (erf) GELU.
//! * [`heads`] / [`merge_heads`] and [`sdpa`]: head reshapes and scaled dot-product attention.
//!
//! Their official names differ from burn's in one place, `in_proj_weight`/`in_proj_bias` (a
//! burn `Linear` named `in_proj`); [`with_torch_mha_names`] adds that rename to a [`Layout`].

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use crate::precision::{linear, weight_as};
use crate::weights::Layout;

/// Adds the rename `in_proj.{weight,bias}` -> `in_proj_{weight,bias}` used by every
/// [`TorchMultiheadAttention`] in a model.
pub fn with_torch_mha_names(layout: Layout) -> Layout {
    layout.rename(r"(^|\.)in_proj\.(weight|bias)$", "${1}in_proj_${2}")
}

/// `[B, N, H * d]` -> `[B, H, N, d]` with heads as consecutive blocks of `d` features.
pub fn heads(x: Tensor<3>, num_heads: usize) -> Tensor<4> {
    let [b, n, width] = x.dims();
    x.reshape([b, n, num_heads, width / num_heads])
        .swap_dims(1, 2)
}

/// `[B, H, N, d]` -> `[B, N, H * d]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, n, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, n, h * d])
}

/// CLIP's quick GELU, `x * sigmoid(1.702 x)`. On the CPU backend this is
/// `audiox_kernels::quick_gelu` (one vectorised pass, in place when `x` is not shared), burn's
/// composed ops elsewhere.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    audiox_kernels::quick_gelu(x)
}

/// The SwiGLU gate `silu(gate) * up`. On the CPU backend this is `audiox_kernels::silu_mul`
/// (one vectorised pass, in the gate's buffer when it is not shared), burn's composed ops
/// elsewhere.
pub fn silu_mul<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    audiox_kernels::silu_mul(gate, up)
}

/// Softmax attention `softmax(q k^T * scale) v` on `[B, H, N, d]` tensors; `scale` defaults to
/// `1 / sqrt(d)`. On the CPU backend this is `audiox_kernels::attention` (one head per task),
/// elsewhere burn's `attention`.
pub fn sdpa(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: Option<f64>) -> Tensor<4> {
    audiox_kernels::attention(q, k, v, scale)
}

/// Configuration of a [`TorchMultiheadAttention`].
#[derive(burn::config::Config, Debug)]
pub struct TorchMultiheadAttentionConfig {
    /// Model width (query, key and value width).
    pub d_model: usize,
    /// Number of heads; must divide `d_model`.
    pub num_heads: usize,
}

/// `torch.nn.MultiheadAttention` (batch first, biases, no masks, no dropout).
#[derive(Module, Debug)]
pub struct TorchMultiheadAttention {
    /// Packed query/key/value projection, official `in_proj_weight` `[3D, D]` and
    /// `in_proj_bias` `[3D]` (stored `[D, 3D]` by burn).
    pub in_proj: Linear,
    /// Output projection `out_proj`.
    pub out_proj: Linear,
    /// Number of heads.
    pub num_heads: usize,
}

impl TorchMultiheadAttentionConfig {
    /// Builds the layer (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> TorchMultiheadAttention {
        TorchMultiheadAttention {
            in_proj: LinearConfig::new(self.d_model, 3 * self.d_model).init(device),
            out_proj: LinearConfig::new(self.d_model, self.d_model).init(device),
            num_heads: self.num_heads,
        }
    }
}

impl TorchMultiheadAttention {
    /// Attention of `query` `[B, Nq, D]` over `key_value` `[B, Nk, D]` (the same tensor as key
    /// and value, as every use in this model family has it). Returns `[B, Nq, D]`.
    pub fn forward(&self, query: Tensor<3>, key_value: Tensor<3>) -> Tensor<3> {
        // [D, 3D] in the activations' float type (f32 on the CPU, as before).
        let dtype = query.dtype();
        let w = weight_as(self.in_proj.weight.val(), dtype);
        let b = self
            .in_proj
            .bias
            .as_ref()
            .map(|b| weight_as(b.val(), dtype));
        let [d, _] = w.dims();
        let project = |x: Tensor<3>, part: usize| {
            let wp = w.clone().narrow(1, part * d, d);
            let out = x.matmul(wp.unsqueeze());
            match &b {
                Some(b) => out + b.clone().narrow(0, part * d, d).unsqueeze(),
                None => out,
            }
        };
        let q = project(query, 0);
        let k = project(key_value.clone(), 1);
        let v = project(key_value, 2);
        self.attend(q, k, v)
    }

    /// Self-attention of `x` `[B, N, D]` (one packed projection).
    pub fn forward_self(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = linear(&self.in_proj, x);
        let [_, _, three_d] = qkv.dims();
        let d = three_d / 3;
        let q = qkv.clone().narrow(2, 0, d);
        let k = qkv.clone().narrow(2, d, d);
        let v = qkv.narrow(2, 2 * d, d);
        self.attend(q, k, v)
    }

    fn attend(&self, q: Tensor<3>, k: Tensor<3>, v: Tensor<3>) -> Tensor<3> {
        let h = self.num_heads;
        let out = sdpa(heads(q, h), heads(k, h), heads(v, h), None);
        linear(&self.out_proj, merge_heads(out))
    }
}

/// Configuration of a [`TorchEncoderLayer`].
#[derive(burn::config::Config, Debug)]
pub struct TorchEncoderLayerConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

/// `torch.nn.TransformerEncoderLayer(norm_first=True, activation="gelu")` in eval mode:
/// `x += SA(norm1(x)); x += linear2(GELU(linear1(norm2(x))))`.
#[derive(Module, Debug)]
pub struct TorchEncoderLayer {
    /// Self-attention.
    pub self_attn: TorchMultiheadAttention,
    /// First feed-forward projection.
    pub linear1: Linear,
    /// Second feed-forward projection.
    pub linear2: Linear,
    /// Norm before attention.
    pub norm1: LayerNorm,
    /// Norm before the feed-forward.
    pub norm2: LayerNorm,
}

impl TorchEncoderLayerConfig {
    /// Builds the layer (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> TorchEncoderLayer {
        let norm = || {
            LayerNormConfig::new(self.d_model)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        TorchEncoderLayer {
            self_attn: TorchMultiheadAttentionConfig::new(self.d_model, self.num_heads)
                .init(device),
            linear1: LinearConfig::new(self.d_model, self.d_ff).init(device),
            linear2: LinearConfig::new(self.d_ff, self.d_model).init(device),
            norm1: norm(),
            norm2: norm(),
        }
    }
}

impl TorchEncoderLayer {
    /// `[B, N, D]` -> `[B, N, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward_self(self.norm1.forward(x));
        let ff = linear(
            &self.linear2,
            gelu(linear(&self.linear1, self.norm2.forward(x.clone()))),
        );
        x + ff
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::official_names;

    #[test]
    fn official_names_of_the_torch_layers() {
        let device = Device::flex();
        let layer = TorchEncoderLayerConfig::new(8, 2, 16).init(&device);
        let names = official_names(&layer, &with_torch_mha_names(Layout::new()));
        let keys: Vec<&str> = names.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "linear1.bias",
                "linear1.weight",
                "linear2.bias",
                "linear2.weight",
                "norm1.bias",
                "norm1.weight",
                "norm2.bias",
                "norm2.weight",
                "self_attn.in_proj_bias",
                "self_attn.in_proj_weight",
                "self_attn.out_proj.bias",
                "self_attn.out_proj.weight",
            ]
        );
        assert_eq!(names["self_attn.in_proj_weight"], vec![24, 8]);
    }

    #[test]
    fn cross_and_self_attention_agree_on_the_same_input() {
        let device = Device::flex();
        let mha = TorchMultiheadAttentionConfig::new(8, 2).init(&device);
        let x = Tensor::<3>::random([2, 5, 8], burn::tensor::Distribution::Default, &device);
        let a = crate::tensor::to_vec(mha.forward(x.clone(), x.clone()));
        let b = crate::tensor::to_vec(mha.forward_self(x));
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-5, "{err}");
    }
}
