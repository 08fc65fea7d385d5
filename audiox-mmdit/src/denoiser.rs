//! The DiT as the samplers see it: a [`Denoiser`] with the request's conditioning prepared.

use burn::tensor::Tensor;

use audiox_core::Result;
use audiox_sampler::Denoiser;

use crate::dit::{Dit, PreparedConditioning};

/// A [`Dit`] with one request's prepared conditioning.
///
/// Without guidance it holds the conditional conditioning only. With guidance it also holds
/// the unconditional one -- the reference's null condition: the whole fused context replaced
/// by zeros -- prepared in the same batch, `[cond; uncond]`, so that
/// [`Denoiser::velocity_pair`] runs both branches as one batch of `2B`, conditional first, as
/// the reference's classifier-free guidance does.
#[derive(Debug, Clone)]
pub struct MmditDenoiser<'a> {
    dit: &'a Dit,
    /// `[cond]` (batch B) or `[cond; uncond]` (batch 2B).
    prepared: PreparedConditioning,
    /// The conditional part alone (a view of `prepared` when guided).
    conditional: PreparedConditioning,
    guided: bool,
}

impl<'a> MmditDenoiser<'a> {
    /// A conditional-only denoiser for the fused context `[B, Nctx, D]` (the student; no
    /// guidance: [`Denoiser::velocity_pair`] returns `None`).
    pub fn new(dit: &'a Dit, context: Tensor<3>) -> Result<Self> {
        let prepared = dit.prepare(context)?;
        Ok(MmditDenoiser {
            dit,
            conditional: prepared.clone(),
            prepared,
            guided: false,
        })
    }

    /// A denoiser with the unconditional branch for classifier-free guidance (the teacher):
    /// the reference's null condition, the whole fused context replaced by zeros.
    pub fn with_guidance(dit: &'a Dit, context: Tensor<3>) -> Result<Self> {
        let null = context.zeros_like();
        Self::with_unconditional(dit, context, null)
    }

    /// A guided denoiser whose unconditional branch is the fused context `unconditional`
    /// (same shape as `context`), e.g. a negative prompt's. The reference's negative-prompt
    /// path crashes; this is what it intends.
    pub fn with_unconditional(
        dit: &'a Dit,
        context: Tensor<3>,
        unconditional: Tensor<3>,
    ) -> Result<Self> {
        let batch = context.dims()[0];
        if unconditional.dims() != context.dims() {
            return Err(audiox_core::Error::input_shape(
                "unconditional context",
                format!("{:?} (the conditional context's shape)", context.dims()),
                &unconditional.dims(),
            ));
        }
        let prepared = dit.prepare(Tensor::cat(vec![context, unconditional], 0))?;
        Ok(MmditDenoiser {
            dit,
            conditional: prepared.narrow_batch(0, batch)?,
            prepared,
            guided: true,
        })
    }

    /// A denoiser prepared from conditioning sequences `[B, L + 1, E]` (see
    /// [`Dit::prepare_sequence`]) instead of contexts: guided when `unconditional` is given
    /// (same shape as `conditional`). For experiments on what the positions are told; the
    /// reference's null condition is `dit.conditioning_sequence(zeros)`.
    pub fn from_sequences(
        dit: &'a Dit,
        conditional: Tensor<3>,
        unconditional: Option<Tensor<3>>,
    ) -> Result<Self> {
        let batch = conditional.dims()[0];
        let Some(unconditional) = unconditional else {
            let prepared = dit.prepare_sequence(conditional)?;
            return Ok(MmditDenoiser {
                dit,
                conditional: prepared.clone(),
                prepared,
                guided: false,
            });
        };
        if unconditional.dims() != conditional.dims() {
            return Err(audiox_core::Error::input_shape(
                "unconditional sequence",
                format!(
                    "{:?} (the conditional sequence's shape)",
                    conditional.dims()
                ),
                &unconditional.dims(),
            ));
        }
        let prepared = dit.prepare_sequence(Tensor::cat(vec![conditional, unconditional], 0))?;
        Ok(MmditDenoiser {
            dit,
            conditional: prepared.narrow_batch(0, batch)?,
            prepared,
            guided: true,
        })
    }

    /// Whether the unconditional branch is prepared.
    pub fn is_guided(&self) -> bool {
        self.guided
    }

    /// The network.
    pub fn dit(&self) -> &Dit {
        self.dit
    }
}

impl Denoiser for MmditDenoiser<'_> {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
        self.dit.forward(x, t, &self.conditional)
    }

    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        if !self.guided {
            return Ok(None);
        }
        let batch = x.dims()[0];
        let both = self.dit.forward(
            Tensor::cat(vec![x.clone(), x], 0),
            Tensor::cat(vec![t.clone(), t], 0),
            &self.prepared,
        )?;
        Ok(Some((
            both.clone().narrow(0, 0, batch),
            both.narrow(0, batch, batch),
        )))
    }
}
