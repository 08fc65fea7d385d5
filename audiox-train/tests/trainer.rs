//! The trainer at a tiny size: an interrupted and resumed run equals an uninterrupted one bit
//! for bit; corrupt checkpoints and changed configurations are refused with typed errors; the
//! exported VAE loads through the component loader and decodes like the trained module.

use std::path::Path;

use audiox_core::weights::{Component, StateDict, WeightSource};
use audiox_train::train::LossLog;
use audiox_train::train::eval::{reconstruction_report, vae_reconstructor};
use audiox_train::train::stft::{FloorMode, LogFloor, StftBasis};
use audiox_train::train::vae::{parameters, vae_config};
use audiox_train::train::{
    LrDecay, RunConfig, RunDir, StageName, StageOutcome, Stop, TrainError, VaeStage, export_vae,
    train_stage,
};
use audiox_vae::Vae;
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

fn one_thread() {
    // Bit-exact comparisons need a fixed reduction order. Every test calls this before any
    // tensor operation, so the global pool is built here (once) with one thread whichever test
    // starts first.
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
}

/// Shrinks both VAEs of an official-schema config (the main one and the audio prompt's) to
/// `channels` base width, `strides`, and `latent` latent channels, keeping it consistent.
fn shrink_vae(model: &mut Value, channels: usize, strides: &[usize], latent: usize) {
    let ratio: usize = strides.iter().product();
    let mults: Vec<usize> = (0..strides.len()).map(|i| 1 << i).collect();
    let vae = json!({
        "encoder": {"type": "oobleck", "requires_grad": false, "config": {
            "in_channels": 2, "channels": channels, "c_mults": mults, "strides": strides,
            "latent_dim": 2 * latent, "use_snake": true}},
        "decoder": {"type": "oobleck", "config": {
            "out_channels": 2, "channels": channels, "c_mults": mults, "strides": strides,
            "latent_dim": latent, "use_snake": true, "final_tanh": false}},
        "bottleneck": {"type": "vae"},
        "latent_dim": latent, "downsampling_ratio": ratio, "io_channels": 2
    });
    let sample_size = model["sample_size"].as_u64().unwrap() as usize;
    model["model"]["pretransform"]["config"] = vae.clone();
    model["model"]["io_channels"] = json!(latent);
    model["model"]["diffusion"]["config"]["io_channels"] = json!(latent);
    // One more token than latent frames: the DiT prepends a time token.
    model["model"]["diffusion"]["config"]["_latent_seq_len"] = json!(sample_size / ratio + 1);
    for c in model["model"]["conditioning"]["configs"]
        .as_array_mut()
        .unwrap()
    {
        if c["id"] == "audio_prompt" {
            c["config"]["pretransform_config"]["config"] = vae.clone();
            c["config"]["latent_seq_len"] = json!(sample_size / ratio);
        }
    }
}

/// The demo run with a tiny VAE and a tiny loop.
fn tiny_run() -> RunConfig {
    let mut run = RunConfig::demo();
    shrink_vae(&mut run.model, 2, &[2, 4], 4);
    run.seed = 7;
    run.vae.optim.steps = 4;
    run.vae.optim.batch = 2;
    run.vae.optim.warmup = 2;
    run.vae.optim.checkpoint_every = 2;
    run.vae.optim.keep_checkpoints = 2;
    run.vae.crop = 256;
    run.vae.stft_sizes = vec![64, 32];
    run.vae.kl_weight = 1e-2;
    // The decoder stage is tested in tests/teacher.rs (it comes after a teacher).
    run.decoder = None;
    run
}

fn device() -> Device {
    Device::flex().autodiff()
}

/// The VAE stage of `run` in `dir`, trained (or resumed) until `stop_after` steps in all.
fn train_outcome(
    dir: &Path,
    run: &RunConfig,
    stop_after: Option<u64>,
) -> Result<StageOutcome<Vae>, TrainError> {
    let device = device();
    let run_dir = RunDir::open(dir, run.clone())?;
    let stage = VaeStage::new(run_dir.config(), &device)?;
    let stop = Stop {
        after_steps: stop_after,
        deadline: None,
    };
    train_stage(&stage, &run_dir, &device, stop, &mut |_| {})
}

fn train(
    dir: &Path,
    run: &RunConfig,
    stop_after: Option<u64>,
) -> Result<(Vae, u64, u64), TrainError> {
    let out = train_outcome(dir, run, stop_after)?;
    Ok((out.model, out.step, out.resumed_from))
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    one_thread();
    let run = tiny_run();
    let steps = run.vae.optim.steps;
    let half = steps / 2;
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));

    let (whole, step, from) = train(&a_dir, &run, None).unwrap();
    assert_eq!((step, from), (steps, 0));

    let (_, step, from) = train(&b_dir, &run, Some(half)).unwrap();
    assert_eq!((step, from), (half, 0));
    let (resumed, step, from) = train(&b_dir, &run, None).unwrap();
    assert_eq!(
        (step, from),
        (steps, half),
        "the second call resumes at the checkpoint"
    );

    // A crash after step `half + 1`, before its checkpoint: the log already holds that step,
    // the newest checkpoint is `half`. The resumed run redoes the step and logs it once.
    let c_dir = tmp.path().join("c");
    train(&c_dir, &run, Some(half + 1)).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&c_dir, half + 1)).unwrap();
    let (crashed, step, from) = train(&c_dir, &run, None).unwrap();
    assert_eq!((step, from), (steps, half));

    let initial = {
        use audiox_train::train::Stage;
        let device = device();
        let stage = VaeStage::new(&run, &device).unwrap();
        parameters(&stage.init_model(&device).unwrap())
    };
    let (pa, pb, pc) = (
        parameters(&whole),
        parameters(&resumed),
        parameters(&crashed),
    );
    assert_eq!(pa.len(), pb.len());
    assert_eq!(pa.len(), pc.len());
    let mut changed = 0;
    for ((((name, _, a), (_, _, b)), (_, _, c)), (_, _, init)) in
        pa.iter().zip(&pb).zip(&pc).zip(&initial)
    {
        assert_eq!(a, b, "parameter {name} differs after the resume");
        assert_eq!(a, c, "parameter {name} differs after the crash and resume");
        changed += usize::from(a != init);
    }
    assert!(
        changed > pa.len() / 2,
        "training moved only {changed} of {} parameters",
        pa.len()
    );

    // Both logs hold every step once, with the same losses.
    let log =
        |d: &Path| LossLog::read(&d.join(StageName::Vae.as_str()).join("loss.jsonl")).unwrap();
    let (la, lb) = (log(&a_dir), log(&b_dir));
    assert_eq!(
        la.iter().map(|r| r.step).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>()
    );
    assert_eq!(
        la.iter()
            .map(|r| (r.step, r.loss, r.lr))
            .collect::<Vec<_>>(),
        lb.iter()
            .map(|r| (r.step, r.loss, r.lr))
            .collect::<Vec<_>>()
    );
}

fn checkpoint_dir(root: &Path, step: u64) -> std::path::PathBuf {
    root.join("vae")
        .join("checkpoints")
        .join(format!("step-{step:08}"))
}

/// `run` trained to half its VAE steps in a new temporary folder: the folder (kept alive by
/// the caller), the run folder in it, the checkpoint written there and its step.
fn trained_to_half(
    run: &RunConfig,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    u64,
) {
    let half = run.vae.optim.steps / 2;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train(&dir, run, Some(half)).unwrap();
    let ckpt = checkpoint_dir(&dir, half);
    (tmp, dir, ckpt, half)
}

/// Resumes `run` in `dir`, which must fail with a checkpoint error: the file it names and why.
fn checkpoint_error(dir: &Path, run: &RunConfig) -> (std::path::PathBuf, String) {
    match train(dir, run, None) {
        Err(TrainError::Checkpoint { path, reason }) => (path, reason),
        other => panic!("expected a checkpoint error, got {:?}", other.map(|r| r.1)),
    }
}

#[test]
fn corrupt_or_truncated_checkpoints_are_errors_naming_the_file() {
    one_thread();
    let run = tiny_run();
    let (_tmp, dir, ckpt, _) = trained_to_half(&run);
    let model = ckpt.join("model.bpk");
    let pristine = std::fs::read(&model).unwrap();

    // One flipped byte in the weights.
    let mut bytes = pristine.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&model, &bytes).unwrap();
    let (path, reason) = checkpoint_error(&dir, &run);
    assert_eq!(path, model, "{reason}");
    assert!(reason.contains("corrupt"), "{reason}");
    std::fs::write(&model, &pristine).unwrap();

    // A truncated optimiser state.
    let optim = ckpt.join("optim.bpk");
    let bytes = std::fs::read(&optim).unwrap();
    std::fs::write(&optim, &bytes[..bytes.len() / 3]).unwrap();
    let (path, reason) = checkpoint_error(&dir, &run);
    assert_eq!(path, optim, "{reason}");
    assert!(reason.contains("truncated"), "{reason}");
    std::fs::write(&optim, &bytes).unwrap();

    // Garbage in state.json.
    let state = ckpt.join("state.json");
    std::fs::write(&state, b"{\"format\": 1, \"st").unwrap();
    assert_eq!(checkpoint_error(&dir, &run).0, state);
}

#[test]
fn a_checkpoint_copied_one_folder_too_high_is_an_error_not_a_fresh_start() {
    one_thread();
    let run = tiny_run();
    let (_tmp, dir, ckpt, half) = trained_to_half(&run);
    // Keep only the newest checkpoint, its files moved up into `checkpoints/`.
    let top = ckpt.parent().unwrap().to_path_buf();
    for entry in std::fs::read_dir(&top).unwrap() {
        let p = entry.unwrap().path();
        if p != ckpt {
            std::fs::remove_dir_all(&p).unwrap();
        }
    }
    for name in ["model.bpk", "optim.bpk", "state.json"] {
        std::fs::rename(ckpt.join(name), top.join(name)).unwrap();
    }
    std::fs::remove_dir(&ckpt).unwrap();
    let (path, reason) = checkpoint_error(&dir, &run);
    assert_eq!(path, top.join("state.json"), "{reason}");
    assert!(reason.contains("step-NNNNNNNN"), "{reason}");
    // Moved back into its step folder, the run resumes from it.
    std::fs::create_dir(&ckpt).unwrap();
    for name in ["model.bpk", "optim.bpk", "state.json"] {
        std::fs::rename(top.join(name), ckpt.join(name)).unwrap();
    }
    let (_, step, resumed_from) = train(&dir, &run, None).unwrap();
    assert_eq!((step, resumed_from), (run.vae.optim.steps, half));
}

#[test]
fn a_deadline_stops_after_the_step_that_reaches_it_with_a_checkpoint() {
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    let run_dir = RunDir::open(tmp.path(), run.clone()).unwrap();
    let stage = VaeStage::new(run_dir.config(), &device).unwrap();
    let stop = Stop {
        after_steps: None,
        deadline: Some(std::time::Instant::now()),
    };
    let out = train_stage(&stage, &run_dir, &device, stop, &mut |_| {}).unwrap();
    assert_eq!(out.step, 1);
    assert!(!out.finished);
    assert!(checkpoint_dir(tmp.path(), 1).join("state.json").exists());
}

#[test]
fn a_run_folder_refuses_another_configuration() {
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    RunDir::open(tmp.path(), run.clone()).unwrap();
    let mut other = run.clone();
    other.seed += 1;
    match RunDir::open(tmp.path(), other) {
        Err(TrainError::ConfigMismatch { reason, .. }) => {
            assert!(reason.contains("seed"), "{reason}")
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    // The stored configuration resumes.
    assert_eq!(RunDir::resume(tmp.path()).unwrap().config(), &run);
}

/// A hand-written `run.json` (the documented way to fork a probe) may hold an `f32` setting
/// such as `timing_jitter` as the decimal `0.1`, which is not the f32's widened value: the
/// folder still resumes, and a really different value is still refused.
#[test]
fn a_hand_written_f32_setting_resumes() {
    one_thread();
    let mut run = tiny_run();
    run.corpus.timing_jitter = 0.1;
    let tmp = tempfile::tempdir().unwrap();
    RunDir::open(tmp.path(), run.clone()).unwrap();
    let path = tmp.path().join("run.json");
    let mut stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_ne!(
        stored["corpus"]["timing_jitter"],
        json!(0.1),
        "the test needs a widened f32"
    );
    stored["corpus"]["timing_jitter"] = json!(0.1);
    std::fs::write(&path, serde_json::to_string_pretty(&stored).unwrap()).unwrap();
    assert_eq!(RunDir::resume(tmp.path()).unwrap().config(), &run);
    // Integers are compared exactly: two seeds that round to the same f32 still differ.
    let mut big = run.clone();
    big.seed = 1 << 40;
    let tmp2 = tempfile::tempdir().unwrap();
    RunDir::open(tmp2.path(), big.clone()).unwrap();
    big.seed += 1;
    assert!(matches!(
        RunDir::open(tmp2.path(), big),
        Err(TrainError::ConfigMismatch { .. })
    ));
    let mut other = run.clone();
    other.corpus.timing_jitter = 0.1001;
    match RunDir::open(tmp.path(), other) {
        Err(TrainError::ConfigMismatch { reason, .. }) => {
            assert!(reason.contains("timing_jitter"), "{reason}")
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
}

#[test]
fn the_exported_vae_loads_and_decodes_like_the_trained_one() {
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let (trained, _, _) = train(&tmp.path().join("run"), &run, Some(1)).unwrap();
    let out = tmp.path().join("export");
    let file = export_vae(&trained, &run, &out).unwrap();

    let config = audiox::ModelConfig::from_file(out.join("config.json")).unwrap();
    let cfg = vae_config(&config);
    let dict = StateDict::open(&file).unwrap();
    let plain = Device::flex();
    let (loaded, report) = Vae::load(&cfg, &[WeightSource::new(&dict)], &plain).unwrap();
    assert!(
        report.missing.is_empty() && report.unused.is_empty(),
        "{}",
        report.summary()
    );
    assert_eq!(report.applied.len(), parameters(&trained).len());

    let latent_dim = cfg.decoder.latent_dim;
    let frames = 5;
    let values: Vec<f32> = (0..latent_dim * frames)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
        .collect();
    let latent = |d: &Device| {
        Tensor::<3>::from_data(TensorData::new(values.clone(), [1, latent_dim, frames]), d)
    };
    let want = trained
        .valid()
        .decode(latent(&plain))
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let got = loaded
        .decode(latent(&plain))
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    assert_eq!(want.len(), got.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (w, g) in want.iter().zip(&got) {
        assert!((w - g).abs() <= 1e-4 * scale, "{w} vs {g}");
    }
}

#[test]
fn the_stft_basis_matches_an_fft() {
    one_thread();
    let n_fft = 64;
    let len = 256;
    let signal: Vec<f32> = (0..len)
        .map(|i| ((i as f32) * 0.37).sin() + 0.3 * ((i * i % 17) as f32 / 17.0))
        .collect();
    let basis = StftBasis::new(n_fft, &Device::flex());
    let x = Tensor::<2>::from_data(TensorData::new(signal.clone(), [1, len]), &Device::flex());
    let mag = basis.magnitude(x);
    let [_, bins, frames] = mag.dims();
    let mag = mag.into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(bins, n_fft / 2 + 1);
    // Frame f is centred on sample f * hop (zero padding of n_fft / 2 on both sides).
    let hop = n_fft / 4;
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(n_fft);
    for f in [0, frames / 2, frames - 1] {
        let mut frame: Vec<f64> = (0..n_fft)
            .map(|n| {
                let i = (f * hop + n) as isize - (n_fft / 2) as isize;
                let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / n_fft as f64).cos();
                if (0..len as isize).contains(&i) {
                    w * signal[i as usize] as f64
                } else {
                    0.0
                }
            })
            .collect();
        let mut spec = fft.make_output_vec();
        fft.process(&mut frame, &mut spec).unwrap();
        for (k, c) in spec.iter().enumerate() {
            let got = mag[k * frames + f] as f64;
            assert!(
                (got - c.norm()).abs() < 1e-3,
                "bin {k} frame {f}: {got} vs {}",
                c.norm()
            );
        }
    }
}

#[test]
fn the_reconstruction_report_scores_identity_and_silence_apart() {
    one_thread();
    let corpus =
        audiox_train::corpus::Corpus::new(audiox_train::corpus::CorpusConfig::default()).unwrap();
    let n = 3;
    let same = reconstruction_report(&corpus, n, &mut |x| Ok(x.to_vec())).unwrap();
    assert_eq!(same.clips, n);
    assert_eq!(same.median_snr_db, 100.0);
    assert!(
        same.median_level_db.abs() < 1e-9,
        "{}",
        same.median_level_db
    );
    assert!((same.median_correlation - 1.0).abs() < 1e-9);
    assert_eq!(same.reconstructed, same.original);
    // Per clip: the caption, and for an identity reconstruction the same events in both.
    assert_eq!(same.per_clip.len(), n);
    for (i, (clip, scene)) in same
        .per_clip
        .iter()
        .zip(corpus.held_out_scenes(n))
        .enumerate()
    {
        assert_eq!(clip.caption, scene.caption(), "clip {i}");
        assert_eq!(clip.expected_events, scene.expected_events().len());
        assert_eq!(clip.original, clip.reconstructed, "clip {i}");
        assert_eq!(clip.original.len(), clip.expected_events, "clip {i}");
        assert_eq!(clip.snr_db, 100.0);
    }
    // An offset shows in the report (the detector ignores it).
    let offset = reconstruction_report(&corpus, n, &mut |x| {
        Ok(x.iter().map(|v| v + 0.003).collect())
    })
    .unwrap();
    assert!((offset.median_offset - 0.003 - same.median_offset).abs() < 1e-4);
    assert_eq!(offset.reconstructed, same.reconstructed);
    // Half the level, inverted: -6 dB and correlation -1.
    let inverted = reconstruction_report(&corpus, n, &mut |x| {
        Ok(x.iter().map(|v| -0.5 * v).collect())
    })
    .unwrap();
    assert!(
        (inverted.median_level_db + 6.0206).abs() < 1e-3,
        "{}",
        inverted.median_level_db
    );
    assert!((inverted.median_correlation + 1.0).abs() < 1e-9);
    let silent = reconstruction_report(&corpus, n, &mut |x| Ok(vec![0.0; x.len()])).unwrap();
    assert!(
        silent.median_snr_db.abs() < 1e-9,
        "{}",
        silent.median_snr_db
    );
    assert_eq!(silent.reconstructed.event_count_accuracy, 0.0);
    assert!(silent.per_clip.iter().all(|c| c.reconstructed.is_empty()));
    assert!(silent.median_level_db < -200.0 && silent.median_correlation == 0.0);

    // The VAE reconstructor keeps the clip's length (the tiny VAE of an exported run).
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let (trained, _, _) = train(&tmp.path().join("run"), &run, Some(1)).unwrap();
    let plain = Device::flex();
    let vae = trained.valid();
    let mut reconstruct = vae_reconstructor(&vae, &plain);
    let clip = corpus.training_clip(0);
    let out = reconstruct(&clip.samples).unwrap();
    assert_eq!(out.len(), clip.samples.len());
    assert!(out.iter().all(|v| v.is_finite()));
}

#[test]
fn the_log_floor_ignores_differences_far_below_the_target() {
    use audiox_train::train::stft::multi_resolution_stft_loss;
    one_thread();
    let device = Device::flex();
    let len = 512;
    // A tone with exact silence after it, and a prediction equal to it plus faint noise in
    // the silence (about -70 dB under the tone).
    let target: Vec<f32> = (0..len)
        .map(|i| {
            if i < len / 2 {
                (i as f32 * 0.3).sin() * 0.5
            } else {
                0.0
            }
        })
        .collect();
    let faint: Vec<f32> = target
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if i < len / 2 {
                x
            } else {
                1e-4 * ((i * 7919 % 13) as f32 - 6.0)
            }
        })
        .collect();
    let t = |v: &Vec<f32>| Tensor::<3>::from_data(TensorData::new(v.clone(), [1, 1, len]), &device);
    let bases = [StftBasis::new(64, &device), StftBasis::new(128, &device)];
    let loss = |pred: &Vec<f32>, floor| {
        multi_resolution_stft_loss(&bases, t(pred), t(&target), floor).into_scalar::<f32>()
    };
    // Without a floor the faint noise costs far more than its energy (log of near-zero bins);
    // with a -60 dB floor (added to both magnitudes, so the noise 10 dB under it still costs a
    // little: ~0.04 against ~0.68) it costs an order of magnitude less, while a real error
    // still counts.
    let unfloored = loss(&faint, None);
    let floored = loss(&faint, Some(LogFloor::added(1e-3)));
    assert!(unfloored > 0.5, "{unfloored}");
    assert!(floored < 0.1 * unfloored, "{floored} vs {unfloored}");
    // Taken as a maximum, the floor is a dead zone: noise under it costs nothing in the log
    // term (only spectral convergence is left), less than when it is added.
    let max = Some(LogFloor {
        ratio: 1e-3,
        mode: FloorMode::Max,
    });
    let maxed = loss(&faint, max);
    assert!(maxed < floored, "{maxed} vs {floored}");
    let half: Vec<f32> = target.iter().map(|x| x * 0.5).collect();
    for floor in [Some(LogFloor::added(1e-3)), max] {
        assert!(loss(&half, floor) > 0.3, "a 6 dB error must still count");
    }
}

#[test]
fn the_stft_loss_stays_bounded_on_a_silent_target() {
    use audiox_train::train::stft::{SC_FLOOR_DBFS, multi_resolution_stft_loss};
    one_thread();
    let device = Device::flex();
    let len = 1024;
    let t = |v: Vec<f32>| Tensor::<3>::from_data(TensorData::new(v, [1, 1, len]), &device);
    let bases = [StftBasis::new(64, &device), StftBasis::new(256, &device)];
    let loss = |pred: Vec<f32>, floor| {
        multi_resolution_stft_loss(&bases, t(pred), t(vec![0.0; len]), floor).into_scalar::<f32>()
    };
    // A crop of digital silence (the corpus has them) against a prediction of noise 20 dB
    // above the spectral-convergence floor: the spectral-convergence term is about the
    // amplitude ratio (10), not `||S_x|| / 1e-7` (about 1e5 here).
    let amp = 10f32.powf((SC_FLOOR_DBFS as f32 + 20.0) / 20.0);
    let noise: Vec<f32> = (0..len)
        .map(|i| amp * 3f32.sqrt() * ((i * 7919 % 201) as f32 / 100.0 - 1.0))
        .collect();
    for floor in [None, Some(LogFloor::added(1e-3))] {
        let value = loss(noise.clone(), floor);
        assert!(
            value.is_finite() && value > 1.0 && value < 50.0,
            "{value} (log floor {floor:?})"
        );
        // Silence is still the best answer to silence.
        assert!(loss(vec![0.0; len], floor) < 1e-3);
    }
}

#[test]
fn the_posterior_noise_ramps_in_over_its_warm_up() {
    use audiox_train::train::Stage;
    one_thread();
    let device = device();
    // The l1 term of step `step` computed by hand from the posterior mean plus `scale` times
    // the stage's noise draw is what the stage logs.
    let l1_of = |warmup: Option<u64>, step: u64| {
        let mut run = tiny_run();
        run.vae.posterior_noise_warmup = warmup;
        // The decoder's input is the posterior's (the guide has a test of its own).
        run.vae.latent_guide = None;
        let stage = VaeStage::new(&run, &device).unwrap();
        let model = stage.init_model(&device).unwrap();
        let logged = stage.loss(&model, step, &device).unwrap().terms["l1"];
        let (audio, dims) = stage.step_batch(step);
        let x = Tensor::<3>::from_data(TensorData::new(audio, dims), &device);
        let mean = model.posterior(x.clone()).unwrap().mean;
        let by_mean = (model.decode(mean).unwrap() - x).abs().mean();
        (logged, by_mean.into_scalar::<f32>() as f64)
    };
    // Step 0 of a warm-up: the decoder sees the posterior mean exactly.
    let (logged, by_mean) = l1_of(Some(10), 0);
    assert!(
        (logged - by_mean).abs() <= 1e-6 * by_mean.abs(),
        "{logged} vs {by_mean}"
    );
    // Without a warm-up (and after one), the noise is there: the l1 term differs.
    let (logged, by_mean) = l1_of(None, 0);
    assert!(
        (logged - by_mean).abs() > 1e-6 * by_mean.abs(),
        "{logged} vs {by_mean}"
    );
    let (logged, by_mean) = l1_of(Some(2), 3);
    assert!(
        (logged - by_mean).abs() > 1e-6 * by_mean.abs(),
        "{logged} vs {by_mean}"
    );
}

#[test]
fn the_scale_preserving_init_keeps_the_level_through_the_vae() {
    use audiox_train::train::Stage;
    use audiox_train::train::init::InitScheme;
    one_thread();
    let device = Device::flex();
    // The demo VAE's sizes, one second of a 440 Hz tone at -20 dBFS on both channels.
    let level = |scheme: InitScheme| {
        let mut run = RunConfig::demo();
        run.vae.init = scheme;
        let stage = VaeStage::new(&run, &device).unwrap();
        let vae = stage.init_model(&device).unwrap();
        let rate = run.corpus.sample_rate as f32;
        let n = run.vae.crop;
        let tone: Vec<f32> = (0..n)
            .map(|i| 0.1 * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / rate).sin())
            .collect();
        let x = Tensor::<3>::from_data(
            TensorData::new([tone.clone(), tone].concat(), [1, 2, n]),
            &device,
        );
        let rms = |t: Tensor<3>| t.powi_scalar(2).mean().sqrt().into_scalar::<f32>();
        let x_rms = rms(x.clone());
        let latent = vae.posterior(x).unwrap().mean;
        let z_rms = rms(latent.clone());
        let y_rms = rms(vae.decode(latent).unwrap());
        (z_rms / x_rms, y_rms / z_rms)
    };
    let (enc, dec) = level(InitScheme::ScalePreserving);
    assert!((0.2..5.0).contains(&enc), "encoder gain {enc}");
    assert!((0.2..5.0).contains(&dec), "decoder gain {dec}");
    // PyTorch's default scales shrink both (the demo runs' decoders started ~40 dB low).
    let (enc0, dec0) = level(InitScheme::PytorchDefault);
    eprintln!("gains: scale-preserving {enc} / {dec}, pytorch default {enc0} / {dec0}");
    assert!(
        enc0 < 0.5 * enc && dec0 < 0.5 * dec,
        "{enc0} {dec0} vs {enc} {dec}"
    );
}

#[test]
fn zero_decoder_biases_stay_zero_while_the_rest_trains() {
    one_thread();
    let mut run = tiny_run();
    run.vae.zero_decoder_biases = true;
    let tmp = tempfile::tempdir().unwrap();
    let (trained, step, _) = train(tmp.path(), &run, Some(2)).unwrap();
    assert_eq!(step, 2);
    let initial = {
        use audiox_train::train::Stage;
        let device = device();
        VaeStage::new(&run, &device)
            .unwrap()
            .init_model(&device)
            .unwrap()
    };
    let (mut biases, mut moved) = (0, 0);
    for ((name, _, after), (_, _, before)) in parameters(&trained.decoder)
        .into_iter()
        .zip(parameters(&initial.decoder))
    {
        if name.ends_with("bias") {
            biases += 1;
            assert!(after.iter().all(|&v| v == 0.0), "{name} moved: {after:?}");
        } else if after != before {
            moved += 1;
        }
    }
    assert!(
        biases > 0 && moved > 0,
        "{biases} biases, {moved} other parameters moved"
    );
    // The encoder's biases do train.
    let encoder_moved = parameters(&trained.encoder)
        .into_iter()
        .zip(parameters(&initial.encoder))
        .any(|((name, _, a), (_, _, b))| name.ends_with("bias") && a != b);
    assert!(encoder_moved);
}

#[test]
fn the_latent_guide_marks_a_tone_in_its_band_and_frames() {
    use audiox_train::train::guide::LatentGuide;
    one_thread();
    let device = Device::flex();
    let run = RunConfig::demo();
    let vae = vae_config(&run.model_config().unwrap());
    let hop: usize = vae.encoder.strides.iter().product();
    let bands = vae.decoder.latent_dim;
    let rate = run.corpus.sample_rate;
    let guide = LatentGuide::new(hop, bands, rate, &device);
    let frames = 40;
    // A tone of amplitude 0.1 over latent frames 10..20, silence elsewhere; both channels.
    let features = |hz: f32| {
        let audio: Vec<f32> = (0..frames * hop)
            .map(|i| {
                if (10 * hop..20 * hop).contains(&i) {
                    0.1 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin()
                } else {
                    0.0
                }
            })
            .collect();
        let x = Tensor::<3>::from_data(
            TensorData::new([audio.clone(), audio].concat(), [1, 2, frames * hop]),
            &device,
        );
        let f = guide.features(x);
        assert_eq!(f.dims(), [1, bands, frames]);
        f.into_data().try_into_vec::<f32>().unwrap()
    };
    let at = |f: &[f32], band: usize, frame: usize| f[band * frames + frame];
    let loudest_band = |f: &[f32], frame: usize| {
        (0..bands)
            .max_by(|&a, &b| at(f, a, frame).total_cmp(&at(f, b, frame)))
            .unwrap()
    };
    let low = features(300.0);
    let high = features(2000.0);
    let silence = (1e-6f32.log10() + 3.5) / 1.5;
    for f in [&low, &high] {
        // Frames whose window does not reach the tone are digital silence in every band.
        for frame in (0..9).chain(21..frames) {
            for band in 0..bands {
                assert!(
                    (at(f, band, frame) - silence).abs() < 1e-3,
                    "band {band} frame {frame}: {}",
                    at(f, band, frame)
                );
            }
        }
        // Frames inside the tone: one band well above silence, in the same band throughout.
        let band = loudest_band(f, 15);
        for frame in 11..19 {
            assert_eq!(loudest_band(f, frame), band, "frame {frame}");
            assert!(at(f, band, frame) > silence + 1.5, "{}", at(f, band, frame));
        }
    }
    assert!(
        loudest_band(&high, 15) > loudest_band(&low, 15),
        "2 kHz in band {}, 300 Hz in band {}",
        loudest_band(&high, 15),
        loudest_band(&low, 15)
    );
}

#[test]
fn the_latent_guide_hands_over_to_the_posterior_on_schedule() {
    use audiox_train::train::Stage;
    use audiox_train::train::guide::{LatentGuide, LatentGuideConfig};
    one_thread();
    let cfg = LatentGuideConfig {
        steps: 2,
        blend: 4,
        weight: 3.0,
    };
    let shares: Vec<f64> = (0..8).map(|s| cfg.share(s)).collect();
    assert_eq!(shares, [1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);

    // Step 0 of a guided run (no posterior noise yet): the decoder decodes the guide's features
    // and the logged guide term is the posterior mean's squared error against them.
    let device = device();
    let mut run = tiny_run();
    run.vae.posterior_noise_warmup = Some(10);
    run.vae.latent_guide = Some(cfg);
    let stage = VaeStage::new(&run, &device).unwrap();
    let model = stage.init_model(&device).unwrap();
    let terms = stage.loss(&model, 0, &device).unwrap().terms;
    let (audio, dims) = stage.step_batch(0);
    let x = Tensor::<3>::from_data(TensorData::new(audio, dims), &device);
    let vae = vae_config(&run.model_config().unwrap());
    let guide = LatentGuide::new(
        vae.encoder.strides.iter().product(),
        vae.decoder.latent_dim,
        run.corpus.sample_rate,
        &device,
    );
    let features = guide.features(x.clone());
    let mean = model.posterior(x.clone()).unwrap().mean;
    let scalar = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
    let mse = scalar((mean.clone() - features.clone()).powi_scalar(2).mean());
    let l1 = scalar((model.decode(features).unwrap() - x.clone()).abs().mean());
    let l1_of_mean = scalar((model.decode(mean).unwrap() - x).abs().mean());
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-5 * b.abs().max(1e-12);
    assert!(close(terms["guide_mse"], mse), "{terms:?} vs {mse}");
    assert!(close(terms["l1"], l1), "{} vs {l1}", terms["l1"]);
    assert!(!close(l1, l1_of_mean), "the guide made no difference");
    // Once handed over, no guide term is logged.
    let terms = stage.loss(&model, 6, &device).unwrap().terms;
    assert!(!terms.contains_key("guide_mse"), "{terms:?}");
}

#[test]
fn mel_bands_place_tones_by_pitch_and_keep_the_linear_loss_otherwise() {
    use audiox_train::train::stft::{StftBasis, mel_filters};
    one_thread();
    let device = Device::flex();
    let rate = RunConfig::demo().corpus.sample_rate;
    let n_fft = 1024;
    let bins = n_fft / 2 + 1;
    // Every filter sums to 1; more bands than bins are capped at the bin count.
    let filters = mel_filters(n_fft, 64, rate, 40.0);
    for row in filters.chunks(bins) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    let tone = |hz: f32| -> Tensor<2> {
        let x: Vec<f32> = (0..8192)
            .map(|i| 0.1 * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect();
        Tensor::from_data(TensorData::new(x, [1, 8192]), &device)
    };
    let mel = StftBasis::with_mel(n_fft, 64, rate, &device);
    let loudest = |x: Tensor<2>| {
        let s = mel.spectrum(x);
        let [_, bands, frames] = s.dims();
        assert_eq!(bands, 64);
        let v = s.into_data().try_into_vec::<f32>().unwrap();
        let mid = frames / 2;
        (0..bands)
            .max_by(|&a, &b| v[a * frames + mid].total_cmp(&v[b * frames + mid]))
            .unwrap()
    };
    let (low, high) = (loudest(tone(300.0)), loudest(tone(2000.0)));
    // The band of each tone is the one whose filter weighs its bin most.
    let weight = |band: usize, hz: f32| {
        filters[band * bins + (hz / rate as f32 * n_fft as f32).round() as usize]
    };
    for (band, hz) in [(low, 300.0), (high, 2000.0)] {
        let best = (0..64)
            .max_by(|&a, &b| weight(a, hz).total_cmp(&weight(b, hz)))
            .unwrap();
        assert!(
            band.abs_diff(best) <= 1,
            "{hz} Hz: band {band}, filter {best}"
        );
    }
    assert!(
        high > low + 10,
        "300 Hz in band {low}, 2 kHz in band {high}"
    );
    assert_eq!(
        StftBasis::with_mel(64, 64, rate, &device)
            .spectrum(tone(300.0))
            .dims()[1],
        33
    );
    // Without mel bands the spectrum is the magnitude.
    let linear = StftBasis::new(n_fft, &device);
    let (a, b) = (linear.spectrum(tone(300.0)), linear.magnitude(tone(300.0)));
    assert_eq!(a.into_data(), b.into_data());
}

#[test]
fn the_mel_loss_sees_infrasound() {
    use audiox_train::train::stft::{MEL_LOWEST_HZ, mel_filters};
    let rate = RunConfig::demo().corpus.sample_rate;
    // At every resolution of the demo loss, the first bin above DC (where a drifting offset's
    // energy lies: 7.8 Hz at 2,048 points) has weight in some band. Filters from 40 Hz gave
    // it none, and the P320 run's output drifted.
    for &n_fft in &RunConfig::demo().vae.stft_sizes {
        let bins = n_fft / 2 + 1;
        let bands = RunConfig::demo().vae.stft_mel_bands.unwrap().min(bins);
        let filters = mel_filters(n_fft, bands, rate, MEL_LOWEST_HZ);
        let weight: f32 = filters.chunks(bins).map(|row| row[1]).sum();
        assert!(weight > 0.0, "{n_fft} points: bin 1 has no weight");
        // The DC bin too: a constant offset has its energy there (and in bin 1 through the
        // window), and a triangle from 0 Hz gives bin 0 no weight.
        let dc: f32 = filters.chunks(bins).map(|row| row[0]).sum();
        assert!(dc > 0.0, "{n_fft} points: the DC bin has no weight");
    }
    let filters = mel_filters(2048, 64, rate, 40.0);
    assert_eq!(filters.chunks(1025).map(|row| row[1]).sum::<f32>(), 0.0);
}

#[test]
fn the_demo_loss_penalises_a_dc_offset() {
    use audiox_train::train::stft::{LogFloor, StftBasis, multi_resolution_stft_loss};
    let run = RunConfig::demo();
    let (rate, crop) = (run.corpus.sample_rate, run.vae.crop);
    let device = Device::flex();
    let bases: Vec<StftBasis> = run
        .vae
        .stft_sizes
        .iter()
        .map(|&n| StftBasis::with_mel(n, run.vae.stft_mel_bands.unwrap(), rate, &device))
        .collect();
    let floor = Some(LogFloor::added(
        10f32.powf(run.vae.log_floor_db.unwrap() as f32 / 20.0),
    ));
    // A target of a 1 kHz tone burst over silence, as the corpus has; the prediction is the
    // target plus a constant offset 30 dB under the tone (a resumed run drifted to such an
    // offset, and the event detector counted it as an event at 0 s).
    let target: Vec<f32> = (0..crop)
        .map(|i| {
            let on = i > crop / 4 && i < crop / 2;
            if on {
                0.2 * (std::f32::consts::TAU * 1000.0 * i as f32 / rate as f32).sin()
            } else {
                0.0
            }
        })
        .collect();
    let t = |v: &[f32]| Tensor::<3>::from_data(TensorData::new(v.to_vec(), [1, 1, crop]), &device);
    let loss = |offset: f32| {
        let pred: Vec<f32> = target.iter().map(|v| v + offset).collect();
        multi_resolution_stft_loss(&bases, t(&pred), t(&target), floor).into_scalar::<f32>()
    };
    let (clean, offset) = (loss(0.0), loss(0.2 * 10f32.powf(-30.0 / 20.0)));
    assert!(clean < 1e-4, "{clean}");
    // With the DC bin in the first band the offset costs 0.318 here; with a plain triangle
    // from 0 Hz (DC bin unweighted, the offset seen only through the window's leakage) 0.266.
    assert!(offset > 0.29, "offset {offset}");
}

#[test]
fn the_dc_term_is_the_l1_of_frame_means_and_weighs_in_the_loss() {
    use audiox_train::train::Stage;
    one_thread();
    let device = device();
    let mut run = tiny_run();
    // No posterior noise at step 0: the decoder decodes the posterior mean.
    run.vae.posterior_noise_warmup = Some(10);
    run.vae.latent_guide = None;
    run.vae.dc_weight = 0.0;
    let stage = VaeStage::new(&run, &device).unwrap();
    let model = stage.init_model(&device).unwrap();
    let without = stage.loss(&model, 0, &device).unwrap();

    let (audio, dims) = stage.step_batch(0);
    let x = Tensor::<3>::from_data(TensorData::new(audio.clone(), dims), &device);
    let y = model
        .decode(model.posterior(x).unwrap().mean)
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let hop: usize = vae_config(&run.model_config().unwrap())
        .encoder
        .strides
        .iter()
        .product();
    // Per row and channel, per latent frame: |mean(y) - mean(x)|, averaged.
    let diffs: Vec<f64> = y
        .chunks(hop)
        .zip(audio.chunks(hop))
        .map(|(a, b)| {
            let mean = |v: &[f32]| v.iter().map(|&s| s as f64).sum::<f64>() / hop as f64;
            (mean(a) - mean(b)).abs()
        })
        .collect();
    let dc = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let logged = without.terms["dc"];
    assert!(
        (logged - dc).abs() <= 1e-4 * dc.max(1e-9),
        "{logged} vs {dc}"
    );
    assert!(dc > 0.0);

    run.vae.dc_weight = 7.0;
    let stage = VaeStage::new(&run, &device).unwrap();
    let with = stage.loss(&model, 0, &device).unwrap();
    let scalar = |t: Tensor<1>| t.into_scalar::<f32>() as f64;
    let added = scalar(with.loss) - scalar(without.loss);
    assert!(
        (added - 7.0 * dc).abs() <= 1e-4 * (7.0 * dc).max(1e-6),
        "{added} vs {}",
        7.0 * dc
    );
}

#[test]
fn a_frozen_encoder_stays_bit_identical_while_the_decoder_trains() {
    one_thread();
    let mut run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    // Two steps as usual, then two more with the encoder frozen (a hand edit of run.json).
    let (before, step, _) = train(tmp.path(), &run, Some(2)).unwrap();
    assert_eq!(step, 2);
    run.vae.freeze_encoder = true;
    std::fs::write(
        tmp.path().join("run.json"),
        serde_json::to_string_pretty(&run).unwrap(),
    )
    .unwrap();
    let (after, step, _) = train(tmp.path(), &run, Some(4)).unwrap();
    assert_eq!(step, 4);
    for ((name, _, a), (_, _, b)) in parameters(&after.encoder)
        .into_iter()
        .zip(parameters(&before.encoder))
    {
        assert!(a == b, "encoder {name} moved");
    }
    let decoder_moved = parameters(&after.decoder)
        .into_iter()
        .zip(parameters(&before.decoder))
        .filter(|((_, _, a), (_, _, b))| a != b)
        .count();
    assert!(decoder_moved > 0);
}

/// `vae.init_from`: the stage starts from a VAE file's weights (read at step 0 only); with a
/// frozen encoder its export's encoder is the file's, so `--update-decoder` takes the new
/// decoder into a run that imported the file. Bad files and settings are typed errors.
#[test]
fn a_vae_stage_started_from_a_file_fine_tunes_its_decoder_for_update_decoder() {
    use audiox_train::train::vae::{import_vae, update_decoder};
    one_thread();
    let device = device();
    let tmp = tempfile::tempdir().unwrap();
    let first = tiny_run();
    let (trained, _, _) = train(&tmp.path().join("first"), &first, Some(2)).unwrap();
    let file = export_vae(&trained, &first, &tmp.path().join("first_export")).unwrap();
    fn values<M: Module>(m: &M) -> Vec<Vec<f32>> {
        parameters(m).into_iter().map(|p| p.2).collect()
    }

    let mut tune = tiny_run();
    tune.seed = 8;
    tune.vae.latent_guide = None;
    tune.vae.freeze_encoder = true;
    tune.vae.init_from = Some(file.clone());
    // Step 0 is the file's VAE as the loader reads it, not the seed's random one.
    let (start, step, _) = train(&tmp.path().join("tune"), &tune, Some(0)).unwrap();
    assert_eq!(step, 0);
    let dict = StateDict::open(&file).unwrap();
    let config = vae_config(&first.model_config().unwrap());
    let (loaded, _) = Vae::load(&config, &[WeightSource::new(&dict)], &device).unwrap();
    assert_eq!(values(&start), values(&loaded));
    let mut random = tune.clone();
    random.vae.init_from = None;
    let (fresh, _, _) = train(&tmp.path().join("random"), &random, Some(0)).unwrap();
    assert_ne!(values(&start), values(&fresh));

    // Two steps, interrupted after the first; the file is not read again on resuming.
    let moved = tmp.path().join("moved.safetensors");
    std::fs::copy(&file, &moved).unwrap();
    tune.vae.init_from = Some(moved.clone());
    let dir = tmp.path().join("tune2");
    train(&dir, &tune, Some(1)).unwrap();
    std::fs::remove_file(&moved).unwrap();
    let (tuned, step, resumed) = train(&dir, &tune, Some(2)).unwrap();
    assert_eq!((step, resumed), (2, 1));
    assert_eq!(values(&tuned.encoder), values(&loaded.encoder));
    assert_ne!(values(&tuned.decoder), values(&loaded.decoder));

    // A run that imported the first file takes the fine-tuned decoder.
    let tuned_file = export_vae(&tuned, &tune, &tmp.path().join("tuned_export")).unwrap();
    let importer = RunDir::open(tmp.path().join("importer"), first.clone()).unwrap();
    import_vae(&importer, &file, &device).unwrap();
    update_decoder(&importer, &tuned_file, &device).unwrap();

    // A missing file, and one of other sizes, are errors naming the file.
    let mut missing = tune.clone();
    missing.vae.init_from = Some(tmp.path().join("absent.safetensors"));
    let err = train(&tmp.path().join("missing"), &missing, Some(1))
        .err()
        .unwrap();
    assert!(err.to_string().contains("absent.safetensors"), "{err}");
    let mut other = first.clone();
    shrink_vae(&mut other.model, 4, &[2, 4], 4);
    let (wide, _, _) = train(&tmp.path().join("wide"), &other, Some(0)).unwrap();
    let wide_file = export_vae(&wide, &other, &tmp.path().join("wide_export")).unwrap();
    let mut mismatched = tune.clone();
    mismatched.vae.init_from = Some(wide_file);
    let err = train(&tmp.path().join("mismatched"), &mismatched, Some(1))
        .err()
        .unwrap();
    assert!(err.to_string().contains("wide_export"), "{err}");

    // A setting for a VAE trained from its initialisation is refused with `init_from`.
    let mut guided = tune.clone();
    guided.vae.latent_guide = first.vae.latent_guide.clone();
    assert!(
        guided.vae.latent_guide.is_some(),
        "the demo VAE has a guide"
    );
    let err = RunDir::open(tmp.path().join("guided"), guided).unwrap_err();
    assert!(err.to_string().contains("vae.latent_guide"), "{err}");
}

/// The learning-rate decay: `lr` up to `from_step`, a straight line to `final_lr` at the last
/// step; bad settings are refused; and a run with a decay is not "continued exactly" by a
/// config that only raises its steps (the slope would change under the steps already taken).
#[test]
fn the_lr_decay_is_a_line_to_the_last_step_and_blocks_step_extension() {
    one_thread();
    let mut run = tiny_run();
    let o = &mut run.vae.optim;
    o.steps = 11;
    o.warmup = 0;
    o.lr = 1e-3;
    o.lr_decay = Some(LrDecay {
        from_step: 5,
        final_lr: 1e-4,
    });
    let o = run.vae.optim.clone();
    for step in 0..=5 {
        assert_eq!(o.lr_at(step), 1e-3, "step {step}");
    }
    assert!((o.lr_at(10) - 1e-4).abs() < 1e-12);
    assert!(
        (o.lr_at(8) - (1e-3 - 0.6 * 9e-4)).abs() < 1e-12,
        "{}",
        o.lr_at(8)
    );
    assert!(o.lr_at(6) < o.lr_at(5) && o.lr_at(9) < o.lr_at(8));

    for bad in [
        LrDecay {
            from_step: 11,
            final_lr: 1e-4,
        },
        LrDecay {
            from_step: 5,
            final_lr: 2e-3,
        },
        LrDecay {
            from_step: 5,
            final_lr: f64::NAN,
        },
    ] {
        let mut r = run.clone();
        r.vae.optim.lr_decay = Some(bad);
        let tmp = tempfile::tempdir().unwrap();
        match RunDir::open(tmp.path(), r) {
            Err(TrainError::Config { field, .. }) => assert!(field.contains("lr_decay"), "{field}"),
            other => panic!("{bad:?}: expected a config error, got {other:?}"),
        }
    }

    let tmp = tempfile::tempdir().unwrap();
    RunDir::open(tmp.path(), run.clone()).unwrap();
    let mut longer = run.clone();
    longer.vae.optim.steps += 5;
    match RunDir::open(tmp.path(), longer) {
        Err(TrainError::ConfigMismatch { reason, .. }) => {
            assert!(reason.contains("lr_decay"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Without the decay the same change is a step extension, accepted.
    let mut plain = run.clone();
    plain.vae.optim.lr_decay = None;
    let tmp = tempfile::tempdir().unwrap();
    RunDir::open(tmp.path(), plain.clone()).unwrap();
    plain.vae.optim.steps += 5;
    RunDir::open(tmp.path(), plain).unwrap();
}

/// A stage's moving average of its weights (`ema_decay`): written into every checkpoint
/// (`average.bpk`), resumed with it bit for bit, returned by the loop; decay 0 keeps it equal
/// to the trained weights, and a checkpoint written without one starts it from its weights.
#[test]
fn the_moving_average_is_checkpointed_and_resumes_bit_for_bit() {
    one_thread();
    let mut run = tiny_run();
    run.vae.optim.ema_decay = Some(0.5);
    let steps = run.vae.optim.steps;
    let half = steps / 2;
    let tmp = tempfile::tempdir().unwrap();
    let outcome = |dir: &Path, run: &RunConfig, stop_after: Option<u64>| {
        train_outcome(dir, run, stop_after).unwrap()
    };
    let values = |m: &Vae| -> Vec<Vec<f32>> { parameters(m).into_iter().map(|p| p.2).collect() };

    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let whole = outcome(&a_dir, &run, None);
    let whole_average = values(whole.average.as_ref().expect("an average"));
    assert_ne!(
        whole_average,
        values(&whole.model),
        "decay 0.5 trails the trained weights"
    );
    assert!(checkpoint_dir(&a_dir, steps).join("average.bpk").exists());
    outcome(&b_dir, &run, Some(half));
    assert!(checkpoint_dir(&b_dir, half).join("average.bpk").exists());
    let resumed = outcome(&b_dir, &run, None);
    assert_eq!(resumed.resumed_from, half);
    assert_eq!(
        values(resumed.average.as_ref().unwrap()),
        whole_average,
        "the average after a resume"
    );
    assert_eq!(values(&resumed.model), values(&whole.model));
    // The weights a finished stage hands on are the average, trainable where the model is (a
    // student stage trains copies of the teacher's trainable parameters).
    let trainable = |m: &Vae| {
        struct Count(usize, usize);
        impl burn::module::ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
                self.0 += 1;
                self.1 += usize::from(p.val().is_require_grad());
            }
        }
        let mut c = Count(0, 0);
        m.visit(&mut c);
        (c.0, c.1)
    };
    let (params, model_trainable) = trainable(&resumed.model);
    assert_eq!(model_trainable, params, "every VAE parameter trains");
    let weights = resumed.into_weights();
    assert_eq!(values(&weights), whole_average);
    assert_eq!(trainable(&weights), (params, params));

    // Decay 0: the average is the trained weights at every step.
    let mut copy = run.clone();
    copy.vae.optim.ema_decay = Some(0.0);
    let zero = outcome(&tmp.path().join("zero"), &copy, None);
    assert_eq!(values(zero.average.as_ref().unwrap()), values(&zero.model));

    // A run without an average, given one from its checkpoint on (run.json edited by hand),
    // starts the average from the checkpoint's weights.
    let mut plain = run.clone();
    plain.vae.optim.ema_decay = None;
    let c_dir = tmp.path().join("c");
    let first = outcome(&c_dir, &plain, Some(half));
    assert!(first.average.is_none());
    assert!(!checkpoint_dir(&c_dir, half).join("average.bpk").exists());
    let path = c_dir.join("run.json");
    let mut stored: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    stored["vae"]["ema_decay"] = json!(0.0);
    std::fs::write(&path, serde_json::to_string_pretty(&stored).unwrap()).unwrap();
    let device = device();
    let run_dir = RunDir::resume(&c_dir).unwrap();
    let stage = VaeStage::new(run_dir.config(), &device).unwrap();
    let started = train_stage(
        &stage,
        &run_dir,
        &device,
        Stop::after_steps(half),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(started.step, half, "no step taken");
    assert_eq!(
        values(started.average.as_ref().unwrap()),
        values(&first.model)
    );

    // Parameters the stage freezes are copied into the average, not blended: a frozen
    // encoder stays bit for bit the one the teacher's latents came from (`--update-decoder`
    // checks it), whatever the rounding of `d a + (1 - d) a`.
    let mut frozen = run.clone();
    frozen.vae.freeze_encoder = true;
    // 0.7: about one value in eight comes out of the blend of two equal values changed.
    frozen.vae.optim.ema_decay = Some(0.7);
    let f = outcome(&tmp.path().join("frozen"), &frozen, None);
    let f_average = f.average.as_ref().unwrap();
    let encoder =
        |m: &Vae| -> Vec<Vec<f32>> { parameters(&m.encoder).into_iter().map(|p| p.2).collect() };
    assert_eq!(encoder(f_average), encoder(&f.model));
    let decoder =
        |m: &Vae| -> Vec<Vec<f32>> { parameters(&m.decoder).into_iter().map(|p| p.2).collect() };
    assert_ne!(
        decoder(f_average),
        decoder(&f.model),
        "the decoder is averaged"
    );

    // A decay outside [0, 1) is refused before any step.
    let mut bad = run.clone();
    bad.vae.optim.ema_decay = Some(1.0);
    let err = RunDir::open(tmp.path().join("bad"), bad).unwrap_err();
    assert!(err.to_string().contains("vae.ema_decay"), "{err}");
    // The DMD stage keeps none: asking for one is refused, not ignored.
    let mut student = run.clone();
    student.student.optim.ema_decay = Some(0.9);
    let err = RunDir::open(tmp.path().join("student"), student).unwrap_err();
    assert!(err.to_string().contains("student.ema_decay"), "{err}");
}

#[test]
fn the_checkpoint_mean_averages_its_checkpoints_which_pruning_keeps() {
    use audiox_train::train::checkpoint::Checkpoints;
    use audiox_train::train::{CheckpointMean, Stage};
    one_thread();
    let mut run = tiny_run();
    let o = &mut run.vae.optim;
    (o.steps, o.checkpoint_every, o.keep_checkpoints) = (6, 2, 1);
    o.checkpoint_mean = Some(CheckpointMean { from_step: 2 });
    assert_eq!(o.mean_steps(), vec![2, 4, 6]);
    let tmp = tempfile::tempdir().unwrap();
    let values = |m: &Vae| -> Vec<Vec<f32>> { parameters(m).into_iter().map(|p| p.2).collect() };

    // Interrupted at step 3 (an extra checkpoint) and resumed: keep 1 deletes the extra one
    // but none of the mean's.
    let a_dir = tmp.path().join("a");
    let part = train_outcome(&a_dir, &run, Some(3)).unwrap();
    assert!(part.average.is_none(), "no mean before the last step");
    let a = train_outcome(&a_dir, &run, None).unwrap();
    assert!(a.finished && a.resumed_from == 3);
    for step in [2, 4, 6] {
        assert!(checkpoint_dir(&a_dir, step).exists(), "step {step} kept");
    }
    assert!(
        !checkpoint_dir(&a_dir, 3).exists(),
        "the extra checkpoint pruned"
    );
    assert!(checkpoint_dir(&a_dir, 6).join("average.bpk").exists());

    // The mean is that of the three checkpoints' trained weights, value by value.
    let device = device();
    let stage = VaeStage::new(&run, &device).unwrap();
    let checkpoints = Checkpoints::new(&a_dir.join("vae"));
    let members: Vec<Vec<Vec<f32>>> = [2, 4, 6]
        .iter()
        .map(|&s| {
            let optim = burn::optim::AdamConfig::new().init();
            values(
                &checkpoints
                    .load(s, stage.init_model(&device).unwrap(), optim)
                    .unwrap()
                    .model,
            )
        })
        .collect();
    let mean = values(a.average.as_ref().expect("the mean"));
    let mut differs = false;
    for (i, tensor) in mean.iter().enumerate() {
        for (j, &v) in tensor.iter().enumerate() {
            let expected = members.iter().map(|m| m[i][j]).sum::<f32>() / 3.0;
            assert!(
                (v - expected).abs() <= 1e-6 * expected.abs().max(1.0),
                "{v} vs {expected}"
            );
            differs |= members[0][i][j] != members[2][i][j];
        }
    }
    assert!(
        differs,
        "the checkpoints differ, so the mean is a real mean"
    );
    assert_ne!(mean, values(&a.model), "the mean is not the last weights");
    assert_eq!(values(&a.into_weights()), mean, "the weights handed on");

    // An uninterrupted run makes the same mean; a finished run reads it back from its last
    // checkpoint.
    let b_dir = tmp.path().join("b");
    let b = train_outcome(&b_dir, &run, None).unwrap();
    assert_eq!(values(b.average.as_ref().unwrap()), mean);
    let again = train_outcome(&b_dir, &run, None).unwrap();
    assert_eq!(again.resumed_from, 6);
    assert_eq!(values(again.average.as_ref().unwrap()), mean);

    // A checkpoint of the mean missing when the stage ends: an error naming its step.
    let c_dir = tmp.path().join("c");
    train_outcome(&c_dir, &run, Some(5)).unwrap();
    std::fs::remove_dir_all(checkpoint_dir(&c_dir, 4)).unwrap();
    let err = train_outcome(&c_dir, &run, None).err().unwrap().to_string();
    assert!(
        err.contains("vae.checkpoint_mean") && err.contains("step 4"),
        "{err}"
    );

    // Refused before any step: with a moving average, from a step that is no checkpoint, from
    // the last step, and on the DMD stage.
    let refused = |edit: &dyn Fn(&mut RunConfig), field: &str| {
        let mut bad = run.clone();
        edit(&mut bad);
        let err = RunDir::open(tmp.path().join("bad"), bad).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    };
    refused(
        &|r| r.vae.optim.ema_decay = Some(0.9),
        "vae.checkpoint_mean",
    );
    refused(
        &|r| r.vae.optim.checkpoint_mean = Some(CheckpointMean { from_step: 3 }),
        "vae.checkpoint_mean",
    );
    refused(
        &|r| r.vae.optim.checkpoint_mean = Some(CheckpointMean { from_step: 6 }),
        "vae.checkpoint_mean",
    );
    refused(
        &|r| r.student.optim.checkpoint_mean = Some(CheckpointMean { from_step: 2 }),
        "student.checkpoint_mean",
    );
}

/// `trained_weights` (what the student stage reads of its teacher) needs no optimiser state: a
/// finished stage's weights come back from a checkpoint copied without `optim.bpk`, as the
/// committed `training-checkpoints/` folders keep them; they are the mean where the stage keeps
/// one, made from the member checkpoints where the last one holds none.
#[test]
fn the_trained_weights_load_without_the_optimiser_state() {
    use audiox_train::train::{CheckpointMean, trained_weights};
    one_thread();
    let mut run = tiny_run();
    let o = &mut run.vae.optim;
    (o.steps, o.checkpoint_every, o.keep_checkpoints) = (6, 2, 3);
    let tmp = tempfile::tempdir().unwrap();
    let values = |m: &Vae| -> Vec<Vec<f32>> { parameters(m).into_iter().map(|p| p.2).collect() };
    let device = device();

    // No checkpoint yet: an error, not fresh weights.
    let empty = RunDir::open(tmp.path().join("empty"), run.clone()).unwrap();
    let stage = VaeStage::new(&run, &device).unwrap();
    let err = trained_weights(&stage, &empty, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no checkpoint"), "{err}");

    // Plain weights: the last checkpoint's, with every optim.bpk deleted.
    let dir = tmp.path().join("plain");
    let trained = train_outcome(&dir, &run, None).unwrap();
    for step in [2, 4, 6] {
        std::fs::remove_file(checkpoint_dir(&dir, step).join("optim.bpk")).unwrap();
    }
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let (step, weights) = trained_weights(&stage, &run_dir, &device).unwrap();
    assert_eq!(step, 6);
    assert_eq!(values(&weights), values(&trained.model));
    // Resuming the stage itself still needs the optimiser state, and says which file.
    let err = train_outcome(&dir, &run, None).err().unwrap().to_string();
    assert!(err.contains("optim.bpk"), "{err}");

    // The same checkpoints read by a stage that asks for the mean of steps 2, 4 and 6: none is
    // saved, so it is made from the three checkpoints' weights.
    let mut with_mean = run.clone();
    with_mean.vae.optim.checkpoint_mean = Some(CheckpointMean { from_step: 2 });
    let mean_stage = VaeStage::new(&with_mean, &device).unwrap();
    let (_, mean) = trained_weights(&mean_stage, &run_dir, &device).unwrap();
    let checkpoints = audiox_train::train::checkpoint::Checkpoints::new(&dir.join("vae"));
    let members: Vec<Vec<Vec<f32>>> = [2, 4, 6]
        .iter()
        .map(|&s| {
            values(
                &checkpoints
                    .load_model(s, {
                        use audiox_train::train::Stage;
                        stage.init_model(&device).unwrap()
                    })
                    .unwrap(),
            )
        })
        .collect();
    let mean = values(&mean);
    assert_ne!(
        mean,
        values(&trained.model),
        "the mean is not the last weights"
    );
    for (i, tensor) in mean.iter().enumerate() {
        for (j, &v) in tensor.iter().enumerate() {
            let expected = members.iter().map(|m| m[i][j]).sum::<f32>() / 3.0;
            assert!((v - expected).abs() <= 1e-6 * expected.abs().max(1.0));
        }
    }
    // A member missing: an error naming its step.
    std::fs::remove_dir_all(checkpoint_dir(&dir, 4)).unwrap();
    let err = trained_weights(&mean_stage, &run_dir, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("step 4"), "{err}");

    // A finished stage that saved its mean hands on that mean without any optim.bpk.
    let saved = tmp.path().join("saved");
    let outcome = train_outcome(&saved, &with_mean, None).unwrap();
    for step in [2, 4, 6] {
        std::fs::remove_file(checkpoint_dir(&saved, step).join("optim.bpk")).unwrap();
    }
    std::fs::remove_dir_all(checkpoint_dir(&saved, 2)).unwrap();
    let saved_dir = RunDir::open(&saved, with_mean.clone()).unwrap();
    let (_, weights) = trained_weights(&mean_stage, &saved_dir, &device).unwrap();
    assert_eq!(values(&weights), values(&outcome.into_weights()));
}

/// The built-in run (`audiox-train` without `--config`) is the recipe of the shipped demo
/// model: its model config and T5 / CLIP configs are the shipped files', and its stage settings
/// are those of the committed run folder the shipped teacher and student came from
/// (`training-checkpoints/TPA/run.json`), but for two fields: TPA's teacher is a mean of
/// checkpoints made by hand (`average_checkpoints`), which the built-in run makes itself
/// (`teacher.checkpoint_mean`, its checkpoints protected from pruning, so it keeps fewer).
/// Its student section is run BI2's, and its decoder stage the settings of run VD2, which
/// made the shipped VAE's decoder.
#[test]
fn the_built_in_run_is_the_shipped_models_recipe() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let json = |p: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(workspace.join(p)).unwrap()).unwrap()
    };
    let demo = RunConfig::demo();
    demo.validate().unwrap();
    assert_eq!(demo.model, json("audiox-demo/assets/config.json"));
    assert_eq!(
        demo.teacher.t5,
        json("audiox-demo/assets/t5-base/config.json")
    );
    assert_eq!(
        demo.teacher.clip,
        json("audiox-demo/assets/clip-vit-base-patch32/config.json")
    );

    let shipped =
        RunConfig::from_file(workspace.join("training-checkpoints/TPA/run.json")).unwrap();
    assert_eq!(demo.seed, shipped.seed);
    assert_eq!(demo.corpus, shipped.corpus);
    assert_eq!(demo.vae, shipped.vae);
    // The shipped student is run HGS0's: run BI2's student stage (BI's run on to 1,400 steps;
    // TPA's run folder and BI's stopped at 700) with a new caption for every row, run on to
    // 1,800 steps with the step-halving term from step 1,400 (run HV2) and the teacher's
    // guidance switched from 2 to 4 there; how often checkpoints are written and kept does not
    // change the steps.
    let hgs0 = RunConfig::from_file(workspace.join("training-checkpoints/HGS0/run.json")).unwrap();
    let student_run =
        RunConfig::from_file(workspace.join("training-checkpoints/HV2/run.json")).unwrap();
    let mut switched = student_run.student.clone();
    switched.guidance_switch = demo.student.guidance_switch.clone();
    assert_eq!(
        hgs0.student, switched,
        "HGS0's student is HV2's with the switch"
    );
    assert_eq!(
        (hgs0.seed, &hgs0.corpus, &hgs0.model),
        (student_run.seed, &student_run.corpus, &student_run.model)
    );
    let student_run = hgs0;
    let mut student = student_run.student.clone();
    student.optim.checkpoint_every = demo.student.optim.checkpoint_every;
    student.optim.keep_checkpoints = demo.student.optim.keep_checkpoints;
    assert_eq!(demo.student, student);
    let bi2 = RunConfig::from_file(workspace.join("training-checkpoints/BI2/run.json")).unwrap();
    let mut from_bi2 = bi2.student.clone();
    from_bi2.optim.steps = demo.student.optim.steps;
    from_bi2.optim.checkpoint_every = student_run.student.optim.checkpoint_every;
    from_bi2.optim.keep_checkpoints = student_run.student.optim.keep_checkpoints;
    from_bi2.distinct_captions = true;
    from_bi2.halving = demo.student.halving.clone();
    from_bi2.guidance_switch = demo.student.guidance_switch.clone();
    assert_eq!(
        student_run.student, from_bi2,
        "HGS0's student is BI2's with distinct captions, the step-halving term and the \
         guidance switch, run longer"
    );
    let mut before = shipped.student.clone();
    before.optim.steps = demo.student.optim.steps;
    before.distinct_captions = true;
    before.halving = demo.student.halving.clone();
    before.guidance_switch = demo.student.guidance_switch.clone();
    assert_eq!(
        demo.student, before,
        "the student differs from TPA's run only by its length, distinct captions, halving and \
         the guidance switch"
    );
    let mut teacher = shipped.teacher.clone();
    assert!(teacher.optim.checkpoint_mean.is_none());
    teacher.optim.checkpoint_mean = demo.teacher.optim.checkpoint_mean;
    teacher.optim.keep_checkpoints = demo.teacher.optim.keep_checkpoints;
    assert_eq!(demo.teacher, teacher);
    // The mean is TPA's: fifteen checkpoints, 41,600 to 43,000 every 100.
    let steps = demo.teacher.optim.mean_steps();
    assert_eq!(steps.len(), 15);
    assert_eq!((steps[0], steps[14]), (41_600, 43_000));

    // The shipped VAE is the recipe's with its decoder fine-tuned: run VD2, a VAE stage started
    // from run BI's VAE export with the settings of the recipe's decoder stage, run on to
    // 5,000 steps with a checkpoint every 250; its step 4,000 is shipped, the decoder stage's
    // length.
    let decoder_run =
        RunConfig::from_file(workspace.join("training-checkpoints/VD2/run.json")).unwrap();
    let decoder = demo
        .decoder
        .clone()
        .expect("the recipe has a decoder stage");
    let mut tuned = decoder_run.vae.clone();
    assert_eq!(
        tuned.init_from.as_deref(),
        Some(Path::new(
            "training-checkpoints/BI/export/pretransform/vae.safetensors"
        ))
    );
    assert!(tuned.optim.steps >= decoder.optim.steps);
    assert_eq!(decoder.optim.steps, 4_000);
    tuned.init_from = None;
    tuned.optim.steps = decoder.optim.steps;
    tuned.optim.checkpoint_every = decoder.optim.checkpoint_every;
    tuned.optim.keep_checkpoints = decoder.optim.keep_checkpoints;
    assert_eq!(tuned, decoder);
    // What the decoder stage changes from the recipe's VAE section: no curricula for a VAE
    // trained from nothing, linear STFT bins, the encoder frozen and a moving average.
    let mut from_vae = demo.vae.clone();
    (from_vae.latent_guide, from_vae.posterior_noise_warmup) = (None, None);
    from_vae.stft_mel_bands = None;
    from_vae.freeze_encoder = true;
    from_vae.optim.steps = decoder.optim.steps;
    from_vae.optim.ema_decay = decoder.optim.ema_decay;
    assert_eq!(from_vae, decoder);
    let mut rest = decoder_run.clone();
    rest.vae = demo.vae.clone();
    let mut bi = RunConfig::from_file(workspace.join("training-checkpoints/BI/run.json")).unwrap();
    bi.vae = demo.vae.clone();
    assert_eq!(
        rest, bi,
        "the decoder run is run BI's configuration but for its VAE section"
    );
}
