//! Parity of the samplers with the golden fixtures `dmd_sampling` and `teacher_rf_cfg`.
//!
//! The sampler arithmetic is checked without the network: a [`ReplayDenoiser`] hands back the
//! velocities the reference recorded, and a `ReplayNoise` the re-noising draws. The `_with`
//! variants run the same comparison around any denoiser (the real MMDiT), recording what it
//! is fed and what it returns through a [`Recorder`], and then also compare its velocities.

use std::sync::{Mutex, MutexGuard};

use burn::tensor::{Device, Tensor};

use audiox_core::fixtures::{Check, Fixture};
use audiox_core::noise::{ReplayNoise, labels};
use audiox_core::tensor::{from_vec, to_vec};
use audiox_core::{Error, Result};

use crate::control::StepControl;
use crate::denoiser::Denoiser;
use crate::dmd::Dmd;
use crate::euler::Euler;
use crate::guidance::Guidance;
use crate::sampler::Sampler;
use crate::schedule::Schedule;

/// The recorded answers of a [`ReplayDenoiser`].
#[derive(Debug, Clone)]
enum Answers {
    Velocities(Vec<Tensor<3>>),
    Pairs(Vec<(Tensor<3>, Tensor<3>)>),
}

impl Answers {
    fn len(&self) -> usize {
        match self {
            Answers::Velocities(v) => v.len(),
            Answers::Pairs(p) => p.len(),
        }
    }
}

/// A denoiser that answers its calls, in order, with recorded velocities `[B, C, L]` (for
/// [`Denoiser::velocity`]) or recorded `(v_cond, v_uncond)` pairs (for
/// [`Denoiser::velocity_pair`]). Asking for more calls than recorded, or for the other kind, is
/// an error.
///
/// ```
/// use audiox_sampler::parity::ReplayDenoiser;
/// use audiox_sampler::{Dmd, Sampler, StepControl};
/// use audiox_core::noise::SeededNoise;
/// use burn::tensor::{Device, Tensor};
///
/// let device = Device::flex();
/// let v = Tensor::<3>::ones([1, 2, 3], &device);
/// let replay = ReplayDenoiser::velocities(vec![v]);
/// let noise = Tensor::<3>::zeros([1, 2, 3], &device);
/// // One step at t = 1: x0 = z - 1 * v.
/// let x0 = Dmd::new(1).sample(&replay, noise, &mut SeededNoise::new(0), &mut StepControl::new())?;
/// assert_eq!(x0.into_data().to_vec::<f32>().unwrap(), vec![-1.0; 6]);
/// replay.finish()?;
/// # Ok::<(), audiox_core::Error>(())
/// ```
#[derive(Debug)]
pub struct ReplayDenoiser {
    answers: Answers,
    served: Mutex<usize>,
}

impl ReplayDenoiser {
    /// Answers `velocity` calls with these velocities; `velocity_pair` says there is no
    /// unconditional branch.
    pub fn velocities(velocities: Vec<Tensor<3>>) -> Self {
        Self::from_answers(Answers::Velocities(velocities))
    }

    /// Answers `velocity_pair` calls with these `(v_cond, v_uncond)` pairs.
    pub fn pairs(pairs: Vec<(Tensor<3>, Tensor<3>)>) -> Self {
        Self::from_answers(Answers::Pairs(pairs))
    }

    fn from_answers(answers: Answers) -> Self {
        ReplayDenoiser {
            answers,
            served: Mutex::new(0),
        }
    }

    /// Calls answered so far.
    pub fn calls(&self) -> usize {
        *lock(&self.served)
    }

    /// Errors unless every recorded answer was used.
    pub fn finish(&self) -> Result<()> {
        let served = self.calls();
        if served != self.answers.len() {
            return Err(Error::InvalidRequest(format!(
                "replay denoiser: {served} of {} recorded answers used",
                self.answers.len()
            )));
        }
        Ok(())
    }

    /// The index of the next answer, counting it as served.
    fn next(&self, kind: &str) -> Result<usize> {
        let mut served = lock(&self.served);
        let index = *served;
        if index >= self.answers.len() {
            return Err(Error::InvalidRequest(format!(
                "replay denoiser: {kind} call {} but only {} answers recorded",
                index + 1,
                self.answers.len()
            )));
        }
        *served += 1;
        Ok(index)
    }
}

impl Denoiser for ReplayDenoiser {
    fn velocity(&self, _x: Tensor<3>, _t: Tensor<1>) -> Result<Tensor<3>> {
        match &self.answers {
            Answers::Velocities(v) => Ok(v[self.next("velocity")?].clone()),
            Answers::Pairs(_) => Err(Error::InvalidRequest(
                "replay denoiser: asked for a velocity, recorded guided pairs".into(),
            )),
        }
    }

    fn velocity_pair(
        &self,
        _x: Tensor<3>,
        _t: Tensor<1>,
    ) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        match &self.answers {
            // Single velocities: no unconditional branch.
            Answers::Velocities(_) => Ok(None),
            Answers::Pairs(p) => Ok(Some(p[self.next("velocity_pair")?].clone())),
        }
    }
}

/// One call seen by a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// The latent fed `[B, C, L]`.
    pub x: Tensor<3>,
    /// The times fed `[B]`.
    pub t: Tensor<1>,
    /// The velocity returned by a `velocity` call.
    pub velocity: Option<Tensor<3>>,
    /// The `(v_cond, v_uncond)` returned by a `velocity_pair` call.
    pub pair: Option<(Tensor<3>, Tensor<3>)>,
}

/// Wraps a denoiser and records every call (inputs and answers), for comparisons with the
/// reference's per-step intermediates.
pub struct Recorder<'a> {
    inner: &'a dyn Denoiser,
    calls: Mutex<Vec<RecordedCall>>,
}

impl std::fmt::Debug for Recorder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("calls", &lock(&self.calls).len())
            .finish_non_exhaustive()
    }
}

impl<'a> Recorder<'a> {
    /// Records the calls made to `inner`.
    pub fn new(inner: &'a dyn Denoiser) -> Self {
        Recorder {
            inner,
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.calls).clone()
    }
}

impl Denoiser for Recorder<'_> {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Tensor<3>> {
        let v = self.inner.velocity(x.clone(), t.clone())?;
        lock(&self.calls).push(RecordedCall {
            x,
            t,
            velocity: Some(v.clone()),
            pair: None,
        });
        Ok(v)
    }

    fn velocity_pair(&self, x: Tensor<3>, t: Tensor<1>) -> Result<Option<(Tensor<3>, Tensor<3>)>> {
        let pair = self.inner.velocity_pair(x.clone(), t.clone())?;
        if let Some(pair) = &pair {
            lock(&self.calls).push(RecordedCall {
                x,
                t,
                velocity: None,
                pair: Some(pair.clone()),
            });
        }
        Ok(pair)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere cannot leave these plain logs inconsistent.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `dmd_sampling`, sampler arithmetic only: the DMD loop fed the recorded velocities
/// (`mid.step_v`) and re-noising draws (`rng.step_noise`). Compares `mid.t_schedule`
/// (bitwise), `mid.step_z`, `mid.step_t` (bitwise), `mid.step_x0` and `out.latent`.
pub fn check_dmd_sampling(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let replay = ReplayDenoiser::velocities(step_tensors(fx, "mid.step_v", device)?);
    let checks = run_dmd(fx, device, &replay, false)?;
    replay.finish()?;
    Ok(checks)
}

/// `dmd_sampling` around `denoiser` (the real network, already holding the fixture's
/// conditioning): as [`check_dmd_sampling`], plus its velocities against `mid.step_v`. The
/// caller compares `mid.cross_attn_cond` and `out.audio`, which the sampler does not see.
pub fn check_dmd_sampling_with(
    fx: &Fixture,
    device: &Device,
    denoiser: &dyn Denoiser,
) -> Result<Vec<Check>> {
    run_dmd(fx, device, denoiser, true)
}

fn run_dmd(
    fx: &Fixture,
    device: &Device,
    denoiser: &dyn Denoiser,
    compare_velocities: bool,
) -> Result<Vec<Check>> {
    let steps = json_usize(fx, "steps")?;
    let guidance = Guidance::cfg(json_f32(fx, "cfg_scale", 1.0)?);
    let sampler = Dmd::new(steps).with_guidance(guidance);
    let noise = fixture_tensor(fx, "in.noise", device)?;
    let mut rng = ReplayNoise::new();
    for eps in step_tensors(fx, "rng.step_noise", device)? {
        rng = rng.with_normal(labels::STEP_NOISE, &eps.dims(), to_vec(eps));
    }

    let recorder = Recorder::new(denoiser);
    let mut x0s = Vec::new();
    let latent = {
        let mut control = StepControl::new().with_progress(|info| {
            x0s.extend(info.denoised.cloned());
        });
        sampler.sample(&recorder, noise, &mut rng, &mut control)?
    };
    rng.finish()?;
    let calls = recorder.calls();

    let mut checks = vec![check_schedule(fx, &Schedule::linear(steps))?];
    let xs: Vec<_> = calls.iter().map(|c| c.x.clone()).collect();
    checks.push(check_stacked(fx, "mid.step_z", &xs)?);
    checks.push(check_times(fx, "mid.step_t", &calls)?);
    if compare_velocities {
        let vs: Vec<_> = calls.iter().filter_map(|c| c.velocity.clone()).collect();
        checks.push(check_stacked(fx, "mid.step_v", &vs)?);
    }
    checks.push(check_stacked(fx, "mid.step_x0", &x0s)?);
    checks.push(check_one(fx, "out.latent", latent)?);
    Ok(checks)
}

/// `teacher_rf_cfg`, sampler arithmetic only: guided Euler with the JSON's `steps`,
/// `cfg_scale` and `scale_phi`, fed `(v_cond, v_uncond)` pairs. Step 0 gets the reference's
/// own `mid.step0_v_cond` / `mid.step0_v_uncond`, so the guided combination is checked
/// against `mid.step_v_cfg`; later steps get pairs built so that the guided velocity must
/// equal `mid.step_v_cfg`. Compares `mid.t_schedule` and `mid.step_t` (bitwise), `mid.step_x`,
/// `mid.step_v_cfg` and `out.latent`.
pub fn check_teacher_rf_cfg(fx: &Fixture, device: &Device) -> Result<Vec<Check>> {
    let guidance = teacher_guidance(fx)?;
    let guided = step_tensors(fx, "mid.step_v_cfg", device)?;
    let replay = if guidance.is_active() {
        let mut pairs = Vec::with_capacity(guided.len());
        for (k, v) in guided.into_iter().enumerate() {
            let pair = if k == 0 && fx.has("mid.step0_v_cond") && fx.has("mid.step0_v_uncond") {
                (
                    fixture_tensor(fx, "mid.step0_v_cond", device)?,
                    fixture_tensor(fx, "mid.step0_v_uncond", device)?,
                )
            } else {
                pair_guided_to(v, guidance.scale, k)?
            };
            pairs.push(pair);
        }
        ReplayDenoiser::pairs(pairs)
    } else {
        ReplayDenoiser::velocities(guided)
    };
    let checks = run_teacher(fx, device, &replay, false)?;
    replay.finish()?;
    Ok(checks)
}

/// `teacher_rf_cfg` around `denoiser` (the real network with an unconditional branch): as
/// [`check_teacher_rf_cfg`], plus its step-0 conditional and unconditional velocities against
/// `mid.step0_v_cond` / `mid.step0_v_uncond` (the fixture evaluates those separately, the
/// sampler as one batch).
pub fn check_teacher_rf_cfg_with(
    fx: &Fixture,
    device: &Device,
    denoiser: &dyn Denoiser,
) -> Result<Vec<Check>> {
    run_teacher(fx, device, denoiser, true)
}

fn teacher_guidance(fx: &Fixture) -> Result<Guidance> {
    Ok(
        Guidance::cfg(json_f32(fx, "cfg_scale", 1.0)?).with_rescale(json_f32(
            fx,
            "scale_phi",
            0.0,
        )?),
    )
}

fn run_teacher(
    fx: &Fixture,
    device: &Device,
    denoiser: &dyn Denoiser,
    compare_velocities: bool,
) -> Result<Vec<Check>> {
    let steps = json_usize(fx, "steps")?;
    let guidance = teacher_guidance(fx)?;
    let sampler = Euler::new(steps).with_guidance(guidance);
    let noise = fixture_tensor(fx, "in.noise", device)?;
    let recorder = Recorder::new(denoiser);
    // The Euler sampler draws nothing: an empty replay proves it.
    let mut rng = ReplayNoise::new();
    let latent = sampler.sample(&recorder, noise, &mut rng, &mut StepControl::new())?;
    let calls = recorder.calls();

    let mut checks = vec![check_schedule(fx, &Schedule::linear(steps))?];
    let xs: Vec<_> = calls.iter().map(|c| c.x.clone()).collect();
    checks.push(check_stacked(fx, "mid.step_x", &xs)?);
    checks.push(check_times(fx, "mid.step_t", &calls)?);
    let guided: Vec<_> = calls
        .iter()
        .filter_map(|c| match (&c.pair, &c.velocity) {
            (Some((cond, uncond)), _) => Some(guidance.combine(cond.clone(), uncond.clone())),
            (None, Some(v)) => Some(v.clone()),
            (None, None) => None,
        })
        .collect();
    checks.push(check_stacked(fx, "mid.step_v_cfg", &guided)?);
    if compare_velocities && let Some((cond, uncond)) = calls.first().and_then(|c| c.pair.clone()) {
        checks.push(check_one(fx, "mid.step0_v_cond", cond)?);
        checks.push(check_one(fx, "mid.step0_v_uncond", uncond)?);
    }
    checks.push(check_one(fx, "out.latent", latent)?);
    Ok(checks)
}

/// A pair whose guided combination at `scale` is `guided`: `v_u = guided - scale w`,
/// `v_c = v_u + w` for a fixed, step-dependent pattern `w` of O(1) values.
fn pair_guided_to(guided: Tensor<3>, scale: f32, step: usize) -> Result<(Tensor<3>, Tensor<3>)> {
    let dims = guided.dims();
    let n: usize = dims.iter().product();
    let pattern = (0..n)
        .map(|i| (0.37 * i as f32 + 1.3 * step as f32).sin())
        .collect();
    let w = from_vec(pattern, dims, &guided.device())?;
    let uncond = guided - w.clone().mul_scalar(scale);
    let cond = uncond.clone() + w;
    Ok((cond, uncond))
}

fn json_usize(fx: &Fixture, name: &str) -> Result<usize> {
    fx.field(name)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| fixture_error(fx, format!("`{name}` is not an unsigned integer")))
}

fn json_f32(fx: &Fixture, name: &str, default: f32) -> Result<f32> {
    match fx.meta().get(name) {
        None => Ok(default),
        Some(v) => v
            .as_f64()
            .map(|v| v as f32)
            .ok_or_else(|| fixture_error(fx, format!("`{name}` is not a number"))),
    }
}

fn fixture_error(fx: &Fixture, message: String) -> Error {
    Error::Fixture {
        path: format!("{}.json", fx.name()).into(),
        message,
    }
}

fn fixture_tensor(fx: &Fixture, name: &str, device: &Device) -> Result<Tensor<3>> {
    let t = fx.f32(name)?;
    audiox_core::tensor::from_dyn(t.values, &t.shape, device)
}

/// A stored `[S, B, C, L]` tensor as `S` tensors `[B, C, L]`.
fn step_tensors(fx: &Fixture, name: &str, device: &Device) -> Result<Vec<Tensor<3>>> {
    let t = fx.f32(name)?;
    let [_, b, c, l]: [usize; 4] =
        t.shape.as_slice().try_into().map_err(|_| {
            fixture_error(fx, format!("`{name}` is not [S, B, C, L]: {:?}", t.shape))
        })?;
    let size = b * c * l;
    if size == 0 {
        return Ok(Vec::new());
    }
    t.values
        .chunks(size)
        .map(|step| from_vec(step.to_vec(), [b, c, l], device))
        .collect()
}

fn check_schedule(fx: &Fixture, schedule: &Schedule) -> Result<Check> {
    let times = schedule.times()?;
    // The grid must match torch's bit for bit.
    fx.check_with("mid.t_schedule", &[times.len()], &times, 0.0, 0.0)
}

fn check_stacked(fx: &Fixture, name: &str, steps: &[Tensor<3>]) -> Result<Check> {
    let mut shape = vec![steps.len()];
    shape.extend(steps.first().map(|t| t.dims().to_vec()).unwrap_or_default());
    let values: Vec<f32> = steps.iter().flat_map(|t| to_vec(t.clone())).collect();
    fx.check(name, &shape, &values)
}

fn check_times(fx: &Fixture, name: &str, calls: &[RecordedCall]) -> Result<Check> {
    let batch = calls.first().map(|c| c.t.dims()[0]).unwrap_or(0);
    let values: Vec<f32> = calls.iter().flat_map(|c| to_vec(c.t.clone())).collect();
    // The times fed are schedule entries: exact.
    fx.check_with(name, &[calls.len(), batch], &values, 0.0, 0.0)
}

fn check_one(fx: &Fixture, name: &str, t: Tensor<3>) -> Result<Check> {
    fx.check(name, &t.dims(), &to_vec(t))
}
