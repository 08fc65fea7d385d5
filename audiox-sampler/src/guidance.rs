//! Classifier-free guidance as a denoiser adapter, so that every sampler can use it.

use burn::tensor::Tensor;

use audiox_core::{Error, Result};

use crate::denoiser::Denoiser;
use crate::sampler::check_velocity;

/// Classifier-free guidance settings.
///
/// The guided velocity is `v = v_u + (v_c - v_u) * scale` from the conditional and
/// unconditional velocities of [`Denoiser::velocity_pair`]. With `rescale_phi != 0` it is
/// then blended with a copy rescaled to the conditional velocity's spread:
/// `v = phi * v * std(v_c) / std(v) + (1 - phi) * v`, where `std` is the unbiased standard
/// deviation over the channel axis (1) of `[B, C, L]`.
///
/// `scale = 1` is no guidance: the unconditional branch is never evaluated (and the rescale,
/// which would be the identity, is skipped).
///
/// ```
/// use audiox_sampler::Guidance;
///
/// assert!(!Guidance::none().is_active());
/// let g = Guidance::cfg(6.0).with_rescale(0.7);
/// assert!(g.is_active());
/// assert_eq!((g.scale, g.rescale_phi), (6.0, 0.7));
/// assert!(Guidance::cfg(f32::NAN).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Guidance scale; 1 disables guidance. The base model's reference default is 6.
    pub scale: f32,
    /// CFG rescale factor `phi` in `[0, 1]`; 0 (the reference default) disables it.
    pub rescale_phi: f32,
}

impl Default for Guidance {
    fn default() -> Self {
        Self::none()
    }
}

impl Guidance {
    /// No guidance (scale 1).
    pub const fn none() -> Self {
        Guidance {
            scale: 1.0,
            rescale_phi: 0.0,
        }
    }

    /// Guidance with `scale` and no rescale.
    pub const fn cfg(scale: f32) -> Self {
        Guidance {
            scale,
            rescale_phi: 0.0,
        }
    }

    /// The same guidance with rescale factor `phi`.
    pub const fn with_rescale(mut self, phi: f32) -> Self {
        self.rescale_phi = phi;
        self
    }

    /// Whether the unconditional branch is needed (`scale != 1`).
    pub fn is_active(&self) -> bool {
        // upstream: guidance is applied exactly when `cfg_scale != 1.0`.
        self.scale != 1.0
    }

    /// Refuses a non-finite scale or a `phi` outside `[0, 1]`.
    pub fn validate(&self) -> Result<()> {
        if !self.scale.is_finite() {
            return Err(Error::InvalidRequest(format!(
                "guidance scale must be finite, got {}",
                self.scale
            )));
        }
        if !(self.rescale_phi.is_finite() && (0.0..=1.0).contains(&self.rescale_phi)) {
            return Err(Error::InvalidRequest(format!(
                "CFG rescale phi must be in [0, 1], got {}",
                self.rescale_phi
            )));
        }
        Ok(())
    }

    /// Combines the conditional and unconditional velocities `[B, C, L]` into the guided one.
    ///
    /// Where the guided velocity has zero spread over the channels (so the rescale ratio would
    /// divide by zero) the ratio is taken as 1; upstream would produce inf/NaN there.
    pub fn combine(&self, v_cond: Tensor<3>, v_uncond: Tensor<3>) -> Tensor<3> {
        let guided = v_uncond.clone() + (v_cond.clone() - v_uncond).mul_scalar(self.scale);
        if self.rescale_phi == 0.0 {
            return guided;
        }
        // [B, 1, L] unbiased standard deviations over the channels (in f32 for half-precision
        // activations).
        let std_cond = audiox_core::half::std_dev(v_cond, 1);
        let std_guided = audiox_core::half::std_dev(guided.clone(), 1);
        let flat = std_guided.clone().equal_elem(0.0);
        let ratio = (std_cond / std_guided).mask_fill(flat, 1.0);
        (guided.clone() * ratio).mul_scalar(self.rescale_phi)
            + guided.mul_scalar(1.0 - self.rescale_phi)
    }
}

/// A denoiser whose [`velocity`](Denoiser::velocity) is the guided velocity of `inner`.
///
/// With inactive guidance it forwards to `inner.velocity` (one evaluation). With active
/// guidance it asks `inner.velocity_pair` for `(v_c, v_u)` (one batched evaluation) and
/// [`Guidance::combine`]s them; a denoiser without an unconditional branch is an
/// [`Error::InvalidRequest`] (the default `velocity_pair` says so without computing anything).
///
/// ```
/// use audiox_sampler::{Denoiser, Guidance, Guided};
/// use audiox_core::Result;
/// use burn::tensor::{Device, Tensor};
///
/// /// Conditional velocity 2, unconditional 1.
/// struct Constant;
/// impl Denoiser for Constant {
///     fn velocity(&self, x: Tensor<3>, _t: Tensor<1>) -> Result<Tensor<3>> {
///         Ok(x.ones_like().mul_scalar(2.0))
///     }
///     fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>)
///         -> Result<Option<(Tensor<3>, Tensor<3>)>> {
///         Ok(Some((self.velocity(x.clone(), t)?, x.ones_like())))
///     }
/// }
///
/// let device = Device::flex();
/// let x = Tensor::<3>::zeros([1, 2, 3], &device);
/// let t = Tensor::<1>::ones([1], &device);
/// let v = Guided::new(&Constant, Guidance::cfg(3.0)).velocity(x, t)?;
/// assert_eq!(v.into_data().to_vec::<f32>().unwrap(), vec![4.0; 6]); // 1 + (2 - 1) * 3
/// # Ok::<(), audiox_core::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Guided<'a> {
    inner: &'a dyn Denoiser,
    guidance: Guidance,
}

impl std::fmt::Debug for Guided<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guided")
            .field("guidance", &self.guidance)
            .finish_non_exhaustive()
    }
}

impl<'a> Guided<'a> {
    /// Guides `inner` with `guidance`.
    pub fn new(inner: &'a dyn Denoiser, guidance: Guidance) -> Self {
        Guided { inner, guidance }
    }

    /// The guidance applied.
    pub fn guidance(&self) -> Guidance {
        self.guidance
    }
}

impl Denoiser for Guided<'_> {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
        if !self.guidance.is_active() {
            return self.inner.velocity(x, t);
        }
        let dims = x.dims();
        let Some((v_cond, v_uncond)) = self.inner.velocity_pair(x, t)? else {
            return Err(Error::InvalidRequest(format!(
                "classifier-free guidance (scale {}) needs a denoiser with an unconditional \
                 branch, and this one has none (use scale 1)",
                self.guidance.scale
            )));
        };
        check_velocity("conditional velocity", &dims, &v_cond)?;
        check_velocity("unconditional velocity", &dims, &v_uncond)?;
        Ok(self.guidance.combine(v_cond, v_uncond))
    }

    /// The inner pair when guidance is inactive; `None` once guided (a guided velocity has no
    /// unconditional counterpart).
    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        if self.guidance.is_active() {
            Ok(None)
        } else {
            self.inner.velocity_pair(x, t)
        }
    }
}
