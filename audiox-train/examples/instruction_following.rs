//! The instruction-following table of a trained demo model (an `audiox-train` export folder):
//! the student with its 4 DMD steps, the teacher with Euler + classifier-free guidance at
//! several step counts, and the teacher with the other built-in samplers, each scored by the
//! metric of `audiox_train::metric` on the held-out captions of the training corpus.
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example instruction_following -- \
//!     runs/demo/export [--count 40] [--skip 0] [--guidance 6] [--teacher FILE] [--rows TEXT]
//!     [--energy-window S] [--verbose] [--training] [--wav-dir DIR] [--student-steps N]
//!     [--student-sampler NAME] [--student-times T0,T1,...]
//! ```
//!
//! `--energy-window S` sets the window the detector's onset baseline is measured over
//! (`DetectorConfig::window_s`, default 0.03 s); `--energy-window 0.01` is the detector of the
//! tables measured before 2026-12-05 evening.
//!
//! `--skip N` scores the held-out captions `N..N+count` (clip `i` with seed `i` as always): a
//! second set of captions for a model chosen by its score on the first, whose score on that
//! first set is biased upwards by the choice.
//!
//! `--rows TEXT` scores only the rows whose label contains `TEXT` (e.g. `student`, or
//! `euler 25` for one teacher row), for a quick check of a training snapshot; `--verbose`
//! prints each clip's caption, the number of events it asks for and the events detected;
//! `--wav-dir DIR` writes every scored clip, as the metric hears it (mono, the model's rate), to
//! `DIR/ROW/clip-NNN.wav` (`ROW` the row's label in lower case with dashes, `NNN` the caption's
//! index), so that what a row scores can be listened to;
//! `--student-steps N` runs the student's row with `N` DMD steps instead of its 4 (a student
//! off the schedule it was trained for: a diagnostic of where its misses are made), and
//! `--student-sampler NAME` with another built-in sampler than `dmd` (no guidance), and
//! `--student-times 1,0.75,0.5,0.25` with the DMD sampler on those input times (0 appended);
//! `--training` scores the first training scenes (clip indices 0, 1, ...) instead of the
//! held-out captions: far better scores there than on held-out captions mean a model that
//! learnt the captions it saw rather than the grammar.
//!
//! The student is the export's `audiox_turbo/` file and the teacher its `pretrained_ckpt/` file
//! (or `--teacher FILE`); rows whose model is missing are skipped with a note. Clip `i` uses seed `i`, so the
//! table is reproducible. Prints a markdown table (the one in `docs/training.md`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use audiox::sampler::{Dmd, Sampler, SamplerKind, Schedule};
use audiox::{AudioX, DenoiserKind, Request};
use audiox_train::corpus::{Corpus, CorpusConfig, Scene, write_mono_wav};
use audiox_train::metric::{DetectorConfig, Report, detect_events, evaluate_scenes_with};

struct Args {
    dir: PathBuf,
    count: usize,
    guidance: f32,
    teacher: Option<PathBuf>,
    rows: Option<String>,
    verbose: bool,
    training: bool,
    skip: usize,
    detector: DetectorConfig,
    wav_dir: Option<PathBuf>,
    student_steps: usize,
    student_sampler: SamplerKind,
    student_times: Option<Vec<f32>>,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut dir = None;
    let (mut count, mut guidance, mut teacher, mut rows) = (40, 6.0, None, None);
    let mut verbose = false;
    let mut training = false;
    let mut skip = 0;
    let mut detector = DetectorConfig::default();
    let mut wav_dir = None;
    let mut student_steps = 4;
    let mut student_sampler = SamplerKind::Dmd;
    let mut student_times = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--count" => {
                let v = value("--count")?;
                count = v.parse().map_err(|e| format!("--count {v:?}: {e}"))?;
            }
            "--skip" => {
                let v = value("--skip")?;
                skip = v.parse().map_err(|e| format!("--skip {v:?}: {e}"))?;
            }
            "--guidance" => {
                let v = value("--guidance")?;
                guidance = v.parse().map_err(|e| format!("--guidance {v:?}: {e}"))?;
            }
            "--energy-window" => {
                let v = value("--energy-window")?;
                detector.window_s = v
                    .parse()
                    .map_err(|e| format!("--energy-window {v:?}: {e}"))?;
            }
            "--student-steps" => {
                let v = value("--student-steps")?;
                student_steps = v
                    .parse()
                    .map_err(|e| format!("--student-steps {v:?}: {e}"))?;
                if student_steps == 0 {
                    return Err("--student-steps must be at least 1".into());
                }
            }
            "--student-sampler" => {
                let v = value("--student-sampler")?;
                student_sampler = v
                    .parse()
                    .map_err(|e| format!("--student-sampler {v:?}: {e}"))?;
            }
            "--student-times" => {
                let v = value("--student-times")?;
                let times = v
                    .split(',')
                    .map(|t| t.trim().parse::<f32>())
                    .collect::<Result<Vec<f32>, _>>()
                    .map_err(|e| format!("--student-times {v:?}: {e}"))?;
                student_times = Some(times);
            }
            "--teacher" => teacher = Some(PathBuf::from(value("--teacher")?)),
            "--rows" => rows = Some(value("--rows")?),
            "--verbose" => verbose = true,
            "--wav-dir" => wav_dir = Some(PathBuf::from(value("--wav-dir")?)),
            "--training" => training = true,
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    let dir = dir.ok_or(
        "usage: instruction_following EXPORT_DIR [--count N] [--skip N] [--guidance G] [--teacher FILE] \
         [--rows TEXT] [--verbose] [--training] [--energy-window S] [--wav-dir DIR] \
         [--student-steps N] [--student-sampler NAME] [--student-times T0,T1,...]",
    )?;
    if count == 0 {
        return Err("--count must be at least 1".into());
    }
    Ok(Args {
        dir,
        count,
        guidance,
        teacher,
        rows,
        verbose,
        training,
        skip,
        detector,
        wav_dir,
        student_steps,
        student_sampler,
        student_times,
    })
}

/// Scores `model` with requests shaped by `shape`; returns the report and seconds per clip.
/// With `wav_dir`, writes each clip there as `clip-NNN.wav`.
fn score(
    model: &AudioX,
    scenes: &[Scene],
    first_seed: u64,
    verbose: bool,
    detector: &DetectorConfig,
    wav_dir: Option<&Path>,
    shape: &dyn Fn(Request) -> Request,
) -> Result<(Report, f64), Box<dyn std::error::Error>> {
    let rate = model.config().sample_rate;
    if let Some(dir) = wav_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let start = Instant::now();
    let mut generate = |caption: &str, i: u64| -> Result<Vec<f32>, ClipError> {
        let generation = model
            .generate(shape(Request::text(caption).seed(first_seed + i)))
            .map_err(ClipError::Generate)?;
        let audio = &generation.audio[0];
        let channels = audio.channels();
        let n = audio.num_frames();
        let mono: Vec<f32> = (0..n)
            .map(|f| channels.iter().map(|c| c[f]).sum::<f32>() / channels.len() as f32)
            .collect();
        if verbose {
            let expected = scenes[i as usize].expected_events().len();
            let found = detect_events(&mono, rate, detector);
            let events: Vec<String> = found
                .iter()
                .map(|e| format!("{:.2}s {:?} {:.0}Hz", e.onset_s, e.class, e.pitch_hz))
                .collect();
            let i = first_seed + i;
            eprintln!(
                "clip {i:>3} {caption:?}: asks {expected}, found {}: {}",
                found.len(),
                events.join(", ")
            );
        }
        if let Some(dir) = wav_dir {
            let path = dir.join(format!("clip-{:03}.wav", first_seed + i));
            write_mono_wav(path, rate, &mono).map_err(ClipError::Wav)?;
        }
        Ok(mono)
    };
    let report = evaluate_scenes_with(scenes, rate, detector, &mut generate)?;
    Ok((report, start.elapsed().as_secs_f64() / scenes.len() as f64))
}

/// Why a clip could not be scored: the model failed, or its WAV could not be written.
#[derive(Debug)]
enum ClipError {
    Generate(audiox::Error),
    Wav(audiox_train::Error),
}

impl std::fmt::Display for ClipError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClipError::Generate(e) => write!(f, "{e}"),
            ClipError::Wav(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ClipError {}

/// A row label as a folder name: "teacher, euler 25 steps, cfg 2" -> "teacher-euler-25-steps-cfg-2".
fn slug(label: &str) -> String {
    label
        .to_lowercase()
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let config = audiox::ModelConfig::from_file(args.dir.join("config.json"))?;
    let corpus = Corpus::new(CorpusConfig {
        sample_rate: config.sample_rate,
        ..CorpusConfig::default()
    })?;
    let end = args.skip + args.count;
    let scenes: Vec<Scene> = if args.training {
        (args.skip as u64..end as u64)
            .map(|i| corpus.training_scene(i))
            .collect()
    } else {
        corpus.try_held_out_scenes(end)?.split_off(args.skip)
    };
    println!(
        "{} {} captions ({}..{end}), seeds {}..{end}, guidance {} for the teacher",
        args.count,
        if args.training {
            "training"
        } else {
            "held-out"
        },
        args.skip,
        args.skip,
        args.guidance
    );
    println!("| model, sampler | clips | count | order | onset | pitch | s/clip |");
    println!("|---|---|---|---|---|---|---|");
    let wanted = |label: &str| args.rows.as_deref().is_none_or(|r| label.contains(r));
    // Scores `model` with `shape` and prints the row, when the row is wanted.
    let row = |label: &str,
               model: &AudioX,
               shape: &dyn Fn(Request) -> Request|
     -> Result<(), Box<dyn std::error::Error>> {
        if wanted(label) {
            let (report, secs) = score(
                model,
                &scenes,
                args.skip as u64,
                args.verbose,
                &args.detector,
                args.wav_dir
                    .as_ref()
                    .map(|d| d.join(slug(label)))
                    .as_deref(),
                shape,
            )?;
            println!("{} {secs:.2} |", report.markdown_row(label));
        }
        Ok(())
    };

    let (student_steps, student_sampler) = (args.student_steps, args.student_sampler);
    let student_label = match student_steps {
        1 => format!("student, {} 1 step", student_sampler.name()),
        n => format!("student, {} {n} steps", student_sampler.name()),
    };
    let student_label = match &args.student_times {
        Some(times) => format!("student, dmd on times {times:?}"),
        None => student_label,
    };
    let student_label = student_label.as_str();
    if wanted(student_label) {
        match AudioX::builder()
            .checkpoint_dir(&args.dir)
            .denoiser(DenoiserKind::Student)
            .build()
        {
            Ok(student) => match &args.student_times {
                Some(times) => {
                    let mut with_end = times.clone();
                    with_end.push(0.0);
                    let dmd: Arc<dyn Sampler> =
                        Arc::new(Dmd::default().with_schedule(Schedule::custom(with_end)));
                    row(student_label, &student, &|r| r.sampler(dmd.clone()))?
                }
                None => row(student_label, &student, &|r| {
                    r.sampler(student_sampler).steps(student_steps)
                })?,
            },
            Err(e) => eprintln!("note: no student row ({e})"),
        }
    }

    let g = args.guidance;
    type Shape = Box<dyn Fn(Request) -> Request>;
    let mut teacher_rows: Vec<(String, Shape)> = Vec::new();
    for steps in [8, 25, 50] {
        teacher_rows.push((
            format!("teacher, euler {steps} steps, cfg {g}"),
            Box::new(move |r| r.sampler(SamplerKind::Euler).steps(steps).guidance(g)),
        ));
    }
    for kind in [SamplerKind::Heun, SamplerKind::DpmPp2M] {
        teacher_rows.push((
            format!("teacher, {} 25 steps, cfg {g}", kind.name()),
            Box::new(move |r| r.sampler(kind).steps(25).guidance(g)),
        ));
    }
    teacher_rows.push((
        "teacher, dmd 4 steps (no distillation)".into(),
        Box::new(|r| r.sampler(SamplerKind::Dmd).steps(4)),
    ));
    if !teacher_rows.iter().any(|(label, _)| wanted(label)) {
        return Ok(());
    }

    let teacher_file = args.teacher.clone().unwrap_or_else(|| {
        args.dir
            .join("pretrained_ckpt")
            .join("pretrained_ckpt.safetensors")
    });
    if !teacher_file.exists() {
        eprintln!(
            "note: no teacher rows ({} not found; --teacher FILE)",
            teacher_file.display()
        );
        return Ok(());
    }
    let teacher = AudioX::builder()
        .checkpoint_dir(&args.dir)
        .teacher_checkpoint(&teacher_file)
        .denoiser(DenoiserKind::Teacher)
        .build()?;
    for (label, shape) in &teacher_rows {
        row(label, &teacher, shape)?;
    }
    Ok(())
}
