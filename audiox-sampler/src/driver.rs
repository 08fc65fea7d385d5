//! The sampling loop, written once: [`drive`] runs any [`Sampler`]'s update rule over its
//! schedule, and hands each step a [`Step`].

use burn::tensor::{Device, Tensor};

use audiox_core::noise::{NoiseSource, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};

use crate::control::{StepControl, StepInfo};
use crate::denoiser::Denoiser;
use crate::guidance::{Guidance, Guided};
use crate::sampler::{Sampler, check_latent, velocity_at};

/// One step of a run, as [`drive`] hands it to [`Sampler::step`]: where the step goes, the
/// run's guided denoiser and noise source, and the previous step's clean-latent estimate (for
/// multistep rules).
pub struct Step<'a> {
    index: usize,
    total: usize,
    t: f32,
    t_next: f32,
    denoiser: &'a Guided<'a>,
    rng: &'a mut dyn NoiseSource,
    shape: [usize; 3],
    device: &'a Device,
    wants_denoised: bool,
    denoised: Option<Tensor<3>>,
    previous: Option<(f32, &'a Tensor<3>)>,
}

impl std::fmt::Debug for Step<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Step")
            .field("index", &self.index)
            .field("total", &self.total)
            .field("t", &self.t)
            .field("t_next", &self.t_next)
            .finish_non_exhaustive()
    }
}

impl Step<'_> {
    /// Index of this step, `0..total`.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Number of steps of the run.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Whether this is the run's last step (what it returns is the sampler's result).
    pub fn is_last(&self) -> bool {
        self.index + 1 == self.total
    }

    /// Time at the start of the step (1 = noise, 0 = data).
    pub fn t(&self) -> f32 {
        self.t
    }

    /// Time the step moves to.
    pub fn t_next(&self) -> f32 {
        self.t_next
    }

    /// The step's signed size `t_next - t` (negative: time runs from noise to data).
    pub fn dt(&self) -> f32 {
        self.t_next - self.t
    }

    /// The guided velocity at `x` `[B, C, L]` and time `t`, shape-checked (the run's
    /// denoiser wrapped in the sampler's [`Guidance`]: one batched call when guided).
    pub fn velocity(&self, x: &Tensor<3>, t: f32) -> Result<Tensor<3>> {
        velocity_at(self.denoiser, x, t)
    }

    /// Fresh standard-normal noise of the latent's shape, drawn from the run's noise source
    /// with the label [`labels::STEP_NOISE`]. A non-finite draw is an [`Error::Contract`].
    pub fn noise(&mut self) -> Result<Tensor<3>> {
        let values = self.rng.normal(labels::STEP_NOISE, &self.shape)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::contract(
                format!("noise source, draw `{}`", labels::STEP_NOISE),
                format!("value {i} is {}, not a finite number", values[i]),
            ));
        }
        from_vec(values, self.shape, self.device)
    }

    /// Whether a progress callback reads the clean-latent estimate of this step. Rules that
    /// compute it only for reporting skip it when not.
    pub fn wants_denoised(&self) -> bool {
        self.wants_denoised
    }

    /// Hands over the step's estimate of the clean latent `x0 = x_t - t v` `[B, C, L]`: it
    /// goes to the progress report and to the next step's
    /// [`previous_denoised`](Self::previous_denoised).
    pub fn set_denoised(&mut self, x0: Tensor<3>) {
        self.denoised = Some(x0);
    }

    /// The start time of the previous step, and the clean-latent estimate it set; `None` on
    /// the first step or when the previous step set none.
    pub fn previous_denoised(&self) -> Option<(f32, &Tensor<3>)> {
        self.previous
    }
}

/// Runs `sampler` from `noise` `[B, C, L]` (the state at the schedule's first time) and
/// returns the clean latent `[B, C, L]`. This is the loop every sampler shares
/// ([`Sampler::sample`] calls it):
///
/// 1. before any compute: [`Sampler::validate`], the schedule's grid, the guidance settings
///    against the latent, an empty latent ([`check_latent`]);
/// 2. the denoiser wrapped once in the sampler's [`Guidance`] ([`Guided`]);
/// 3. for each window `(t, t_next)` of the grid: [`StepControl::check_cancelled`], then
///    [`Sampler::step`], then a check that the step returned the latent's shape
///    ([`Error::InputShape`] otherwise), then [`StepControl::report`];
/// 4. a check that the result is finite ([`Error::Contract`] otherwise).
///
/// When cancelled it returns [`Error::Cancelled`] and nothing else; a step that started runs
/// to its end.
pub fn drive<S: Sampler + ?Sized>(
    sampler: &S,
    denoiser: &dyn Denoiser,
    noise: Tensor<3>,
    rng: &mut dyn NoiseSource,
    control: &mut StepControl<'_>,
) -> Result<Tensor<3>> {
    sampler.validate()?;
    let guidance = sampler.guidance();
    let times = prepare(sampler, &guidance, &noise)?;
    let denoiser = Guided::new(denoiser, guidance);
    let total = times.len() - 1;
    let shape = noise.dims();
    let device = noise.device();
    let mut x = noise; // [B, C, L]
    // The previous step's start time and clean-latent estimate.
    let mut previous: Option<(f32, Tensor<3>)> = None;
    for (index, pair) in times.windows(2).enumerate() {
        let (t, t_next) = (pair[0], pair[1]);
        control.check_cancelled(index, total)?;
        let mut step = Step {
            index,
            total,
            t,
            t_next,
            denoiser: &denoiser,
            rng: &mut *rng,
            shape,
            device: &device,
            wants_denoised: control.has_progress(),
            denoised: None,
            previous: previous.as_ref().map(|(t, d)| (*t, d)),
        };
        let next = sampler.step(x, &mut step)?;
        let denoised = step.denoised.take();
        check_step_output(sampler.name(), index, &shape, &next)?;
        control.report(
            &StepInfo::new(index, total, t, t_next, &next).with_denoised(denoised.as_ref()),
        );
        previous = denoised.map(|d| (t, d));
        x = next;
    }
    check_finite(&format!("sampler `{}`", sampler.name()), &x)?;
    Ok(x)
}

/// The checks before any compute; returns the time grid.
fn prepare<S: Sampler + ?Sized>(
    sampler: &S,
    guidance: &Guidance,
    noise: &Tensor<3>,
) -> Result<Vec<f32>> {
    let times = sampler.schedule().times()?;
    guidance.validate()?;
    check_latent(noise)?;
    if guidance.is_active() && guidance.rescale_phi != 0.0 && noise.dims()[1] < 2 {
        return Err(Error::InvalidRequest(
            "CFG rescale needs at least two latent channels (it uses their spread)".into(),
        ));
    }
    Ok(times)
}

fn check_step_output(name: &str, index: usize, shape: &[usize; 3], x: &Tensor<3>) -> Result<()> {
    if x.dims() != *shape {
        return Err(Error::input_shape(
            format!("sampler `{name}`, result of step {index}"),
            format!("{shape:?} (the latent's shape)"),
            &x.dims(),
        ));
    }
    Ok(())
}

/// [`Error::Contract`] naming `what` unless every value of `latent` is finite.
pub fn check_finite(what: &str, latent: &Tensor<3>) -> Result<()> {
    let values = to_vec(latent.clone());
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::contract(
            what,
            format!(
                "the latent {:?} has a non-finite value ({}) at flat index {i}",
                latent.dims(),
                values[i]
            ),
        )),
    }
}
