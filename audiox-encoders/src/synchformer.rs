//! Synchformer's visual feature extractor: frames in [-1, 1] `[B, T, 3, H, W]` -> sync
//! features `[B, S * t, D]`.
//!
//! Only the visual half of Synchformer is used (`vfeat_extractor` of
//! `synchformer_state_dict.pth`): MotionFormer, a divided space-time ViT, followed by a spatial
//! attention aggregation layer. Forward pass, as the reference computes it:
//!
//! 1. The clip is cut into `S = (T - segment) / stride + 1` overlapping segments of `segment`
//!    frames; all segments of all items run as one batch of `N = B * S`, item-major.
//! 2. Tubelet embedding (Conv3d with kernel = stride = `(tubelet, p, p)`, with bias): one token
//!    per time slot `j < t = segment / tubelet` and patch `s < n = (H / p)^2`, ordered
//!    time-major, then row, then column.
//! 3. A class token is prepended; positions: the class token gets `pos_embed[0]`, token
//!    `(j, s)` gets `pos_embed[1 + s] + temp_embed[j]`.
//! 4. `depth` divided space-time blocks: time attention, space attention, MLP, each pre-norm
//!    with a residual (see [`DividedAttention`]).
//! 5. The class token is dropped and the final `norm` applied.
//! 6. Per time slot, the aggregation layer (a pre-norm transformer encoder layer with its own
//!    class token) pools the `n` patch tokens into one vector: `[N, t, D]`.
//! 7. Rows are laid out segment-major: row `s * t + j` of item `b`.
//!
//! Every LayerNorm has eps 1e-6 and every GELU is the exact (erf) form. Sizes come from
//! [`SynchformerConfig`] (full size: 224 px frames, patch 16, tubelet 2, width 768, 12 blocks of
//! 12 heads, segments of 16 frames every 8 -> 30 segments x 8 slots = 240 rows for 250 frames).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig, Conv3d, Conv3dConfig};
use burn::nn::{Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::module::linear;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::nn::{
    TorchEncoderLayer, TorchEncoderLayerConfig, heads, merge_heads, sdpa, with_torch_mha_names,
};
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};

/// Prefix of the extractor's tensors in `synchformer_state_dict.pth`; the official loader
/// keeps only these keys.
pub const WEIGHT_PREFIX: &str = "vfeat_extractor.";

/// Segments of `segment` frames every `stride` frames in a clip of `frames` frames:
/// `(frames - segment) / stride + 1`, 0 when the clip is shorter than one segment.
fn segment_count(frames: usize, segment: usize, stride: usize) -> usize {
    match frames.checked_sub(segment) {
        Some(rest) => rest / stride + 1,
        None => 0,
    }
}

fn default_layer_norm_eps() -> f64 {
    1e-6
}

/// Sizes of a [`Synchformer`]. The official model config has no section for it (its
/// constructor hard-codes the sizes): [`SynchformerConfig::default`] is the released model,
/// and a small test model gives its sizes in the config's extra `_tiny_hardcoded_sizes` key
/// (`synchformer`), which this type deserializes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SynchformerConfig {
    /// Side of the square input frames (224).
    pub image_size: usize,
    /// Side of the square patches (16).
    pub patch_size: usize,
    /// Frames per token (2).
    pub tubelet: usize,
    /// Width `D` (768).
    pub embed_dim: usize,
    /// Divided space-time blocks (12).
    pub depth: usize,
    /// Attention heads (12).
    pub heads: usize,
    /// MLP hidden width as a multiple of the width (4).
    pub mlp_ratio: usize,
    /// Frames per segment (16).
    pub segment: usize,
    /// Frames between segment starts (8).
    pub stride: usize,
    /// Epsilon of every LayerNorm (1e-6).
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Frame rate of the stream the extractor takes, in frames per second (25).
    pub frame_rate: usize,
}

impl Default for SynchformerConfig {
    /// The released model's sizes: 224 px frames in 16 px patches, tubelets of 2 frames, width
    /// 768, 12 blocks of 12 heads, MLP ratio 4, segments of 16 frames every 8, 25 fps.
    fn default() -> Self {
        SynchformerConfig::new(224, 16, 2, 768, 12, 12, 4, 16, 8)
    }
}

impl SynchformerConfig {
    /// An extractor of these sizes (LayerNorm epsilon 1e-6, 25 fps).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        image_size: usize,
        patch_size: usize,
        tubelet: usize,
        embed_dim: usize,
        depth: usize,
        heads: usize,
        mlp_ratio: usize,
        segment: usize,
        stride: usize,
    ) -> Self {
        SynchformerConfig {
            image_size,
            patch_size,
            tubelet,
            embed_dim,
            depth,
            heads,
            mlp_ratio,
            segment,
            stride,
            layer_norm_eps: default_layer_norm_eps(),
            frame_rate: 25,
        }
    }

    /// The same with LayerNorm epsilon `eps`.
    pub fn with_layer_norm_eps(mut self, eps: f64) -> Self {
        self.layer_norm_eps = eps;
        self
    }

    /// The same with a stream of `frame_rate` frames per second.
    pub fn with_frame_rate(mut self, frame_rate: usize) -> Self {
        self.frame_rate = frame_rate;
        self
    }

    /// The released model's sizes ([`SynchformerConfig::default`]).
    pub fn full_size() -> Self {
        Self::default()
    }

    /// Checks that the sizes fit together (patches tile the frame, tubelets tile a segment,
    /// heads divide the width).
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, message: String| {
            Err(Error::config(format!("synchformer.{field}"), message))
        };
        let positive = [
            ("image_size", self.image_size),
            ("patch_size", self.patch_size),
            ("tubelet", self.tubelet),
            ("embed_dim", self.embed_dim),
            ("heads", self.heads),
            ("mlp_ratio", self.mlp_ratio),
            ("segment", self.segment),
            ("stride", self.stride),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(field, "must be positive".into());
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return bad(
                "patch_size",
                format!(
                    "{} does not divide the frame size {}",
                    self.patch_size, self.image_size
                ),
            );
        }
        if !self.segment.is_multiple_of(self.tubelet) {
            return bad(
                "tubelet",
                format!(
                    "{} does not divide the segment length {}",
                    self.tubelet, self.segment
                ),
            );
        }
        if !self.embed_dim.is_multiple_of(self.heads) {
            return bad(
                "heads",
                format!(
                    "{} does not divide the width {}",
                    self.heads, self.embed_dim
                ),
            );
        }
        Ok(())
    }

    /// Time slots per segment, `t = segment / tubelet`.
    pub fn time_slots(&self) -> usize {
        self.segment / self.tubelet
    }

    /// Patches per frame, `n = (image_size / patch_size)^2`.
    pub fn patches_per_frame(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Segments cut from `frames` frames (0 when the clip is shorter than one segment).
    pub fn segments(&self, frames: usize) -> usize {
        segment_count(frames, self.segment, self.stride)
    }

    /// Builds the extractor (parameters stay lazy until loaded). Errors when the sizes do not
    /// fit together.
    pub fn init(&self, device: &Device) -> Result<Synchformer> {
        self.validate()?;
        let d = self.embed_dim;
        let p = self.patch_size;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let linear = |i, o| LinearConfig::new(i, o).init(device);
        let attention = || DividedAttention {
            qkv: linear(d, 3 * d),
            proj: linear(d, d),
            num_heads: self.heads,
        };
        let blocks = (0..self.depth)
            .map(|_| DividedSpaceTimeBlock {
                norm1: norm(),
                attn: attention(),
                timeattn: attention(),
                norm2: norm(),
                mlp: Mlp {
                    fc1: linear(d, self.mlp_ratio * d),
                    fc2: linear(self.mlp_ratio * d, d),
                },
                norm3: norm(),
            })
            .collect();
        let zeros = |shape: [usize; 3]| Initializer::Zeros.init(shape, device);
        Ok(Synchformer {
            cls_token: zeros([1, 1, d]),
            pos_embed: zeros([1, 1 + self.patches_per_frame(), d]),
            temp_embed: zeros([1, self.time_slots(), d]),
            patch_embed: PatchEmbed {
                proj: Conv2dConfig::new([3, d], [p, p])
                    .with_stride([p, p])
                    .init(device),
            },
            patch_embed_3d: PatchEmbed3d {
                proj: Conv3dConfig::new([3, d], [self.tubelet, p, p])
                    .with_stride([self.tubelet, p, p])
                    .init(device),
            },
            blocks,
            norm: norm(),
            spatial_attn_agg: SpatialAggregation {
                cls_token: zeros([1, 1, d]),
                layer: TorchEncoderLayerConfig::new(d, self.heads, self.mlp_ratio * d)
                    .with_layer_norm_eps(self.layer_norm_eps)
                    .init(device),
            },
            image_size: self.image_size,
            patch_size: p,
            tubelet: self.tubelet,
            segment: self.segment,
            stride: self.stride,
            frame_rate: self.frame_rate,
        })
    }
}

/// The 2-D patch embedding of the original ViT. upstream: unused by the forward pass (the
/// tubelet embedding replaces it) but part of the checkpoint's strictly loaded key set, so it is
/// held and loaded.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// Conv2d(3 -> D, kernel = stride = p).
    pub proj: Conv2d,
}

/// The tubelet embedding: Conv3d(3 -> D, kernel = stride = `(tubelet, p, p)`, with bias).
#[derive(Module, Debug)]
pub struct PatchEmbed3d {
    /// The convolution; its weight `[D, 3, tubelet, p, p]` is applied as one matmul over
    /// non-overlapping tubelets.
    pub proj: Conv3d,
}

/// The two-layer MLP of a block: `fc2(GELU(fc1(x)))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `D -> mlp_ratio * D`.
    pub fc1: Linear,
    /// `mlp_ratio * D -> D`.
    pub fc2: Linear,
}

impl Mlp {
    /// `[N, L, D]` -> `[N, L, D]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }
}

/// Along which axis a [`DividedAttention`] groups the patch tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Each patch attends to the class token and the tokens of its own patch position in every
    /// time slot.
    Time,
    /// Each patch attends to the class token and the tokens of its own time slot.
    Space,
}

/// Attention divided over time or space, with a class token.
///
/// `qkv` (Linear with bias, q | k | v consecutive thirds, heads consecutive blocks of `D / H`),
/// softmax attention with scale `(D / H)^-1/2`, heads merged, `proj` (Linear with bias). The
/// class token's query attends to every key; a patch token's query attends to the class key
/// plus the keys of its group (see [`Grouping`]).
#[derive(Module, Debug)]
pub struct DividedAttention {
    /// Packed query/key/value projection `D -> 3D`.
    pub qkv: Linear,
    /// Output projection `D -> D`.
    pub proj: Linear,
    /// Number of heads `H`.
    pub num_heads: usize,
}

impl DividedAttention {
    /// `[N, 1 + slots * patches, D]` (class token first, patch tokens time-major) ->
    /// `[N, 1 + slots * patches, D]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        slots: usize,
        patches: usize,
        grouping: Grouping,
    ) -> Tensor<3> {
        let [n, len, d] = x.dims();
        let h = self.num_heads;
        let qkv = self.qkv.forward(x); // [N, len, 3D]
        let q = qkv.clone().narrow(2, 0, d);
        let k = qkv.clone().narrow(2, d, d);
        let v = qkv.narrow(2, 2 * d, d);

        // The class token's query over all keys: [N, 1, D].
        let cls = sdpa(
            heads(q.clone().narrow(1, 0, 1), h),
            heads(k.clone(), h),
            heads(v.clone(), h),
            None,
        );
        let cls = merge_heads(cls);

        // Patch tokens regrouped: [N * groups, tokens per group, D].
        let groups = match grouping {
            Grouping::Time => patches,
            Grouping::Space => slots,
        };
        let group = |t: Tensor<3>| -> Tensor<3> {
            let t = t.narrow(1, 1, len - 1);
            match grouping {
                Grouping::Space => t.reshape([n * slots, patches, d]),
                Grouping::Time => t.reshape([n, slots, patches, d]).swap_dims(1, 2).reshape([
                    n * patches,
                    slots,
                    d,
                ]),
            }
        };
        // Keys and values of a group: the class token's, then the group's own.
        let with_cls = |t: Tensor<3>| -> Tensor<3> {
            let cls = t
                .clone()
                .narrow(1, 0, 1)
                .unsqueeze_dim::<4>(1)
                .expand([n, groups, 1, d])
                .reshape([n * groups, 1, d]);
            Tensor::cat(vec![cls, group(t)], 1)
        };
        let out = sdpa(
            heads(group(q), h),
            heads(with_cls(k), h),
            heads(with_cls(v), h),
            None,
        );
        let out = merge_heads(out); // [N * groups, tokens per group, D]
        let out = match grouping {
            Grouping::Space => out.reshape([n, slots * patches, d]),
            Grouping::Time => out
                .reshape([n, patches, slots, d])
                .swap_dims(1, 2)
                .reshape([n, slots * patches, d]),
        };
        self.proj.forward(Tensor::cat(vec![cls, out], 1))
    }
}

/// One divided space-time block: `x += timeattn(norm3(x)); x += attn(norm1(x));
/// x += mlp(norm2(x))`.
#[derive(Module, Debug)]
pub struct DividedSpaceTimeBlock {
    /// Norm before the space attention.
    pub norm1: LayerNorm,
    /// Space attention.
    pub attn: DividedAttention,
    /// Time attention.
    pub timeattn: DividedAttention,
    /// Norm before the MLP.
    pub norm2: LayerNorm,
    /// The MLP.
    pub mlp: Mlp,
    /// Norm before the time attention.
    pub norm3: LayerNorm,
}

impl DividedSpaceTimeBlock {
    /// `[N, 1 + t * n, D]` -> same, reporting the three branch outputs (before their residual
    /// adds) as `{name}.timeattn`, `{name}.attn`, `{name}.mlp`.
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        slots: usize,
        patches: usize,
        name: &str,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Tensor<3> {
        let time = self.timeattn.forward(
            self.norm3.forward(x.clone()),
            slots,
            patches,
            Grouping::Time,
        );
        trace(&format!("{name}.timeattn"), &time);
        let x = x + time;
        let space = self.attn.forward(
            self.norm1.forward(x.clone()),
            slots,
            patches,
            Grouping::Space,
        );
        trace(&format!("{name}.attn"), &space);
        let x = x + space;
        let mlp = self.mlp.forward(self.norm2.forward(x.clone()));
        trace(&format!("{name}.mlp"), &mlp);
        x + mlp
    }
}

/// The spatial aggregation layer (`spatial_attn_agg`): per time slot, a pre-norm transformer
/// encoder layer over `[class token, n patch tokens]` whose class-token output is the slot's
/// feature.
#[derive(Module, Debug)]
pub struct SpatialAggregation {
    /// Its own class token `[1, 1, D]` (no position terms).
    pub cls_token: Param<Tensor<3>>,
    /// `nn.TransformerEncoderLayer(norm_first=True)`, GELU, eps 1e-6 (official names directly
    /// under `spatial_attn_agg.`).
    pub layer: TorchEncoderLayer,
}

impl SpatialAggregation {
    /// `[M, n, D]` (one row per time slot) -> `[M, D]`.
    ///
    /// Only the class token's output is used, so only its row goes through the attention
    /// output, the residuals and the feed-forward; the patch rows serve as keys and values.
    /// Output-identical to running the full layer and keeping position 0.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<2> {
        let [m, _, d] = x.dims();
        let cls = self.cls_token.val().expand([m, 1, d]);
        let z = Tensor::cat(vec![cls.clone(), x], 1); // [M, 1 + n, D]
        let layer = &self.layer;
        let normed = layer.norm1.forward(z);
        let query = normed.clone().narrow(1, 0, 1);
        let c = cls + layer.self_attn.forward(query, normed); // [M, 1, D]
        let ff = layer
            .linear2
            .forward(gelu(layer.linear1.forward(layer.norm2.forward(c.clone()))));
        (c + ff).reshape([m, d])
    }
}

/// Synchformer's visual extractor (`vfeat_extractor`). See the [module docs](self).
#[derive(Module, Debug)]
pub struct Synchformer {
    /// Class token `[1, 1, D]`.
    pub cls_token: Param<Tensor<3>>,
    /// Spatial positions `[1, 1 + n, D]` (entry 0 for the class token).
    pub pos_embed: Param<Tensor<3>>,
    /// Temporal positions `[1, t, D]`.
    pub temp_embed: Param<Tensor<3>>,
    /// Unused 2-D patch embedding (held for the checkpoint's key set).
    pub patch_embed: PatchEmbed,
    /// Tubelet embedding.
    pub patch_embed_3d: PatchEmbed3d,
    /// Divided space-time blocks.
    pub blocks: Vec<DividedSpaceTimeBlock>,
    /// Final norm of the patch tokens.
    pub norm: LayerNorm,
    /// Spatial aggregation layer.
    pub spatial_attn_agg: SpatialAggregation,
    image_size: usize,
    patch_size: usize,
    tubelet: usize,
    segment: usize,
    stride: usize,
    frame_rate: usize,
}

impl Synchformer {
    /// How our parameter names map to the official ones (relative to [`WEIGHT_PREFIX`]): the
    /// aggregation layer's encoder-layer fields sit directly under `spatial_attn_agg.`, and the
    /// packed attention projection is `in_proj_weight` / `in_proj_bias`.
    pub fn layout() -> Layout {
        with_torch_mha_names(
            Layout::new().rename(r"^spatial_attn_agg\.layer\.", "spatial_attn_agg."),
        )
    }

    /// Width `D`.
    pub fn embed_dim(&self) -> usize {
        self.norm.gamma.lazy_shape()[0]
    }

    /// Frames per segment.
    pub fn segment(&self) -> usize {
        self.segment
    }

    /// Frame rate of the stream the extractor takes, in frames per second.
    pub fn frame_rate(&self) -> usize {
        self.frame_rate
    }

    /// Time slots per segment `t`.
    pub fn time_slots(&self) -> usize {
        self.segment / self.tubelet
    }

    /// Patches per frame `n`.
    pub fn patches_per_frame(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Side of the square input frames.
    pub fn image_size(&self) -> usize {
        self.image_size
    }

    /// Segments cut from a clip of `frames` frames.
    pub fn segments(&self, frames: usize) -> usize {
        segment_count(frames, self.segment, self.stride)
    }

    /// Output rows for a clip of `frames` frames: `segments * t` (240 for 250 frames at full
    /// size).
    pub fn output_rows(&self, frames: usize) -> usize {
        self.segments(frames) * self.time_slots()
    }

    /// Frames in [-1, 1] `[B, T, 3, H, W]` -> sync features `[B, S * t, D]` (segment-major).
    /// Errors when the frames are not `image_size` squares with 3 channels or are fewer than
    /// one segment.
    pub fn forward(&self, frames: Tensor<5>) -> Result<Tensor<3>> {
        self.forward_traced(frames, &mut |_, _| {})
    }

    /// [`Synchformer::forward`], reporting intermediate values under the fixture's names:
    /// `patch_embed`, `tokens_in`, `block{i}.{timeattn,attn,mlp}`, `block{i}`, `norm`
    /// (`[N, ...]` with `N = B * S` segments) and `per_segment` (`[N, t, D]`).
    pub fn forward_traced(
        &self,
        frames: Tensor<5>,
        trace: &mut dyn FnMut(&str, &Tensor<3>),
    ) -> Result<Tensor<3>> {
        let [b, total, c, h, w] = frames.dims();
        let s = self.image_size;
        if b == 0 || c != 3 || h != s || w != s || total < self.segment {
            return Err(Error::input_shape(
                "Synchformer frames",
                format!("[B >= 1, T >= {}, 3, {s}, {s}]", self.segment),
                &[b, total, c, h, w],
            ));
        }
        let segments = self.segments(total);
        let (t, n) = (self.time_slots(), self.patches_per_frame());

        // 1. Segments, item-major: [B * S, segment, 3, H, W].
        let clips: Vec<Tensor<5>> = (0..segments)
            .map(|i| frames.clone().narrow(1, i * self.stride, self.segment))
            .collect();
        let clips: Tensor<6> = Tensor::stack(clips, 1);
        let clips = clips.reshape([b * segments, self.segment, 3, s, s]);

        // 2. Tubelet tokens [N, t * n, D].
        let x = self.embed_tubelets(clips);
        trace("patch_embed", &x);

        // 3. Class token and positions.
        let x = self.add_class_token_and_positions(x, t, n);
        trace("tokens_in", &x);

        // 4. Blocks.
        let mut x = x;
        for (i, block) in self.blocks.iter().enumerate() {
            let name = format!("block{i}");
            x = block.forward_traced(x, t, n, &name, trace);
            trace(&name, &x);
        }

        // 5. Drop the class token, final norm.
        let [nseg, len, d] = x.dims();
        let x = self.norm.forward(x.narrow(1, 1, len - 1));
        trace("norm", &x);

        // 6. One feature per time slot.
        let x = self.spatial_attn_agg.forward(x.reshape([nseg * t, n, d]));
        let x = x.reshape([nseg, t, d]);
        trace("per_segment", &x);

        // 7. Segment-major rows.
        Ok(x.reshape([b, segments * t, d]))
    }

    /// `[N, segment, 3, H, W]` -> `[N, t * n, D]`: the Conv3d with kernel = stride as one
    /// matmul over flattened tubelets (channel, frame, row, column order, as the kernel).
    fn embed_tubelets(&self, clips: Tensor<5>) -> Tensor<3> {
        let [m, _, _, _, _] = clips.dims();
        let (p, tau) = (self.patch_size, self.tubelet);
        let (t, g) = (self.segment / tau, self.image_size / p);
        let k = 3 * tau * p * p;
        // [N, t, tau, 3, g, p, g, p] -> [N, t, g, g, 3, tau, p, p]
        let patches = clips
            .reshape([m, t, tau, 3, g, p, g, p])
            .permute([0, 1, 4, 6, 3, 2, 5, 7])
            .reshape([m, t * g * g, k]);
        let weight = self.patch_embed_3d.proj.weight.val(); // [D, 3, tau, p, p]
        let d = weight.dims()[0];
        let weight = weight.reshape([d, k]).transpose(); // [k, D]
        let bias = self.patch_embed_3d.proj.bias.as_ref().map(|b| b.val());
        linear(patches, weight, bias)
    }

    /// Prepends the class token and adds the separate spatial and temporal positions.
    fn add_class_token_and_positions(&self, x: Tensor<3>, t: usize, n: usize) -> Tensor<3> {
        let [m, _, d] = x.dims();
        let pos = self.pos_embed.val(); // [1, 1 + n, D]
        let cls = (self.cls_token.val() + pos.clone().narrow(1, 0, 1)).expand([m, 1, d]);
        let spatial = pos.narrow(1, 1, n).unsqueeze_dim::<4>(1); // [1, 1, n, D]
        let temporal = self.temp_embed.val().unsqueeze_dim::<4>(2); // [1, t, 1, D]
        let positions = (spatial + temporal).reshape([1, t * n, d]);
        Tensor::cat(vec![cls, x + positions], 1)
    }
}

impl Component for Synchformer {
    type Config = SynchformerConfig;

    /// Builds the extractor for `config` and loads it from `sources`; the official file
    /// (`synchformer_state_dict.pth`, or a safetensors file with the same names) holds it
    /// under [`WEIGHT_PREFIX`]: `WeightSource::with_prefix(&dict, WEIGHT_PREFIX)`. Errors
    /// when the sizes do not fit together.
    fn load(
        config: &SynchformerConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        load_module(config.init(device)?, &Self::layout(), sources)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiox_core::weights::official_names;

    fn tiny() -> SynchformerConfig {
        SynchformerConfig::new(32, 16, 2, 8, 1, 2, 4, 4, 2)
    }

    #[test]
    fn official_names_cover_the_checkpoint_layout() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        let names = official_names(&model, &Synchformer::layout());
        for key in [
            "cls_token",
            "pos_embed",
            "temp_embed",
            "patch_embed.proj.weight",
            "patch_embed_3d.proj.bias",
            "blocks.0.timeattn.qkv.weight",
            "blocks.0.norm3.weight",
            "spatial_attn_agg.cls_token",
            "spatial_attn_agg.self_attn.in_proj_weight",
            "spatial_attn_agg.norm2.bias",
        ] {
            assert!(
                names.contains_key(key),
                "{key} missing from {:?}",
                names.keys()
            );
        }
        assert_eq!(names["pos_embed"], vec![1, 5, 8]);
        assert_eq!(names["patch_embed_3d.proj.weight"], vec![8, 3, 2, 16, 16]);
    }

    #[test]
    fn bad_sizes_and_inputs_are_typed_errors() {
        let device = Device::flex();
        let bad = SynchformerConfig::new(30, 16, 2, 8, 1, 2, 4, 4, 2);
        assert!(matches!(bad.init(&device), Err(Error::Config { .. })));
        let bad = SynchformerConfig::new(32, 16, 3, 8, 1, 2, 4, 4, 2);
        assert!(matches!(bad.validate(), Err(Error::Config { .. })));
        let bad = SynchformerConfig::new(32, 16, 2, 8, 1, 3, 4, 4, 2);
        assert!(matches!(bad.validate(), Err(Error::Config { .. })));

        let model = tiny().init(&device).unwrap();
        for shape in [
            [1, 3, 3, 32, 32],
            [1, 4, 4, 32, 32],
            [1, 4, 3, 32, 16],
            [0, 4, 3, 32, 32],
        ] {
            let x = Tensor::<5>::zeros(shape, &device);
            assert!(
                matches!(model.forward(x), Err(Error::InputShape { .. })),
                "{shape:?}"
            );
        }
    }

    #[test]
    fn segment_counts() {
        let c = SynchformerConfig::full_size();
        assert_eq!(c.segments(250), 30);
        assert_eq!(c.segments(250) * c.time_slots(), 240);
        assert_eq!(c.segments(15), 0);
        assert_eq!(c.segments(16), 1);
        assert_eq!(c.patches_per_frame(), 196);
    }
}
