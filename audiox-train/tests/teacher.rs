//! The teacher stage at a tiny size: an interrupted and resumed run equals an uninterrupted
//! one bit for bit, and the export loads through `AudioX::builder().checkpoint_dir(...)` as
//! the teacher and generates what the trained module computes.

use std::path::Path;
use std::sync::Arc;

use audiox::sampler::{Euler, Sampler};
use audiox::{
    AudioPrompt, AudioPromptMask, AudioX, DenoiserKind, Intermediates, ReplayNoise, Request,
};
use audiox_core::noise::labels;
use audiox_train::corpus::Corpus;
use audiox_train::train::grow::TeacherInit;
use audiox_train::train::teacher::{TeacherModel, noise, tokenizer};
use audiox_train::train::timeline::TimelineLoss;
use audiox_train::train::vae::parameters;
use audiox_train::train::{
    PromptMasking, RunConfig, RunDir, Stage, Stop, TeacherStage, VaeStage, export_teacher,
    export_vae, masked_prompt, train_stage,
};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

fn one_thread() {
    // Bit-exact comparisons need a fixed reduction order (see tests/trainer.rs).
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
}

/// Sets the text conditioner's `max_length` (tokens per caption).
fn set_text_length(run: &mut RunConfig, max_length: usize) {
    for c in run.model["model"]["conditioning"]["configs"]
        .as_array_mut()
        .unwrap()
    {
        if c["id"] == "text_prompt" {
            c["config"]["max_length"] = json!(max_length);
        }
    }
}

/// The demo run at 8 kHz with a 2-channel VAE (strides 2/4/8/10: 125 latent frames of 10 s),
/// condition width 16, a one-block DiT of width 32, a one-layer T5 and CLIP, 24 text tokens,
/// without the demo recipe's slots, layout pretraining, prompt masking and decoder stage, and
/// tiny loops.
fn tiny_run() -> RunConfig {
    let mut run = RunConfig::demo();
    run.seed = 11;
    run.corpus.sample_rate = 8_000;
    let m = &mut run.model;
    let (rate, seconds) = (8_000u64, 10u64);
    let strides = [2usize, 4, 8, 10];
    let ratio: usize = strides.iter().product();
    let sample_size = (rate * seconds) as usize;
    let frames = sample_size / ratio;
    let (channels, latent, cond) = (2, 4, 16);
    let vae = json!({
        "encoder": {"type": "oobleck", "requires_grad": false, "config": {
            "in_channels": 2, "channels": channels, "c_mults": [1, 2, 4, 8], "strides": strides,
            "latent_dim": 2 * latent, "use_snake": true}},
        "decoder": {"type": "oobleck", "config": {
            "out_channels": 2, "channels": channels, "c_mults": [1, 2, 4, 8], "strides": strides,
            "latent_dim": latent, "use_snake": true, "final_tanh": false}},
        "bottleneck": {"type": "vae"},
        "latent_dim": latent, "downsampling_ratio": ratio, "io_channels": 2
    });
    m["sample_rate"] = json!(rate);
    m["sample_size"] = json!(sample_size);
    m["model"]["pretransform"]["config"] = vae.clone();
    m["model"]["io_channels"] = json!(latent);
    m["model"]["conditioning"]["cond_dim"] = json!(cond);
    for c in m["model"]["conditioning"]["configs"]
        .as_array_mut()
        .unwrap()
    {
        if c["id"] == "audio_prompt" {
            c["config"]["sample_rate"] = json!(rate);
            c["config"]["pretransform_config"]["config"] = vae.clone();
            c["config"]["latent_seq_len"] = json!(frames);
        }
    }
    let d = &mut m["model"]["diffusion"];
    d["gate_type_config"] =
        json!({"num_experts_per_modality": 2, "num_heads": 2, "num_fusion_layers": 1});
    let dc = &mut d["config"];
    dc["io_channels"] = json!(latent);
    dc["embed_dim"] = json!(32);
    dc["depth"] = json!(1);
    dc["num_heads"] = json!(16);
    dc["cond_token_dim"] = json!(cond);
    dc["global_cond_dim"] = json!(cond);
    dc["_latent_seq_len"] = json!(frames + 1);
    m["_tiny_hardcoded_sizes"]["audio_prompt.proj_features_128"] = json!([[frames, 4], [215, 128]]);
    m["_tiny_hardcoded_sizes"]["video_prompt.proj"] = json!([[250, 4], [2500, 128]]);

    run.vae.optim.steps = 1;
    run.vae.optim.batch = 1;
    run.vae.optim.warmup = 0;
    run.vae.crop = 2 * ratio;
    run.vae.stft_sizes = vec![64, 32];

    let t = &mut run.teacher;
    t.optim.steps = 4;
    t.optim.batch = 2;
    t.optim.lr = 1e-3;
    t.optim.warmup = 0;
    t.optim.checkpoint_every = 2;
    t.optim.keep_checkpoints = 2;
    t.clip_pool = 3;
    t.cond_dropout = 0.5;
    // The plain teacher: the demo recipe's slots, layout pretraining, audio-prompt masking,
    // decay and checkpoint mean are each switched on by the tests of that feature.
    t.text_slots = 0;
    t.timeline = None;
    t.audio_prompt = None;
    t.optim.lr_decay = None;
    t.optim.checkpoint_mean = None;
    run.decoder = None;
    t.t5 = serde_json::from_str(audiox_train::tokenizer::DEMO_T5_CONFIG_JSON).unwrap();
    for (k, v) in [
        ("d_model", 16),
        ("d_kv", 8),
        ("num_heads", 2),
        ("num_layers", 1),
        ("d_ff", 32),
    ] {
        t.t5[k] = json!(v);
    }
    for (k, v) in [
        ("hidden_size", 16),
        ("intermediate_size", 16),
        ("num_attention_heads", 2),
    ] {
        t.clip[k] = json!(v);
    }
    set_text_length(&mut run, 24);
    run
}

fn device() -> Device {
    Device::flex().autodiff()
}

/// Trains the VAE stage (1 step) and exports it, then the teacher until `stop_after`.
fn train(dir: &Path, run: &RunConfig, stop_after: Option<u64>) -> (TeacherModel, u64, u64) {
    let device = device();
    let (run_dir, ..) = vae_trained_in(dir, run, &device);
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let stop = Stop {
        after_steps: stop_after,
        deadline: None,
    };
    let out = train_stage(&stage, &run_dir, &device, stop, &mut |_| {}).unwrap();
    (out.model, out.step, out.resumed_from)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

fn max_error(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let err = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    let scale = b.iter().map(|x| x.abs()).fold(0.0, f32::max);
    (err, scale)
}

/// One Euler step from t = 1 of `loaded` on `caption`, with the initial noise and the audio
/// prompt's posterior noise replayed from `noise(seed)` and `noise(seed + 1)`: the
/// intermediates, both noises and the latent's `[C, L]`.
fn one_euler_step(
    loaded: &AudioX,
    run: &RunConfig,
    caption: &str,
    seed: u64,
) -> (Intermediates, Vec<f32>, Vec<f32>, [usize; 2]) {
    let config = run.model_config().unwrap();
    let (c, l) = (config.model.io_channels, config.latent_length());
    let la = config.audio_conditioner().unwrap().latent_frames;
    let z = noise(seed, c * l);
    let eps = noise(seed + 1, c * la);
    let samples = config.prompt_samples() as i64;
    let len = (samples as f32 * 0.5) as i64;
    let replay = ReplayNoise::new()
        .with_normal(labels::INITIAL_NOISE, &[1, c, l], z.clone())
        .with_uniform(labels::AUDIO_MASK_RATIO, &[1], vec![0.5])
        .with_integers(labels::AUDIO_MASK_START, vec![(samples - len) / 2])
        .with_normal(labels::VAE_NOISE, &[1, c, la], eps.clone());
    let sampler: Arc<dyn Sampler> = Arc::new(Euler::new(1));
    let generated = loaded
        .generate(
            Request::text(caption)
                .sampler(sampler)
                .noise_source(replay)
                .keep_intermediates(true),
        )
        .unwrap();
    (generated.intermediates.unwrap(), z, eps, [c, l])
}

#[test]
fn the_teacher_resumes_exactly_and_its_export_loads_as_the_teacher() {
    one_thread();
    let mut run = tiny_run();
    // Fill tokens after the caption (`teacher.text_fill`): the export's tokenizer must append
    // them too, or the loaded model's context below differs from the trained one's.
    run.teacher.text_fill = 8;
    // Slot tokens before the caption (`teacher.text_slots`): new ids, so the T5 embedding
    // grows by as many rows, and the text length by as many tokens.
    let slots = 4;
    run.teacher.text_slots = slots;
    set_text_length(&mut run, 16 + 8 + slots);
    let vocab = run.teacher.t5["vocab_size"].as_u64().unwrap();
    run.teacher.t5["vocab_size"] = json!(vocab + slots as u64);
    run.validate().unwrap();
    let steps = run.teacher.optim.steps;
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));

    let (whole, step, from) = train(&a_dir, &run, None);
    assert_eq!((step, from), (steps, 0));
    let (_, step, _) = train(&b_dir, &run, Some(steps / 2));
    assert_eq!(step, steps / 2);
    let (resumed, step, from) = train(&b_dir, &run, None);
    assert_eq!((step, from), (steps, steps / 2));

    let initial = {
        use audiox_train::train::Stage;
        let device = device();
        let run_dir = RunDir::open(&a_dir, run.clone()).unwrap();
        let stage = TeacherStage::new(&run_dir, &device).unwrap();
        parameters(&stage.init_model(&device).unwrap())
    };
    let (pa, pb) = (parameters(&whole), parameters(&resumed));
    assert_eq!(pa.len(), pb.len());
    let mut changed = 0;
    for (((name, _, a), (_, _, b)), (_, _, init)) in pa.iter().zip(&pb).zip(&initial) {
        assert_eq!(
            a, b,
            "`{name}` differs between the whole and the resumed run"
        );
        changed += usize::from(a != init);
    }
    // The DiT, MAF, T5, the empty video feature and the prompt projections train; the CLIP
    // tower, the temporal transformer, the video projections and the DiT's dead weights do
    // not (a text-only request never runs them).
    assert!(
        changed > pa.len() / 3,
        "{changed} of {} parameters changed",
        pa.len()
    );
    let empty = pa
        .iter()
        .zip(&initial)
        .find(|((n, _, _), _)| n.ends_with("empty_visual_feat"))
        .unwrap();
    assert_ne!(empty.0.2, empty.1.2, "the empty video feature trains");
    let log = std::fs::read_to_string(b_dir.join("teacher").join("loss.jsonl")).unwrap();
    assert_eq!(log.lines().count() as u64, steps, "each step logged once");

    // The export loads through the builder as the teacher (no student file is written).
    let export = a_dir.join("export");
    let written = export_teacher(&whole, &run, &export).unwrap();
    assert!(written.teacher.exists());
    assert!(!export.join("audiox_turbo").exists());
    let loaded = AudioX::builder().checkpoint_dir(&export).build().unwrap();
    assert_eq!(loaded.kind(), DenoiserKind::Teacher);
    assert!(!loaded.supports_video(), "no Synchformer: video is refused");

    // One Euler step from t = 1 gives z - v(z, 1): with replayed noise, the loaded model's
    // context and latent must equal the trained module's own.
    let caption = "two knocks, then a low thud";
    let (inter, z, eps, [c, l]) = one_euler_step(&loaded, &run, caption, 1);

    let plain = Device::flex();
    let trained = whole.valid();
    let run_dir = RunDir::open(&a_dir, run.clone()).unwrap();
    let stage = TeacherStage::new(&run_dir, &plain).unwrap();
    let context = trained
        .context_from_captions(
            &tokenizer(&run).unwrap(),
            &[caption],
            stage.silent_prompt(),
            &eps,
            &plain,
        )
        .unwrap();
    let (err, scale) = max_error(&values(inter.context.clone()), &values(context.clone()));
    assert!(
        scale > 0.0 && err <= 1e-4 * scale.max(1.0),
        "context: {err} of {scale}"
    );

    let zt = Tensor::<3>::from_data(TensorData::new(z.clone(), [1, c, l]), &plain);
    let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &plain);
    let v = trained.velocity(zt.clone(), t, context).unwrap();
    let expected = values(zt - v);
    let (err, scale) = max_error(&values(inter.latent), &expected);
    assert!(
        scale > 0.0 && err <= 1e-4 * scale.max(1.0),
        "latent: {err} of {scale}"
    );
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn the_teachers_clip_latents_are_kept_in_the_run_folder_for_the_next_process() {
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // One teacher step: its checkpoint is followed by a chunk of the latents it encoded.
    train(&dir, &run, Some(1));
    let latents = dir.join("teacher").join("latents");
    assert_eq!(
        files_under(&latents).len(),
        1,
        "one chunk after one checkpoint"
    );

    let device = device();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let first = stage.cached_latents();
    let batch = run.teacher.optim.batch;
    assert!(
        (1..=batch).contains(&first),
        "{first} latents read back after a step of {batch} rows"
    );

    // Encoding the rest of the pool and persisting it adds one chunk; the next process reads
    // both, and hands back exactly the values the first one computed.
    let pool: Vec<u64> = (0..run.teacher.clip_pool).collect();
    let (computed, _) = stage.clean_latents(&pool, &device).unwrap();
    let written = stage
        .persist_latents()
        .unwrap()
        .expect("new latents to write");
    assert!(written.ends_with("chunk-00001.safetensors"), "{written:?}");
    assert_eq!(stage.persist_latents().unwrap(), None, "nothing new");
    let next = TeacherStage::new(&run_dir, &device).unwrap();
    assert_eq!(next.cached_latents(), pool.len());
    let (read, _) = next.clean_latents(&pool, &device).unwrap();
    assert_eq!(values(read), values(computed.clone()));

    // Without the folder the latents are encoded again, to the same values.
    let aside = tmp.path().join("latents-aside");
    std::fs::rename(&latents, &aside).unwrap();
    let fresh = TeacherStage::new(&run_dir, &device).unwrap();
    assert_eq!(fresh.cached_latents(), 0);
    let (encoded, _) = fresh.clean_latents(&pool, &device).unwrap();
    let (err, scale) = max_error(&values(encoded), &values(computed));
    assert!(scale > 0.0 && err <= 1e-5 * scale, "{err} of {scale}");

    // A damaged chunk stops the stage with the file's name (never a silent re-encode of
    // half the run, never a panic).
    assert!(!latents.exists(), "nothing written without a checkpoint");
    std::fs::rename(&aside, &latents).unwrap();
    let chunk = files_under(&latents).pop().unwrap();
    let bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let err = TeacherStage::new(&run_dir, &device)
        .err()
        .expect("a damaged chunk is refused");
    let text = err.to_string();
    assert!(text.contains("chunk-00001.safetensors"), "{text}");
}

#[test]
fn encoding_the_pool_ahead_gives_the_teacher_every_latent() {
    one_thread();
    let mut run = tiny_run();
    run.teacher.clip_pool = 9;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train(&dir, &run, Some(1));
    let device = device();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let held = stage.cached_latents();
    let pool = run.teacher.clip_pool as usize;
    assert!(
        held < pool,
        "the test needs clips left to encode ({held} of {pool})"
    );
    let mut reports = Vec::new();
    let encoded = stage
        .encode_pool(2, 3, &mut |h, p| reports.push((h, p)))
        .unwrap();
    assert_eq!(encoded, pool - held);
    assert_eq!(reports.last(), Some(&(pool, pool)));
    assert_eq!(reports.len(), (pool - held).div_ceil(2));
    // Written as it goes and at the end: a new process holds the whole pool, with the values
    // a fresh encode gives, and has nothing left to encode.
    let next = TeacherStage::new(&run_dir, &device).unwrap();
    assert_eq!(next.cached_latents(), pool);
    assert_eq!(next.encode_pool(2, 3, &mut |_, _| {}).unwrap(), 0);
    let all: Vec<u64> = (0..pool as u64).collect();
    let (read, _) = next.clean_latents(&all, &device).unwrap();
    let aside = tmp.path().join("aside");
    std::fs::rename(dir.join("teacher").join("latents"), &aside).unwrap();
    let fresh = TeacherStage::new(&run_dir, &device).unwrap();
    let (encoded, _) = fresh.clean_latents(&all, &device).unwrap();
    let (err, scale) = max_error(&values(encoded), &values(read));
    assert!(scale > 0.0 && err <= 1e-5 * scale, "{err} of {scale}");
}

#[test]
fn a_finished_teacher_given_more_steps_continues_exactly() {
    one_thread();
    let short = tiny_run();
    let steps = short.teacher.optim.steps;
    let mut long = short.clone();
    long.teacher.optim.steps = steps + 2;
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));

    let (whole, step, _) = train(&a_dir, &long, None);
    assert_eq!(step, steps + 2);
    let (_, step, _) = train(&b_dir, &short, None);
    assert_eq!(step, steps, "the short run finished");
    // The same folder with a configuration that only raises teacher.steps continues.
    let (extended, step, from) = train(&b_dir, &long, None);
    assert_eq!((step, from), (steps + 2, steps));
    let stored = RunConfig::from_file(b_dir.join("run.json")).unwrap();
    assert_eq!(
        stored.teacher.optim.steps,
        steps + 2,
        "run.json records the new length"
    );
    for ((name, _, a), (_, _, b)) in parameters(&whole).iter().zip(&parameters(&extended)) {
        assert_eq!(
            a, b,
            "`{name}` differs between the long run and the extended one"
        );
    }

    // Once the student has started from the teacher, the teacher cannot grow any more.
    std::fs::create_dir_all(
        b_dir
            .join("student")
            .join("checkpoints")
            .join("step-00000001"),
    )
    .unwrap();
    let mut longer = long.clone();
    longer.teacher.optim.steps = steps + 4;
    let err = RunDir::open(&b_dir, longer)
        .expect_err("refused")
        .to_string();
    assert!(
        err.contains("teacher.steps") && err.contains("student"),
        "{err}"
    );
    // Nor can steps shrink, or anything else change with them.
    let mut fewer = long.clone();
    fewer.teacher.optim.steps = steps;
    assert!(RunDir::open(&b_dir, fewer).is_err());
    let mut other = long.clone();
    other.teacher.optim.steps = steps + 4;
    other.teacher.optim.lr *= 2.0;
    std::fs::remove_dir_all(b_dir.join("student")).unwrap();
    let err = RunDir::open(&b_dir, other)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("lr"), "{err}");
}

#[test]
fn the_teacher_refuses_to_start_before_the_vae_is_trained() {
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = RunDir::open(tmp.path(), run).unwrap();
    let err = TeacherStage::new(&run_dir, &device()).err().unwrap();
    assert!(err.to_string().contains("vae stage"), "{err}");
}

/// A run (in its own temporary folder) that trains `run`'s VAE to the end and exports it:
/// the folder, the run, the trained VAE and the exported `vae.safetensors`.
fn vae_trained_in_a_run(
    run: &RunConfig,
    device: &Device,
) -> (
    tempfile::TempDir,
    RunDir,
    audiox_vae::Vae,
    std::path::PathBuf,
) {
    let dir = tempfile::tempdir().unwrap();
    let (run_dir, vae, export) = vae_trained_in(dir.path(), run, device);
    (dir, run_dir, vae, export)
}

/// The run `run` in the folder `dir` with its VAE stage trained to the end and exported (the
/// teacher stage's starting point): the run, the trained VAE and the exported
/// `vae.safetensors`.
fn vae_trained_in(
    dir: &Path,
    run: &RunConfig,
    device: &Device,
) -> (RunDir, audiox_vae::Vae, std::path::PathBuf) {
    let run_dir = RunDir::open(dir, run.clone()).unwrap();
    let vae = VaeStage::new(run_dir.config(), device).unwrap();
    let trained = train_stage(&vae, &run_dir, device, Stop::never(), &mut |_| {}).unwrap();
    let export = export_vae(&trained.model, run, &dir.join("export")).unwrap();
    (run_dir, trained.model, export)
}

/// Every tensor of a safetensors file: name, shape and raw bytes, sorted by name.
fn safetensors_contents(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut named: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec(), view.data().to_vec()))
        .collect();
    named.sort();
    named
}

#[test]
fn a_vae_trained_in_another_run_is_imported_and_the_teacher_starts_on_it() {
    use audiox_train::train::vae::{import_vae, vae_export_path, vae_ready};
    one_thread();
    let run = tiny_run();
    let device = device();
    // Run A trains its VAE (1 step) and exports it.
    let (_a, run_a, _, source) = vae_trained_in_a_run(&run, &device);

    // Run B imports it: no VAE checkpoint of its own, and the teacher starts.
    let b = tempfile::tempdir().unwrap();
    let run_b = RunDir::open(b.path(), run.clone()).unwrap();
    assert!(vae_ready(&run_b).unwrap().is_none());
    let frozen = Device::flex();
    let imported = import_vae(&run_b, &source, &frozen).unwrap();
    assert_eq!(imported, vae_export_path(&run_b));
    let (ours, theirs) = (
        safetensors_contents(&imported),
        safetensors_contents(&source),
    );
    assert!(!ours.is_empty());
    assert!(
        ours == theirs,
        "the import re-exports the same tensors, bit for bit"
    );
    let how = vae_ready(&run_b).unwrap().unwrap();
    assert!(how.contains("imported"), "{how}");
    let stage = TeacherStage::new(&run_b, &device).unwrap();
    let out = train_stage(&stage, &run_b, &device, Stop::after_steps(1), &mut |_| {}).unwrap();
    assert_eq!(out.step, 1);

    // Refused: a run that trains its own VAE (A has a checkpoint), and a run whose teacher
    // has started (B now has one).
    let err = import_vae(&run_a, &source, &frozen)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vae checkpoint"), "{err}");
    let err = import_vae(&run_b, &source, &frozen)
        .unwrap_err()
        .to_string();
    assert!(err.contains("teacher checkpoint"), "{err}");

    // Refused: a VAE of other sizes (half the latent channels), named by its file.
    let mut other = run.clone();
    let pre = &mut other.model["model"]["pretransform"]["config"];
    pre["encoder"]["config"]["channels"] = json!(4);
    pre["decoder"]["config"]["channels"] = json!(4);
    let c = tempfile::tempdir().unwrap();
    let run_c = RunDir::open(c.path(), other.clone()).unwrap();
    let vae_c = VaeStage::new(run_c.config(), &device).unwrap();
    let trained_c = train_stage(&vae_c, &run_c, &device, Stop::never(), &mut |_| {}).unwrap();
    let wrong = export_vae(&trained_c.model, &other, &c.path().join("export")).unwrap();
    let d = tempfile::tempdir().unwrap();
    let run_d = RunDir::open(d.path(), run.clone()).unwrap();
    let err = import_vae(&run_d, &wrong, &frozen).unwrap_err().to_string();
    assert!(
        err.contains("shape") || err.contains("vae.safetensors"),
        "{err}"
    );
    assert!(
        vae_ready(&run_d).unwrap().is_none(),
        "a refused import leaves no VAE"
    );

    // An export replaced after the import is noticed.
    let e = tempfile::tempdir().unwrap();
    let run_e = RunDir::open(e.path(), run.clone()).unwrap();
    import_vae(&run_e, &source, &frozen).unwrap();
    std::fs::copy(&wrong, vae_export_path(&run_e)).unwrap();
    let err = TeacherStage::new(&run_e, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("SHA-256"), "{err}");
}

#[test]
fn teacher_settings_that_contradict_the_model_are_refused() {
    let mut run = tiny_run();
    run.teacher.t5["d_model"] = json!(8);
    let err = run.validate().unwrap_err().to_string();
    assert!(err.contains("teacher.t5.d_model"), "{err}");
    let mut run = tiny_run();
    run.teacher.t5["vocab_size"] = json!(10);
    let err = run.validate().unwrap_err().to_string();
    assert!(err.contains("vocab_size"), "{err}");
    let mut run = tiny_run();
    run.teacher.cond_dropout = 1.5;
    assert!(run.validate().is_err());
    // The section round-trips and is required.
    let mut json = serde_json::to_value(tiny_run()).unwrap();
    let back: RunConfig = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, tiny_run());
    json.as_object_mut().unwrap().remove("teacher");
    let err = serde_json::from_value::<RunConfig>(json)
        .unwrap_err()
        .to_string();
    assert!(err.contains("teacher"), "{err}");
}

#[test]
fn a_run_started_before_the_teacher_stage_is_extended_until_the_teacher_starts() {
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = dir.join("run.json");
    RunDir::open(dir, run.clone()).unwrap();
    let current: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // What a run started with the placeholder sizes and no teacher section stored.
    let mut old = current.clone();
    old.as_object_mut().unwrap().remove("teacher");
    old["model"]["model"]["conditioning"]["cond_dim"] = json!(32);
    old["model"]["model"]["diffusion"]["config"]["num_heads"] = json!(4);
    let write = |v: &Value| std::fs::write(&path, serde_json::to_string(v).unwrap()).unwrap();

    write(&old);
    RunDir::open(dir, run.clone()).unwrap();
    let now: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        now, current,
        "run.json is extended to the new configuration"
    );

    // Anything the VAE stage reads must still match.
    let mut vae_changed = old.clone();
    vae_changed["model"]["model"]["conditioning"] =
        current["model"]["model"]["conditioning"].clone();
    vae_changed["vae"]["crop"] = json!(run.vae.crop * 2);
    write(&vae_changed);
    let err = RunDir::open(dir, run.clone()).unwrap_err().to_string();
    assert!(err.contains("vae.crop"), "{err}");

    // Once the teacher has a checkpoint, its settings are fixed too.
    std::fs::create_dir_all(dir.join("teacher/checkpoints/step-00000002")).unwrap();
    write(&old);
    let err = RunDir::open(dir, run).unwrap_err().to_string();
    assert!(err.contains("another configuration"), "{err}");
}

/// [`tiny_run`] with a two-step student (batch 1, two regression pairs of two teacher steps, one
/// guidance throughout).
fn tiny_student_run() -> RunConfig {
    let mut run = tiny_run();
    let s = &mut run.student;
    s.optim.steps = 2;
    s.optim.batch = 1;
    s.optim.warmup = 0;
    s.optim.lr = 1e-3;
    s.regression_pairs = 2;
    s.regression_batch = 1;
    s.teacher_steps = 2;
    // The recipe's guidance switch (at its step 1,400) is tested apart (tests/dmd.rs).
    s.guidance_switch = None;
    run
}

#[test]
fn the_student_distils_the_teachers_dit_and_its_export_loads_as_the_student() {
    use audiox_train::train::dmd::StudentStage;
    use audiox_train::train::teacher::{TeacherPrompts, export_student};
    use audiox_train::train::train_multi_stage;
    one_thread();
    let run = tiny_student_run();
    run.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (teacher, ..) = train(&dir, &run, None);

    let device = device();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let prompts = TeacherPrompts::new(
        teacher.clone(),
        stage.tokenizer().clone(),
        stage.silent_prompt().clone(),
    );
    // The prompts' model is frozen: a forward pass over parameters that require gradients
    // records an autodiff graph no backward pass frees (the student stage grew by about 36 MB
    // a step before), while the teacher as loaded does require them.
    assert!(trainable_floats(&teacher) > 0, "the teacher as trained");
    assert_eq!(
        trainable_floats(prompts.model()),
        0,
        "the prompts' model is frozen"
    );
    let student = StudentStage::new(
        &run_dir,
        run.student.clone(),
        teacher.dit.clone(),
        prompts,
        &device,
    )
    .unwrap();
    let out = train_multi_stage(&student, &run_dir, &device, Stop::never(), &mut |_| {}).unwrap();
    assert!(out.finished);
    let student_dit = out.model[0].model.clone();
    let (pt, ps) = (parameters(&teacher.dit), parameters(&student_dit));
    assert!(
        pt.iter().zip(&ps).any(|(a, b)| a.2 != b.2),
        "DMD changed the student's DiT"
    );

    let export = dir.join("export");
    export_teacher(&teacher, &run, &export).unwrap();
    let file = export_student(&teacher, &student_dit, &export).unwrap();
    assert!(file.exists());
    let loaded = AudioX::builder()
        .checkpoint_dir(&export)
        .denoiser(DenoiserKind::Student)
        .build()
        .unwrap();
    assert_eq!(loaded.kind(), DenoiserKind::Student);

    // One Euler step from t = 1 through the loaded student equals z - v(z, 1) of the trained
    // student's DiT on the teacher's context (the student keeps the teacher's text side).
    let caption = "three high beeps";
    let (inter, z, eps, [c, l]) = one_euler_step(&loaded, &run, caption, 3);
    let plain = Device::flex();
    let stage = TeacherStage::new(&run_dir, &plain).unwrap();
    let context = teacher
        .valid()
        .context_from_captions(
            &tokenizer(&run).unwrap(),
            &[caption],
            stage.silent_prompt(),
            &eps,
            &plain,
        )
        .unwrap();
    let zt = Tensor::<3>::from_data(TensorData::new(z, [1, c, l]), &plain);
    let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32], [1]), &plain);
    let v = student_dit
        .valid()
        .forward_with_context(zt.clone(), t.clone(), context.clone())
        .unwrap();
    let latent = values(inter.latent);
    let (err, scale) = max_error(&latent, &values(zt.clone() - v));
    assert!(
        scale > 0.0 && err <= 1e-4 * scale.max(1.0),
        "student latent: {err} of {scale}"
    );
    // ... and not what the teacher's DiT gives.
    let vt = teacher.valid().velocity(zt.clone(), t, context).unwrap();
    let (diff, _) = max_error(&latent, &values(zt - vt));
    assert!(
        diff > 1e-3 * scale,
        "the loaded model is not the teacher: {diff}"
    );
}

/// `student.halving.reference` through the pipeline: the file's student is read when the stage
/// starts before `from_step` and kept, so a resume after `from_step` needs the file no longer;
/// a file missing at the start is an error naming it.
#[test]
fn the_pipeline_reads_a_halving_reference_before_from_step_and_keeps_it() {
    use audiox_mmdit::Dit;
    use audiox_train::train::checkpoint::{Checkpoints, Part};
    use audiox_train::train::dmd::HALVING_DIR;
    use audiox_train::train::export::{official_tensors_of, write_safetensors};
    use audiox_train::train::init::random_init;
    use audiox_train::train::pipeline::train_student;
    use audiox_train::train::run::StepHalving;
    one_thread();
    let mut run = tiny_student_run();
    run.student.optim.steps = 3;
    run.student.optim.checkpoint_every = 1;
    run.student.halving = Some(StepHalving {
        weight: 1.0,
        from_step: 1,
        frozen_target: true,
        reference: Some("reference.safetensors".into()),
        implied_noise: false,
    });
    run.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (teacher, ..) = train(&dir, &run, None);
    let device = device();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let mut quiet = |_: &RunDir, _: audiox_train::train::StageName, _: &_| {};

    // Missing at the start: an error naming the file.
    let err = train_student(&run_dir, &device, Stop::never(), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("reference.safetensors"), "{err}");

    let other = random_init(teacher.dit.clone(), 99);
    let file = dir.join("reference.safetensors");
    let tensors = official_tensors_of(&other, &Dit::layout(), "model.model.").unwrap();
    write_safetensors(&file, &tensors, &[("format", "pt")]).unwrap();
    let stop = Stop {
        after_steps: Some(2),
        deadline: None,
    };
    let report = train_student(&run_dir, &device, stop, &mut quiet).unwrap();
    assert_eq!((report.step, report.finished), (2, false));
    std::fs::remove_file(&file).unwrap();
    let report = train_student(&run_dir, &device, Stop::never(), &mut quiet).unwrap();
    assert_eq!((report.step, report.finished), (3, true));

    let kept = Checkpoints::new(&dir.join("student").join(HALVING_DIR))
        .load_parts(
            1,
            vec![Part {
                name: "reference".to_string(),
                model: teacher.dit.clone(),
                optim: burn::optim::AdamConfig::new().init(),
            }],
        )
        .unwrap()
        .pop()
        .unwrap()
        .model;
    assert_eq!(parameters(&kept), parameters(&other));
}

#[test]
fn a_decoder_fine_tuned_on_the_imported_encoder_replaces_the_exported_one() {
    use audiox_train::train::export::write_safetensors;
    use audiox_train::train::vae::{
        import_vae, official_tensors, update_decoder, vae_export_path, vae_ready,
    };
    one_thread();
    let run = tiny_run();
    let device = device();
    let frozen = Device::flex();
    // Run A trains its VAE and exports it; run B imports that export.
    let (a, run_a, trained, source) = vae_trained_in_a_run(&run, &device);
    let b = tempfile::tempdir().unwrap();
    let run_b = RunDir::open(b.path(), run.clone()).unwrap();
    import_vae(&run_b, &source, &frozen).unwrap();

    // A "fine-tuned" file: the same encoder, one decoder tensor changed; and one whose encoder
    // differs.
    let tensors = official_tensors(&trained.valid()).unwrap();
    let altered = |prefix: &str| {
        let mut t = tensors.clone();
        let entry = t
            .iter_mut()
            .find(|(n, _, _)| n.starts_with(prefix))
            .unwrap();
        entry.2[0] += 0.5;
        (entry.0.clone(), t)
    };
    let (changed, tuned) = altered("decoder.");
    let tuned_path = a.path().join("tuned.safetensors");
    write_safetensors(&tuned_path, &tuned, &[("format", "pt")]).unwrap();
    let (moved, other) = altered("encoder.");
    let other_path = a.path().join("other.safetensors");
    write_safetensors(&other_path, &other, &[("format", "pt")]).unwrap();

    // Refused: another encoder (named), and a run whose VAE was not imported.
    let err = update_decoder(&run_b, &other_path, &frozen)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&moved) && err.contains("encoder differs"),
        "{err}"
    );
    let err = update_decoder(&run_a, &tuned_path, &frozen)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no imported VAE"), "{err}");

    // Accepted: the export now holds the tuned decoder and the imported encoder, and the later
    // stages accept it (the record follows the new file).
    let export = update_decoder(&run_b, &tuned_path, &frozen).unwrap();
    assert_eq!(export, vae_export_path(&run_b));
    let (now, imported) = (safetensors_contents(&export), safetensors_contents(&source));
    for ((name, _, x), (_, _, y)) in now.iter().zip(&imported) {
        assert_eq!(x == y, *name != changed, "{name}");
    }
    assert!(vae_ready(&run_b).unwrap().is_some());
    let stage = TeacherStage::new(&run_b, &device).unwrap();
    let out = train_stage(&stage, &run_b, &device, Stop::after_steps(1), &mut |_| {}).unwrap();
    assert_eq!(out.step, 1);
}

/// `run` with a decoder stage of `steps` steps: the built-in recipe's section at the tiny
/// run's crop and STFT sizes, a checkpoint every step.
fn with_decoder(run: &RunConfig, steps: u64) -> RunConfig {
    let mut run = run.clone();
    let mut decoder = RunConfig::demo().decoder.unwrap();
    decoder.optim.steps = steps;
    decoder.optim.batch = 1;
    decoder.optim.warmup = 0;
    decoder.optim.checkpoint_every = 1;
    decoder.crop = run.vae.crop;
    decoder.stft_sizes = run.vae.stft_sizes.clone();
    run.decoder = Some(decoder);
    run.validate().unwrap();
    run
}

/// Every tensor of two VAE files, paired by name: `(name, a's values, b's values)`.
fn paired_tensors(a: &Path, b: &Path) -> Vec<(String, Vec<f32>, Vec<f32>)> {
    let floats = |bytes: &[u8]| -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let (a, b) = (safetensors_contents(a), safetensors_contents(b));
    assert_eq!(a.len(), b.len());
    a.into_iter()
        .zip(b)
        .map(|((name, shape, x), (other, other_shape, y))| {
            assert_eq!((&name, &shape), (&other, &other_shape));
            (name, floats(&x), floats(&y))
        })
        .collect()
}

/// The decoder stage continues the VAE the teacher was trained on with its encoder frozen:
/// the export it writes keeps that encoder bit for bit and a decoder a few optimiser steps
/// from that VAE's (not a fresh one), and re-running the earlier stages leaves it in place.
#[test]
fn the_decoder_stage_fine_tunes_the_teachers_vae_and_its_export_stays() {
    use audiox_train::train::pipeline::{train_decoder, train_teacher, train_vae};
    use audiox_train::train::vae::{vae_export_path, vae_ready};
    one_thread();
    let steps = 2;
    let run = with_decoder(&tiny_run(), steps);
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = RunDir::open(tmp.path(), run.clone()).unwrap();
    let device = device();
    let mut quiet = |_: &RunDir, _: audiox_train::train::StageName, _: &_| {};
    train_vae(&run_dir, &device, Stop::never(), &mut quiet).unwrap();
    let export = vae_export_path(&run_dir);
    let plain = tmp.path().join("plain.safetensors");
    std::fs::copy(&export, &plain).unwrap();

    // Not before the teacher is finished (its latents are keyed on the exported file).
    let err = train_decoder(&run_dir, &device, Stop::never(), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("teacher is at step 0"), "{err}");
    train_teacher(&run_dir, &device, Stop::never(), &mut quiet).unwrap();

    let mut seen = Vec::new();
    let mut record =
        |_: &RunDir, stage: audiox_train::train::StageName, r: &audiox_train::train::LogRecord| {
            seen.push((stage, r.step))
        };
    let report = train_decoder(&run_dir, &device, Stop::never(), &mut record)
        .unwrap()
        .unwrap();
    assert!(report.finished);
    assert_eq!(
        (report.step, report.written.clone()),
        (steps, export.clone())
    );
    assert!(
        report.weights.contains("moving average"),
        "{}",
        report.weights
    );
    assert_eq!(
        seen,
        (1..=steps)
            .map(|s| (audiox_train::train::StageName::Decoder, s))
            .collect::<Vec<_>>()
    );
    // Adam moves a weight by about the learning rate per step: a decoder started from random
    // weights would be off by far more.
    let lr = run.decoder.as_ref().unwrap().optim.lr as f32;
    let mut moved = 0;
    for (name, tuned, before) in paired_tensors(&export, &plain) {
        let (err, _) = max_error(&tuned, &before);
        if name.starts_with("encoder.") {
            assert_eq!(tuned, before, "{name}: the encoder is frozen");
        } else {
            assert!(err <= 4.0 * steps as f32 * lr, "{name}: moved {err}");
            moved += usize::from(err > 0.0);
        }
    }
    assert!(moved > 0, "the decoder did not train");

    // Running the VAE and teacher stages again (as `--stage all` does) keeps the decoder
    // stage's export; so does the finished decoder stage itself.
    let tuned_bytes = std::fs::read(&export).unwrap();
    let again = train_vae(&run_dir, &device, Stop::never(), &mut quiet)
        .unwrap()
        .unwrap();
    assert!(again.written.as_os_str().is_empty());
    assert!(again.weights.contains("decoder stage"), "{}", again.weights);
    train_teacher(&run_dir, &device, Stop::never(), &mut quiet).unwrap();
    let last = train_decoder(&run_dir, &device, Stop::never(), &mut quiet)
        .unwrap()
        .unwrap();
    assert_eq!((last.resumed_from, last.step), (steps, steps));
    assert_eq!(std::fs::read(&export).unwrap(), tuned_bytes);
    assert!(vae_ready(&run_dir).unwrap().is_some());

    // A run without a decoder section has no decoder stage.
    let other = tempfile::tempdir().unwrap();
    let plain_run = RunDir::open(other.path(), tiny_run()).unwrap();
    assert!(
        train_decoder(&plain_run, &device, Stop::never(), &mut quiet)
            .unwrap()
            .is_none()
    );
}

/// A run that imported its VAE (as the committed runs do) takes a decoder section once its
/// teacher is trained: the decoder stage starts from the imported file, and the import record
/// follows the new export, so the later stages still accept it. A decoder stage that lost its
/// checkpoints cannot start again from an export it already replaced, and `--update-decoder`
/// is refused on a run that fine-tunes its decoder itself.
#[test]
fn an_imported_vae_gets_the_decoder_stage_after_its_teacher() {
    use audiox_train::train::pipeline::{train_decoder, train_teacher, train_vae};
    use audiox_train::train::vae::{import_vae, update_decoder, vae_export_path, vae_ready};
    one_thread();
    let run = tiny_run();
    let device = device();
    let frozen = Device::flex();
    let (_a, _, _, source) = vae_trained_in_a_run(&run, &device);
    let b = tempfile::tempdir().unwrap();
    let run_b = RunDir::open(b.path(), run.clone()).unwrap();
    import_vae(&run_b, &source, &frozen).unwrap();
    let mut quiet = |_: &RunDir, _: audiox_train::train::StageName, _: &_| {};
    train_teacher(&run_b, &device, Stop::never(), &mut quiet).unwrap();

    // The decoder section is added to the finished run (no stage reads it), and trained.
    let tuned_run = with_decoder(&run, 1);
    let run_b = RunDir::open(b.path(), tuned_run.clone()).unwrap();
    let report = train_decoder(&run_b, &device, Stop::never(), &mut quiet)
        .unwrap()
        .unwrap();
    let export = vae_export_path(&run_b);
    assert_eq!(report.written, export);
    let mut decoder_moved = false;
    for (name, tuned, imported) in paired_tensors(&export, &source) {
        if name.starts_with("encoder.") {
            assert_eq!(tuned, imported, "{name}: the encoder is frozen");
        } else {
            decoder_moved |= tuned != imported;
        }
    }
    assert!(decoder_moved);
    let how = vae_ready(&run_b).unwrap().unwrap();
    assert!(how.contains("imported"), "{how}");
    let marker = std::fs::read_to_string(b.path().join("vae").join("imported.json")).unwrap();
    assert!(marker.contains("the decoder stage"), "{marker}");
    assert!(
        train_vae(&run_b, &device, Stop::never(), &mut quiet)
            .unwrap()
            .is_none()
    );
    train_teacher(&run_b, &device, Stop::never(), &mut quiet).unwrap();

    // An export the decoder stage did not finish writing is named as such, and the stage
    // writes it again.
    let tuned_bytes = std::fs::read(&export).unwrap();
    std::fs::copy(&source, &export).unwrap();
    let err = vae_ready(&run_b).unwrap_err().to_string();
    assert!(err.contains("--stage decoder"), "{err}");
    train_decoder(&run_b, &device, Stop::never(), &mut quiet).unwrap();
    assert_eq!(std::fs::read(&export).unwrap(), tuned_bytes);
    assert!(vae_ready(&run_b).unwrap().is_some());

    // Its settings are fixed once it has started, and so is the teacher it waited for; the
    // student, which it does not read, may still run longer.
    let mut changed = tuned_run.clone();
    changed.decoder.as_mut().unwrap().optim.lr *= 2.0;
    let err = RunDir::open(b.path(), changed).unwrap_err().to_string();
    assert!(err.contains("decoder.lr"), "{err}");
    let mut longer = tuned_run.clone();
    longer.teacher.optim.steps += 1;
    let err = RunDir::open(b.path(), longer).unwrap_err().to_string();
    assert!(err.contains("the decoder stage has started"), "{err}");
    let mut longer = tuned_run.clone();
    longer.student.optim.steps += 1;
    RunDir::open(b.path(), longer).unwrap();

    let err = update_decoder(&run_b, &source, &frozen)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoder stage"), "{err}");
    std::fs::remove_dir_all(b.path().join("decoder")).unwrap();
    let err = train_decoder(&run_b, &device, Stop::never(), &mut quiet)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no longer the imported one"), "{err}");
}

/// The decoder section must keep the encoder and start from the run's VAE; a base run has none.
#[test]
fn decoder_settings_that_would_change_the_latents_are_refused() {
    let run = with_decoder(&tiny_run(), 1);
    let refused = |edit: &dyn Fn(&mut RunConfig), field: &str| {
        let mut bad = run.clone();
        edit(&mut bad);
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains(field), "{field}: {err}");
    };
    refused(
        &|r| r.decoder.as_mut().unwrap().freeze_encoder = false,
        "decoder.freeze_encoder",
    );
    refused(
        &|r| r.decoder.as_mut().unwrap().init_from = Some("vae.safetensors".into()),
        "decoder.init_from",
    );
    refused(
        &|r| r.decoder.as_mut().unwrap().zero_decoder_biases = true,
        "decoder.zero_decoder_biases",
    );
    refused(&|r| r.decoder.as_mut().unwrap().crop += 1, "decoder.crop");
    refused(
        &|r| r.decoder.as_mut().unwrap().stft_sizes = vec![2],
        "decoder.stft_sizes",
    );
    refused(
        &|r| {
            let base = r.clone();
            r.teacher.init_from = Some(TeacherInit {
                run: "base".into(),
                base: Some(Box::new(base)),
            });
            r.decoder = None;
        },
        "teacher.init_from.base.decoder",
    );
    // Runs without the section read and write as before.
    let value = serde_json::to_value(tiny_run()).unwrap();
    assert!(value.get("decoder").is_none());
    let text = serde_json::to_string(&run).unwrap();
    assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), run);
}

/// The masked prompts the teacher trains with are those a request with an audio prompt gives
/// the exported model: a clip kept up to the middle of its energy and blanked after it, built
/// in latent space by the trainer ([`masked_prompt`]) and from audio by `generate` (the prompt
/// VAE on the blanked audio), give nearly the same prompt tokens, and the same latents away
/// from the blank's edge.
#[test]
fn masked_prompts_in_training_match_an_audio_prompt_at_inference() {
    one_thread();
    let mut run = tiny_run();
    run.teacher.optim.steps = 2;
    run.teacher.audio_prompt = Some(PromptMasking {
        clip_share: 1.0,
        blank_ratio: [0.5, 0.5],
        to_end_share: 1.0,
    });
    run.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("masked");
    let (trained, step, _) = train(&dir, &run, None);
    assert_eq!(step, 2);
    let export = dir.join("export");
    export_teacher(&trained, &run, &export).unwrap();
    let loaded = AudioX::builder().checkpoint_dir(&export).build().unwrap();

    let config = run.model_config().unwrap();
    let (c, l) = (config.model.io_channels, config.latent_length());
    let la = config.audio_conditioner().unwrap().latent_frames;
    assert_eq!(la, l, "the tiny run's prompt has the clip's frames");
    let clip = Corpus::new((&run.corpus).into()).unwrap().training_clip(0);
    let seconds = config.prompt_samples() as f64 / config.sample_rate as f64;
    // The blank starts at the latent frame where half the clip's energy has passed, so that
    // both the kept and the blanked part hold sound.
    let ratio = config.vae().downsampling_ratio;
    let total: f64 = clip.samples.iter().map(|x| f64::from(x * x)).sum();
    let mut energy = 0.0;
    let middle = clip
        .samples
        .iter()
        .position(|x| {
            energy += f64::from(x * x);
            energy >= total / 2.0
        })
        .unwrap();
    let edge = middle / ratio + 1;
    assert!(edge + 1 < l, "the clip's sound ends before its last frames");
    let edge_seconds = (edge * ratio) as f64 / config.sample_rate as f64;
    let audio = audiox::Audio::new(config.sample_rate, vec![clip.samples.clone()]).unwrap();
    // The posterior noise replayed as zeros: both sides then use posterior means.
    let replay = ReplayNoise::new()
        .with_normal(labels::INITIAL_NOISE, &[1, c, l], noise(3, c * l))
        .with_normal(labels::VAE_NOISE, &[1, c, la], vec![0.0; c * la]);
    let generated = loaded
        .generate(
            Request::text(&clip.caption)
                .audio_prompt(AudioPrompt {
                    audio,
                    start_seconds: 0.0,
                    mask: AudioPromptMask::Blank(edge_seconds..seconds),
                })
                .sampler(Arc::new(Euler::new(1)) as Arc<dyn Sampler>)
                .noise_source(replay)
                .keep_intermediates(true),
        )
        .unwrap();
    let at_inference = values(generated.intermediates.unwrap().audio_tokens);

    let plain = Device::flex();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let stage = TeacherStage::new(&run_dir, &plain).unwrap();
    let (x0, _) = stage.clean_latents(&[0], &plain).unwrap();
    let silent = stage
        .silent_prompt()
        .latents(&vec![0.0; c * la], &plain)
        .unwrap();
    let spliced = masked_prompt(silent.clone(), x0.clone(), &[Some(edge..l)]).unwrap();
    let trained = trained.valid();

    // What `generate` gives the model is the prompt VAE's posterior mean of the blanked audio.
    let blanked: Vec<f32> = {
        let mut a = clip.samples.clone();
        a.resize(config.prompt_samples(), 0.0);
        a[edge * ratio..].iter_mut().for_each(|s| *s = 0.0);
        a
    };
    let vae = audiox_train::train::teacher::load_trained_vae(&run_dir, &plain).unwrap();
    let channels = vae.encoder.channels_in();
    let input: Vec<f32> = (0..channels)
        .flat_map(|_| blanked.iter().copied())
        .collect();
    let x = Tensor::<3>::from_data(
        TensorData::new(input, [1, channels, config.prompt_samples()]),
        &plain,
    );
    let encoded = audiox_vae::Posterior::from_encoder_output(vae.encoder.forward(x)).mean;
    let via_encoded = values(trained.prompt_tokens(encoded.clone()));
    let (err, scale) = max_error(&at_inference, &via_encoded);
    assert!(
        scale > 0.0 && err <= 1e-5 * scale,
        "inference prompt tokens: {err} of {scale}"
    );

    // The trainer's splice equals that encoding except in the frames the encoder's receptive
    // field carries across the blank's edge (measured: frames 18-29 for an edge at 24, of 125).
    let (encoded, spliced) = (values(encoded), values(spliced));
    let mut differing = Vec::new();
    for f in 0..l {
        let (d, m) = (0..c)
            .map(|ch| (encoded[ch * l + f], spliced[ch * l + f]))
            .fold((0.0f32, 0.0f32), |(d, m), (a, b)| {
                (d.max((a - b).abs()), m.max(a.abs()))
            });
        if d > 1e-5 * m.max(1e-3) {
            differing.push(f);
        }
    }
    println!("frames that differ (edge at {edge} of {l}): {differing:?}");
    assert!(
        !differing.is_empty() && differing.len() <= l / 10,
        "{} of {l} frames differ",
        differing.len()
    );
    assert!(
        differing.iter().all(|f| f.abs_diff(edge) <= l / 20),
        "frames far from the edge {edge} differ: {differing:?}"
    );
}

#[test]
fn prompt_masks_are_drawn_as_configured() {
    use rand_chacha::ChaCha8Rng;
    use rand_core::SeedableRng;
    let masking = PromptMasking {
        clip_share: 0.5,
        blank_ratio: [0.25, 0.9],
        to_end_share: 0.5,
    };
    masking.check("teacher.audio_prompt").unwrap();
    let frames = 80;
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let rows = masking.draw(&mut rng, 4_000, frames);
    let spans: Vec<_> = rows.iter().flatten().collect();
    let share = spans.len() as f64 / rows.len() as f64;
    assert!((0.46..0.54).contains(&share), "clip prompts: {share}");
    let mut to_end = 0;
    for s in &spans {
        let ratio = s.len() as f64 / frames as f64;
        assert!(s.end <= frames && (0.24..=0.91).contains(&ratio), "{s:?}");
        to_end += usize::from(s.end == frames);
    }
    // Half run to the end by choice; of the others, about 1 in (frames - len + 1) by chance
    // (0.52 expected; a setting ignored would give about 0.04 or 1).
    let to_end = to_end as f64 / spans.len() as f64;
    assert!((0.45..0.6).contains(&to_end), "spans to the end: {to_end}");
    let starts_mid = spans
        .iter()
        .filter(|s| s.start > 0 && s.end < frames)
        .count();
    assert!(starts_mid > spans.len() / 3, "{starts_mid} inner spans");
    // The same stream gives the same masks; no clip share, no clip prompt.
    let again = masking.draw(&mut ChaCha8Rng::seed_from_u64(5), 4_000, frames);
    assert_eq!(rows, again);
    let none = PromptMasking {
        clip_share: 0.0,
        ..masking.clone()
    };
    assert!(none.draw(&mut rng, 100, frames).iter().all(Option::is_none));

    for bad in [
        PromptMasking {
            clip_share: 1.5,
            ..masking.clone()
        },
        PromptMasking {
            to_end_share: -0.1,
            ..masking.clone()
        },
        PromptMasking {
            blank_ratio: [0.8, 0.3],
            ..masking.clone()
        },
        PromptMasking {
            blank_ratio: [0.2, 1.2],
            ..masking.clone()
        },
    ] {
        let mut run = tiny_run();
        run.teacher.audio_prompt = Some(bad);
        let err = run.validate().unwrap_err().to_string();
        assert!(err.contains("teacher.audio_prompt"), "{err}");
    }
}

#[test]
fn masked_prompts_keep_the_clip_outside_the_blank() {
    let plain = Device::flex();
    let (c, l) = (2, 6);
    let silent =
        Tensor::<3>::from_data(TensorData::new(vec![-1.0f32; 2 * c * l], [2, c, l]), &plain);
    let clip_values: Vec<f32> = (0..2 * c * l).map(|i| i as f32).collect();
    let clip = Tensor::<3>::from_data(TensorData::new(clip_values.clone(), [2, c, l]), &plain);
    let out = values(masked_prompt(silent.clone(), clip.clone(), &[Some(2..5), None]).unwrap());
    for ch in 0..c {
        for f in 0..l {
            let i = ch * l + f;
            let expected = if (2..5).contains(&f) {
                -1.0
            } else {
                clip_values[i]
            };
            assert_eq!(out[i], expected, "row 0, channel {ch}, frame {f}");
            assert_eq!(out[c * l + i], -1.0, "row 1 is silent");
        }
    }
    assert!(masked_prompt(silent.clone(), clip.clone(), &[Some(2..7), None]).is_err());
    assert!(masked_prompt(silent, clip, &[None]).is_err());
}

/// The student stage's clip prompts: each row's context is built from its training clip's
/// latents with a mask drawn per clip (the same on every call, so a resumed run draws the same),
/// differs from the silent prompt's, and equals it when no row gets a clip prompt; a student
/// run with them interrupted and resumed equals an uninterrupted one.
#[test]
fn the_student_distils_with_prompts_made_from_its_clips() {
    use audiox_train::train::dmd::{Prompts, StudentStage};
    use audiox_train::train::teacher::TeacherPrompts;
    use audiox_train::train::train_multi_stage;
    one_thread();
    let mut run = tiny_student_run();
    let s = &mut run.student;
    s.optim.batch = 2;
    s.optim.checkpoint_every = 1;
    let masking = PromptMasking {
        clip_share: 1.0,
        blank_ratio: [0.5, 0.5],
        to_end_share: 1.0,
    };
    s.audio_prompt = Some(masking.clone());
    run.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let (teacher, ..) = train(&dir, &run, None);

    let device = device();
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let prompts = |masking: PromptMasking| {
        let stage = TeacherStage::new(&run_dir, &device).unwrap();
        TeacherPrompts::new(
            teacher.clone(),
            stage.tokenizer().clone(),
            stage.silent_prompt().clone(),
        )
        .with_clip_prompts(masking, Arc::new(stage), run.seed)
        .unwrap()
    };
    let clips = [0u64, 1];
    let corpus = Corpus::new((&run.corpus).into()).unwrap();
    let captions: Vec<String> = clips
        .iter()
        .map(|&i| corpus.training_scene(i).caption())
        .collect();
    let with_clips = prompts(masking.clone());
    let a = values(with_clips.clip_context(&clips, &captions, &device).unwrap());
    let again = values(with_clips.clip_context(&clips, &captions, &device).unwrap());
    assert_eq!(a, again, "the masks are drawn per clip, the same each time");
    let silent = values(with_clips.context(&captions, &device).unwrap());
    let (diff, scale) = max_error(&a, &silent);
    assert!(
        diff > 1e-4 * scale,
        "the clip prompts change the context: {diff} of {scale}"
    );
    // By hand: the first half of each clip kept (a blank of exactly half, to the end).
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let (x0, _) = stage.clean_latents(&clips, &device).unwrap();
    let [_, c, l] = x0.dims();
    let la = stage.silent_prompt().mean.len() / c;
    let mean = stage
        .silent_prompt()
        .latents(&vec![0.0; 2 * c * la], &device)
        .unwrap();
    let prompt = masked_prompt(mean, x0, &[Some(l / 2..l), Some(l / 2..l)]).unwrap();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let by_hand = teacher
        .context_with_prompt(stage.tokenizer(), &refs, prompt, &device)
        .unwrap();
    assert_eq!(a, values(by_hand));
    let none = prompts(PromptMasking {
        clip_share: 0.0,
        ..masking.clone()
    });
    assert_eq!(
        values(none.clip_context(&clips, &captions, &device).unwrap()),
        silent
    );
    assert!(
        TeacherPrompts::new(
            teacher.clone(),
            stage.tokenizer().clone(),
            stage.silent_prompt().clone(),
        )
        .with_clip_prompts(
            PromptMasking {
                clip_share: 2.0,
                ..masking.clone()
            },
            Arc::new(TeacherStage::new(&run_dir, &device).unwrap()),
            run.seed,
        )
        .is_err()
    );

    // Whole and resumed student runs with clip prompts end equal.
    let student_run = |dir: &Path, stop: Stop| {
        let run_dir = RunDir::open(dir, run.clone()).unwrap();
        let student = StudentStage::new(
            &run_dir,
            run.student.clone(),
            teacher.dit.clone(),
            prompts(masking.clone()),
            &device,
        )
        .unwrap();
        train_multi_stage(&student, &run_dir, &device, stop, &mut |_| {}).unwrap()
    };
    let other = tmp.path().join("other");
    copy_dir(&dir, &other);
    let whole = student_run(&dir, Stop::never());
    assert!(whole.finished);
    let half = student_run(&other, Stop::after_steps(1));
    assert_eq!(half.step, 1);
    let resumed = student_run(&other, Stop::never());
    assert_eq!(resumed.resumed_from, 1);
    let (pw, pr) = (
        parameters(&whole.model[0].model),
        parameters(&resumed.model[0].model),
    );
    for ((name, _, a), (_, _, b)) in pw.iter().zip(&pr) {
        assert_eq!(
            a, b,
            "`{name}` differs between the whole and the resumed student"
        );
    }
    assert!(
        pw.iter()
            .zip(&parameters(&teacher.dit))
            .any(|(a, b)| a.2 != b.2),
        "DMD changed the student's DiT"
    );
}

/// Copies `from` into `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn the_timeline_term_trains_the_conditioning_towards_the_clips_events() {
    one_thread();
    let mut run = tiny_run();
    run.teacher.timeline = Some(TimelineLoss {
        weight: 1.0,
        oracle: false,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    run.teacher.optim.steps = 8;
    run.teacher.optim.lr = 1e-2;
    run.teacher.cond_dropout = 0.0;
    run.validate().unwrap();
    let device = device();
    let (tmp, run_dir, ..) = vae_trained_in_a_run(&run, &device);
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let initial = stage.init_model(&device).unwrap();
    let mut terms = Vec::new();
    let mut totals = Vec::new();
    let trained = train_stage(&stage, &run_dir, &device, Stop::never(), &mut |r| {
        terms.push(r.terms["timeline"]);
        totals.push((r.loss, r.terms["flow_mse"]));
    })
    .unwrap()
    .model;
    assert_eq!(terms.len(), 8);
    // The step's loss is the flow term plus the weighted timeline term.
    for (&(loss, flow), &t) in totals.iter().zip(&terms) {
        assert!(
            (loss - (flow + t)).abs() < 1e-4 * loss.max(1.0),
            "{loss} {flow} {t}"
        );
    }
    // Trained on it, the conditioning moves towards the timelines: the term of one batch
    // (step 1's clips and draws) before and after.
    let term = |model: &TeacherModel| stage.loss(model, 1, &device).unwrap().terms["timeline"];
    let (before, after) = (term(&initial), term(&trained));
    // The same run without the term (the flow loss alone) moves it less.
    let mut flow_only = run.clone();
    flow_only.teacher.timeline = None;
    let (control, ..) = train(&tmp.path().join("flow-only"), &flow_only, None);
    let control = term(&control);
    assert!(
        after < before && after < 0.8 * control,
        "timeline term {before} -> {after} (flow loss alone: {control})"
    );
    // A weight that is not positive is refused.
    let mut bad = tiny_run();
    bad.teacher.timeline = Some(TimelineLoss {
        weight: 0.0,
        oracle: false,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("teacher.timeline"), "{err}");
}

/// Layout pretraining (`teacher.timeline.pretrain_steps`): the first steps train the timeline
/// term alone (logged as such, no flow term), moving the text side and the conditioning maps
/// but none of the DiT's blocks; the flow loss takes over after them. Refused with the oracle
/// or when it leaves no flow steps.
#[test]
fn layout_pretraining_trains_the_conditioning_alone_first() {
    one_thread();
    let mut run = tiny_run();
    let pretrain = 3;
    run.teacher.timeline = Some(TimelineLoss {
        weight: 1.0,
        oracle: false,
        basis: None,
        pretrain_steps: pretrain,
        pretrain_scenes: 0,
    });
    run.teacher.optim.steps = pretrain + 2;
    run.teacher.optim.warmup = 2;
    run.validate().unwrap();
    let device = device();
    let (_tmp, run_dir, ..) = vae_trained_in_a_run(&run, &device);
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let initial = parameters(&stage.init_model(&device).unwrap());
    let mut logged = Vec::new();
    let stop = Stop {
        after_steps: Some(pretrain),
        deadline: None,
    };
    let first = train_stage(&stage, &run_dir, &device, stop, &mut |r| {
        logged.push(r.terms.clone())
    })
    .unwrap()
    .model;
    for terms in &logged {
        assert!(terms.contains_key("pretrain") && terms.contains_key("timeline"));
        assert!(!terms.contains_key("flow_mse"), "{terms:?}");
    }
    let (mut blocks, mut text) = ((0, 0), (0, 0));
    for ((name, _, after), (_, _, before)) in parameters(&first).iter().zip(&initial) {
        let moved = usize::from(after != before);
        if name.starts_with("dit.blocks.") {
            blocks = (blocks.0 + moved, blocks.1 + 1);
        } else if name.starts_with("t5.") {
            text = (text.0 + moved, text.1 + 1);
        }
    }
    assert!(blocks.1 > 0 && text.1 > 0, "{blocks:?} {text:?}");
    assert_eq!(blocks.0, 0, "a DiT block moved during the pretraining");
    assert!(
        2 * text.0 > text.1,
        "{} of {} T5 parameters moved",
        text.0,
        text.1
    );
    logged.clear();
    let mut rates = Vec::new();
    train_stage(&stage, &run_dir, &device, Stop::never(), &mut |r| {
        logged.push(r.terms.clone());
        rates.push(r.lr);
    })
    .unwrap();
    assert_eq!(logged.len(), 2);
    for terms in &logged {
        assert!(terms.contains_key("flow_mse") && !terms.contains_key("pretrain"));
    }
    // The flow steps warm up again from the first one (`warmup` 2: half the rate, then all).
    let lr = run.teacher.optim.lr;
    assert_eq!(rates, [lr / 2.0, lr], "flow steps' rates");
    // Refused with the oracle, and when no flow step is left.
    let mut bad = run.clone();
    bad.teacher.timeline.as_mut().unwrap().oracle = true;
    assert!(bad.validate().is_err());
    let mut bad = run.clone();
    bad.teacher.timeline.as_mut().unwrap().pretrain_steps = run.teacher.optim.steps;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("pretrain_steps"), "{err}");
}

/// Layout pretraining on drawn scenes (`teacher.timeline.pretrain_scenes`): its steps take
/// their clips from the training scenes rather than the clip pool (another term than the
/// pool's at the same step and weights, the same on a second call), log the pretraining's
/// terms and no latent statistics, and hand over to the flow loss as usual. The setting needs
/// `pretrain_steps`.
#[test]
fn layout_pretraining_can_draw_its_scenes_beyond_the_clip_pool() {
    one_thread();
    let pretrain = 2;
    let with_scenes = |scenes: u64| {
        let mut run = tiny_run();
        run.teacher.timeline = Some(TimelineLoss {
            weight: 1.0,
            oracle: false,
            basis: None,
            pretrain_steps: pretrain,
            pretrain_scenes: scenes,
        });
        run.teacher.optim.steps = pretrain + 1;
        run.validate().unwrap();
        run
    };
    let (drawn, pooled) = (with_scenes(1_000_000), with_scenes(0));
    let device = device();
    let (_tmp, drawn_dir, ..) = vae_trained_in_a_run(&drawn, &device);
    let (_tmp_pool, pooled_dir, ..) = vae_trained_in_a_run(&pooled, &device);
    let stage = TeacherStage::new(&drawn_dir, &device).unwrap();
    let pool_stage = TeacherStage::new(&pooled_dir, &device).unwrap();
    let model = stage.init_model(&device).unwrap();
    let term = |stage: &TeacherStage| {
        let loss = stage.loss(&model, 0, &device).unwrap();
        assert!(loss.terms.contains_key("pretrain"), "{:?}", loss.terms);
        (loss.terms["timeline"], loss.terms.contains_key("x0_rms"))
    };
    let (a, b, pool) = (term(&stage), term(&stage), term(&pool_stage));
    assert_eq!(a, b, "the same step drew other scenes");
    assert!(
        !a.1 && pool.1,
        "latent statistics logged: drawn {a:?}, pool {pool:?}"
    );
    assert_ne!(a.0, pool.0, "the drawn scenes' term equals the pool's");
    let mut logged = Vec::new();
    train_stage(&stage, &drawn_dir, &device, Stop::never(), &mut |r| {
        logged.push(r.terms.clone())
    })
    .unwrap();
    let flow: Vec<bool> = logged.iter().map(|t| t.contains_key("flow_mse")).collect();
    assert_eq!(flow, [false, false, true]);
    // Without pretraining steps the setting has nothing to set.
    let mut bad = drawn.clone();
    bad.teacher.timeline.as_mut().unwrap().pretrain_steps = 0;
    let err = bad.validate().unwrap_err().to_string();
    assert!(err.contains("pretrain_scenes"), "{err}");
}

/// The layout oracle (`teacher.timeline.oracle`): the flow loss sees the clips' exact
/// timelines in the kept rows (so it changes with the same draws), not in the dropped rows
/// (with every row dropped it equals the plain loss bit for bit), and a weight of 0 is
/// allowed with it only.
#[test]
fn the_layout_oracle_conditions_the_kept_rows_only() {
    one_thread();
    let mut run = tiny_run();
    run.teacher.timeline = Some(TimelineLoss {
        weight: 0.0,
        oracle: true,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    run.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let device = device();
    vae_trained_in(&tmp.path().join("vae"), &run, &device);
    // A copy of the VAE's run folder with `config` (the VAE stage done); its teacher stage.
    let stage = |name: &str, config: &RunConfig| {
        let dir = tmp.path().join(name);
        copy_dir(&tmp.path().join("vae"), &dir);
        std::fs::remove_file(dir.join("run.json")).unwrap();
        let run_dir = RunDir::open(&dir, config.clone()).unwrap();
        TeacherStage::new(&run_dir, &device).unwrap()
    };
    let mut plain_run = run.clone();
    plain_run.teacher.timeline = Some(TimelineLoss {
        weight: 1.0,
        oracle: false,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    let oracle = stage("oracle", &run);
    let plain = stage("plain", &plain_run);
    let model = oracle.init_model(&device).unwrap();
    let step = 3;
    let (a, b) = (
        oracle.loss(&model, step, &device).unwrap(),
        plain.loss(&model, step, &device).unwrap(),
    );
    // Same draws (dropped rows, the timeline term of the model's own conditioning) ...
    assert_eq!(a.terms["dropped"], b.terms["dropped"]);
    assert!(a.terms["dropped"] < run.teacher.optim.batch as f64);
    assert_eq!(a.terms["timeline"], b.terms["timeline"]);
    // ... another conditioning; with weight 0 the loss is the flow term alone.
    assert_ne!(a.terms["flow_mse"], b.terms["flow_mse"]);
    let total = a.loss.into_scalar::<f32>() as f64;
    assert!((total - a.terms["flow_mse"]).abs() < 1e-6 * total.max(1.0));
    // Every row dropped: nobody is given the oracle.
    let (mut all_oracle, mut all_plain) = (run.clone(), plain_run.clone());
    all_oracle.teacher.cond_dropout = 1.0;
    all_plain.teacher.cond_dropout = 1.0;
    let flow = |s: &TeacherStage| s.loss(&model, step, &device).unwrap().terms["flow_mse"];
    assert_eq!(
        flow(&stage("dropped-oracle", &all_oracle)),
        flow(&stage("dropped-plain", &all_plain))
    );
    // A basis (`teacher.timeline.basis`, read from the run folder) projects the targets the
    // oracle writes and the term compares: the draws stay, the conditioning and term change.
    let frames = run.model_config().unwrap().latent_length();
    let mut file: Vec<f32> = vec![1.0, frames as f32];
    file.extend(vec![0.0f32; 4 * frames]);
    file.extend((0..frames).map(|f| f32::from(f == 0)));
    let bytes: Vec<u8> = file.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut projected = run.clone();
    projected.teacher.timeline = Some(TimelineLoss {
        weight: 0.0,
        oracle: true,
        basis: Some("basis.f32".into()),
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    std::fs::create_dir_all(tmp.path().join("projected")).unwrap();
    std::fs::write(tmp.path().join("projected").join("basis.f32"), &bytes).unwrap();
    let c = stage("projected", &projected)
        .loss(&model, step, &device)
        .unwrap();
    assert_eq!(c.terms["dropped"], a.terms["dropped"]);
    assert_ne!(c.terms["flow_mse"], a.terms["flow_mse"]);
    assert_ne!(c.terms["timeline"], a.terms["timeline"]);
    // A basis for another frame count is refused when the stage opens.
    let short: Vec<u8> = [1.0f32, 2.0]
        .into_iter()
        .chain(vec![0.0; 4 * 2 + 2])
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let dir = tmp.path().join("short");
    copy_dir(&tmp.path().join("vae"), &dir);
    std::fs::remove_file(dir.join("run.json")).unwrap();
    std::fs::write(dir.join("basis.f32"), short).unwrap();
    let run_dir = RunDir::open(&dir, projected.clone()).unwrap();
    assert!(TeacherStage::new(&run_dir, &device).is_err());
    // Fill tokens that leave no room for the longest caption are refused.
    let mut crowded = tiny_run();
    crowded.teacher.text_fill = 9;
    let err = crowded.validate().unwrap_err().to_string();
    assert!(err.contains("teacher.text_fill"), "{err}");
    // So are slots that do, and slots the T5 embedding has no rows for.
    let mut crowded = tiny_run();
    crowded.teacher.text_fill = 4;
    crowded.teacher.text_slots = 5;
    let vocab = crowded.teacher.t5["vocab_size"].as_u64().unwrap();
    crowded.teacher.t5["vocab_size"] = json!(vocab + 5);
    let err = crowded.validate().unwrap_err().to_string();
    assert!(err.contains("teacher.text_slots"), "{err}");
    let mut unembedded = tiny_run();
    unembedded.teacher.text_slots = 4;
    let err = unembedded.validate().unwrap_err().to_string();
    assert!(err.contains("teacher.t5.vocab_size"), "{err}");
    // Weight 0 without the oracle is refused; a negative weight with it too.
    let mut bad = tiny_run();
    bad.teacher.timeline = Some(TimelineLoss {
        weight: 0.0,
        oracle: false,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    assert!(bad.validate().is_err());
    bad.teacher.timeline = Some(TimelineLoss {
        weight: -1.0,
        oracle: true,
        basis: None,
        pretrain_steps: 0,
        pretrain_scenes: 0,
    });
    assert!(bad.validate().is_err());
}

/// The number of float parameters of `module` that require a gradient.
fn trainable_floats<M: burn::module::Module>(module: &M) -> usize {
    struct Count(usize);
    impl burn::module::ModuleVisitor for Count {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<D>>,
        ) {
            if param.val().is_require_grad() {
                self.0 += 1;
            }
        }
    }
    let mut count = Count(0);
    module.visit(&mut count);
    count.0
}

/// `run` with the DiT `depth` and its teacher started from the run folder `source`.
fn grown(run: &RunConfig, depth: usize, source: &str) -> RunConfig {
    let mut grown = run.clone();
    grown.model["model"]["diffusion"]["config"]["depth"] = json!(depth);
    grown.teacher.init_from = Some(TeacherInit {
        run: source.into(),
        base: None,
    });
    grown
}

#[test]
fn a_teacher_grown_from_another_run_starts_where_that_run_ended() {
    use audiox_train::train::Stage;
    one_thread();
    let run = tiny_run();
    let tmp = tempfile::tempdir().unwrap();
    let (source, _, _) = train(&tmp.path().join("source"), &run, None);
    let depth = run.model_config().unwrap().dit().depth;

    // Two blocks more, the source named relative to the new run's folder.
    let mut deeper = grown(&run, depth + 2, "../source");
    deeper.teacher.optim.steps = 2;
    let device = device();
    let dir = tmp.path().join("grown");
    let (run_dir, ..) = vae_trained_in(&dir, &deeper, &device);
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let start = stage.initial_model(&device).unwrap();
    assert_eq!(start.dit.blocks.len(), depth + 2);

    // Every parameter of the source is there with its trained value.
    let theirs = parameters(&source);
    let ours = parameters(&start);
    for (name, shape, value) in &theirs {
        let (_, s, v) = ours
            .iter()
            .find(|(n, ..)| n == name)
            .unwrap_or_else(|| panic!("`{name}` is missing from the grown teacher"));
        assert_eq!((s, v), (shape, value), "`{name}` differs from the source's");
    }
    // The added blocks: gates closed, time key projections opposite and not zero.
    let (a, b) = (&start.dit.blocks[depth], &start.dit.blocks[depth + 1]);
    for block in [a, b] {
        let m = values(block.ada_ln_modulation.weight.val());
        assert!(m.iter().all(|&x| x == 0.0));
    }
    let (ka, kb) = (
        values(a.cross_attn.to_kv.weight.val()),
        values(b.cross_attn.to_kv.weight.val()),
    );
    assert!(ka.iter().any(|&x| x != 0.0));
    assert!(ka.iter().zip(&kb).all(|(x, y)| *x == -*y));

    // So the grown teacher predicts what the source predicted.
    let plain = Device::flex();
    let (source, start_plain) = (source.valid(), start.clone().valid());
    let config = deeper.model_config().unwrap();
    let (c, l) = (config.model.io_channels, config.latent_length());
    let la = config.audio_conditioner().unwrap().latent_frames;
    let eps = noise(5, c * la);
    let context = source
        .context_from_captions(
            &tokenizer(&run).unwrap(),
            &["three high beeps"],
            stage.silent_prompt(),
            &eps,
            &plain,
        )
        .unwrap();
    let z = Tensor::<3>::from_data(TensorData::new(noise(6, c * l), [1, c, l]), &plain);
    let t = Tensor::<1>::from_data(TensorData::new(vec![0.7f32], [1]), &plain);
    let want = values(
        source
            .velocity(z.clone(), t.clone(), context.clone())
            .unwrap(),
    );
    let got = values(start_plain.velocity(z, t, context).unwrap());
    let (err, scale) = max_error(&got, &want);
    assert!(
        scale > 0.0 && err <= 1e-5 * scale,
        "velocity: {err} of {scale}"
    );

    // It trains from there, and resumes into the deeper architecture.
    let out = train_stage(&stage, &run_dir, &device, Stop::after_steps(1), &mut |_| {}).unwrap();
    assert_eq!((out.step, out.resumed_from), (1, 0));
    let out = train_stage(&stage, &run_dir, &device, Stop::never(), &mut |r| {
        assert!(r.loss.is_finite())
    })
    .unwrap();
    assert_eq!((out.step, out.resumed_from), (2, 1));
    let opened = values(out.model.dit.blocks[depth].ada_ln_modulation.weight.val());
    assert!(opened.iter().any(|&x| x != 0.0), "the added gates train");
    // Once started, the run no longer reads its source (which may move).
    std::fs::rename(tmp.path().join("source"), tmp.path().join("moved")).unwrap();
    TeacherStage::new(&run_dir, &device).unwrap();
    std::fs::rename(tmp.path().join("moved"), tmp.path().join("source")).unwrap();

    // Refused before any weight is read: an odd number of blocks, another T5, a missing source.
    for (name, bad, needle) in [
        ("odd", grown(&run, depth + 1, "../source"), "even number"),
        (
            "t5",
            {
                let mut r = grown(&run, depth + 2, "../source");
                r.teacher.t5["d_ff"] = json!(48);
                r
            },
            "teacher.t5",
        ),
        ("missing", grown(&run, depth + 2, "../nowhere"), "run.json"),
    ] {
        let dir = tmp.path().join(name);
        let (run_dir, ..) = vae_trained_in(&dir, &bad, &device);
        let err = TeacherStage::new(&run_dir, &device)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(needle), "{name}: {err}");
    }
}

/// A run whose teacher starts from a base run it trains itself (`teacher.init_from.base`):
/// `train_base` trains the base run's VAE and teacher in the base run's folder, resumably, and
/// imports its VAE; the run's teacher starts from the base's finished teacher, grown; the run's
/// own VAE and teacher stages refuse to run before the base is trained; a base that differs
/// from the run in more than depth, teacher and student is refused.
#[test]
fn a_run_trains_its_base_run_first_and_grows_the_base_teacher() {
    use audiox_train::train::pipeline::{train_base, train_teacher, train_vae};
    one_thread();
    let base = tiny_run();
    let depth = base.model_config().unwrap().dit().depth;
    let mut run = grown(&base, depth + 2, "base");
    run.teacher.init_from.as_mut().unwrap().base = Some(Box::new(base.clone()));
    run.teacher.optim.steps = 2;
    run.validate().unwrap();
    let text = serde_json::to_string(&run).unwrap();
    assert_eq!(serde_json::from_str::<RunConfig>(&text).unwrap(), run);

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let run_dir = RunDir::open(&dir, run.clone()).unwrap();
    let device = device();
    let mut quiet = |_: &RunDir, _: audiox_train::train::StageName, _: &_| {};
    let err = train_vae(&run_dir, &device, Stop::never(), &mut quiet)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--stage base"), "{err}");
    let err = TeacherStage::new(&run_dir, &device)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--stage base"), "{err}");

    // Stopped after a step: the base VAE (one step) is done, its teacher is not; nothing is
    // imported yet, and the run cannot start its teacher.
    let mut reports = Vec::new();
    let done = train_base(
        &run_dir,
        &device,
        Stop::after_steps(1),
        &mut quiet,
        &mut |d, r| reports.push((d.root().to_path_buf(), r.stage.as_str(), r.step, r.finished)),
    )
    .unwrap();
    assert!(!done);
    let base_dir = dir.join("base");
    assert_eq!(
        reports,
        [
            (base_dir.clone(), "vae", 1, true),
            (base_dir.clone(), "teacher", 1, false)
        ]
    );
    assert!(TeacherStage::new(&run_dir, &device).is_err());

    // Resumed to the end (the finished VAE stage reports again, with nothing to do): the base
    // teacher equals one trained in a run folder of its own,
    // and the run's VAE is the base's.
    reports.clear();
    let done = train_base(&run_dir, &device, Stop::never(), &mut quiet, &mut |d, r| {
        reports.push((d.root().to_path_buf(), r.stage.as_str(), r.step, r.finished))
    })
    .unwrap();
    assert!(done);
    assert_eq!(
        reports,
        [
            (base_dir.clone(), "vae", 1, true),
            (base_dir.clone(), "teacher", 4, true)
        ]
    );
    let (alone, ..) = train(&tmp.path().join("alone"), &base, None);
    let base_run = RunDir::resume(&base_dir).unwrap();
    let base_teacher = TeacherModel::from_checkpoint(&base_run, 4, &Device::flex()).unwrap();
    assert_eq!(parameters(&base_teacher), parameters(&alone.valid()));
    assert_eq!(
        std::fs::read(dir.join("export/pretransform/vae.safetensors")).unwrap(),
        std::fs::read(base_dir.join("export/pretransform/vae.safetensors")).unwrap()
    );
    assert!(
        train_vae(&run_dir, &device, Stop::never(), &mut quiet)
            .unwrap()
            .is_none()
    );

    // The run's teacher starts from the base's, two blocks deeper, and trains.
    let stage = TeacherStage::new(&run_dir, &device).unwrap();
    let start = stage.initial_model(&device).unwrap();
    assert_eq!(start.dit.blocks.len(), depth + 2);
    let ours = parameters(&start);
    for (name, shape, value) in parameters(&base_teacher) {
        assert!(
            ours.iter()
                .any(|(n, s, v)| *n == name && *s == shape && *v == value),
            "`{name}` is not the base teacher's"
        );
    }
    let report = train_teacher(&run_dir, &device, Stop::never(), &mut quiet).unwrap();
    assert_eq!((report.step, report.finished), (2, true));
    // Once the run's teacher has started, the base is not trained or read again.
    std::fs::rename(&base_dir, tmp.path().join("moved")).unwrap();
    assert!(train_base(&run_dir, &device, Stop::never(), &mut quiet, &mut |_, _| {}).unwrap());

    // Refused: a base with another seed or VAE section, one with a base of its own, one not
    // compatible with the run's model.
    let mut other_vae = run.clone();
    if let Some(b) = other_vae.teacher.init_from.as_mut().unwrap().base.as_mut() {
        b.vae.kl_weight = 0.5;
    }
    let mut nested = run.clone();
    if let Some(b) = nested.teacher.init_from.as_mut().unwrap().base.as_mut() {
        b.teacher.init_from = Some(TeacherInit {
            run: "elsewhere".into(),
            base: None,
        });
    }
    let mut odd = run.clone();
    odd.model["model"]["diffusion"]["config"]["depth"] = json!(depth + 1);
    let mut seed = run.clone();
    seed.seed += 1;
    for (name, bad, needle) in [
        ("seed", seed, "base.seed"),
        ("vae", other_vae, "base.vae"),
        ("nested", nested, "base.teacher.init_from"),
        ("odd", odd, "even number"),
    ] {
        let err = bad.validate().err().unwrap().to_string();
        assert!(err.contains(needle), "{name}: {err}");
    }
}
