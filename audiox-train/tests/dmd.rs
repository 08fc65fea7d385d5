//! The DMD student stage on the test model's DiT: the surrogate's gradient is the DMD gradient,
//! gradients reach only the model they belong to, the gradient vanishes when the fake score is
//! the teacher, the student runs the inference sampler's schedule, a short run reduces the
//! regression loss, and a resumed run equals an uninterrupted one bit for bit.

use std::path::Path;

use audiox::sampler::{Dmd, Sampler, StepControl};
use audiox_core::noise::{ReplayNoise, labels};
use audiox_mmdit::Dit;
use audiox_train::train::checkpoint::{Checkpoints, Part};
use audiox_train::train::critic::{
    CriticConfig, REPLAY_FILE, RealLatents, ReplayRows, critic_checkpoints,
};
use audiox_train::train::dmd::{
    Denoiser, DmdNoise, HALVING_DIR, PAIRS_FILE, PairJudge, Prompts, SWITCHED_PAIRS_FILE, Scores,
    TeacherPairs, distribution_matching_gradient, dmd_gradient, dmd_surrogate, fake_score_loss,
    fresh_copy, generator_dmd_loss, implied_noise, student_input, student_prediction,
    student_times, teacher_sample,
};
use audiox_train::train::export::{official_tensors_of, write_safetensors};
use audiox_train::train::flow::normals;
use audiox_train::train::init::random_init;
use audiox_train::train::run::{GuidanceSwitch, PairFilter, StepHalving};
use audiox_train::train::teacher::load_exported_student;
use audiox_train::train::vae::parameters;
use audiox_train::train::{
    LossLog, MultiStage, RunConfig, RunDir, StageName, Stop, StudentStage, StudentStageConfig,
    TrainError, TrainResult, train_multi_stage,
};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn one_thread() {
    // Bit-exact comparisons need a fixed reduction order (see tests/trainer.rs).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
}

fn device() -> Device {
    Device::flex().autodiff()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn tensor3(values: Vec<f32>, dims: [usize; 3], device: &Device) -> Tensor<3> {
    Tensor::from_data(TensorData::new(values, dims), device)
}

/// The test model's DiT (sizes from the tiny fixture's config), randomly initialised.
fn teacher(seed: u64) -> Dit {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tiny/bundle/config.json"
    );
    let config = audiox::ModelConfig::from_file(path).unwrap();
    random_init(config.dit().clone().init(&device()).unwrap(), seed)
}

/// A stand-in text side: each caption's context is a fixed function of its text.
struct HashedPrompts {
    shape: [usize; 2],
}

impl HashedPrompts {
    fn for_dit(dit: &Dit) -> Self {
        HashedPrompts {
            shape: dit.context_shape(),
        }
    }
}

impl Prompts<Tensor<3>> for HashedPrompts {
    fn context(&self, captions: &[String], device: &Device) -> TrainResult<Tensor<3>> {
        let [n, d] = self.shape;
        let mut out = Vec::with_capacity(captions.len() * n * d);
        for c in captions {
            let hash = c.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
            });
            out.extend(normals(&mut ChaCha8Rng::seed_from_u64(hash), n * d));
        }
        Ok(tensor3(out, [captions.len(), n, d], device))
    }
}

fn context_for(dit: &Dit, batch: usize, device: &Device) -> Tensor<3> {
    let captions: Vec<String> = (0..batch).map(|i| format!("caption {i}")).collect();
    HashedPrompts::for_dit(dit)
        .context(&captions, device)
        .unwrap()
}

fn latent(dit: &Dit, batch: usize, seed: u64, device: &Device) -> Tensor<3> {
    let [c, l] = dit.latent_shape();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tensor3(normals(&mut rng, batch * c * l), [batch, c, l], device)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

#[test]
fn the_surrogate_gradient_is_the_dmd_gradient() {
    one_thread();
    let device = device();
    let dims = [3, 4, 5];
    let (b, per) = (dims[0], dims[1] * dims[2]);
    let n = b * per;
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (x0v, realv, fakev) = (
        normals(&mut rng, n),
        normals(&mut rng, n),
        normals(&mut rng, n),
    );
    let x0 = tensor3(x0v.clone(), dims, &device).require_grad();
    let real = tensor3(realv.clone(), dims, &device);
    let fake = tensor3(fakev.clone(), dims, &device);
    let grad = dmd_gradient(x0.clone(), real, fake);
    let loss = dmd_surrogate(x0.clone(), grad);
    let loss_value = loss.clone().into_scalar::<f32>() as f64;
    let grads = loss.backward();
    let got = values(x0.grad(&grads).expect("x0 has a gradient"));

    // The closed form, computed independently: g = (fake - real) / mean|x0 - real| per row;
    // the surrogate's gradient is g / n and its value 0.5 mean(g^2).
    let mut half_mean_sq = 0.0f64;
    for row in 0..b {
        let r = row * per..(row + 1) * per;
        let scale = r
            .clone()
            .map(|i| (x0v[i] as f64 - realv[i] as f64).abs())
            .sum::<f64>()
            / per as f64;
        for i in r {
            let g = (fakev[i] as f64 - realv[i] as f64) / scale;
            half_mean_sq += 0.5 * g * g / n as f64;
            let want = g / n as f64;
            assert!(
                (got[i] as f64 - want).abs() <= 1e-5 * want.abs().max(1e-3),
                "element {i}: autodiff {} vs closed form {want}",
                got[i]
            );
        }
    }
    assert!(
        (loss_value - half_mean_sq).abs() <= 1e-4 * half_mean_sq,
        "{loss_value} vs {half_mean_sq}"
    );
}

fn count_grads(grads: &mut burn::tensor::Gradients, module: &Dit) -> usize {
    GradientsParams::from_module(grads, module).len()
}

#[test]
fn each_loss_reaches_only_its_own_model() {
    one_thread();
    let device = device();
    let teacher = teacher(3);
    let student = fresh_copy(&teacher, &device);
    let fake = fresh_copy(&teacher, &device);
    let n_params = parameters(&teacher).len();
    let context = context_for(&teacher, 2, &device);
    let noise = DmdNoise {
        t_min: 0.02,
        t_max: 0.98,
        guidance_scale: 3.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);

    // The generator loss: gradients for the student only.
    let z = latent(&teacher, 2, 1, &device);
    let scores = Scores {
        teacher: &teacher,
        fake: &fake,
    };
    let (loss, x0) =
        generator_dmd_loss(&student, scores, z, 0.75, &context, &noise, &mut rng).unwrap();
    let mut grads = loss.backward();
    assert_eq!(
        count_grads(&mut grads, &fake),
        0,
        "the fake model got a gradient"
    );
    assert_eq!(
        count_grads(&mut grads, &teacher),
        0,
        "the teacher got a gradient"
    );
    let mut grads_for_fake = GradientsParams::from_module(&mut grads, &fake);
    let student_grads = GradientsParams::from_module(&mut grads, &student);
    assert!(
        student_grads.len() > n_params / 2,
        "{} of {n_params} student parameters got a gradient",
        student_grads.len()
    );
    // An optimiser step with what the generator's backward holds for the fake model leaves it
    // unchanged, while the student's moves.
    let before = parameters(&fake);
    let fake_after =
        AdamConfig::new()
            .init()
            .step(1e-2, fake.clone(), std::mem::take(&mut grads_for_fake));
    assert_eq!(parameters(&fake_after), before);
    let student_after = AdamConfig::new()
        .init()
        .step(1e-2, student.clone(), student_grads);
    assert_ne!(parameters(&student_after), parameters(&student));

    // The fake loss, even on a student output that still carries its graph: gradients for the
    // fake model only.
    let x0_tracked =
        student_prediction(&student, latent(&teacher, 2, 2, &device), &context, 0.5).unwrap();
    assert!(!x0.is_require_grad());
    let fake_loss = fake_score_loss(&fake, x0_tracked, &context, &noise, &mut rng).unwrap();
    let mut grads = fake_loss.backward();
    assert_eq!(
        count_grads(&mut grads, &student),
        0,
        "the student got a gradient"
    );
    assert_eq!(
        count_grads(&mut grads, &teacher),
        0,
        "the teacher got a gradient"
    );
    let mut grads_for_student = GradientsParams::from_module(&mut grads, &student);
    let fake_grads = GradientsParams::from_module(&mut grads, &fake);
    assert!(fake_grads.len() > n_params / 2);
    let before = parameters(&student);
    let student_after = AdamConfig::new().init().step(
        1e-2,
        student.clone(),
        std::mem::take(&mut grads_for_student),
    );
    assert_eq!(parameters(&student_after), before);
}

#[test]
fn the_gradient_vanishes_when_the_fake_score_is_the_teacher() {
    one_thread();
    let device = device();
    let teacher = teacher(4);
    let fake = fresh_copy(&teacher, &device);
    let context = context_for(&teacher, 2, &device);
    let x0 = latent(&teacher, 2, 7, &device);
    let grad = |fake: &Dit, scale: f32| {
        let noise = DmdNoise {
            t_min: 0.02,
            t_max: 0.98,
            guidance_scale: scale,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        values(
            distribution_matching_gradient(
                x0.clone(),
                Scores {
                    teacher: &teacher,
                    fake,
                },
                &context,
                &noise,
                &mut rng,
            )
            .unwrap(),
        )
    };
    let same = grad(&fake, 1.0);
    assert!(
        same.iter().all(|&g| g == 0.0),
        "max |g| = {}",
        max_abs(&same)
    );

    // The test can fail: guidance moves the real score away from the fake one, and so does a
    // fake model that has learnt something.
    assert!(max_abs(&grad(&fake, 4.0)) > 1e-3);
    let noise = DmdNoise {
        t_min: 0.02,
        t_max: 0.98,
        guidance_scale: 1.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let loss = fake_score_loss(&fake, x0.clone(), &context, &noise, &mut rng).unwrap();
    let grads = GradientsParams::from_grads(loss.backward(), &fake);
    let moved = AdamConfig::new().init().step(1e-2, fake, grads);
    assert!(max_abs(&grad(&moved, 1.0)) > 1e-3);
}

#[test]
fn the_student_runs_the_inference_samplers_schedule() {
    one_thread();
    let device = device();
    let student = teacher(6);
    let times = student_times(Dmd::DEFAULT_STEPS).unwrap();
    assert_eq!(times, Dmd::default().schedule().times().unwrap());
    let last = times.len() - 2;
    let context = context_for(&student, 1, &device);
    let noise = latent(&student, 1, 3, &device);
    let dims = noise.dims();

    // The training roll-out to the last step, then the prediction there ...
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let z = student_input(&student, noise.clone(), &context, &times, last, &mut rng).unwrap();
    let ours = values(student_prediction(&student, z, &context, times[last]).unwrap());

    // ... is what the inference sampler returns with the same re-noise draws.
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let mut replay = ReplayNoise::new();
    for _ in 0..last {
        replay = replay.with_normal(
            labels::STEP_NOISE,
            &dims,
            normals(&mut rng, dims.iter().product()),
        );
    }
    struct Fixed<'a>(&'a Dit, &'a Tensor<3>);
    impl audiox::sampler::Denoiser for Fixed<'_> {
        fn velocity(&self, x: Tensor<3>, t: Tensor<1>) -> audiox::Result<Tensor<3>> {
            self.0.velocity(x, t, self.1)
        }
    }
    let reference = Dmd::default()
        .sample(
            &Fixed(&student, &context),
            noise,
            &mut replay,
            &mut StepControl::new(),
        )
        .unwrap();
    replay.finish().unwrap();
    let reference = values(reference);
    for (a, b) in ours.iter().zip(&reference) {
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
    }
}

/// A tiny student stage: the demo run's corpus, the tiny DiT as the teacher.
fn tiny_settings() -> StudentStageConfig {
    let mut s = StudentStageConfig::demo();
    // The recipe's own rows and step-halving term are tested apart.
    s.distinct_captions = false;
    s.halving = None;
    s.guidance_switch = None;
    s.optim.steps = 4;
    s.optim.batch = 2;
    s.optim.lr = 1e-3;
    s.optim.warmup = 0;
    s.optim.checkpoint_every = 2;
    s.optim.keep_checkpoints = 2;
    s.guidance_scale = 2.0;
    s.fake_updates = 2;
    s.regression_weight = 1.0;
    s.regression_pairs = 3;
    s.regression_batch = 2;
    s.teacher_steps = 4;
    s
}

fn tiny_run() -> RunConfig {
    let mut run = RunConfig::demo();
    run.seed = 5;
    run
}

type Trained = (Vec<Dit>, u64, u64);

fn train(
    dir: &Path,
    settings: &StudentStageConfig,
    stop_after: Option<u64>,
) -> TrainResult<Trained> {
    train_on(dir, settings, stop_after, false)
}

/// [`train`], with the stand-in real latents for a critic where `real` says.
fn train_on(
    dir: &Path,
    settings: &StudentStageConfig,
    stop_after: Option<u64>,
    real: bool,
) -> TrainResult<Trained> {
    train_given(dir, settings, stop_after, real, None)
}

/// [`train_on`], the stage given `reference` as its step-halving reference where there is one.
fn train_given(
    dir: &Path,
    settings: &StudentStageConfig,
    stop_after: Option<u64>,
    real: bool,
    reference: Option<&Dit>,
) -> TrainResult<Trained> {
    let device = device();
    let run = RunDir::open(dir, tiny_run())?;
    let teacher = teacher(8);
    let prompts = HashedPrompts::for_dit(&teacher);
    let shape = teacher.latent_shape();
    let mut stage = StudentStage::new(&run, settings.clone(), teacher, prompts, &device)?;
    if real {
        stage = stage.with_real_latents(std::sync::Arc::new(SineLatents { shape }));
    }
    if let Some(reference) = reference {
        stage = stage.with_halving_reference(reference);
    }
    let stop = Stop {
        after_steps: stop_after,
        deadline: None,
    };
    let out = train_multi_stage(&stage, &run, &device, stop, &mut |_| {})?;
    Ok((
        out.model.into_iter().map(|p| p.model).collect(),
        out.step,
        out.resumed_from,
    ))
}

#[test]
fn a_resumed_student_run_equals_an_uninterrupted_one() {
    one_thread();
    let settings = tiny_settings();
    let steps = settings.optim.steps;
    let half = steps / 2;
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));

    let (whole, step, from) = train(&a_dir, &settings, None).unwrap();
    assert_eq!((step, from), (steps, 0));
    let (_, step, from) = train(&b_dir, &settings, Some(half)).unwrap();
    assert_eq!((step, from), (half, 0));
    // The second call reads the cached teacher pairs instead of computing them.
    let (resumed, step, from) = train(&b_dir, &settings, None).unwrap();
    assert_eq!((step, from), (steps, half));

    // A crash after step `half + 1`, before its checkpoint: the resumed run redoes the step.
    let c_dir = tmp.path().join("c");
    train(&c_dir, &settings, Some(half + 1)).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&c_dir, half + 1)).unwrap();
    let (crashed, step, from) = train(&c_dir, &settings, None).unwrap();
    assert_eq!((step, from), (steps, half));

    let initial = parameters(&teacher(8));
    for (part, ((a, b), c)) in ["student", "fake_score"]
        .iter()
        .zip(whole.iter().zip(&resumed).zip(&crashed))
    {
        let (pa, pb, pc) = (parameters(a), parameters(b), parameters(c));
        assert_eq!(pa.len(), pb.len());
        let mut changed = 0;
        for ((((name, _, x), (_, _, y)), (_, _, z)), (_, _, init)) in
            pa.iter().zip(&pb).zip(&pc).zip(&initial)
        {
            assert_eq!(x, y, "{part}: parameter {name} differs after the resume");
            assert_eq!(x, z, "{part}: parameter {name} differs after the crash");
            changed += usize::from(x != init);
        }
        assert!(
            changed > pa.len() / 2,
            "{part}: training moved only {changed} of {} parameters",
            pa.len()
        );
    }
    assert_ne!(parameters(&whole[0]), parameters(&whole[1]));

    let log =
        |d: &Path| LossLog::read(&d.join(StageName::Student.as_str()).join("loss.jsonl")).unwrap();
    let (la, lb) = (log(&a_dir), log(&b_dir));
    assert_eq!(
        la.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    assert_eq!(
        la.iter()
            .map(|r| (r.loss, r.terms.clone()))
            .collect::<Vec<_>>(),
        lb.iter()
            .map(|r| (r.loss, r.terms.clone()))
            .collect::<Vec<_>>()
    );
    for r in &la {
        for term in ["dmd", "regression", "fake_flow", "student_step"] {
            assert!(r.terms.contains_key(term), "step {}: no `{term}`", r.step);
        }
    }

    // The checkpoint holds both parts' weights and optimiser states; a damaged file is an
    // error naming it.
    let ckpt = checkpoint_dir(&b_dir, steps);
    for file in [
        "student.model.bpk",
        "student.optim.bpk",
        "fake_score.model.bpk",
        "fake_score.optim.bpk",
    ] {
        let path = ckpt.join(file);
        let pristine = std::fs::read(&path).unwrap();
        let mut bytes = pristine.clone();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        match train(&b_dir, &settings, None) {
            Err(TrainError::Checkpoint { path: p, reason }) => {
                assert_eq!(p, path, "{reason}");
                assert!(reason.contains("corrupt"), "{reason}");
            }
            other => panic!("{file}: expected a checkpoint error, got {:?}", other.err()),
        }
        std::fs::write(&path, &pristine).unwrap();
    }
}

fn checkpoint_dir(root: &Path, step: u64) -> std::path::PathBuf {
    root.join(StageName::Student.as_str())
        .join("checkpoints")
        .join(format!("step-{step:08}"))
}

#[test]
fn parameters_frozen_in_the_teacher_stay_frozen() {
    one_thread();
    let mut settings = tiny_settings();
    settings.optim.steps = 2;
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run = RunDir::open(tmp.path(), tiny_run()).unwrap();
    let mut teacher = teacher(8);
    teacher.time_embed = teacher.time_embed.no_grad();
    let frozen = parameters(&teacher.time_embed);
    let prompts = HashedPrompts::for_dit(&teacher);
    let stage = StudentStage::new(&run, settings, teacher, prompts, &device).unwrap();
    let out = train_multi_stage(&stage, &run, &device, Stop::never(), &mut |_| {}).unwrap();
    for part in &out.model {
        assert_eq!(parameters(&part.model.time_embed), frozen, "{}", part.name);
        assert_ne!(
            parameters(&part.model.project_in),
            parameters(&stage.teacher().project_in),
            "{}",
            part.name
        );
    }
}

#[test]
fn a_short_run_reduces_the_regression_loss() {
    one_thread();
    let mut settings = tiny_settings();
    settings.optim.steps = 12;
    settings.optim.checkpoint_every = 100;
    settings.fake_updates = 1;
    settings.regression_weight = 10.0;
    settings.regression_batch = settings.regression_pairs;
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run = RunDir::open(tmp.path(), tiny_run()).unwrap();
    let teacher = teacher(8);
    let prompts = HashedPrompts::for_dit(&teacher);
    let stage = StudentStage::new(&run, settings, teacher, prompts, &device).unwrap();
    let initial = &stage.init_parts(&device).unwrap()[0].model;
    let before = stage.regression_mse(initial).unwrap().unwrap();
    let out = train_multi_stage(&stage, &run, &device, Stop::never(), &mut |_| {}).unwrap();
    let after = stage.regression_mse(&out.model[0].model).unwrap().unwrap();
    assert!(
        after < 0.5 * before,
        "regression MSE {before} -> {after} after {} steps",
        out.step
    );
}

#[test]
fn a_cache_of_other_pairs_or_a_broken_one_is_refused_naming_it() {
    one_thread();
    let mut settings = tiny_settings();
    settings.regression_pairs = 2;
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run = RunDir::open(tmp.path(), tiny_run()).unwrap();
    let make = |s: &StudentStageConfig| {
        let teacher = teacher(8);
        let prompts = HashedPrompts::for_dit(&teacher);
        StudentStage::new(&run, s.clone(), teacher, prompts, &device)
    };
    let stage = make(&settings).unwrap();
    let path = stage.pairs_path(&run);
    assert_eq!(path.file_name().unwrap(), PAIRS_FILE);
    assert_eq!(stage.pairs().unwrap().len(), 2);
    // Read back, the cache is what was computed.
    assert_eq!(make(&settings).unwrap().pairs(), stage.pairs());

    let mut other = settings.clone();
    other.guidance_scale += 1.0;
    match make(&other) {
        Err(TrainError::Checkpoint { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("delete it"), "{reason}");
        }
        r => panic!("expected a checkpoint error, got {:?}", r.err()),
    }
    std::fs::write(&path, b"not a safetensors file").unwrap();
    match make(&settings) {
        Err(TrainError::Checkpoint { path: p, .. }) => assert_eq!(p, path),
        r => panic!("expected a checkpoint error, got {:?}", r.err()),
    }
    // Deleted, it is recomputed identically.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(make(&settings).unwrap().pairs(), stage.pairs());

    let mut bad = settings;
    bad.t_min = 0.0;
    assert!(matches!(make(&bad), Err(TrainError::Config { .. })));
    assert!(matches!(
        StudentStage::new(
            &run,
            tiny_settings(),
            teacher(8),
            HashedPrompts::for_dit(&teacher(8)),
            &Device::flex()
        ),
        Err(TrainError::Config { .. })
    ));
}

#[test]
fn distinct_captions_give_every_row_a_caption_no_earlier_row_had() {
    one_thread();
    let mut settings = tiny_settings();
    settings.optim.steps = 60;
    settings.regression_weight = 0.0;
    let (steps, batch) = (settings.optim.steps, settings.optim.batch as u64);
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run = RunDir::open(tmp.path(), tiny_run()).unwrap();
    let corpus = audiox_train::corpus::Corpus::new((&run.config().corpus).into()).unwrap();
    let stage = |settings: &StudentStageConfig| {
        let teacher = teacher(8);
        let prompts = HashedPrompts::for_dit(&teacher);
        StudentStage::new(&run, settings.clone(), teacher, prompts, &device).unwrap()
    };
    let rows = |stage: &StudentStage<Dit, HashedPrompts>| -> (Vec<u64>, Vec<String>) {
        let (mut clips, mut captions) = (Vec::new(), Vec::new());
        for step in 0..steps {
            clips.extend(stage.clips(step).unwrap());
            captions.extend(stage.captions(step).unwrap());
        }
        (clips, captions)
    };

    // Written only when set, so the run.json of runs made before the field reads the same.
    let json = serde_json::to_value(&settings).unwrap();
    assert!(json.get("distinct_captions").is_none(), "{json}");
    let mut set = settings.clone();
    set.distinct_captions = true;
    let json = serde_json::to_value(&set).unwrap();
    assert_eq!(json["distinct_captions"], true);
    assert_eq!(
        serde_json::from_value::<StudentStageConfig>(json).unwrap(),
        set
    );

    // Default: training clip `step x batch + j`, whose captions repeat.
    let (clips, captions) = rows(&stage(&settings));
    assert_eq!(clips, (0..steps * batch).collect::<Vec<_>>());
    let unique: std::collections::HashSet<&String> = captions.iter().collect();
    assert!(
        unique.len() < captions.len(),
        "no caption repeats among {} rows: the comparison below checks nothing",
        captions.len()
    );

    // Distinct: the first new captions in index order, each row's clip rendering its caption.
    settings.distinct_captions = true;
    let distinct = stage(&settings);
    let (clips, distinct_captions) = rows(&distinct);
    assert_eq!(clips, corpus.distinct_training_indices(clips.len()));
    let unique: std::collections::HashSet<&String> = distinct_captions.iter().collect();
    assert_eq!(unique.len(), distinct_captions.len());
    for (clip, caption) in clips.iter().zip(&distinct_captions).step_by(17) {
        assert_eq!(&corpus.training_clip(*clip).caption, caption);
    }
    // Scenes of as many events as the metric's held-out captions (distinct too) ask for:
    // more than the repeating stream, whose repeats are its shortest scenes.
    let events = |captions: &[String]| -> f64 {
        let by_caption: std::collections::HashMap<String, usize> = (0..10 * steps * batch)
            .map(|i| corpus.training_scene(i))
            .map(|s| (s.caption(), s.expected_events().len()))
            .collect();
        captions.iter().map(|c| by_caption[c] as f64).sum::<f64>() / captions.len() as f64
    };
    let (plain, new) = (events(&captions), events(&distinct_captions));
    assert!(
        new > plain,
        "mean events asked: distinct {new}, plain {plain}"
    );
    // Past the stage's last step there is no row to give.
    let err = distinct.clips(steps).unwrap_err().to_string();
    assert!(err.contains("distinct_captions"), "{err}");
    // A stage longer than the grammar's distinct captions is refused when it is made.
    let have = corpus.distinct_training_indices(usize::MAX).len();
    settings.optim.steps = (have as u64).div_ceil(batch) + 1;
    let teacher = teacher(8);
    let prompts = HashedPrompts::for_dit(&teacher);
    let err = StudentStage::new(&run, settings, teacher, prompts, &device)
        .err()
        .expect("more rows than distinct captions")
        .to_string();
    assert!(
        err.contains("distinct_captions") && err.contains(&have.to_string()),
        "{err}"
    );
}

/// A stand-in for the encoded corpus: each clip's latent a fixed smooth function of its index
/// (a sine per channel), unlike the student's outputs.
struct SineLatents {
    shape: [usize; 2],
}

impl RealLatents for SineLatents {
    fn real_latents(&self, clips: &[u64], device: &Device) -> TrainResult<Tensor<3>> {
        let [c, l] = self.shape;
        let mut out = Vec::with_capacity(clips.len() * c * l);
        for &clip in clips {
            for ch in 0..c {
                for i in 0..l {
                    let phase = (clip as f32 + ch as f32) * 0.7;
                    out.push((i as f32 * 0.3 + phase).sin());
                }
            }
        }
        Ok(tensor3(out, [clips.len(), c, l], device))
    }
}

fn critic_settings() -> StudentStageConfig {
    let mut settings = tiny_settings();
    settings.critic = Some(CriticConfig {
        weight: 0.5,
        lr_ratio: 5.0,
        width: 4,
        from_step: 1,
        conditional: true,
        replay: 3,
    });
    settings
}

fn train_with_critic(
    dir: &Path,
    settings: &StudentStageConfig,
    stop_after: Option<u64>,
) -> TrainResult<Trained> {
    train_on(dir, settings, stop_after, true)
}

fn critic_checkpoint(root: &Path, step: u64) -> std::path::PathBuf {
    root.join(StageName::Student.as_str())
        .join("critic")
        .join("checkpoints")
        .join(format!("step-{step:08}"))
}

#[test]
fn a_critic_trains_beside_the_student_and_resumes_bit_for_bit() {
    one_thread();
    let settings = critic_settings();
    let steps = settings.optim.steps;
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, plain) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("plain"),
    );
    let (whole, _, _) = train_with_critic(&a, &settings, None).unwrap();
    train_with_critic(&b, &settings, Some(steps / 2)).unwrap();
    let (resumed, step, from) = train_with_critic(&b, &settings, None).unwrap();
    assert_eq!((step, from), (steps, steps / 2));
    for (x, y) in whole.iter().zip(&resumed) {
        assert_eq!(
            parameters(x),
            parameters(y),
            "a part differs after the resume"
        );
    }
    // The critic's checkpoint holds the same weights either way, moved from their start.
    let config = settings.critic.clone().unwrap();
    let critic_at = |d: &Path| {
        let fresh = config.init(teacher(8).latent_shape()[0], 0, &device());
        let optim = AdamConfig::new().init();
        parameters(
            &critic_checkpoints(&d.join(StageName::Student.as_str()))
                .load(steps, fresh, optim)
                .unwrap()
                .model,
        )
    };
    let critic = critic_at(&a);
    assert!(
        critic == critic_at(&b),
        "the critic differs after the resume"
    );
    let half_way = {
        let fresh = config.init(teacher(8).latent_shape()[0], 0, &device());
        parameters(
            &critic_checkpoints(&b.join(StageName::Student.as_str()))
                .load(steps / 2, fresh, AdamConfig::new().init())
                .unwrap()
                .model,
        )
    };
    assert!(critic != half_way, "the critic did not train");
    let log =
        |d: &Path| LossLog::read(&d.join(StageName::Student.as_str()).join("loss.jsonl")).unwrap();
    let records = log(&a);
    assert_eq!(
        records
            .iter()
            .map(|r| (r.loss, r.terms.clone()))
            .collect::<Vec<_>>(),
        log(&b)
            .iter()
            .map(|r| (r.loss, r.terms.clone()))
            .collect::<Vec<_>>()
    );
    for r in &records {
        for term in ["critic", "critic_real_right", "critic_fake_right"] {
            assert!(r.terms.contains_key(term), "step {}: no `{term}`", r.step);
        }
        // `from_step` 1: the student follows the critic from the second step on.
        assert_eq!(
            r.terms.contains_key("adversarial"),
            r.step > 1,
            "step {}",
            r.step
        );
        // It trains on the last `replay` rows: 2 at the first step, 3 from then on.
        let rows = (r.step as usize * settings.optim.batch).min(3);
        assert_eq!(r.terms["critic_rows"], rows as f64, "step {}", r.step);
    }
    // The term moves the student: without a critic the first step (no term yet) is the same,
    // the student after the last one is not.
    let mut no_critic = settings.clone();
    no_critic.critic = None;
    let (without, _, _) = train(&plain, &no_critic, None).unwrap();
    assert_ne!(parameters(&whole[0]), parameters(&without[0]));
    let first = |d: &Path| log(d)[0].terms["dmd"];
    assert_eq!(first(&a), first(&plain));
}

#[test]
fn a_critic_without_real_clips_or_with_a_foreign_checkpoint_is_refused() {
    one_thread();
    let settings = critic_settings();
    let tmp = tempfile::tempdir().unwrap();
    // No source of real latents: a configuration error at the first step.
    let err = train(&tmp.path().join("none"), &settings, None)
        .expect_err("a critic without real clips")
        .to_string();
    assert!(err.contains("with_real_latents"), "{err}");

    // A run that had no critic gets a fresh one when it is switched on at a resume.
    let dir = tmp.path().join("late");
    let mut plain = settings.clone();
    plain.critic = None;
    train(&dir, &plain, Some(2)).unwrap();
    let (_, step, from) = train_with_critic(&dir, &settings, None).unwrap();
    assert_eq!((step, from), (settings.optim.steps, 2));
    assert!(critic_checkpoint(&dir, settings.optim.steps).exists());

    // A critic whose checkpoints are not those of the parts' step is refused, naming it:
    // here the parts' last checkpoint (step 4) is gone and so is the critic's of step 2.
    let dir = tmp.path().join("foreign");
    let steps = settings.optim.steps;
    train_with_critic(&dir, &settings, None).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&dir, steps)).unwrap();
    std::fs::remove_dir_all(critic_checkpoint(&dir, 2)).unwrap();
    match train_with_critic(&dir, &settings, None) {
        Err(TrainError::Checkpoint { path, reason }) => {
            assert_eq!(path, critic_checkpoint(&dir, 2), "{reason}");
            assert!(reason.contains("critic"), "{reason}");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }

    // Damaged replay rows are refused, naming the file.
    let dir = tmp.path().join("replay");
    train_with_critic(&dir, &settings, Some(2)).unwrap();
    let path = critic_checkpoint(&dir, 2).join(REPLAY_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    match train_with_critic(&dir, &settings, None) {
        Err(TrainError::Checkpoint { path: p, reason }) => {
            assert_eq!(p, path, "{reason}");
            assert!(reason.contains("corrupt"), "{reason}");
        }
        other => panic!("expected a checkpoint error, got {:?}", other.err()),
    }

    // Settings that cannot train are refused when the stage is made.
    for bad in [
        CriticConfig {
            weight: -1.0,
            ..settings.critic.clone().unwrap()
        },
        CriticConfig {
            lr_ratio: 0.0,
            ..settings.critic.clone().unwrap()
        },
        CriticConfig {
            width: 0,
            ..settings.critic.clone().unwrap()
        },
        CriticConfig {
            replay: audiox_train::train::critic::MAX_REPLAY + 1,
            ..settings.critic.clone().unwrap()
        },
    ] {
        let mut s = settings.clone();
        s.critic = Some(bad);
        let err = train_with_critic(&tmp.path().join("bad"), &s, None)
            .expect_err("bad critic settings")
            .to_string();
        assert!(err.contains("student.critic"), "{err}");
    }
    // Written only when set: the run.json of earlier runs reads the same.
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("critic").is_none(), "{json}");
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(
        serde_json::from_value::<StudentStageConfig>(json).unwrap(),
        settings
    );
}

#[test]
fn the_critic_learns_to_tell_real_from_fake_and_its_term_reaches_only_the_generator() {
    one_thread();
    let device = device();
    let config = CriticConfig {
        weight: 1.0,
        lr_ratio: 1.0,
        width: 8,
        from_step: 0,
        conditional: false,
        replay: 0,
    };
    let (c, l) = (4, 40);
    let mut critic = config.init(c, 3, &device);
    let mut optim = AdamConfig::new().init();
    let real = SineLatents { shape: [c, l] };
    let fake = |seed: u64| latent_noise([2, c, l], seed, &device);
    let mut last = (f64::MAX, 0.0, 0.0);
    for step in 0..60u64 {
        let (loss, real_right, fake_right) = critic
            .loss(
                real.real_latents(&[step, step + 1], &device).unwrap(),
                fake(step),
                &[1, 2],
            )
            .unwrap();
        last = (scalar(loss.clone()), real_right, fake_right);
        let grads = GradientsParams::from_grads(loss.backward(), &critic);
        critic = optim.step(1e-2, critic, grads);
    }
    let (loss, real_right, fake_right) = last;
    assert!(
        loss < 0.2 && real_right == 1.0 && fake_right == 1.0,
        "after 60 steps: loss {loss}, real right {real_right}, fake right {fake_right}"
    );
    // The generator's term: a gradient on its input, none on the critic's parameters.
    let x0 = fake(99).require_grad();
    let term = critic.generator_loss(x0.clone(), &[1, 2]).unwrap();
    let mut grads = term.backward();
    let g = values(x0.grad_remove(&mut grads).expect("a gradient on x0"));
    assert!(max_abs(&g) > 0.0);
    assert_eq!(
        GradientsParams::from_grads(grads, &critic).len(),
        0,
        "the critic's parameters got gradients from the generator's term"
    );
}

/// Rows whose pattern is that of the event count they are labelled with (real) or of the next
/// count, cyclically (fake): the same patterns in both sets, so only a critic that reads the
/// counts can tell them apart.
fn counted_rows(counts: &[usize], shift: usize, seed: u64, device: &Device) -> Tensor<3> {
    let (c, l) = (4, 40);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let phases = normals(&mut rng, counts.len());
    let mut out = Vec::with_capacity(counts.len() * c * l);
    for (&n, phase) in counts.iter().zip(phases) {
        let pattern = (n - 1 + shift) % 5 + 1;
        for _ in 0..c {
            for i in 0..l {
                out.push((i as f32 * 0.25 * pattern as f32 + phase).sin());
            }
        }
    }
    tensor3(out, [counts.len(), c, l], device)
}

#[test]
fn only_the_conditional_critic_tells_a_wrong_event_count() {
    one_thread();
    let device = device();
    let counts: Vec<usize> = (0..10).map(|i| i % 5 + 1).collect();
    let train = |conditional: bool| {
        let config = CriticConfig {
            weight: 1.0,
            lr_ratio: 1.0,
            width: 8,
            from_step: 0,
            conditional,
            replay: 0,
        };
        let mut critic = config.init(4, 3, &device);
        let mut optim = AdamConfig::new().init();
        let mut losses = Vec::new();
        for step in 0..150u64 {
            let real = counted_rows(&counts, 0, 2 * step, &device);
            let fake = counted_rows(&counts, 1, 2 * step + 1, &device);
            let (loss, _, _) = critic.loss(real, fake, &counts).unwrap();
            losses.push(scalar(loss.clone()));
            let grads = GradientsParams::from_grads(loss.backward(), &critic);
            critic = optim.step(1e-2, critic, grads);
        }
        // The mean loss of the last 20 steps.
        let tail = &losses[losses.len() - 20..];
        (tail.iter().sum::<f64>() / tail.len() as f64, critic)
    };
    let (unconditional, _) = train(false);
    let (conditional, critic) = train(true);
    // ln 4 = 1.386: a critic that cannot tell the two sets apart.
    assert!(
        unconditional > 1.2,
        "unconditional critic's loss {unconditional}"
    );
    assert!(conditional < 0.3, "conditional critic's loss {conditional}");
    // One count per row.
    let err = critic
        .forward(counted_rows(&counts, 0, 0, &device), &counts[..3])
        .expect_err("too few counts")
        .to_string();
    assert!(err.contains("3 event counts for a batch of 10"), "{err}");
}

fn latent_noise(dims: [usize; 3], seed: u64, device: &Device) -> Tensor<3> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tensor3(normals(&mut rng, dims.iter().product()), dims, device)
}

fn scalar(t: Tensor<1>) -> f64 {
    t.into_scalar::<f32>() as f64
}

#[test]
fn replay_rows_keep_the_newest_and_read_back_what_they_wrote() {
    let device = device();
    let mut replay = ReplayRows::default();
    replay.push(&[7, 8], latent_noise([2, 3, 5], 1, &device), 3);
    replay.push(&[9, 10], latent_noise([2, 3, 5], 2, &device), 3);
    let (clips, batch) = replay.batch(&device);
    assert_eq!(clips, vec![8, 9, 10]);
    assert_eq!(batch.dims(), [3, 3, 5]);
    let newest = values(latent_noise([2, 3, 5], 2, &device));
    assert_eq!(values(batch.narrow(0, 1, 2)), newest);
    let bytes = replay.to_bytes();
    assert_eq!(ReplayRows::from_bytes(&bytes), Some(replay.clone()));
    assert_eq!(ReplayRows::from_bytes(&bytes[..bytes.len() - 4]), None);
    assert_eq!(ReplayRows::from_bytes(&[]), None);
    let mut huge = bytes.clone();
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(ReplayRows::from_bytes(&huge), None);
}

/// A judge that accepts the scenes of an odd number of events and records every latent it
/// was shown, by caption.
struct OddEvents {
    id: String,
    seen: std::sync::Mutex<Vec<(String, Vec<f32>)>>,
}

impl OddEvents {
    fn new(id: &str) -> Self {
        OddEvents {
            id: id.to_string(),
            seen: std::sync::Mutex::new(Vec::new()),
        }
    }
}

impl PairJudge for OddEvents {
    fn id(&self) -> String {
        self.id.clone()
    }

    fn accepts(
        &self,
        scene: &audiox_train::corpus::Scene,
        values: &[f32],
        shape: [usize; 2],
    ) -> TrainResult<bool> {
        assert_eq!(values.len(), shape[0] * shape[1]);
        self.seen
            .lock()
            .unwrap()
            .push((scene.caption(), values.to_vec()));
        Ok(scene.expected_events().len() % 2 == 1)
    }
}

fn filtered_settings() -> StudentStageConfig {
    let mut settings = tiny_settings();
    settings.regression_pairs = 3;
    settings.regression_filter = Some(PairFilter { candidates: 12 });
    settings
}

#[test]
fn filtered_pairs_are_the_teacher_results_the_judge_accepts() {
    one_thread();
    let settings = filtered_settings();
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run = RunDir::open(tmp.path(), tiny_run()).unwrap();
    let corpus = audiox_train::corpus::Corpus::new((&run.config().corpus).into()).unwrap();
    let make = |judge: &OddEvents| {
        let teacher = teacher(8);
        let prompts = HashedPrompts::for_dit(&teacher);
        StudentStage::new(&run, settings.clone(), teacher, prompts, &device)?
            .with_pair_judge(&run, judge)
    };
    let judge = OddEvents::new("odd");
    let stage = make(&judge).unwrap();
    let pairs = stage.pairs().unwrap().clone();

    // The candidates are the distinct training captions in order; the judge saw them in that
    // order and stopped at the third accepted one.
    let scenes: Vec<_> = corpus
        .distinct_training_indices(12)
        .into_iter()
        .map(|i| corpus.training_scene(i))
        .collect();
    let seen = judge.seen.lock().unwrap().clone();
    let shown: Vec<&String> = seen.iter().map(|(c, _)| c).collect();
    let expected: Vec<String> = scenes.iter().map(|s| s.caption()).collect();
    assert_eq!(shown, expected[..seen.len()].iter().collect::<Vec<_>>());
    let accepted: Vec<String> = scenes[..seen.len()]
        .iter()
        .filter(|s| s.expected_events().len() % 2 == 1)
        .map(|s| s.caption())
        .collect();
    assert_eq!(pairs.captions, accepted);
    assert_eq!(pairs.len(), 3);
    assert!(
        seen.len() > 3,
        "every candidate was accepted: the test checks no filtering"
    );
    assert_eq!(pairs.meta.filter.as_ref().unwrap().tried, seen.len());
    assert_eq!(pairs.meta.filter.as_ref().unwrap().judge, "odd");

    // Each pair holds the result the judge accepted, and that result is the teacher's Euler
    // run from the pair's noise.
    let per = pairs.shape[0] * pairs.shape[1];
    for (i, caption) in pairs.captions.iter().enumerate() {
        let shown = &seen.iter().find(|(c, _)| c == caption).unwrap().1;
        assert_eq!(&pairs.teacher_x0[i * per..(i + 1) * per], &shown[..]);
    }
    let dit = teacher(8);
    let prompts = HashedPrompts::for_dit(&dit);
    let (noise, target) = pairs.batch(&[2], &device);
    let context = prompts.context(&pairs.captions[2..3], &device).unwrap();
    let again = teacher_sample(
        &dit,
        noise,
        &context,
        settings.teacher_steps,
        settings.guidance_scale,
    )
    .unwrap();
    let diff = values(again.sub(target).abs().max());
    assert!(
        diff[0] < 1e-5,
        "the pair is not the teacher's result: {diff:?}"
    );

    // Read back with the same judge: the cache, without judging again.
    let again = OddEvents::new("odd");
    assert_eq!(make(&again).unwrap().pairs(), Some(&pairs));
    assert!(again.seen.lock().unwrap().is_empty());
    // Another judge's cache is refused, naming the file.
    let path = stage.pairs_path(&run);
    match make(&OddEvents::new("another")) {
        Err(TrainError::Checkpoint { path: p, reason }) => {
            assert_eq!(p, path);
            assert!(reason.contains("delete it"), "{reason}");
        }
        r => panic!("expected a checkpoint error, got {:?}", r.err()),
    }
    // An unfiltered stage does not take the filtered cache for its own.
    let mut plain = settings.clone();
    plain.regression_filter = None;
    let teacher = teacher(8);
    let prompts = HashedPrompts::for_dit(&teacher);
    assert!(matches!(
        StudentStage::new(&run, plain, teacher, prompts, &device),
        Err(TrainError::Checkpoint { .. })
    ));
}

#[test]
fn a_filter_needs_a_judge_candidates_and_a_regression_term() {
    one_thread();
    let tmp = tempfile::tempdir().unwrap();
    // No judge: the first step says so, instead of training without the term.
    let err = train(tmp.path(), &filtered_settings(), None)
        .expect_err("a filter without a judge")
        .to_string();
    assert!(
        err.contains("regression_filter") && err.contains("judge"),
        "{err}"
    );

    let device = device();
    let run = RunDir::open(tmp.path().join("b"), tiny_run()).unwrap();
    let refused = |settings: StudentStageConfig, field: &str| {
        let teacher = teacher(8);
        let prompts = HashedPrompts::for_dit(&teacher);
        let err = StudentStage::new(&run, settings, teacher, prompts, &device)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(field), "{err}");
    };
    let mut few = filtered_settings();
    few.regression_filter = Some(PairFilter { candidates: 2 });
    refused(few, "regression_filter.candidates");
    let mut off = filtered_settings();
    off.regression_weight = 0.0;
    refused(off, "regression_filter");
    // A judge that accepts nothing is an error, not an empty regression term.
    struct Nothing;
    impl PairJudge for Nothing {
        fn id(&self) -> String {
            "nothing".into()
        }
        fn accepts(
            &self,
            _: &audiox_train::corpus::Scene,
            _: &[f32],
            _: [usize; 2],
        ) -> TrainResult<bool> {
            Ok(false)
        }
    }
    let teacher = teacher(8);
    let prompts = HashedPrompts::for_dit(&teacher);
    let err = StudentStage::new(&run, filtered_settings(), teacher, prompts, &device)
        .unwrap()
        .with_pair_judge(&run, &Nothing)
        .err()
        .expect("nothing accepted")
        .to_string();
    assert!(err.contains("accepted none"), "{err}");

    // The field is written only when set.
    let json = serde_json::to_value(tiny_settings()).unwrap();
    assert!(json.get("regression_filter").is_none(), "{json}");
    let json = serde_json::to_value(filtered_settings()).unwrap();
    assert_eq!(json["regression_filter"]["candidates"], 12);
}

/// The step-halving term with `weight` from `from_step`, on a frozen target where `frozen` says
/// (fresh noise, no reference file).
fn halving(weight: f64, from_step: u64, frozen: bool) -> StepHalving {
    StepHalving {
        weight,
        from_step,
        frozen_target: frozen,
        reference: None,
        implied_noise: false,
    }
}

#[test]
fn the_halving_term_moves_the_student_draws_apart_and_resumes_bit_for_bit() {
    one_thread();
    let plain = tiny_settings();
    let mut settings = tiny_settings();
    settings.halving = Some(halving(1.0, 1, false));
    let (steps, half) = (settings.optim.steps, settings.optim.steps / 2);
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir, p_dir) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("p"),
    );
    let (whole, ..) = train(&a_dir, &settings, None).unwrap();
    train(&b_dir, &settings, Some(half)).unwrap();
    let (resumed, step, from) = train(&b_dir, &settings, None).unwrap();
    assert_eq!((step, from), (steps, half));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert_eq!(parameters(&whole[1]), parameters(&resumed[1]));
    let (without, ..) = train(&p_dir, &plain, None).unwrap();
    assert_ne!(
        parameters(&whole[0]),
        parameters(&without[0]),
        "the term did not move the student"
    );

    let log =
        |d: &Path| LossLog::read(&d.join(StageName::Student.as_str()).join("loss.jsonl")).unwrap();
    let (with, off) = (log(&a_dir), log(&p_dir));
    // From the second step (`from_step` 1) on.
    assert!(!with[0].terms.contains_key("halving"));
    for r in &with[1..] {
        let h = r.terms["halving"];
        assert!(h.is_finite() && h > 0.0, "step {}: halving {h}", r.step);
    }
    assert!(off.iter().all(|r| !r.terms.contains_key("halving")));
    // Before it the runs are the same; and the term draws from a stream of its own: at the
    // second step (the same student before its update) the step, noise and times drawn are
    // the same with and without it.
    assert_eq!(with[0].terms, off[0].terms);
    for term in ["dmd", "student_step", "regression"] {
        assert_eq!(with[1].terms[term], off[1].terms[term], "{term}");
    }
    // Written only when set; a negative weight is refused.
    assert!(
        serde_json::to_value(&plain)
            .unwrap()
            .get("halving")
            .is_none()
    );
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(json["halving"]["from_step"], 1);
    assert_eq!(
        serde_json::from_value::<StudentStageConfig>(json).unwrap(),
        settings
    );
    let mut bad = plain;
    bad.halving = Some(halving(-1.0, 0, false));
    let err = bad.check("student").unwrap_err().to_string();
    assert!(err.contains("halving.weight"), "{err}");
}

#[test]
fn a_frozen_halving_target_is_the_student_of_from_step_and_is_kept_for_resumes() {
    one_thread();
    let mut settings = tiny_settings();
    settings.optim.steps = 6;
    settings.optim.keep_checkpoints = 5;
    settings.halving = Some(halving(1.0, 2, true));
    let mut moving = settings.clone();
    moving.halving.as_mut().unwrap().frozen_target = false;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);

    let (whole, ..) = train(&dir("a"), &settings, None).unwrap();
    // Interrupted before the term starts, and after it (the reference read back).
    train(&dir("b"), &settings, Some(2)).unwrap();
    train(&dir("b"), &settings, Some(4)).unwrap();
    let (resumed, step, from) = train(&dir("b"), &settings, None).unwrap();
    assert_eq!((step, from), (6, 4));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert_eq!(parameters(&whole[1]), parameters(&resumed[1]));
    // A resume from before `from_step` (the later checkpoints lost) takes the reference again
    // and drops the one kept by the attempt that got past it.
    train(&dir("d"), &settings, Some(4)).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&dir("d"), 4)).unwrap();
    let kept = dir("d").join(StageName::Student.as_str()).join(HALVING_DIR);
    let kept_file = Checkpoints::new(&kept).path(2).join("reference.model.bpk");
    std::fs::write(&kept_file, b"stale").unwrap();
    let (again, step, from) = train(&dir("d"), &settings, None).unwrap();
    assert_eq!((step, from), (6, 2));
    assert_eq!(parameters(&whole[0]), parameters(&again[0]));
    assert_ne!(
        std::fs::read(&kept_file).unwrap(),
        b"stale",
        "the stale reference was kept"
    );
    let (with_moving, ..) = train(&dir("m"), &moving, None).unwrap();
    assert_ne!(
        parameters(&whole[0]),
        parameters(&with_moving[0]),
        "a frozen target trains as the moving one does"
    );

    // The kept reference is the student of step 2.
    let halving = dir("a").join(StageName::Student.as_str()).join(HALVING_DIR);
    let read = |dir: &Path, name: &str| {
        let part = Part {
            name: name.to_string(),
            model: teacher(8),
            optim: AdamConfig::new().init(),
        };
        Checkpoints::new(dir)
            .load_parts(2, vec![part])
            .unwrap()
            .pop()
            .unwrap()
            .model
    };
    let reference = read(&halving, "reference");
    let student = read(&dir("a").join(StageName::Student.as_str()), "student");
    assert_eq!(parameters(&reference), parameters(&student));
    assert_ne!(parameters(&reference), parameters(&whole[0]));

    // Lost after the term started, it is an error naming its folder, not a new reference.
    std::fs::remove_dir_all(dir("b").join(StageName::Student.as_str()).join(HALVING_DIR)).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&dir("b"), 6)).unwrap();
    let err = train(&dir("b"), &settings, None).expect_err("no reference");
    assert!(
        err.to_string().contains(HALVING_DIR) && err.to_string().contains("from_step"),
        "{err}"
    );
}

#[test]
fn a_halving_reference_file_is_the_frozen_target_and_is_kept_for_resumes() {
    one_thread();
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    // Another student, written as `export_student` writes one, and read back bit for bit.
    let other = teacher(9);
    let file = dir("other.safetensors");
    let tensors = official_tensors_of(&other, &Dit::layout(), "model.model.").unwrap();
    write_safetensors(&file, &tensors, &[("format", "pt")]).unwrap();
    let loaded = load_exported_student(&teacher(8), &file).unwrap();
    assert_eq!(parameters(&loaded), parameters(&other));
    assert_ne!(parameters(&loaded), parameters(&teacher(8)));

    let mut own = tiny_settings();
    own.optim.steps = 6;
    own.optim.keep_checkpoints = 5;
    own.halving = Some(halving(1.0, 2, true));
    let mut settings = own.clone();
    settings.halving.as_mut().unwrap().reference = Some(file.clone());
    let given = Some(&loaded);
    let (whole, ..) = train_given(&dir("a"), &settings, None, false, given).unwrap();
    // Interrupted after the term started: the kept copy is read back, the file not needed.
    train_given(&dir("b"), &settings, Some(4), false, given).unwrap();
    std::fs::remove_file(&file).unwrap();
    let (resumed, step, from) = train_given(&dir("b"), &settings, None, false, None).unwrap();
    assert_eq!((step, from), (6, 4));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert_eq!(parameters(&whole[1]), parameters(&resumed[1]));
    let (with_own, ..) = train(&dir("o"), &own, None).unwrap();
    assert_ne!(
        parameters(&whole[0]),
        parameters(&with_own[0]),
        "the reference file trained as the student's own copy does"
    );
    // The kept reference is the file's student, not the student of step 2.
    let kept = Checkpoints::new(&dir("a").join(StageName::Student.as_str()).join(HALVING_DIR))
        .load_parts(
            2,
            vec![Part {
                name: "reference".to_string(),
                model: teacher(8),
                optim: AdamConfig::new().init(),
            }],
        )
        .unwrap()
        .pop()
        .unwrap()
        .model;
    assert_eq!(parameters(&kept), parameters(&other));

    // A stage that names a file and was not given its weights stops at `from_step`; a
    // reference without a frozen target is refused by the settings' check.
    let err = train_given(&dir("c"), &settings, None, false, None).expect_err("no reference");
    assert!(err.to_string().contains("halving.reference"), "{err}");
    let mut moving = settings.clone();
    moving.halving.as_mut().unwrap().frozen_target = false;
    let err = moving.check("student").unwrap_err().to_string();
    assert!(err.contains("halving.reference"), "{err}");
    // Written only when set, and read back.
    let json = serde_json::to_value(&settings).unwrap();
    assert!(json["halving"]["reference"].is_string());
    assert!(
        serde_json::to_value(&own).unwrap()["halving"]
            .get("reference")
            .is_none()
    );
    assert_eq!(
        serde_json::from_value::<StudentStageConfig>(json).unwrap(),
        settings
    );
}

#[test]
fn the_implied_noise_gives_back_the_input_and_the_straight_step() {
    let device = device();
    let dims = [2, 3, 5];
    let (z, x0) = (
        latent_noise(dims, 1, &device),
        latent_noise(dims, 2, &device),
    );
    let (t, s) = (0.7f32, 0.45f32);
    let eps = implied_noise(z.clone(), x0.clone(), t);
    let renoise = |u: f32| eps.clone().mul_scalar(u) + x0.clone().mul_scalar(1.0 - u);
    let close = |a: Tensor<3>, b: Tensor<3>| max_abs(&values(a - b)) < 1e-5;
    assert!(
        close(renoise(t), z.clone()),
        "re-noised at t it is not the input"
    );
    // The flow's velocity `eps - x0`, one Euler step from t to s.
    let euler = z.clone() + (eps.clone() - x0.clone()).mul_scalar(s - t);
    assert!(close(renoise(s), euler), "not the straight step");
    assert!(!close(renoise(s), z), "no step taken");
}

#[test]
fn halving_with_the_implied_noise_trains_otherwise_and_resumes_bit_for_bit() {
    one_thread();
    let mut fresh = tiny_settings();
    fresh.halving = Some(halving(1.0, 1, true));
    let mut settings = fresh.clone();
    settings.halving.as_mut().unwrap().implied_noise = true;
    let (steps, half) = (settings.optim.steps, settings.optim.steps / 2);
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let (whole, ..) = train(&dir("a"), &settings, None).unwrap();
    train(&dir("b"), &settings, Some(half)).unwrap();
    let (resumed, step, from) = train(&dir("b"), &settings, None).unwrap();
    assert_eq!((step, from), (steps, half));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert_eq!(parameters(&whole[1]), parameters(&resumed[1]));
    let (with_fresh, ..) = train(&dir("f"), &fresh, None).unwrap();
    assert_ne!(
        parameters(&whole[0]),
        parameters(&with_fresh[0]),
        "the implied noise trained as fresh noise does"
    );
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(json["halving"]["implied_noise"], true);
    assert!(
        serde_json::to_value(&fresh).unwrap()["halving"]
            .get("implied_noise")
            .is_none()
    );
    assert_eq!(
        serde_json::from_value::<StudentStageConfig>(json).unwrap(),
        settings
    );
}

#[test]
fn regression_until_is_the_term_then_none_as_two_runs_would_be() {
    one_thread();
    let mut settings = tiny_settings();
    settings.regression_until = Some(2);
    let steps = settings.optim.steps;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let (whole, ..) = train(&dir("a"), &settings, None).unwrap();

    // The same as the term on up to step 2 and a run continued from there without it (how
    // run HR0 was made from run DC1's checkpoint).
    let mut plain = settings.clone();
    plain.regression_until = None;
    train(&dir("b"), &plain, Some(2)).unwrap();
    let mut without = settings.clone();
    without.regression_until = None;
    without.regression_weight = 0.0;
    let (two_runs, step, from) = train(&dir("b"), &without, None).unwrap();
    assert_eq!((step, from), (steps, 2));
    assert_eq!(parameters(&whole[0]), parameters(&two_runs[0]));
    assert_eq!(parameters(&whole[1]), parameters(&two_runs[1]));
    // ... and not the term on every step.
    let (always, ..) = train(&dir("c"), &plain, None).unwrap();
    assert_ne!(parameters(&whole[0]), parameters(&always[0]));

    // Resumed after the term ended, bit for bit, without the pairs: they are neither read
    // nor computed again (the cache removed here stays absent).
    train(&dir("d"), &settings, Some(3)).unwrap();
    let pairs = dir("d").join(StageName::Student.as_str()).join(PAIRS_FILE);
    std::fs::remove_file(&pairs).unwrap();
    let (resumed, step, from) = train(&dir("d"), &settings, None).unwrap();
    assert_eq!((step, from), (steps, 3));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert!(
        !pairs.exists(),
        "the pairs were computed again past regression_until"
    );

    let log = LossLog::read(
        &dir("a")
            .join(StageName::Student.as_str())
            .join("loss.jsonl"),
    )
    .unwrap();
    for r in &log {
        // Records are numbered from 1: record `r.step` is step `r.step - 1`.
        assert_eq!(
            r.terms.contains_key("regression"),
            r.step <= 2,
            "step {}",
            r.step
        );
    }
    // Written only when set; refused without a term to end.
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(json["regression_until"], 2);
    assert!(
        serde_json::to_value(&plain)
            .unwrap()
            .get("regression_until")
            .is_none()
    );
    let mut bad = settings.clone();
    bad.regression_weight = 0.0;
    let err = bad.check("student").unwrap_err().to_string();
    assert!(err.contains("regression_until"), "{err}");
}

#[test]
fn a_guidance_switch_is_one_guidance_then_the_other_as_two_runs_would_be() {
    one_thread();
    let mut settings = tiny_settings();
    let (first, second) = (settings.guidance_scale, settings.guidance_scale + 3.0);
    settings.guidance_switch = Some(GuidanceSwitch {
        from_step: 2,
        guidance_scale: second,
    });
    let steps = settings.optim.steps;
    let tmp = tempfile::tempdir().unwrap();
    let dir = |n: &str| tmp.path().join(n);
    let student_dir = |n: &str| dir(n).join(StageName::Student.as_str());
    let (whole, ..) = train(&dir("a"), &settings, None).unwrap();

    // Both sets of pairs are cached: the same captions and noise, the teacher's results at
    // each guidance.
    let a = TeacherPairs::load(&student_dir("a").join(PAIRS_FILE)).unwrap();
    let b = TeacherPairs::load(&student_dir("a").join(SWITCHED_PAIRS_FILE)).unwrap();
    assert_eq!(
        (a.meta.guidance_scale, b.meta.guidance_scale),
        (first, second)
    );
    assert_eq!(a.captions, b.captions);
    assert_eq!(a.noise, b.noise);
    assert_ne!(a.teacher_x0, b.teacher_x0);

    // The same as two steps at the first guidance and a run continued from there at the
    // second, its pairs computed again (how run HG4 was made from run DC1's checkpoint).
    let mut plain = settings.clone();
    plain.guidance_switch = None;
    train(&dir("b"), &plain, Some(2)).unwrap();
    std::fs::remove_file(student_dir("b").join(PAIRS_FILE)).unwrap();
    let mut later = plain.clone();
    later.guidance_scale = second;
    let (two_runs, step, from) = train(&dir("b"), &later, None).unwrap();
    assert_eq!((step, from), (steps, 2));
    assert_eq!(parameters(&whole[0]), parameters(&two_runs[0]));
    assert_eq!(parameters(&whole[1]), parameters(&two_runs[1]));
    assert_eq!(
        TeacherPairs::load(&student_dir("b").join(PAIRS_FILE)).unwrap(),
        b
    );
    // ... and not the first guidance on every step.
    let (always, ..) = train(&dir("c"), &plain, None).unwrap();
    assert_ne!(parameters(&whole[0]), parameters(&always[0]));

    // Resumed after the switch, bit for bit, without the first guidance's pairs: they are
    // neither read nor computed again (the cache removed here stays absent).
    train(&dir("d"), &settings, Some(3)).unwrap();
    let first_pairs = student_dir("d").join(PAIRS_FILE);
    std::fs::remove_file(&first_pairs).unwrap();
    let (resumed, step, from) = train(&dir("d"), &settings, None).unwrap();
    assert_eq!((step, from), (steps, 3));
    assert_eq!(parameters(&whole[0]), parameters(&resumed[0]));
    assert_eq!(parameters(&whole[1]), parameters(&resumed[1]));
    assert!(
        !first_pairs.exists(),
        "the first guidance's pairs were computed again past the switch"
    );

    // A regression term that ends at the switch needs no pairs at the second guidance.
    let mut ended = settings.clone();
    ended.regression_until = Some(2);
    train(&dir("e"), &ended, None).unwrap();
    assert!(!student_dir("e").join(SWITCHED_PAIRS_FILE).exists());

    // Written only when set; refused at or past the last step, with a guidance that is not a
    // number, and with filtered pairs.
    let json = serde_json::to_value(&settings).unwrap();
    assert_eq!(json["guidance_switch"]["from_step"], 2);
    assert!(
        serde_json::to_value(&plain)
            .unwrap()
            .get("guidance_switch")
            .is_none()
    );
    for (name, change) in [
        (
            "from_step",
            &(|s: &mut GuidanceSwitch| s.from_step = 4) as &dyn Fn(&mut GuidanceSwitch),
        ),
        ("guidance_scale", &|s: &mut GuidanceSwitch| {
            s.guidance_scale = f32::NAN
        }),
    ] {
        let mut bad = settings.clone();
        change(bad.guidance_switch.as_mut().unwrap());
        let err = bad.check("student").unwrap_err().to_string();
        assert!(err.contains(&format!("guidance_switch.{name}")), "{err}");
    }
    let mut bad = settings.clone();
    bad.regression_filter = Some(PairFilter { candidates: 8 });
    let err = bad.check("student").unwrap_err().to_string();
    assert!(err.contains("guidance_switch"), "{err}");
}
