//! The temporal transformer of the video conditioner (official `Temp_transformer`,
//! an `SA_Transformer`): pre-LN self-attention and erf-GELU feed-forward layers over the frame
//! axis, then a final LayerNorm.
//!
//! Per layer: `x += to_out(MHA(norm(x)))` with a bias-free `to_qkv` whose output is q | k | v
//! as consecutive thirds and heads as consecutive `dim_head` blocks inside each third, scale
//! `dim_head^-1/2`; then `x += net.3(GELU(net.0(norm(x))))`.
//!
//! Official names (under `Temp_transformer.`): `layers.{i}.0.norm`, `layers.{i}.0.fn.to_qkv`,
//! `layers.{i}.0.fn.to_out.0`, `layers.{i}.1.norm`, `layers.{i}.1.fn.net.0`,
//! `layers.{i}.1.fn.net.3`, `norm`. The PyTorch `nn.Sequential` indices are not Rust names;
//! [`TemporalTransformer::layout_rules`] maps ours to them.

use audiox_core::nn::{heads, merge_heads, sdpa};
use audiox_core::precision::linear;
use audiox_core::weights::Layout;
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

/// Sizes of a [`TemporalTransformer`].
#[derive(Config, Debug)]
pub struct TemporalTransformerConfig {
    /// Width (the CLIP width).
    pub dim: usize,
    /// Layers.
    pub depth: usize,
    /// Attention heads.
    pub heads: usize,
    /// Size of one head.
    pub dim_head: usize,
    /// Feed-forward hidden width.
    pub mlp_dim: usize,
    /// LayerNorm epsilon.
    #[config(default = 1e-5)]
    pub layer_norm_eps: f64,
}

impl TemporalTransformerConfig {
    /// Builds the transformer (parameters stay lazy until loaded).
    pub fn init(&self, device: &Device) -> TemporalTransformer {
        let norm = || {
            LayerNormConfig::new(self.dim)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let inner = self.heads * self.dim_head;
        // upstream: the attention has no output projection when one head spans the width.
        let project_out = !(self.heads == 1 && self.dim_head == self.dim);
        let layers = (0..self.depth)
            .map(|_| TemporalLayer {
                attn_norm: norm(),
                to_qkv: LinearConfig::new(self.dim, 3 * inner)
                    .with_bias(false)
                    .init(device),
                to_out: project_out.then(|| LinearConfig::new(inner, self.dim).init(device)),
                ff_norm: norm(),
                ff_in: LinearConfig::new(self.dim, self.mlp_dim).init(device),
                ff_out: LinearConfig::new(self.mlp_dim, self.dim).init(device),
                heads: self.heads,
                scale: (self.dim_head as f64).powf(-0.5),
            })
            .collect();
        TemporalTransformer {
            layers,
            norm: norm(),
        }
    }

    /// Multiply-accumulates of one forward pass over `sequences` sequences of `len` tokens.
    pub fn macs(&self, sequences: usize, len: usize) -> f64 {
        let inner = (self.heads * self.dim_head) as f64;
        let d = self.dim as f64;
        let tokens = (sequences * len) as f64;
        let per_token = d * 3.0 * inner + inner * d + 2.0 * d * self.mlp_dim as f64;
        let attention = 2.0 * sequences as f64 * (len * len) as f64 * inner;
        self.depth as f64 * (tokens * per_token + attention)
    }
}

/// One layer: pre-LN attention and pre-LN feed-forward, both residual.
#[derive(Module, Debug)]
pub struct TemporalLayer {
    /// Norm before attention (`layers.i.0.norm`).
    pub attn_norm: LayerNorm,
    /// Packed q | k | v projection, no bias (`layers.i.0.fn.to_qkv`).
    pub to_qkv: Linear,
    /// Output projection (`layers.i.0.fn.to_out.0`); absent for one head spanning the width.
    pub to_out: Option<Linear>,
    /// Norm before the feed-forward (`layers.i.1.norm`).
    pub ff_norm: LayerNorm,
    /// First feed-forward projection (`layers.i.1.fn.net.0`).
    pub ff_in: Linear,
    /// Second feed-forward projection (`layers.i.1.fn.net.3`).
    pub ff_out: Linear,
    /// Heads.
    pub heads: usize,
    /// Logit scale `dim_head^-1/2`.
    pub scale: f64,
}

/// The temporal transformer. See the docs at the top of `conditioners/temporal.rs`.
#[derive(Module, Debug)]
pub struct TemporalTransformer {
    /// Layers in order.
    pub layers: Vec<TemporalLayer>,
    /// Final norm.
    pub norm: LayerNorm,
}

impl TemporalLayer {
    /// `[S, T, D]` -> `[S, T, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let qkv = linear(&self.to_qkv, self.attn_norm.forward(x.clone()));
        let inner = qkv.dims()[2] / 3;
        let q = heads(qkv.clone().narrow(2, 0, inner), self.heads);
        let k = heads(qkv.clone().narrow(2, inner, inner), self.heads);
        let v = heads(qkv.narrow(2, 2 * inner, inner), self.heads);
        let attended = merge_heads(sdpa(q, k, v, Some(self.scale)));
        let attended = match &self.to_out {
            Some(to_out) => linear(to_out, attended),
            None => attended,
        };
        let x = x + attended;
        let hidden = gelu(linear(&self.ff_in, self.ff_norm.forward(x.clone())));
        x + linear(&self.ff_out, hidden)
    }
}

impl TemporalTransformer {
    /// Renames from our paths to the official ones, for a transformer at `prefix` (ending with
    /// a dot, or empty) in the module being loaded, renamed to `official_prefix`.
    pub fn layout_rules(layout: Layout, prefix: &str, official_prefix: &str) -> Layout {
        let p = regex_escape(prefix);
        let o = official_prefix;
        layout
            .rename(
                &format!(r"^{p}layers\.(\d+)\.attn_norm\."),
                &format!("{o}layers.$1.0.norm."),
            )
            .rename(
                &format!(r"^{p}layers\.(\d+)\.to_qkv\."),
                &format!("{o}layers.$1.0.fn.to_qkv."),
            )
            .rename(
                &format!(r"^{p}layers\.(\d+)\.to_out\."),
                &format!("{o}layers.$1.0.fn.to_out.0."),
            )
            .rename(
                &format!(r"^{p}layers\.(\d+)\.ff_norm\."),
                &format!("{o}layers.$1.1.norm."),
            )
            .rename(
                &format!(r"^{p}layers\.(\d+)\.ff_in\."),
                &format!("{o}layers.$1.1.fn.net.0."),
            )
            .rename(
                &format!(r"^{p}layers\.(\d+)\.ff_out\."),
                &format!("{o}layers.$1.1.fn.net.3."),
            )
            .rename(&format!(r"^{p}norm\."), &format!("{o}norm."))
    }

    /// The official names of a stand-alone transformer (the state dict of an `SA_Transformer`).
    pub fn layout() -> Layout {
        Self::layout_rules(Layout::new(), "", "")
    }

    /// `[S, T, D]` -> `[S, T, D]`: every sequence attends over its own `T` tokens.
    pub fn forward(&self, mut x: Tensor<3>) -> Tensor<3> {
        for layer in &self.layers {
            x = layer.forward(x);
        }
        self.norm.forward(x)
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let escape = ".^$*+?()[]{}|\\".contains(c);
            escape.then_some('\\').into_iter().chain(std::iter::once(c))
        })
        .collect()
}
