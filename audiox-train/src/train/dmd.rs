//! The DMD student stage: a few-step student distilled from the rectified-flow teacher by
//! distribution matching (DMD), with a fake-score model trained online and a regression term
//! on cached teacher trajectories.
//!
//! **The student.** A copy of the teacher, trained to run the official student sampler
//! (`audiox_sampler::Dmd`): on the times `1 = t_0 > t_1 > ... > t_N = 0` of
//! `Dmd::new(student_steps)` it predicts `x0 = z - t_i v(z, t_i)` and re-noises the prediction
//! to `t_{i+1}` with fresh noise. Each generator update picks one step `k` of the `N`, rolls the
//! student without gradient from pure noise to that step's input `z_k`, then predicts
//! `x0 = z_k - t_k G(z_k, t_k)` with gradient: every step of the schedule is trained on the
//! inputs the student itself produces at inference.
//!
//! **The distribution-matching gradient.** The student's `x0` (detached) is noised to a time
//! `t ~ U(t_min, t_max)`, `x_t = (1 - t) x0 + t eps`, and both score models predict the clean
//! latent there: the frozen teacher ("real" score, with classifier-free guidance
//! `guidance_scale`) `real = x_t - t v_teacher` and the fake-score model `fake = x_t - t v_fake`.
//! The gradient on `x0` is `g = (fake - real) / mean|x0 - real|`, the mean taken per sample over
//! the latent (the DMD paper's normalisation, denominator clamped at `1e-8`), and the generator
//! loss is the stop-gradient surrogate `0.5 mean((x0 - sg(x0 - g))^2)`, whose gradient with
//! respect to `x0` is `g / n` (`n` elements): it moves the student's outputs along
//! `real - fake`, towards where the teacher puts mass and away from where the student already
//! does.
//!
//! **The fake-score model.** A second copy of the teacher, trained online with the
//! rectified-flow loss on the student's detached outputs (same time range), `fake_updates`
//! updates per generator update with its own optimiser. It tracks the student's output
//! distribution, so that `fake - real` is the score difference DMD follows.
//!
//! **The regression term.** `regression_pairs` pairs `(noise, caption, teacher output)` are
//! computed once (the teacher's deterministic Euler sampler with `teacher_steps` steps and
//! guidance `guidance_scale`, from the noise) and cached in the run folder
//! (`student/teacher_pairs.safetensors`). The student's first step from the same noise (its
//! input at `t_0 = 1` is the noise itself; later steps depend on fresh re-noise draws, which
//! the pairs do not fix) must match the teacher's result: latent MSE (LPIPS is not available
//! here), weight `regression_weight`, `regression_batch` pairs per step.
//!
//! **A guidance switch (optional, `student.guidance_switch`).** From its `from_step` on, the
//! teacher's score and the regression pairs use a second guidance; the pairs at that guidance
//! come from the same noise and captions and are cached beside the first
//! (`student/teacher_pairs_switched.safetensors`).
//!
//! **The critic (optional, `student.critic`).** A small convolutional discriminator trained
//! online to tell the student's outputs from the clean latents of the step's training clips,
//! whose non-saturating term the student adds to its loss (DMD2's adversarial term; see
//! [`super::critic`]). It draws nothing from the step's random stream, so a stage without it
//! computes exactly what it computed before the option existed.
//!
//! **Gradients go where they belong.** The student, the fake-score model and the frozen teacher
//! are separate modules with separate parameter tensors. The generator loss evaluates the
//! teacher and the fake model on copies whose parameters do not require gradients, on a
//! detached input, so its backward reaches only the student; the fake loss takes the student's
//! output detached, so its backward reaches only the fake model. Each has its own Adam
//! optimiser; the checkpoint holds both (`tests/dmd.rs` checks the routing and that a resumed
//! run equals an uninterrupted one bit for bit).
//!
//! **Determinism.** Everything random in step `s` (the step `k`, the noise, the re-noise draws,
//! the DMD times and noise, the regression pairs picked, the fake updates' draws) comes from a
//! stream seeded by `(run seed, stage, s)`; the batch's captions are training captions
//! `s x batch + j`; the cached pairs come from a stream of their own.
//!
//! The models are reached through the [`Denoiser`] trait (implemented here for the bare
//! [`Dit`] with its post-MAF context), and captions become contexts through [`Prompts`], so
//! the stage runs on whatever module holds the teacher (DiT + MAF + conditioners).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::{Module, ModuleMapper, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use audiox::sampler::{Dmd, Euler, Guidance, Sampler, StepControl};
use audiox_mmdit::Dit;

use super::checkpoint::{Checkpoints, Part, write_atomic};
use super::critic::{CriticState, RealLatents};
use super::error::{TrainError, TrainResult};
use super::flow::normals;
use super::run::{LoopSettings, PairFilter, RunDir, StageName, StudentStageConfig};
use super::stage::{MultiStage, StepRecord, optimizer};
use super::vae::parameters;
use crate::corpus::{Corpus, Scene};

/// The part names of the stage's checkpoints, in the order of [`MultiStage::init_parts`].
pub const PARTS: [&str; 2] = ["student", "fake_score"];

/// The file (in the stage folder) holding the cached teacher trajectories.
pub const PAIRS_FILE: &str = "teacher_pairs.safetensors";

/// The file name (in the stage folder) of the teacher pairs at the guidance of
/// `student.guidance_switch` ([`super::run::GuidanceSwitch`]).
pub const SWITCHED_PAIRS_FILE: &str = "teacher_pairs_switched.safetensors";

/// The tag of the step-halving term's random stream ([`StudentStageConfig::halving`]).
const HALVING_STREAM: u64 = 1;

/// The folder (under the stage's) of the step-halving term's frozen reference.
pub const HALVING_DIR: &str = "halving";

/// The part name of the step-halving term's frozen reference.
const HALVING_PART: &str = "reference";

/// Mixed into the run seed for the critic's initial weights.
const CRITIC_STREAM: u64 = 0xC81_71C0;

/// A rectified-flow velocity model as the DMD stage sees it: `v = eps - x0` at time `t`
/// (`1` = pure noise), with a conditional and an unconditional (null-condition) branch.
///
/// The teacher, the student and the fake-score model are all of this type; the stage copies
/// the teacher into the other two.
pub trait Denoiser: Module {
    /// The conditioning of a batch (whatever the module needs besides the latent and time).
    type Context: Clone;

    /// The conditional velocity `[B, C, L]` of `z_t` `[B, C, L]` at times `t` `[B]`.
    fn velocity(
        &self,
        z_t: Tensor<3>,
        t: Tensor<1>,
        context: &Self::Context,
    ) -> audiox_core::Result<Tensor<3>>;

    /// The velocity with the condition dropped (the null condition classifier-free guidance
    /// uses).
    fn unconditional_velocity(
        &self,
        z_t: Tensor<3>,
        t: Tensor<1>,
        context: &Self::Context,
    ) -> audiox_core::Result<Tensor<3>>;

    /// The latent `[C, L]` one batch item has.
    fn latent_shape(&self) -> [usize; 2];
}

/// The bare DiT with its post-MAF context `[B, Nctx, D]`; the null condition is the zero
/// context, as the reference's classifier-free guidance uses.
impl Denoiser for Dit {
    type Context = Tensor<3>;

    fn velocity(
        &self,
        z_t: Tensor<3>,
        t: Tensor<1>,
        context: &Tensor<3>,
    ) -> audiox_core::Result<Tensor<3>> {
        self.forward_with_context(z_t, t, context.clone())
    }

    fn unconditional_velocity(
        &self,
        z_t: Tensor<3>,
        t: Tensor<1>,
        context: &Tensor<3>,
    ) -> audiox_core::Result<Tensor<3>> {
        // upstream: the null condition of CFG is `zeros_like` of the post-MAF context.
        self.forward_with_context(z_t, t, context.zeros_like())
    }

    fn latent_shape(&self) -> [usize; 2] {
        [self.io_channels(), self.latent_length()]
    }
}

/// Turns captions into a batched context (row `j` for caption `j`) on `device`: the teacher's
/// text side.
pub trait Prompts<C> {
    /// The context of `captions`.
    fn context(&self, captions: &[String], device: &Device) -> TrainResult<C>;

    /// The context of the training clips `clips` (row `j`: clip `clips[j]`, captioned
    /// `captions[j]`), what the generator and fake-score updates condition on. By default the
    /// captions' context; an implementation that gives rows an audio prompt made from their
    /// clip overrides it (`super::teacher::TeacherPrompts::with_clip_prompts`).
    fn clip_context(&self, clips: &[u64], captions: &[String], device: &Device) -> TrainResult<C> {
        let _ = clips;
        self.context(captions, device)
    }
}

/// The guided velocity of `model`: `v_u + (v_c - v_u) x scale` (`scale = 1`: the conditional
/// velocity alone, one evaluation), as `audiox_sampler::Guidance` combines them.
pub fn guided_velocity<M: Denoiser>(
    model: &M,
    z_t: Tensor<3>,
    t: Tensor<1>,
    context: &M::Context,
    scale: f32,
) -> TrainResult<Tensor<3>> {
    let guidance = Guidance::cfg(scale);
    let v_cond = model.velocity(z_t.clone(), t.clone(), context)?;
    if !guidance.is_active() {
        return Ok(v_cond);
    }
    let v_uncond = model.unconditional_velocity(z_t, t, context)?;
    Ok(guidance.combine(v_cond, v_uncond))
}

/// The student's time grid: the times of `audiox_sampler::Dmd::new(steps)` (the official
/// student sampler's schedule).
pub fn student_times(steps: usize) -> TrainResult<Vec<f32>> {
    Ok(Dmd::new(steps).schedule().times()?)
}

/// A copy of `module` whose parameters are new tensors (same values, same ids and gradient
/// settings) on `device`: training it never touches the original's tensors.
pub fn fresh_copy<M: Module>(module: &M, device: &Device) -> M {
    struct Copy<'a>(&'a Device);
    impl ModuleMapper for Copy<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let device = self.0.clone();
            param.map(move |old| {
                // Without autodiff there is no gradient to require (and asking would panic).
                let require_grad = old.is_require_grad() && device.is_autodiff();
                Tensor::from_data(old.into_data(), &device).set_require_grad(require_grad)
            })
        }
    }
    module.clone().map(&mut Copy(device))
}

/// A copy of `module` that records no gradient (its parameters do not require one).
fn frozen<M: Module>(module: &M) -> M {
    module.clone().no_grad()
}

/// Uniform in (0, 1), 24 random bits.
fn unit(rng: &mut ChaCha8Rng) -> f32 {
    ((rng.next_u32() >> 8) as f32 + 0.5) / (1u32 << 24) as f32
}

fn normal_tensor(rng: &mut ChaCha8Rng, dims: [usize; 3], device: &Device) -> Tensor<3> {
    let values = normals(rng, dims.iter().product());
    Tensor::from_data(TensorData::new(values, dims), device)
}

fn times_tensor(t: f32, batch: usize, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![t; batch], [batch]), device)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

/// The distribution-matching gradient on `x0` from the two clean-latent predictions (all
/// `[B, C, L]`): `(fake_x0 - real_x0) / mean|x0 - real_x0|`, the mean per batch item over
/// the latent, clamped at `1e-8`.
pub fn dmd_gradient(x0: Tensor<3>, real_x0: Tensor<3>, fake_x0: Tensor<3>) -> Tensor<3> {
    let [b, c, l] = x0.dims();
    let scale = (x0 - real_x0.clone())
        .abs()
        .reshape([b, c * l])
        .mean_dim(1)
        .clamp_min(1e-8)
        .reshape([b, 1, 1]);
    (fake_x0 - real_x0) / scale
}

/// The generator's surrogate loss `0.5 mean((x0 - sg(x0 - grad))^2)` (shape `[1]`): its value
/// is `0.5 mean(grad^2)` and its gradient with respect to `x0` is `grad / n` (`n` elements of
/// `x0`); `grad` is treated as a constant.
pub fn dmd_surrogate(x0: Tensor<3>, grad: Tensor<3>) -> Tensor<1> {
    let target = (x0.clone().detach() - grad.detach()).detach();
    (x0 - target).powi_scalar(2).mean().mul_scalar(0.5)
}

/// The time range and guidance of the distribution-matching gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DmdNoise {
    /// Lowest time the student's output is noised to.
    pub t_min: f32,
    /// Highest time.
    pub t_max: f32,
    /// Guidance scale of the teacher's score.
    pub guidance_scale: f32,
}

impl DmdNoise {
    /// The settings of a stage configuration (its first guidance, `guidance_scale`).
    pub fn from_config(c: &StudentStageConfig) -> Self {
        DmdNoise {
            t_min: c.t_min,
            t_max: c.t_max,
            guidance_scale: c.guidance_scale,
        }
    }

    /// The settings of a stage configuration at step `step`: the guidance of
    /// [`StudentStageConfig::guidance_at`].
    pub fn at_step(c: &StudentStageConfig, step: u64) -> Self {
        DmdNoise {
            guidance_scale: c.guidance_at(step),
            ..DmdNoise::from_config(c)
        }
    }

    /// `batch` times uniform in `[t_min, t_max]` (draws `batch` values from `rng`).
    fn times(&self, rng: &mut ChaCha8Rng, batch: usize) -> Vec<f32> {
        (0..batch)
            .map(|_| self.t_min + (self.t_max - self.t_min) * unit(rng))
            .collect()
    }
}

/// The two score models of the distribution-matching gradient.
#[derive(Clone, Copy, Debug)]
pub struct Scores<'a, M> {
    /// The frozen teacher (the "real" score).
    pub teacher: &'a M,
    /// The fake-score model (tracks the student's distribution).
    pub fake: &'a M,
}

/// `x_t = (1 - t) x0 + t eps` for per-row times; returns `(x_t, t, eps)`.
fn noised(
    x0: Tensor<3>,
    times: Vec<f32>,
    rng: &mut ChaCha8Rng,
) -> (Tensor<3>, Tensor<1>, Tensor<3>) {
    let dims = x0.dims();
    let device = x0.device();
    let b = dims[0];
    let t = Tensor::<1>::from_data(TensorData::new(times, [b]), &device);
    let eps = normal_tensor(rng, dims, &device);
    let t3 = t.clone().reshape([b, 1, 1]);
    let x_t = x0 * (t3.clone().neg() + 1.0) + eps.clone() * t3;
    (x_t, t, eps)
}

/// The distribution-matching gradient at the student's output `x0` `[B, C, L]` (detached
/// here): draws `B` times in the range of `noise`, then the noise (in that order, from `rng`),
/// and compares the frozen teacher's guided clean-latent prediction with the fake model's (see
/// the module docs). Neither model records a gradient.
pub fn distribution_matching_gradient<M: Denoiser>(
    x0: Tensor<3>,
    scores: Scores<'_, M>,
    context: &M::Context,
    noise: &DmdNoise,
    rng: &mut ChaCha8Rng,
) -> TrainResult<Tensor<3>> {
    let x0 = x0.detach();
    let b = x0.dims()[0];
    let times = noise.times(rng, b);
    let (x_t, t, _) = noised(x0.clone(), times, rng);
    let t3 = t.clone().reshape([b, 1, 1]);
    let v_real = guided_velocity(
        &frozen(scores.teacher),
        x_t.clone(),
        t.clone(),
        context,
        noise.guidance_scale,
    )?;
    let v_fake = frozen(scores.fake).velocity(x_t.clone(), t, context)?;
    let real_x0 = (x_t.clone() - v_real * t3.clone()).detach();
    let fake_x0 = (x_t - v_fake * t3).detach();
    Ok(dmd_gradient(x0, real_x0, fake_x0).detach())
}

/// Rolls the student (without gradient) from `noise` at `times[0]` through steps
/// `0 .. k` of the DMD sampler and returns its input at step `k` (`z_k` at `times[k]`),
/// detached. Draws one noise tensor per step taken (the sampler's re-noise).
pub fn student_input<M: Denoiser>(
    student: &M,
    noise: Tensor<3>,
    context: &M::Context,
    times: &[f32],
    k: usize,
    rng: &mut ChaCha8Rng,
) -> TrainResult<Tensor<3>> {
    let student = frozen(student);
    let dims = noise.dims();
    let device = noise.device();
    let mut z = noise.detach();
    for i in 0..k {
        let (t, t_next) = (times[i], times[i + 1]);
        let v = student.velocity(z.clone(), times_tensor(t, dims[0], &device), context)?;
        let x0 = z - v.mul_scalar(t);
        let eps = normal_tensor(rng, dims, &device);
        z = (eps.mul_scalar(t_next) + x0.mul_scalar(1.0 - t_next)).detach();
    }
    Ok(z)
}

/// The noise that `z` holds at time `t` (`t > 0`) given the clean latent `x0`:
/// `(z - (1 - t) x0) / t`, so that re-noising `x0` with it at `t` gives back `z`, and at another
/// time `s` gives the rectified flow's straight (Euler) step from `z` to `s`.
pub fn implied_noise(z: Tensor<3>, x0: Tensor<3>, t: f32) -> Tensor<3> {
    (z - x0.mul_scalar(1.0 - t)).div_scalar(t)
}

/// The student's clean-latent prediction at step `k` from its input `z` (`x0 = z - t_k v`),
/// recording the gradient with respect to the student's parameters.
pub fn student_prediction<M: Denoiser>(
    student: &M,
    z: Tensor<3>,
    context: &M::Context,
    t: f32,
) -> TrainResult<Tensor<3>> {
    let b = z.dims()[0];
    let device = z.device();
    let v = student.velocity(z.clone(), times_tensor(t, b, &device), context)?;
    Ok(z - v.mul_scalar(t))
}

/// The generator's distribution-matching loss for the student input `z` at time `t`: the
/// student's prediction (with gradient), the distribution-matching gradient there, and the
/// surrogate. Returns `(loss, x0 detached)`.
pub fn generator_dmd_loss<M: Denoiser>(
    student: &M,
    scores: Scores<'_, M>,
    z: Tensor<3>,
    t: f32,
    context: &M::Context,
    noise: &DmdNoise,
    rng: &mut ChaCha8Rng,
) -> TrainResult<(Tensor<1>, Tensor<3>)> {
    let (loss, x0) = generator_dmd_terms(student, scores, z, t, context, noise, rng)?;
    Ok((loss, x0.detach()))
}

/// [`generator_dmd_loss`] with the student's prediction `x0` still recording its gradient (for
/// further terms on it, such as the critic's).
fn generator_dmd_terms<M: Denoiser>(
    student: &M,
    scores: Scores<'_, M>,
    z: Tensor<3>,
    t: f32,
    context: &M::Context,
    noise: &DmdNoise,
    rng: &mut ChaCha8Rng,
) -> TrainResult<(Tensor<1>, Tensor<3>)> {
    let x0 = student_prediction(student, z, context, t)?;
    let grad = distribution_matching_gradient(x0.clone(), scores, context, noise, rng)?;
    let loss = dmd_surrogate(x0.clone(), grad);
    Ok((loss, x0))
}

/// The fake-score model's rectified-flow loss on the student's output `x0` (detached here):
/// times uniform in the range of `noise`, then the noise, from `rng`; mean squared error between
/// the predicted and the target velocity `eps - x0`.
pub fn fake_score_loss<M: Denoiser>(
    fake: &M,
    x0: Tensor<3>,
    context: &M::Context,
    noise: &DmdNoise,
    rng: &mut ChaCha8Rng,
) -> TrainResult<Tensor<1>> {
    let x0 = x0.detach();
    let b = x0.dims()[0];
    let times = noise.times(rng, b);
    let (x_t, t, eps) = noised(x0.clone(), times, rng);
    let v = fake.velocity(x_t, t, context)?;
    Ok((v - (eps - x0)).powi_scalar(2).mean())
}

/// The cached teacher trajectories of the regression term: per pair a caption, the noise the
/// teacher started from and its multi-step result (`[C, L]` each).
#[derive(Clone, Debug, PartialEq)]
pub struct TeacherPairs {
    /// The caption of each pair.
    pub captions: Vec<String>,
    /// The latent shape `[C, L]` of one pair.
    pub shape: [usize; 2],
    /// The starting noise, `[N, C, L]` row-major.
    pub noise: Vec<f32>,
    /// The teacher's result from that noise, `[N, C, L]` row-major.
    pub teacher_x0: Vec<f32>,
    /// What the pairs were computed with (checked when the cache is read).
    pub meta: PairsMeta,
}

/// What a cache of teacher pairs was computed with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsMeta {
    /// The run seed (the noise stream).
    pub seed: u64,
    /// Euler steps of the teacher.
    pub teacher_steps: usize,
    /// The teacher's guidance scale.
    pub guidance_scale: f32,
    /// SHA-256 of the teacher's parameter values (visiting order, f32 little-endian).
    pub teacher_sha256: String,
    /// With `student.regression_filter`: the filter and the judge that kept the pairs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterMeta>,
}

/// How a cache of filtered teacher pairs was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterMeta {
    /// The filter's settings.
    pub settings: PairFilter,
    /// The judge's [`PairJudge::id`].
    pub judge: String,
    /// Candidates the teacher ran on before the pairs were complete (or all of them).
    pub tried: usize,
}

/// Decides whether a teacher result does what its scene asks: the judge of
/// `student.regression_filter` (the pipeline's decodes with the run's VAE and detects events
/// with the metric's detector: `super::judge::DetectorJudge`).
pub trait PairJudge: Send + Sync {
    /// What the judge is (its weights' hash and settings), recorded with the cache: a cache
    /// kept by another judge is refused.
    fn id(&self) -> String;
    /// Whether the latent `[C, L]` (row-major `values`) made for `scene` passes.
    fn accepts(&self, scene: &Scene, values: &[f32], shape: [usize; 2]) -> TrainResult<bool>;
}

/// SHA-256 of every float parameter of `module` (visiting order, f32 little-endian).
pub fn weights_sha256<M: Module>(module: &M) -> String {
    let mut h = Sha256::new();
    for (_, shape, values) in parameters(module) {
        for d in shape {
            h.update((d as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The sampler interface over a [`Denoiser`] with a fixed context.
struct WithContext<'a, M: Denoiser> {
    model: &'a M,
    context: &'a M::Context,
}

impl<M: Denoiser> audiox::sampler::Denoiser for WithContext<'_, M> {
    fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> audiox_core::Result<Tensor<3>> {
        self.model.velocity(x, t, self.context)
    }

    fn velocity_pair(
        &self,
        x: Tensor<3>,
        t: Tensor<1>,
    ) -> audiox_core::Result<Option<(Tensor<3>, Tensor<3>)>> {
        let cond = self.model.velocity(x.clone(), t.clone(), self.context)?;
        let uncond = self.model.unconditional_velocity(x, t, self.context)?;
        Ok(Some((cond, uncond)))
    }
}

/// The teacher's deterministic result from `noise` `[B, C, L]`: `audiox_sampler::Euler` with
/// `steps` linear steps from 1 and guidance `guidance_scale` (the reference teacher sampler).
pub fn teacher_sample<M: Denoiser>(
    teacher: &M,
    noise: Tensor<3>,
    context: &M::Context,
    steps: usize,
    guidance_scale: f32,
) -> TrainResult<Tensor<3>> {
    let teacher = frozen(teacher);
    let euler = Euler::new(steps).with_guidance(Guidance::cfg(guidance_scale));
    let denoiser = WithContext {
        model: &teacher,
        context,
    };
    // Euler draws no noise; the source is never used.
    let mut unused = audiox::SeededNoise::new(0);
    Ok(euler
        .sample(
            &denoiser,
            noise.detach(),
            &mut unused,
            &mut StepControl::new(),
        )?
        .detach())
}

const PAIRS_CHUNK: usize = 8;

impl TeacherPairs {
    /// Computes `captions.len()` pairs: noise from `rng` (pair by pair), the teacher's Euler
    /// result from it (in chunks of up to 8).
    pub fn compute<M: Denoiser, P: Prompts<M::Context>>(
        teacher: &M,
        prompts: &P,
        captions: Vec<String>,
        meta: PairsMeta,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> TrainResult<Self> {
        let [c, l] = teacher.latent_shape();
        let per = c * l;
        let noise = normals(rng, captions.len() * per);
        let mut teacher_x0 = Vec::with_capacity(noise.len());
        for (i, chunk) in captions.chunks(PAIRS_CHUNK).enumerate() {
            let start = i * PAIRS_CHUNK * per;
            let n = chunk.len();
            let z = Tensor::<3>::from_data(
                TensorData::new(noise[start..start + n * per].to_vec(), [n, c, l]),
                device,
            );
            let context = prompts.context(chunk, device)?;
            let x0 = teacher_sample(
                teacher,
                z,
                &context,
                meta.teacher_steps,
                meta.guidance_scale,
            )?;
            teacher_x0.extend(to_vec(x0));
        }
        Ok(TeacherPairs {
            captions,
            shape: [c, l],
            noise,
            teacher_x0,
            meta,
        })
    }

    /// Pairs kept by `judge`: the teacher's Euler result for each of `scenes` in turn (noise
    /// from `rng`, scene by scene, in chunks of up to 8), kept where the judge accepts it,
    /// until `keep` are kept or the scenes run out. `meta.filter.tried` is set to the number
    /// of scenes tried. An error when the judge accepts none.
    #[allow(clippy::too_many_arguments)]
    pub fn compute_filtered<M: Denoiser, P: Prompts<M::Context>>(
        teacher: &M,
        prompts: &P,
        scenes: &[Scene],
        keep: usize,
        judge: &dyn PairJudge,
        mut meta: PairsMeta,
        rng: &mut ChaCha8Rng,
        device: &Device,
    ) -> TrainResult<Self> {
        let [c, l] = teacher.latent_shape();
        let per = c * l;
        let mut out = TeacherPairs {
            captions: Vec::new(),
            shape: [c, l],
            noise: Vec::new(),
            teacher_x0: Vec::new(),
            meta: meta.clone(),
        };
        let mut tried = 0;
        for chunk in scenes.chunks(PAIRS_CHUNK) {
            if out.len() >= keep {
                break;
            }
            let n = chunk.len();
            let noise = normals(rng, n * per);
            let captions: Vec<String> = chunk.iter().map(Scene::caption).collect();
            let z = Tensor::<3>::from_data(TensorData::new(noise.clone(), [n, c, l]), device);
            let context = prompts.context(&captions, device)?;
            let x0 = to_vec(teacher_sample(
                teacher,
                z,
                &context,
                meta.teacher_steps,
                meta.guidance_scale,
            )?);
            for (i, scene) in chunk.iter().enumerate() {
                if out.len() >= keep {
                    break;
                }
                tried += 1;
                let row = i * per..(i + 1) * per;
                if judge.accepts(scene, &x0[row.clone()], [c, l])? {
                    out.captions.push(captions[i].clone());
                    out.noise.extend_from_slice(&noise[row.clone()]);
                    out.teacher_x0.extend_from_slice(&x0[row]);
                }
            }
        }
        if out.is_empty() {
            return Err(TrainError::config(
                "student.regression_filter",
                format!("the judge accepted none of the teacher's results for {tried} captions"),
            ));
        }
        if let Some(filter) = meta.filter.as_mut() {
            filter.tried = tried;
        }
        out.meta = meta;
        Ok(out)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.captions.len()
    }

    /// Whether there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.captions.is_empty()
    }

    /// The noise and teacher results of pairs `indices`, `[n, C, L]` each, on `device`.
    pub fn batch(&self, indices: &[usize], device: &Device) -> (Tensor<3>, Tensor<3>) {
        let [c, l] = self.shape;
        let per = c * l;
        let gather = |v: &[f32]| {
            let values: Vec<f32> = indices
                .iter()
                .flat_map(|&i| v[i * per..(i + 1) * per].iter().copied())
                .collect();
            Tensor::<3>::from_data(TensorData::new(values, [indices.len(), c, l]), device)
        };
        (gather(&self.noise), gather(&self.teacher_x0))
    }

    /// Writes the pairs to `path` (safetensors: `noise` and `teacher_x0` `[N, C, L]` f32; the
    /// captions and [`PairsMeta`] as JSON metadata), atomically.
    pub fn save(&self, path: &Path) -> TrainResult<()> {
        let [c, l] = self.shape;
        let shape = vec![self.len(), c, l];
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (noise, x0) = (bytes(&self.noise), bytes(&self.teacher_x0));
        let mut views = Vec::with_capacity(2);
        for (name, b) in [("noise", &noise), ("teacher_x0", &x0)] {
            let v = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                shape.clone(),
                b.as_slice(),
            )
            .map_err(|e| TrainError::checkpoint(path, format!("`{name}`: {e}")))?;
            views.push((name.to_string(), v));
        }
        let json = |v: serde_json::Result<String>| {
            v.map_err(|e| TrainError::checkpoint(path, e.to_string()))
        };
        let metadata = std::collections::HashMap::from([
            (
                "captions".to_string(),
                json(serde_json::to_string(&self.captions))?,
            ),
            ("meta".to_string(), json(serde_json::to_string(&self.meta))?),
        ]);
        let data = safetensors::serialize(views, Some(metadata))
            .map_err(|e| TrainError::checkpoint(path, e.to_string()))?;
        write_atomic(path, &data)
    }

    /// Reads pairs written by [`TeacherPairs::save`]; anything unreadable or inconsistent is a
    /// [`TrainError::Checkpoint`] naming the file.
    pub fn load(path: &Path) -> TrainResult<Self> {
        let bad = |reason: String| TrainError::checkpoint(path, reason);
        let data = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&data).map_err(|e| {
            bad(format!(
                "unreadable ({e}); delete it to recompute the pairs"
            ))
        })?;
        let text = |key: &str| {
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .ok_or_else(|| bad(format!("no `{key}` metadata")))
        };
        let captions: Vec<String> =
            serde_json::from_str(&text("captions")?).map_err(|e| bad(format!("captions: {e}")))?;
        let meta: PairsMeta =
            serde_json::from_str(&text("meta")?).map_err(|e| bad(format!("meta: {e}")))?;
        let tensors = safetensors::SafeTensors::deserialize(&data).map_err(|e| {
            bad(format!(
                "unreadable ({e}); delete it to recompute the pairs"
            ))
        })?;
        let read = |name: &str| -> TrainResult<(Vec<usize>, Vec<f32>)> {
            let t = tensors
                .tensor(name)
                .map_err(|e| bad(format!("`{name}`: {e}")))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("`{name}` is {:?}, not F32", t.dtype())));
            }
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok((t.shape().to_vec(), values))
        };
        let (noise_shape, noise) = read("noise")?;
        let (x0_shape, teacher_x0) = read("teacher_x0")?;
        if noise_shape.len() != 3 || noise_shape != x0_shape || noise_shape[0] != captions.len() {
            return Err(bad(format!(
                "shapes {noise_shape:?} and {x0_shape:?} for {} captions",
                captions.len()
            )));
        }
        Ok(TeacherPairs {
            captions,
            shape: [noise_shape[1], noise_shape[2]],
            noise,
            teacher_x0,
            meta,
        })
    }
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// The DMD student stage of a run (see the module docs), generic over the teacher's module
/// type `M` and its text side `P`.
pub struct StudentStage<M: Denoiser, P> {
    seed: u64,
    settings: StudentStageConfig,
    corpus: Corpus,
    teacher: M,
    /// The teacher as given (its gradient settings say which parameters are trained).
    template: M,
    prompts: P,
    times: Vec<f32>,
    pairs: Option<TeacherPairs>,
    /// With `guidance_switch`: the pairs at its guidance (for its steps).
    switched_pairs: Option<TeacherPairs>,
    /// With `distinct_captions`: the training indices of the stage's rows, in order.
    distinct: Option<Vec<u64>>,
    /// With a critic: where the real clips' latents come from.
    real: Option<Arc<dyn RealLatents>>,
    /// With a critic: the critic between steps (restored by [`MultiStage::resumed`], created
    /// at the first step where it was not).
    critic: Mutex<Option<CriticState>>,
    /// With `halving.frozen_target`: the student as it was at the term's `from_step` (or the
    /// weights of `halving.reference`).
    halving_reference: Mutex<Option<M>>,
    /// With `halving.reference`: that file's weights, taken as the frozen target at
    /// `from_step` ([`StudentStage::with_halving_reference`]).
    halving_source: Option<M>,
    /// The stage's folder (the critic's checkpoints live under it).
    stage_dir: PathBuf,
    device: Device,
}

impl<M: Denoiser, P: Prompts<M::Context>> StudentStage<M, P> {
    /// The stage of `run` with `settings`, distilling `teacher` with captions turned into
    /// contexts by `prompts`. The student and the fake-score model are copies of `teacher` as
    /// given: the parameters that require gradients there are the ones trained (a part frozen
    /// in the teacher, e.g. a text encoder, stays frozen); the stage keeps a frozen copy as the
    /// real score. The device must be an autodiff device.
    ///
    /// With a regression term, loads the cached teacher pairs from the stage folder or
    /// computes and caches them (`regression_pairs` Euler runs of the teacher: the first start
    /// of a run pays for it once). A cache computed with another seed, teacher or sampler
    /// setting is refused, naming the file.
    pub fn new(
        run: &RunDir,
        settings: StudentStageConfig,
        teacher: M,
        prompts: P,
        device: &Device,
    ) -> TrainResult<Self> {
        settings.check(StageName::Student.as_str())?;
        if !device.is_autodiff() {
            return Err(TrainError::config(
                "student",
                "training needs an autodiff device (e.g. `Device::flex().autodiff()`)",
            ));
        }
        let [c, l] = teacher.latent_shape();
        if c == 0 || l == 0 {
            return Err(TrainError::config(
                "student",
                format!("the teacher's latent shape [{c}, {l}] is empty"),
            ));
        }
        let times = student_times(settings.student_steps)?;
        let corpus = Corpus::new((&run.config().corpus).into())?;
        let distinct = if settings.distinct_captions {
            let rows = usize::try_from(settings.optim.steps)
                .unwrap_or(usize::MAX)
                .saturating_mul(settings.optim.batch);
            let indices = corpus.distinct_training_indices(rows);
            if indices.len() < rows {
                return Err(TrainError::config(
                    "student.distinct_captions",
                    format!(
                        "the grammar has {} distinct training captions; {} steps of batch {} need {rows}",
                        indices.len(),
                        settings.optim.steps,
                        settings.optim.batch
                    ),
                ));
            }
            Some(indices)
        } else {
            None
        };
        let mut stage = StudentStage {
            seed: run.config().seed,
            corpus,
            distinct,
            settings,
            teacher: frozen(&teacher),
            template: teacher,
            prompts,
            times,
            pairs: None,
            switched_pairs: None,
            real: None,
            critic: Mutex::new(None),
            halving_reference: Mutex::new(None),
            halving_source: None,
            stage_dir: run.stage_dir(StageName::Student),
            device: device.clone(),
        };
        let (first, switched) = stage.pairs_needed()?;
        if first && stage.settings.regression_filter.is_none() {
            let path = stage.pairs_path(run);
            let guidance = stage.settings.guidance_scale;
            stage.pairs = Some(stage.load_or_compute_pairs(&path, None, guidance)?);
        }
        if let (true, Some(switch)) = (switched, &stage.settings.guidance_switch) {
            let path = run.stage_dir(StageName::Student).join(SWITCHED_PAIRS_FILE);
            let guidance = switch.guidance_scale;
            stage.switched_pairs = Some(stage.load_or_compute_pairs(&path, None, guidance)?);
        }
        Ok(stage)
    }

    /// The stage with `judge` deciding which teacher results become regression pairs
    /// (`student.regression_filter`): loads the cached filtered pairs or computes and caches
    /// them (up to `candidates` teacher runs, each judged). Without a filter the judge is not
    /// used. A stage with a filter and no judge stops at its first step with a configuration
    /// error; a cache kept by another judge or filter is refused, naming the file.
    pub fn with_pair_judge(mut self, run: &RunDir, judge: &dyn PairJudge) -> TrainResult<Self> {
        if self.settings.regression_filter.is_some() && self.pairs_needed()?.0 {
            let path = self.pairs_path(run);
            let guidance = self.settings.guidance_scale;
            self.pairs = Some(self.load_or_compute_pairs(&path, Some(judge), guidance)?);
        }
        Ok(self)
    }

    /// The stage with `real` as the source of the real clips' latents that the critic
    /// (`student.critic`) compares the student's outputs with. A stage with a critic and no
    /// such source stops at its first step with a configuration error.
    pub fn with_real_latents(mut self, real: Arc<dyn RealLatents>) -> Self {
        self.real = Some(real);
        self
    }

    /// The stage with `reference` as the step-halving term's frozen target (`halving.reference`:
    /// the weights read from that file, e.g. by
    /// [`load_exported_student`](super::teacher::load_exported_student)). It is taken at
    /// `from_step` and kept in `student/halving/` like the student's own copy; a stage whose
    /// settings name a reference and that was given none stops at `from_step` with a
    /// configuration error.
    pub fn with_halving_reference(mut self, reference: &M) -> Self {
        self.halving_source = Some(frozen(reference));
        self
    }

    /// Where the cached teacher pairs of `run` live.
    pub fn pairs_path(&self, run: &RunDir) -> PathBuf {
        run.stage_dir(StageName::Student).join(PAIRS_FILE)
    }

    /// The cached teacher pairs at the stage's first guidance (present when the regression
    /// term has steps left at that guidance: a stage resumed at or past `regression_until`, or
    /// past `guidance_switch.from_step`, neither loads nor computes them).
    pub fn pairs(&self) -> Option<&TeacherPairs> {
        self.pairs.as_ref()
    }

    /// The cached teacher pairs at `guidance_switch`'s guidance (present when the stage has a
    /// switch and the regression term has steps left after it).
    pub fn switched_pairs(&self) -> Option<&TeacherPairs> {
        self.switched_pairs.as_ref()
    }

    /// Which pairs the steps left need: `(first guidance, switched guidance)`. The steps left
    /// start at the newest checkpoint (where the stage resumes); the regression term is on
    /// before `regression_until`, the first guidance's steps end at `guidance_switch.from_step`.
    /// Pairs no step left uses are neither loaded nor computed (each set costs
    /// `regression_pairs` guided teacher runs).
    fn pairs_needed(&self) -> TrainResult<(bool, bool)> {
        let s = &self.settings;
        if s.regression_weight <= 0.0 {
            return Ok((false, false));
        }
        let resume = Checkpoints::new(&self.stage_dir)
            .steps()?
            .last()
            .copied()
            .unwrap_or(0);
        let until = s.regression_until.unwrap_or(u64::MAX);
        Ok(match &s.guidance_switch {
            None => (resume < until, false),
            Some(switch) => (
                resume < until.min(switch.from_step),
                resume.max(switch.from_step) < until,
            ),
        })
    }

    /// The student's time grid (`Dmd::new(student_steps)`).
    pub fn times(&self) -> &[f32] {
        &self.times
    }

    /// The stage's settings.
    pub fn config(&self) -> &StudentStageConfig {
        &self.settings
    }

    /// The frozen teacher.
    pub fn teacher(&self) -> &M {
        &self.teacher
    }

    fn pairs_meta(&self, judge: Option<&dyn PairJudge>, guidance_scale: f32) -> PairsMeta {
        PairsMeta {
            seed: self.seed,
            teacher_steps: self.settings.teacher_steps,
            guidance_scale,
            teacher_sha256: weights_sha256(&self.teacher),
            filter: self
                .settings
                .regression_filter
                .clone()
                .zip(judge)
                .map(|(settings, judge)| FilterMeta {
                    settings,
                    judge: judge.id(),
                    tried: 0,
                }),
        }
    }

    /// The scenes the pairs are made for: the first `regression_pairs` training scenes, or
    /// with a filter the first `candidates` distinct training captions' scenes.
    fn pair_scenes(&self) -> TrainResult<Vec<Scene>> {
        match &self.settings.regression_filter {
            None => Ok((0..self.settings.regression_pairs as u64)
                .map(|i| self.corpus.training_scene(i))
                .collect()),
            Some(filter) => {
                let indices = self.corpus.distinct_training_indices(filter.candidates);
                if indices.len() < filter.candidates {
                    return Err(TrainError::config(
                        "student.regression_filter.candidates",
                        format!(
                            "the grammar has {} distinct training captions, fewer than {}",
                            indices.len(),
                            filter.candidates
                        ),
                    ));
                }
                Ok(indices
                    .into_iter()
                    .map(|i| self.corpus.training_scene(i))
                    .collect())
            }
        }
    }

    /// The pairs at guidance `guidance_scale`: read from `path`, or computed (noise from the
    /// stage's pair stream, the same for every guidance) and written there.
    fn load_or_compute_pairs(
        &self,
        path: &Path,
        judge: Option<&dyn PairJudge>,
        guidance_scale: f32,
    ) -> TrainResult<TeacherPairs> {
        let mut meta = self.pairs_meta(judge, guidance_scale);
        let n = self.settings.regression_pairs;
        let scenes = self.pair_scenes()?;
        let captions: Vec<String> = scenes.iter().map(Scene::caption).collect();
        if path.exists() {
            let pairs = TeacherPairs::load(path)?;
            // How many candidates the filter tried is what the cache says.
            if let (Some(want), Some(have)) = (meta.filter.as_mut(), pairs.meta.filter.as_ref()) {
                want.tried = have.tried;
            }
            let captions_match = match judge {
                None => pairs.captions == captions,
                // Filtered pairs: at most `n`, in the candidates' order.
                Some(_) => {
                    let mut candidates = captions.iter();
                    pairs.len() <= n
                        && pairs
                            .captions
                            .iter()
                            .all(|c| candidates.any(|candidate| candidate == c))
                }
            };
            let mismatch = if pairs.meta != meta {
                Some(format!(
                    "computed with {:?}, this run needs {:?}",
                    pairs.meta, meta
                ))
            } else if !captions_match {
                Some(format!(
                    "holds {} pairs for other captions, this run needs {n}",
                    pairs.len()
                ))
            } else if pairs.shape != self.teacher.latent_shape() {
                Some(format!(
                    "latent {:?}, the teacher's is {:?}",
                    pairs.shape,
                    self.teacher.latent_shape()
                ))
            } else {
                None
            };
            return match mismatch {
                None => Ok(pairs),
                Some(reason) => Err(TrainError::checkpoint(
                    path,
                    format!("{reason}; delete it to recompute the pairs for this run"),
                )),
            };
        }
        let mut rng = self.rng(u64::MAX);
        let pairs = match judge {
            None => TeacherPairs::compute(
                &self.teacher,
                &self.prompts,
                captions,
                meta,
                &mut rng,
                &self.device,
            )?,
            Some(judge) => TeacherPairs::compute_filtered(
                &self.teacher,
                &self.prompts,
                &scenes,
                n,
                judge,
                meta,
                &mut rng,
                &self.device,
            )?,
        };
        pairs.save(path)?;
        Ok(pairs)
    }

    /// The random stream `tag` of step `step` (tag 0: the step's own stream).
    fn rng_tagged(&self, step: u64, tag: u64) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..16].copy_from_slice(&StageName::Student.stream().to_le_bytes());
        seed[16..24].copy_from_slice(&step.to_le_bytes());
        seed[24..32].copy_from_slice(&tag.to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// The random stream of step `step` (`u64::MAX`: the teacher pairs).
    fn rng(&self, step: u64) -> ChaCha8Rng {
        self.rng_tagged(step, 0)
    }

    /// The training clips of step `step`: `step x batch + j`, or with `distinct_captions` the
    /// `step x batch + j`-th clip whose caption is new. An error for a step past the stage's
    /// last with `distinct_captions` (the table holds the stage's steps).
    pub fn clips(&self, step: u64) -> TrainResult<Vec<u64>> {
        let b = self.settings.optim.batch as u64;
        let rows = (0..b).map(|j| step.saturating_mul(b).saturating_add(j));
        match &self.distinct {
            None => Ok(rows.collect()),
            Some(indices) => rows
                .map(|row| {
                    usize::try_from(row)
                        .ok()
                        .and_then(|row| indices.get(row).copied())
                        .ok_or_else(|| {
                            TrainError::config(
                                "student.distinct_captions",
                                format!(
                                    "step {step} is past the stage's {} steps",
                                    self.settings.optim.steps
                                ),
                            )
                        })
                })
                .collect(),
        }
    }

    /// The captions of step `step`: those of its training clips ([`StudentStage::clips`]).
    pub fn captions(&self, step: u64) -> TrainResult<Vec<String>> {
        Ok(self
            .clips(step)?
            .into_iter()
            .map(|i| self.corpus.training_scene(i).caption())
            .collect())
    }

    /// The regression term's mean squared error of `student` over every cached pair of the
    /// stage's first guidance ([`StudentStage::pairs`]; no gradient), or `None` without them
    /// (no regression term, or a stage resumed past `regression_until` or past
    /// `guidance_switch.from_step`).
    pub fn regression_mse(&self, student: &M) -> TrainResult<Option<f64>> {
        let Some(pairs) = &self.pairs else {
            return Ok(None);
        };
        let student = frozen(student);
        let mut sum = 0.0;
        let indices: Vec<usize> = (0..pairs.len()).collect();
        for chunk in indices.chunks(PAIRS_CHUNK) {
            let loss = self.regression_loss(&student, pairs, chunk)?;
            sum += scalar(loss) * chunk.len() as f64;
        }
        Ok(Some(sum / pairs.len() as f64))
    }

    fn regression_loss(
        &self,
        student: &M,
        pairs: &TeacherPairs,
        indices: &[usize],
    ) -> TrainResult<Tensor<1>> {
        let (noise, target) = pairs.batch(indices, &self.device);
        let captions: Vec<String> = indices.iter().map(|&i| pairs.captions[i].clone()).collect();
        let context = self.prompts.context(&captions, &self.device)?;
        let x0 = student_prediction(student, noise, &context, self.times[0])?;
        Ok((x0 - target).powi_scalar(2).mean())
    }

    /// One student sample's clean latent at a random step (no gradient): `k`, the noise and the
    /// roll-out's draws from `rng`.
    fn sample_x0(
        &self,
        student: &M,
        context: &M::Context,
        rng: &mut ChaCha8Rng,
    ) -> TrainResult<Tensor<3>> {
        let (k, z) = self.random_input(student, context, rng)?;
        Ok(student_prediction(&frozen(student), z, context, self.times[k])?.detach())
    }

    /// A fresh critic for a stage that has none at `step` (weights from the run seed and
    /// `step`).
    fn fresh_critic(&self, step: u64) -> TrainResult<Option<CriticState>> {
        let Some(config) = &self.settings.critic else {
            return Ok(None);
        };
        let [channels, _] = self.teacher.latent_shape();
        let seed = self.seed ^ CRITIC_STREAM.wrapping_mul(step.wrapping_add(1));
        Ok(Some(CriticState::fresh(
            config,
            channels,
            seed,
            &self.settings.optim,
            &self.device,
        )))
    }

    /// The number of events the caption of each training clip of `clips` asks for (what the
    /// conditional critic reads).
    fn event_counts(&self, clips: &[u64]) -> Vec<usize> {
        clips
            .iter()
            .map(|&i| self.corpus.training_scene(i).expected_events().len())
            .collect()
    }

    fn halving_guard(&self) -> TrainResult<std::sync::MutexGuard<'_, Option<M>>> {
        self.halving_reference
            .lock()
            .map_err(|_| TrainError::config("student.halving", "the reference's lock was poisoned"))
    }

    /// Where the frozen reference of `halving.frozen_target` is kept (one checkpoint, of the
    /// term's `from_step`).
    pub fn halving_checkpoints(&self) -> Checkpoints {
        Checkpoints::new(&self.stage_dir.join(HALVING_DIR))
    }

    fn critic_guard(&self) -> TrainResult<std::sync::MutexGuard<'_, Option<CriticState>>> {
        self.critic
            .lock()
            .map_err(|_| TrainError::config("student.critic", "the critic's lock was poisoned"))
    }

    /// The critic for step `step`: the one held (restored by [`MultiStage::resumed`]), else a
    /// fresh one (for a caller that steps the stage without `train_multi_stage`); `None`
    /// inside when the stage has no critic.
    fn critic_at(&self, step: u64) -> TrainResult<std::sync::MutexGuard<'_, Option<CriticState>>> {
        let mut guard = self.critic_guard()?;
        if guard.is_none() {
            *guard = self.fresh_critic(step)?;
        }
        Ok(guard)
    }

    /// The student's adversarial term on `x0_grad` (its output, with gradient), weighted, when
    /// the stage has a critic and `step` is at or past its `from_step` (logged unweighted in
    /// `terms` as `adversarial`). No random draws.
    fn critic_terms(
        &self,
        step: u64,
        clips: &[u64],
        x0_grad: &Tensor<3>,
        terms: &mut BTreeMap<String, f64>,
    ) -> TrainResult<Option<Tensor<1>>> {
        let Some(config) = &self.settings.critic else {
            return Ok(None);
        };
        if self.real.is_none() {
            return Err(TrainError::config(
                "student.critic",
                "the critic needs the real clips' latents (StudentStage::with_real_latents)",
            ));
        }
        let guard = self.critic_at(step)?;
        let Some(state) = guard.as_ref() else {
            return Ok(None);
        };
        if step < config.from_step || config.weight == 0.0 {
            return Ok(None);
        }
        let term = state
            .model
            .generator_loss(x0_grad.clone(), &self.event_counts(clips))?;
        terms.insert("adversarial".to_string(), scalar(term.clone()));
        Ok(Some(term.mul_scalar(config.weight)))
    }

    /// The critic's update of step `step` on the real latents of `clips` against `x0`
    /// (detached), or on its replay rows with these added
    /// ([`super::critic::CriticConfig::replay`]), at `lr x lr_ratio`; logs its loss,
    /// accuracies and rows in `terms`.
    fn update_critic(
        &self,
        step: u64,
        clips: &[u64],
        x0: Tensor<3>,
        lr: f64,
        terms: &mut BTreeMap<String, f64>,
    ) -> TrainResult<()> {
        let (Some(config), Some(real_source)) = (&self.settings.critic, &self.real) else {
            return Ok(());
        };
        let mut guard = self.critic_at(step)?;
        let Some(state) = guard.as_mut() else {
            return Ok(());
        };
        // The rows it trains on: this step's, or the replay rows with this step's added.
        let (clips, x0) = if config.replay > 0 {
            state.replay.push(clips, x0, config.replay);
            state.replay.batch(&self.device)
        } else {
            (clips.to_vec(), x0)
        };
        let real = real_source.real_latents(&clips, &self.device)?;
        if real.dims() != x0.dims() {
            return Err(TrainError::config(
                "student.critic",
                format!(
                    "the real clips' latents are {:?}, the student's outputs {:?}",
                    real.dims(),
                    x0.dims()
                ),
            ));
        }
        // Taken only now: an error above leaves the critic as it was.
        let Some(CriticState {
            model,
            mut optim,
            replay,
        }) = guard.take()
        else {
            return Ok(());
        };
        let (loss, real_right, fake_right) = model.loss(real, x0, &self.event_counts(&clips))?;
        terms.insert("critic".to_string(), scalar(loss.clone()));
        terms.insert("critic_real_right".to_string(), real_right);
        terms.insert("critic_fake_right".to_string(), fake_right);
        terms.insert("critic_rows".to_string(), clips.len() as f64);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = optim.step(lr * config.lr_ratio, model, grads);
        *guard = Some(CriticState {
            model,
            optim,
            replay,
        });
        Ok(())
    }

    /// The step-halving target for the student's input `z` at step `k` (no gradient): a
    /// frozen copy's prediction at `times[k]`, re-noised to the time halfway to the next
    /// (`times[k + 1]`, 0 after the last) and predicted there. Its noise comes from a stream
    /// of its own for step `step`; with `halving.implied_noise` it is the noise `z` holds
    /// ([`implied_noise`]), and no noise is drawn.
    fn halved_step(
        &self,
        student: &M,
        z: Tensor<3>,
        k: usize,
        context: &M::Context,
        step: u64,
    ) -> TrainResult<Tensor<3>> {
        let copy = frozen(student);
        let t = self.times[k];
        let t_next = self.times.get(k + 1).copied().unwrap_or(0.0);
        let t_half = 0.5 * (t + t_next);
        let z = z.detach();
        let x0 = student_prediction(&copy, z.clone(), context, t)?.detach();
        let implied = self
            .settings
            .halving
            .as_ref()
            .is_some_and(|h| h.implied_noise);
        let eps = if implied {
            implied_noise(z, x0.clone(), t)
        } else {
            let mut rng = self.rng_tagged(step, HALVING_STREAM);
            normal_tensor(&mut rng, x0.dims(), &self.device)
        };
        let z_half = eps.mul_scalar(t_half) + x0.mul_scalar(1.0 - t_half);
        Ok(student_prediction(&copy, z_half, context, t_half)?.detach())
    }

    /// The frozen target taken at `from_step`: the weights of `halving.reference` where the
    /// settings name one, else a copy of the student.
    fn halving_start(&self, student: &M) -> TrainResult<M> {
        let named = self
            .settings
            .halving
            .as_ref()
            .and_then(|h| h.reference.as_ref());
        match (named, &self.halving_source) {
            (None, _) => Ok(frozen(student)),
            (Some(_), Some(source)) => Ok(frozen(source)),
            (Some(path), None) => Err(TrainError::config(
                "student.halving.reference",
                format!(
                    "{}: the stage was not given the file's weights \
                     (StudentStage::with_halving_reference)",
                    path.display()
                ),
            )),
        }
    }

    /// Restores the frozen reference of `halving.frozen_target` for a stage resumed at `step`:
    /// from `student/halving/` once the term has started; an error where it has started and
    /// the reference is not there (it cannot be made again).
    fn resume_halving_reference(&self, step: u64, device: &Device) -> TrainResult<()> {
        let Some(h) = self.settings.halving.as_ref().filter(|h| h.frozen_target) else {
            return Ok(());
        };
        let checkpoints = self.halving_checkpoints();
        checkpoints.remove_partial()?;
        if step <= h.from_step {
            // Taken again at `from_step`: a copy kept by an earlier attempt that got past it
            // (and then lost its later checkpoints) is dropped, not mixed with this one.
            let dir = self.stage_dir.join(HALVING_DIR);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            }
            *self.halving_guard()? = None;
            return Ok(());
        }
        if !checkpoints.steps()?.contains(&h.from_step) {
            return Err(TrainError::checkpoint(
                checkpoints.path(h.from_step),
                format!(
                    "the stage is at step {step}, past the step-halving term's from_step {}, \
                     but the student of that step (its frozen target) was not kept",
                    h.from_step
                ),
            ));
        }
        let part = Part {
            name: HALVING_PART.to_string(),
            model: fresh_copy(&self.template, device),
            optim: optimizer(&self.settings.optim),
        };
        let mut loaded = checkpoints.load_parts(h.from_step, vec![part])?;
        let reference = loaded.pop().map(|p| frozen(&p.model));
        *self.halving_guard()? = reference;
        Ok(())
    }

    /// A random step `k` and the student's input there.
    fn random_input(
        &self,
        student: &M,
        context: &M::Context,
        rng: &mut ChaCha8Rng,
    ) -> TrainResult<(usize, Tensor<3>)> {
        let steps = self.times.len() - 1;
        let k = (rng.next_u32() as usize) % steps;
        let [c, l] = self.teacher.latent_shape();
        let noise = normal_tensor(rng, [self.settings.optim.batch, c, l], &self.device);
        let z = student_input(student, noise, context, &self.times, k, rng)?;
        Ok((k, z))
    }
}

impl<M: Denoiser, P: Prompts<M::Context>> MultiStage for StudentStage<M, P> {
    type Model = M;

    fn name(&self) -> StageName {
        StageName::Student
    }

    fn settings(&self) -> &LoopSettings {
        &self.settings.optim
    }

    fn init_parts(&self, device: &Device) -> TrainResult<Vec<Part<M>>> {
        // Copies of the teacher as given: its parameters that require gradients are trained.
        Ok(PARTS
            .iter()
            .map(|name| Part {
                name: name.to_string(),
                model: fresh_copy(&self.template, device),
                optim: optimizer(&self.settings.optim),
            })
            .collect())
    }

    fn step(
        &self,
        parts: &mut [Part<M>],
        step: u64,
        lr: f64,
        device: &Device,
    ) -> TrainResult<StepRecord> {
        let [student, fake] = parts else {
            return Err(TrainError::config(
                "student",
                format!("expected the parts {PARTS:?}, got {}", parts.len()),
            ));
        };
        let s = &self.settings;
        let regression_on = s.regression_until.is_none_or(|until| step < until);
        let switched = s
            .guidance_switch
            .as_ref()
            .is_some_and(|g| step >= g.from_step);
        let pairs = if switched {
            self.switched_pairs.as_ref()
        } else {
            self.pairs.as_ref()
        };
        if s.regression_weight > 0.0 && regression_on && pairs.is_none() {
            return Err(TrainError::config(
                "student.regression_filter",
                "the filtered regression pairs need a judge (`StudentStage::with_pair_judge`)",
            ));
        }
        let noise = DmdNoise::at_step(s, step);
        let mut rng = self.rng(step);
        let clips = self.clips(step)?;
        let context = self
            .prompts
            .clip_context(&clips, &self.captions(step)?, device)?;

        // Generator update: one random step of the schedule, DMD + regression (+ the
        // critic's adversarial term).
        let (k, z) = self.random_input(&student.model, &context, &mut rng)?;
        // The step-halving target (its own random stream: a stage without the term draws
        // exactly what it drew before).
        let halved = match &s.halving {
            Some(h) if h.weight > 0.0 && step >= h.from_step => {
                let target = if h.frozen_target {
                    let mut guard = self.halving_guard()?;
                    let reference = match guard.take() {
                        Some(reference) => reference,
                        None => self.halving_start(&student.model)?,
                    };
                    let target = self.halved_step(&reference, z.clone(), k, &context, step);
                    *guard = Some(reference);
                    target?
                } else {
                    self.halved_step(&student.model, z.clone(), k, &context, step)?
                };
                Some((h.weight, target))
            }
            _ => None,
        };
        let (dmd, x0_grad) = generator_dmd_terms(
            &student.model,
            Scores {
                teacher: &self.teacher,
                fake: &fake.model,
            },
            z,
            self.times[k],
            &context,
            &noise,
            &mut rng,
        )?;
        let x0 = x0_grad.clone().detach();
        let mut terms = BTreeMap::from([
            ("dmd".to_string(), scalar(dmd.clone())),
            ("student_step".to_string(), k as f64),
        ]);
        let mut loss = dmd;
        if let Some(adversarial) = self.critic_terms(step, &clips, &x0_grad, &mut terms)? {
            loss = loss + adversarial;
        }
        if let Some((weight, target)) = halved {
            let halving = (x0_grad.clone() - target).powf_scalar(2.0).mean();
            terms.insert("halving".to_string(), scalar(halving.clone()));
            loss = loss + halving.mul_scalar(weight);
        }
        drop(x0_grad);
        if let Some(pairs) = pairs.filter(|_| regression_on) {
            let indices: Vec<usize> = (0..s.regression_batch)
                .map(|_| (rng.next_u32() as usize) % pairs.len())
                .collect();
            let reg = self.regression_loss(&student.model, pairs, &indices)?;
            terms.insert("regression".to_string(), scalar(reg.clone()));
            loss = loss + reg.mul_scalar(s.regression_weight);
        }
        let total = scalar(loss.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &student.model);
        student.model = student.optim.step(lr, student.model.clone(), grads);

        // Fake-score updates on the student's outputs: the generator pass's (taken before its
        // update), then fresh samples of the updated student.
        let mut fake_sum = 0.0;
        for u in 0..s.fake_updates {
            let x0 = if u == 0 {
                x0.clone()
            } else {
                self.sample_x0(&student.model, &context, &mut rng)?
            };
            let fake_loss = fake_score_loss(&fake.model, x0, &context, &noise, &mut rng)?;
            fake_sum += scalar(fake_loss.clone());
            let grads = GradientsParams::from_grads(fake_loss.backward(), &fake.model);
            fake.model = fake
                .optim
                .step(lr * s.fake_lr_ratio, fake.model.clone(), grads);
        }
        terms.insert("fake_flow".to_string(), fake_sum / s.fake_updates as f64);
        self.update_critic(step, &clips, x0, lr, &mut terms)?;
        Ok(StepRecord { loss: total, terms })
    }

    fn resumed(&self, step: u64, device: &Device) -> TrainResult<()> {
        self.resume_halving_reference(step, device)?;
        let Some(fresh) = self.fresh_critic(step)? else {
            return Ok(());
        };
        let state = match CriticState::load(&self.stage_dir, step, fresh)? {
            Some(loaded) => Some(loaded),
            None => self.fresh_critic(step)?,
        };
        *self.critic_guard()? = state;
        Ok(())
    }

    fn checkpointing(&self, step: u64, keep: usize) -> TrainResult<()> {
        if let (Some(h), Some(reference)) = (&self.settings.halving, self.halving_guard()?.as_ref())
        {
            let checkpoints = self.halving_checkpoints();
            if !checkpoints.steps()?.contains(&h.from_step) {
                let part = Part {
                    name: HALVING_PART.to_string(),
                    model: reference.clone(),
                    optim: optimizer(&self.settings.optim),
                };
                checkpoints.save_parts(&[part], h.from_step, 1)?;
            }
        }
        if let Some(state) = self.critic_guard()?.as_ref() {
            state.save(&self.stage_dir, step, keep)?;
        }
        Ok(())
    }
}
