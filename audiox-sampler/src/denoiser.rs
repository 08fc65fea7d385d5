//! The network side of sampling, as the samplers see it.

use burn::tensor::Tensor;

use audiox_core::Result;

/// A velocity predictor for rectified flow: given the noisy latent `x` `[B, C, L]` at times
/// `t` `[B]` (1 = pure noise, 0 = data), returns the predicted velocity `v = eps - x0`
/// `[B, C, L]`. The conditioning (text, video, audio prompt) is prepared once per request and
/// hidden behind the implementation.
pub trait Denoiser {
    /// The conditional velocity.
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>>;

    /// The conditional and unconditional velocities `(v_cond, v_uncond)`, evaluated as one
    /// batch where the implementation can. `None` when the denoiser has no unconditional
    /// branch (classifier-free guidance is then unavailable).
    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        let _ = (x, t);
        Ok(None)
    }
}

impl<D: Denoiser + ?Sized> Denoiser for &D {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
        (**self).velocity(x, t)
    }
    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        (**self).velocity_pair(x, t)
    }
}
