//! The diffusion transformer (official `MMDiffusionTransformer` + `ContinuousMMDiTTransformer`).
//!
//! One forward pass (`docs/architecture.md`, "The DiT forward pass"), shapes at full size (C 64, L 236, E 1536,
//! Nctx 384, D 768):
//!
//! ```text
//! te  = MLP(fourier(t))                                   [B, E]      time token
//! x   = x + conv1x1(x)          (channels-last)           [B, L, C]
//! h   = [te ; project_in(x)]                              [B, L+1, E] time token at 0
//! m   = proj_mm_seq_len^T(proj_mm_tokens(ctx))            [B, L+1, E] context resampled
//! h   = blocks(h, modulation(m), rope, te)                            (block.rs)
//! y   = project_out(h)[:, 1:]                             [B, L, C]   time token dropped
//! v   = y + conv1x1(y)          -> [B, C, L]              the rectified-flow velocity
//! ```
//!
//! `m` and every block's modulation depend only on the context: [`Dit::prepare`] computes them
//! once per request ([`PreparedConditioning`]) and [`Dit::forward`] reuses them at every step.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use audiox_core::config::{checked_mul, positive};
use audiox_core::precision::linear;
use audiox_core::weights::{Component, Layout, LoadReport, WeightSource, load_module};
use audiox_core::{Error, Result};

use crate::attention::interleaved_rows;
use crate::block::{BlockModulation, DitBlock, DitBlockConfig};
use crate::rope::RotaryTable;
use crate::timestep::{TimestepEmbedding, TimestepEmbeddingConfig};
use crate::token_conv::{TokenConv, TokenConvConfig};
use crate::trace::{Trace, record, record_with};

fn official_context_tokens() -> usize {
    DitConfig::OFFICIAL_CONTEXT_TOKENS
}
fn default_timestep_features() -> usize {
    256
}
fn default_kernel_size() -> usize {
    3
}
fn default_rope_base() -> f32 {
    10000.0
}

/// Configuration of a [`Dit`]: the official `model.diffusion.config` section, deserialized
/// under its official names, plus the sizes the official constructor hard-codes (defaults,
/// not read from the section).
///
/// Two sizes depend on other sections: the context length [`DitConfig::context_tokens`] (the
/// three condition streams side by side) and, when the section has no `_latent_seq_len`, the
/// sequence length (the latent frames of `sample_size`, plus the time token). The facade's
/// model config sets both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DitConfig {
    /// Latent channels `C` (64).
    pub io_channels: usize,
    /// Width `E` (1536; official `embed_dim`).
    #[serde(rename = "embed_dim")]
    pub width: usize,
    /// Number of blocks (24).
    pub depth: usize,
    /// Size of one attention head (24; official `num_heads`). upstream: the official
    /// transformer passes `dim_heads` (`embed_dim / num_heads`) as the head count, so the
    /// blocks have [`DitConfig::heads`] = `embed_dim / num_heads` heads (64) of `num_heads`
    /// elements.
    #[serde(rename = "num_heads")]
    pub head_dim: usize,
    /// Width `D` of the context tokens (768; official `cond_token_dim`).
    #[serde(rename = "cond_token_dim")]
    pub cond_dim: usize,
    /// Width of the unused global condition (768; only sizes `to_global_embed`).
    pub global_cond_dim: usize,
    /// Whether condition tokens are projected by `to_cond_embed` (false: it is dead weight;
    /// true is refused by [`DitConfig::validate`]).
    #[serde(default)]
    pub project_cond_tokens: bool,
    /// Must be `continuous_transformer`.
    pub transformer_type: String,
    /// Stored, unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition_mask_type: Option<String>,
    /// Popped by the official builder, unused by the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video_fps: Option<u32>,
    /// Sequence length `L + 1` the network is built for (official `_latent_seq_len`; see
    /// [`DitConfig::seq_len`]).
    #[serde(
        rename = "_latent_seq_len",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub latent_seq_len: Option<usize>,
    /// Context tokens `Nctx` (not in the section: the sum of the three streams' token counts,
    /// set by the model config; default [`DitConfig::OFFICIAL_CONTEXT_TOKENS`]).
    #[serde(skip, default = "official_context_tokens")]
    pub context_tokens: usize,
    /// Fourier time features (cos and sin halves; 256, hard-coded upstream).
    #[serde(skip, default = "default_timestep_features")]
    pub timestep_features: usize,
    /// Kernel size of the token convolutions (3, hard-coded upstream).
    #[serde(skip, default = "default_kernel_size")]
    pub kernel_size: usize,
    /// Rotary embedding frequency base (10000, hard-coded upstream).
    #[serde(skip, default = "default_rope_base")]
    pub rope_base: f32,
}

impl DitConfig {
    /// The sequence length `L + 1` the official constructor defaults to (236 latent frames and
    /// the time token).
    pub const OFFICIAL_SEQ_LEN: usize = 237;
    /// Context tokens of the official model (128 video + 128 text + 128 audio-prompt tokens).
    pub const OFFICIAL_CONTEXT_TOKENS: usize = 384;

    /// A `continuous_transformer` of these sizes (`head_dim` is the official `num_heads`, see
    /// [`DitConfig::head_dim`]), with the official context and sequence lengths.
    pub fn new(
        io_channels: usize,
        width: usize,
        depth: usize,
        head_dim: usize,
        cond_dim: usize,
        global_cond_dim: usize,
    ) -> Self {
        DitConfig {
            io_channels,
            width,
            depth,
            head_dim,
            cond_dim,
            global_cond_dim,
            project_cond_tokens: false,
            transformer_type: "continuous_transformer".into(),
            condition_mask_type: None,
            video_fps: None,
            latent_seq_len: None,
            context_tokens: Self::OFFICIAL_CONTEXT_TOKENS,
            timestep_features: default_timestep_features(),
            kernel_size: default_kernel_size(),
            rope_base: default_rope_base(),
        }
    }

    /// The same with `Nctx` context tokens.
    pub fn with_context_tokens(mut self, context_tokens: usize) -> Self {
        self.context_tokens = context_tokens;
        self
    }

    /// The same with sequence length `L + 1`.
    pub fn with_seq_len(mut self, seq_len: usize) -> Self {
        self.latent_seq_len = Some(seq_len);
        self
    }

    /// Attention heads per block: `width / head_dim` (64 at full size; see
    /// [`DitConfig::head_dim`]). 0 when `head_dim` is 0 ([`DitConfig::validate`] refuses it).
    pub fn heads(&self) -> usize {
        self.width.checked_div(self.head_dim).unwrap_or(0)
    }

    /// Sequence length `L + 1`: `_latent_seq_len`, else the official default
    /// [`DitConfig::OFFICIAL_SEQ_LEN`] (the model config sets `_latent_seq_len` from its latent length).
    pub fn seq_len(&self) -> usize {
        self.latent_seq_len.unwrap_or(Self::OFFICIAL_SEQ_LEN)
    }

    /// Hidden width of the SwiGLU feed-forward: `256 * ceil(floor(2 * 4E / 3) / 256)` (4096 at
    /// full size).
    pub fn ffn_hidden(&self) -> usize {
        let hidden = (2 * 4 * self.width) / 3;
        hidden.div_ceil(256) * 256
    }

    /// Checks the section on its own: every size positive, the head size dividing the width
    /// and even (rotary embedding), the feed-forward width representable, and only what
    /// AudioX-Turbo uses (`continuous_transformer`, unprojected condition tokens). `at` is the
    /// section's dotted path in its file (`model.diffusion.config`).
    pub fn validate(&self, at: &str) -> Result<()> {
        let field = |k: &str| format!("{at}.{k}");
        for (k, v) in [
            ("io_channels", self.io_channels),
            ("embed_dim", self.width),
            ("num_heads", self.head_dim),
            ("cond_token_dim", self.cond_dim),
            ("global_cond_dim", self.global_cond_dim),
        ] {
            positive(field(k), v)?;
        }
        // The SwiGLU hidden width is computed from 8 x embed_dim.
        checked_mul(field("embed_dim"), self.width, 8)?;
        if !self.width.is_multiple_of(self.head_dim) {
            return Err(Error::config(
                field("num_heads"),
                format!("{} does not divide embed_dim {}", self.head_dim, self.width),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::config(
                field("num_heads"),
                format!(
                    "head size {} must be even for the rotary embedding",
                    self.head_dim
                ),
            ));
        }
        positive(field("depth"), self.depth)?;
        if self.transformer_type != "continuous_transformer" {
            return Err(Error::config(
                field("transformer_type"),
                format!(
                    "`{}` is not supported (only `continuous_transformer`)",
                    self.transformer_type
                ),
            ));
        }
        if self.project_cond_tokens {
            return Err(Error::config(
                field("project_cond_tokens"),
                "true is not supported (AudioX-Turbo feeds condition tokens unprojected)",
            ));
        }
        Ok(())
    }

    /// Builds the network. Parameters stay lazy (nothing is allocated until loaded or read);
    /// only the small rotary table is computed.
    pub fn init(&self, device: &Device) -> Result<Dit> {
        if self.head_dim == 0
            || !self.width.is_multiple_of(self.head_dim)
            || !self.head_dim.is_multiple_of(2)
        {
            return Err(Error::config(
                "model.diffusion.config.num_heads",
                format!(
                    "head size {} does not split width {} into heads of an even size",
                    self.head_dim, self.width
                ),
            ));
        }
        let seq_len = self.seq_len();
        if seq_len < 2 || self.context_tokens == 0 {
            return Err(Error::config(
                "model.diffusion.config._latent_seq_len",
                format!(
                    "sequence length {seq_len} / context tokens {} cannot describe a model",
                    self.context_tokens
                ),
            ));
        }
        let heads = self.heads();
        let (c, e) = (self.io_channels, self.width);
        let linear = |i, o| LinearConfig::new(i, o).with_bias(false).init(device);
        let conv1x1 = || TokenConvConfig::new(c, c, 1).with_bias(false).init(device);
        let block =
            DitBlockConfig::new(e, heads, self.ffn_hidden()).with_kernel_size(self.kernel_size);
        Ok(Dit {
            time_embed: TimestepEmbeddingConfig::new(self.timestep_features, e).init(device),
            to_cond_embed: UnusedMlp {
                linear_in: linear(self.cond_dim, self.cond_dim),
                linear_out: linear(self.cond_dim, self.cond_dim),
            },
            to_global_embed: UnusedMlp {
                linear_in: linear(self.global_cond_dim, e),
                linear_out: linear(e, e),
            },
            preprocess_conv: conv1x1(),
            project_in: linear(c, e),
            proj_mm_tokens: LinearConfig::new(self.cond_dim, e).init(device),
            proj_mm_seq_len: LinearConfig::new(self.context_tokens, seq_len).init(device),
            blocks: (0..self.depth).map(|_| block.init(device)).collect(),
            project_out: linear(e, c),
            postprocess_conv: conv1x1(),
            rope: RotaryTable::new(seq_len, self.head_dim, self.rope_base, device)?,
        })
    }
}

/// A two-layer bias-free MLP the checkpoint holds but the network never runs
/// (`to_cond_embed`: its call is commented out upstream; `to_global_embed`: AudioX has no
/// global condition). Kept so that the official key set loads one-to-one.
#[derive(Module, Debug)]
pub struct UnusedMlp {
    /// Official index 0.
    pub linear_in: Linear,
    /// Official index 2.
    pub linear_out: Linear,
}

/// The diffusion transformer. Field names follow the official ones where Rust allows; see
/// [`Dit::layout`] for the rest.
#[derive(Module, Debug)]
pub struct Dit {
    /// Fourier features and MLP of the time (official `timestep_features`,
    /// `to_timestep_embed`).
    pub time_embed: TimestepEmbedding,
    /// Loaded, never computed.
    pub to_cond_embed: UnusedMlp,
    /// Loaded, never computed.
    pub to_global_embed: UnusedMlp,
    /// 1x1 convolution added to the input latent.
    pub preprocess_conv: TokenConv,
    /// Latent channels to width (official `transformer.project_in`).
    pub project_in: Linear,
    /// Context width `D -> E` (official `transformer.proj_mm_tokens`).
    pub proj_mm_tokens: Linear,
    /// Context resampling along tokens `Nctx -> L + 1` (official
    /// `transformer.proj_mm_seq_len`).
    pub proj_mm_seq_len: Linear,
    /// The blocks (official `transformer.layers`).
    pub blocks: Vec<DitBlock>,
    /// Width to latent channels (official `transformer.project_out`).
    pub project_out: Linear,
    /// 1x1 convolution added to the output.
    pub postprocess_conv: TokenConv,
    /// Rotary table (recomputed, not a weight).
    pub rope: RotaryTable,
}

/// Everything a request's context determines, computed once by [`Dit::prepare`]: the
/// per-position modulation of every block (`depth x 6 x [B, L + 1, E]`, about 210 MB per batch
/// item at full size).
#[derive(Debug, Clone)]
pub struct PreparedConditioning {
    blocks: Vec<BlockModulation>,
    batch: usize,
}

impl PreparedConditioning {
    /// Batch size `B` it was prepared for.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Per-block modulation.
    pub fn blocks(&self) -> &[BlockModulation] {
        &self.blocks
    }

    /// Batch items `start .. start + len` (views, no copy).
    pub fn narrow_batch(&self, start: usize, len: usize) -> Result<Self> {
        if len == 0 || start + len > self.batch {
            return Err(Error::InvalidRequest(format!(
                "batch items {start}..{} of a conditioning prepared for {}",
                start + len,
                self.batch
            )));
        }
        Ok(PreparedConditioning {
            blocks: self
                .blocks
                .iter()
                .map(|b| b.narrow_batch(start, len))
                .collect(),
            batch: len,
        })
    }
}

impl Dit {
    /// How our parameters map to the official names (use with the prefix `model.model.`):
    /// `nn.Sequential` indices, the `transformer.` level, `adaLN_modulation.1`, and the
    /// interleaved packed projections (`attn.qkv` rows `(h d j)` with `j` in q, k, v;
    /// `cross_attn.to_kv` rows with `j` in k, v) permuted at load into contiguous parts.
    pub fn layout() -> Layout {
        let layout = Layout::new()
            .rename(r"^time_embed\.features\.", "timestep_features.")
            .rename(r"^time_embed\.linear_in\.", "to_timestep_embed.0.")
            .rename(r"^time_embed\.linear_out\.", "to_timestep_embed.2.")
            .rename(r"^(to_cond_embed|to_global_embed)\.linear_in\.", "${1}.0.")
            .rename(r"^(to_cond_embed|to_global_embed)\.linear_out\.", "${1}.2.")
            .rename(r"\.ada_ln_modulation\.", ".adaLN_modulation.1.")
            .rename(r"^blocks\.", "transformer.layers.")
            .rename(
                r"^(project_in|project_out|proj_mm_tokens|proj_mm_seq_len)\.",
                "transformer.${1}.",
            );
        // upstream: both packed projections interleave their parts (einops `(h d j)`).
        let layout = interleaved_rows(layout, r"^blocks\.\d+\.attn\.qkv\.(weight|bias)$", 3);
        interleaved_rows(layout, r"^blocks\.\d+\.cross_attn\.to_kv\.weight$", 2)
    }

    /// Releases the loaded weights that never reach the output: every block's cross-attention
    /// query projection and the value half of its key/value projection (see
    /// [`TimeCrossAttention`](crate::TimeCrossAttention)), and the unused
    /// `to_cond_embed` / `to_global_embed` MLPs. The official checkpoint holds them, so they
    /// are loaded (and their names and shapes checked) first; at full size this frees 118 M
    /// parameters (0.47 GB in f32). The result computes exactly what the loaded network
    /// computes, but no longer has the official parameter shapes: keep the loaded module if
    /// you need to save it.
    pub fn without_dead_weights(mut self) -> Self {
        let device = self.project_in.weight.device();
        self.blocks = self
            .blocks
            .into_iter()
            .map(|mut block| {
                block.cross_attn = block.cross_attn.without_dead_weights();
                block
            })
            .collect();
        for mlp in [&mut self.to_cond_embed, &mut self.to_global_embed] {
            mlp.linear_in = crate::attention::released_linear(&device);
            mlp.linear_out = crate::attention::released_linear(&device);
        }
        self
    }

    /// Latent channels `C`.
    pub fn io_channels(&self) -> usize {
        self.project_in.weight.lazy_shape()[0]
    }

    /// Width `E`.
    pub fn width(&self) -> usize {
        self.project_in.weight.lazy_shape()[1]
    }

    /// Latent frames `L` the network accepts (its sequence is `L + 1` long).
    pub fn latent_length(&self) -> usize {
        self.proj_mm_seq_len.weight.lazy_shape()[1] - 1
    }

    /// Context tokens `Nctx` and their width `D` the network accepts.
    pub fn context_shape(&self) -> [usize; 2] {
        [
            self.proj_mm_seq_len.weight.lazy_shape()[0],
            self.proj_mm_tokens.weight.lazy_shape()[0],
        ]
    }

    /// Computes everything the context `[B, Nctx, D]` determines (once per request).
    pub fn prepare(&self, context: Tensor<3>) -> Result<PreparedConditioning> {
        self.prepare_impl(context, None)
    }

    /// [`Dit::prepare`], recording `mid.proj_mm_tokens`, `mid.proj_mm_seq_len` and
    /// `mid.block{i}.adaLN`.
    pub fn prepare_traced(
        &self,
        context: Tensor<3>,
        trace: &mut Trace,
    ) -> Result<PreparedConditioning> {
        self.prepare_impl(context, Some(trace))
    }

    /// The conditioning vector of every sequence position, `[B, L + 1, E]` (position 0 is the
    /// time token's, position `1 + f` latent frame `f`'s): the context `[B, Nctx, D]` through
    /// `proj_mm_tokens`, then `proj_mm_seq_len` over the token axis, before the SiLU that every
    /// block's adaLN modulation starts with. The only way the context reaches the network;
    /// [`Dit::prepare`] computes it too. Exposed for training, e.g. to supervise what each
    /// position is told.
    pub fn conditioning_sequence(&self, context: Tensor<3>) -> Result<Tensor<3>> {
        let [batch, ..] = context.dims();
        let mut trace = None;
        Ok(self
            .sequence_impl(context, batch, &mut trace)?
            .swap_dims(1, 2))
    }

    /// `[B, E, L + 1]`: [`Dit::conditioning_sequence`] with its last two axes swapped, as the
    /// token-axis projection leaves it; checks the context's shape.
    fn sequence_impl(
        &self,
        context: Tensor<3>,
        batch: usize,
        trace: &mut Option<&mut Trace>,
    ) -> Result<Tensor<3>> {
        let [tokens, d] = self.context_shape();
        let [_, n, w] = context.dims();
        if batch == 0 || n != tokens || w != d {
            return Err(Error::input_shape(
                "DiT context",
                format!("[B >= 1, {tokens}, {d}]"),
                &[batch, n, w],
            ));
        }
        let m = linear(&self.proj_mm_tokens, context); // [B, Nctx, E]
        record(trace, || "mid.proj_mm_tokens".into(), &m);
        // Linear over the token axis: one conditioning vector per sequence position.
        let m = linear(&self.proj_mm_seq_len, m.swap_dims(1, 2)); // [B, E, L+1]
        record(trace, || "mid.proj_mm_seq_len".into(), &m);
        Ok(m)
    }

    /// [`Dit::prepare`] from a conditioning sequence `[B, L + 1, E]` (as
    /// [`Dit::conditioning_sequence`] returns it) instead of a context: for experiments that
    /// change what the positions are told, e.g. a diagnostic that writes a known event layout
    /// into it. `prepare_sequence(conditioning_sequence(ctx))` equals `prepare(ctx)`.
    pub fn prepare_sequence(&self, sequence: Tensor<3>) -> Result<PreparedConditioning> {
        let [batch, positions, width] = sequence.dims();
        let expected = [self.latent_length() + 1, self.width()];
        if batch == 0 || [positions, width] != expected {
            return Err(Error::input_shape(
                "DiT conditioning sequence",
                format!("[B >= 1, {}, {}]", expected[0], expected[1]),
                &[batch, positions, width],
            ));
        }
        self.modulation_impl(sequence.swap_dims(1, 2), batch, None)
    }

    fn prepare_impl(
        &self,
        context: Tensor<3>,
        mut trace: Option<&mut Trace>,
    ) -> Result<PreparedConditioning> {
        let [batch, ..] = context.dims();
        let m = self.sequence_impl(context, batch, &mut trace)?;
        self.modulation_impl(m, batch, trace)
    }

    /// Every block's modulation from the sequence `m` `[B, E, L + 1]`.
    fn modulation_impl(
        &self,
        m: Tensor<3>,
        batch: usize,
        mut trace: Option<&mut Trace>,
    ) -> Result<PreparedConditioning> {
        let activated = silu(m.swap_dims(1, 2)); // [B, L+1, E], shared by every block
        let mut blocks = Vec::with_capacity(self.blocks.len());
        for (i, block) in self.blocks.iter().enumerate() {
            let packed = block.modulation(activated.clone());
            record(&mut trace, || format!("mid.block{i}.adaLN"), &packed);
            blocks.push(BlockModulation::from_packed(packed)?);
        }
        Ok(PreparedConditioning { blocks, batch })
    }

    /// The velocity `[B, C, L]` of the noisy latent `x` `[B, C, L]` at times `t` `[B]`, with a
    /// conditioning prepared for the same batch size.
    pub fn forward(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
        prepared: &PreparedConditioning,
    ) -> Result<Tensor<3>> {
        self.forward_impl(x, t, prepared, None)
    }

    /// [`Dit::forward`], recording the fixture intermediates (`mid.timestep_features`,
    /// `mid.timestep_embed`, `mid.preprocess_conv`, `mid.project_in`, per block
    /// `mid.block{i}.{qkv,linear1,cross_attn,ffn}` and `mid.block{i}`, `mid.project_out`,
    /// `mid.postprocess_conv`).
    pub fn forward_traced(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
        prepared: &PreparedConditioning,
        trace: &mut Trace,
    ) -> Result<Tensor<3>> {
        self.forward_impl(x, t, prepared, Some(trace))
    }

    /// One uncached call, as the reference computes it: prepares the context, then runs
    /// [`Dit::forward`]. Use [`Dit::prepare`] once and [`Dit::forward`] per step when the
    /// context is reused.
    pub fn forward_with_context(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
        context: Tensor<3>,
    ) -> Result<Tensor<3>> {
        let prepared = self.prepare(context)?;
        self.forward(x, t, &prepared)
    }

    fn check_inputs(
        &self,
        x: &Tensor<3>,
        t: &Tensor<1>,
        prepared: &PreparedConditioning,
    ) -> Result<()> {
        let (c, l) = (self.io_channels(), self.latent_length());
        let [b, xc, xl] = x.dims();
        if b == 0 || xc != c || xl != l {
            return Err(Error::input_shape(
                "DiT latent",
                format!("[B >= 1, {c}, {l}] (the model is built for {l} latent frames)"),
                &[b, xc, xl],
            ));
        }
        if t.dims() != [b] {
            return Err(Error::input_shape(
                "DiT time",
                format!("[{b}] (one time per batch item)"),
                &t.dims(),
            ));
        }
        if prepared.batch != b || prepared.blocks.len() != self.blocks.len() {
            return Err(Error::input_shape(
                "DiT prepared conditioning",
                format!("batch {b} and {} blocks", self.blocks.len()),
                &[prepared.batch, prepared.blocks.len()],
            ));
        }
        Ok(())
    }

    fn forward_impl(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
        prepared: &PreparedConditioning,
        mut trace: Option<&mut Trace>,
    ) -> Result<Tensor<3>> {
        self.check_inputs(&x, &t, prepared)?;
        let l = self.latent_length();

        // Time token.
        let (features, time) = self.time_embed.forward(t);
        record(&mut trace, || "mid.timestep_features".into(), &features);
        record(&mut trace, || "mid.timestep_embed".into(), &time);

        // Latent tokens, channels-last: x + conv1x1(x), then the width projection.
        let tokens = x.swap_dims(1, 2); // [B, L, C]
        let pre = self.preprocess_conv.forward(tokens.clone());
        record_with(
            &mut trace,
            || "mid.preprocess_conv".into(),
            || pre.clone().swap_dims(1, 2),
        );
        let h = linear(&self.project_in, pre + tokens); // [B, L, E]
        record(&mut trace, || "mid.project_in".into(), &h);
        let mut h = Tensor::cat(vec![time.clone().unsqueeze_dim(1), h], 1); // [B, L+1, E]

        for (i, (block, modulation)) in self.blocks.iter().zip(&prepared.blocks).enumerate() {
            h = block.forward(
                h,
                modulation,
                &self.rope,
                time.clone(),
                i,
                trace.as_deref_mut(),
            );
            record(&mut trace, || format!("mid.block{i}"), &h);
        }

        let y = linear(&self.project_out, h); // [B, L+1, C]
        record(&mut trace, || "mid.project_out".into(), &y);
        let y = y.narrow(1, 1, l); // drop the time token
        let post = self.postprocess_conv.forward(y.clone());
        record_with(
            &mut trace,
            || "mid.postprocess_conv".into(),
            || post.clone().swap_dims(1, 2),
        );
        Ok((post + y).swap_dims(1, 2))
    }
}

impl Component for Dit {
    type Config = DitConfig;

    /// Builds the network and loads every parameter from `sources` (typically
    /// `WeightSource::with_prefix(&dict, "model.model.")`) with [`Dit::layout`].
    fn load(
        config: &DitConfig,
        sources: &[WeightSource<'_>],
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        load_module(config.init(device)?, &Self::layout(), sources)
    }
}
