//! Is the event layout the teacher's bottleneck? A diagnostic for issue 16: the
//! instruction-following metric of a teacher checkpoint when the supervised channels of its
//! conditioning (`audiox_train::train::timeline`) are overwritten with each held-out clip's
//! exact timeline (the reference rendering's onsets and class spans), against the same
//! sampling with the conditioning the caption gives (`--no-oracle`). If the DiT renders what
//! it is told, the oracle's count approaches the VAE's ceiling and the text side is what to
//! improve; if not, the DiT is.
//!
//! The teacher should have been trained to read those channels: a run with
//! `teacher.timeline` (the term pulls them towards the timeline), or better with
//! `teacher.timeline.oracle` (the flow loss sees the exact timeline). A run trained with the
//! oracle generates without it from its export; only this example can score it with it.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example layout_oracle -- \
//!     RUN_DIR STEP [--count 40] [--steps 25] [--cfg 6] [--no-oracle] [--trained] \
//!     [--basis FILE] [--verbose]
//! ```
//!
//! A checkpoint of a stage that keeps a moving average of its weights (`teacher.ema_decay`) is
//! scored with that average (what the stage exports); `--trained` scores its trained weights.
//!
//! `--basis FILE` projects each oracle timeline onto a subspace first, to ask how much of the
//! layout a conditioning of limited rank along time could carry (the caption reaches the
//! positions through one fixed map from its tokens, `docs/training.md`): little-endian f32,
//! `k` and `frames`, then the per-channel mean timeline (`CHANNELS x frames`), then `k`
//! orthonormal rows of `frames` values; each channel becomes `mean + B^T B (x - mean)`.
//!
//! Sampling: Euler with classifier-free guidance (the null condition is the conditioning
//! sequence of an all-zero context, never given the oracle), seed `i` for the `i`-th held-out
//! caption; the run's VAE decodes; the mean of the two channels is scored.

use std::path::PathBuf;

use audiox::sampler::{Guidance, Sampler, SamplerKind};
use audiox::{NoiseSource, SeededNoise, StepControl};
use audiox_mmdit::MmditDenoiser;
use audiox_train::corpus::{Corpus, Scene};
use audiox_train::metric::{Report, detect_events, evaluate_scenes};
use audiox_train::train::teacher::load_trained_vae;
use audiox_train::train::timeline::{CHANNELS, TimelineBasis, timeline, with_oracle};
use audiox_train::train::{RunDir, TeacherModel, TeacherStage};
use burn::tensor::{Device, Tensor, TensorData};

struct Args {
    dir: PathBuf,
    step: u64,
    count: usize,
    steps: usize,
    cfg: f32,
    oracle: bool,
    trained: bool,
    basis: Option<PathBuf>,
    verbose: bool,
}

fn parse() -> Result<Args, String> {
    let usage = "usage: layout_oracle RUN_DIR STEP [--count N] [--steps N] [--cfg G] \
                 [--no-oracle] [--trained] [--basis FILE] [--verbose]";
    let mut it = std::env::args().skip(1);
    let dir = PathBuf::from(it.next().ok_or(usage)?);
    let step = it
        .next()
        .ok_or(usage)?
        .parse()
        .map_err(|e| format!("STEP: {e}"))?;
    let mut args = Args {
        dir,
        step,
        count: 40,
        steps: 25,
        cfg: 6.0,
        oracle: true,
        trained: false,
        basis: None,
        verbose: false,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-oracle" => args.oracle = false,
            "--trained" => args.trained = true,
            "--verbose" => args.verbose = true,
            "--basis" => args.basis = Some(PathBuf::from(it.next().ok_or("--basis needs a file")?)),
            "--count" | "--steps" | "--cfg" => {
                let v = it.next().ok_or(format!("{a} needs a value"))?;
                let bad = |e: &dyn std::fmt::Display| format!("{a} {v:?}: {e}");
                match a.as_str() {
                    "--count" => args.count = v.parse().map_err(|e| bad(&e))?,
                    "--steps" => args.steps = v.parse().map_err(|e| bad(&e))?,
                    _ => args.cfg = v.parse().map_err(|e| bad(&e))?,
                }
            }
            _ => return Err(format!("unknown option {a}; {usage}")),
        }
    }
    if args.count == 0 || args.steps == 0 || !args.cfg.is_finite() {
        return Err("--count and --steps must be at least 1 and --cfg finite".into());
    }
    Ok(args)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let run = RunDir::resume(&args.dir)?;
    let plain = Device::flex();
    let stage = TeacherStage::new(&run, &plain)?;
    let model = if args.trained {
        TeacherModel::trained_from_checkpoint(&run, args.step, &plain)?
    } else {
        TeacherModel::from_checkpoint(&run, args.step, &plain)?
    };
    let vae = load_trained_vae(&run, &plain)?;
    let config = run.config().model_config()?;
    let corpus = Corpus::new((&run.config().corpus).into())?;
    let scenes: Vec<Scene> = corpus.try_held_out_scenes(args.count)?;
    let dit = &model.dit;
    let frames = dit.latent_length();
    let channels = dit.io_channels();
    let frame_s = config.sample_size as f32 / config.sample_rate as f32 / frames as f32;
    let sampler = SamplerKind::Euler.build(args.steps, Guidance::cfg(args.cfg));
    let silent_eps = vec![0.0f32; stage.silent_prompt().mean.len()];
    let basis = match &args.basis {
        Some(path) => {
            let basis = TimelineBasis::read(path)?;
            if basis.frames() != frames {
                return Err(
                    format!("--basis has {} frames, the model {frames}", basis.frames()).into(),
                );
            }
            Some(basis)
        }
        None => None,
    };

    let mut generate = |caption: &str,
                        index: u64|
     -> Result<Vec<f32>, Box<dyn std::error::Error>> {
        let context = model.context_from_captions(
            stage.tokenizer(),
            &[caption],
            stage.silent_prompt(),
            &silent_eps,
            &plain,
        )?;
        let mut sequence = dit.conditioning_sequence(context.clone())?;
        if args.oracle {
            let clip = corpus.held_out_clip(&scenes[index as usize], index);
            let mut values = timeline(&clip.events, frames, frame_s);
            if let Some(basis) = &basis {
                basis.project(&mut values);
            }
            let targets =
                Tensor::<3>::from_data(TensorData::new(values, [1, frames, CHANNELS]), &plain);
            sequence = with_oracle(sequence, targets, &[true])?;
        }
        let null = dit.conditioning_sequence(context.zeros_like())?;
        let denoiser = MmditDenoiser::from_sequences(dit, sequence, Some(null))?;
        let mut noise_source = SeededNoise::new(index);
        let noise = noise_source.normal("initial_noise", &[1, channels, frames])?;
        let noise = Tensor::<3>::from_data(TensorData::new(noise, [1, channels, frames]), &plain);
        let latent =
            sampler.sample(&denoiser, noise, &mut noise_source, &mut StepControl::new())?;
        let audio = vae.decoder.forward(latent); // [1, 2, samples]
        let mono = audio.mean_dim(1);
        let values = mono
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        if args.verbose {
            let found = detect_events(&values, config.sample_rate, &Default::default()).len();
            // The loudest 20 ms frame, dBFS RMS (the detector ignores what stays below -70).
            let hop = (config.sample_rate / 50).max(1) as usize;
            let loudest = values
                .chunks(hop)
                .map(|c| c.iter().map(|s| s * s).sum::<f32>() / c.len() as f32)
                .fold(0.0f32, f32::max);
            println!(
                "{index:>3} asks {} makes {found} (loudest frame {:.1} dB): {caption}",
                scenes[index as usize].expected_events().len(),
                10.0 * (loudest + 1e-12).log10()
            );
        }
        Ok(values)
    };
    let start = std::time::Instant::now();
    let report: Report =
        evaluate_scenes(&scenes, config.sample_rate, &mut generate).map_err(|e| format!("{e}"))?;
    println!("| run, step | layout | sampler | clips | count | order | onset (median) | pitch |");
    println!("|---|---|---|---|---|---|---|---|");
    let row = report.markdown_row(&format!(
        "{} {} | {} | euler {} steps, cfg {}",
        args.dir.display(),
        args.step,
        match (&args.basis, args.oracle) {
            (_, false) => "caption".to_string(),
            (None, true) => "oracle".to_string(),
            (Some(_), true) => format!(
                "oracle, rank {}",
                basis.as_ref().map_or(0, TimelineBasis::rank)
            ),
        },
        args.steps,
        args.cfg
    ));
    println!("{row}");
    println!(
        "({:.2} s per clip)",
        start.elapsed().as_secs_f64() / scenes.len() as f64
    );
    Ok(())
}
