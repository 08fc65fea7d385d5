//! Measures windowed continuation (`audiox::long_form`) on a trained demo model for a grid of
//! overlap and crossfade lengths, to choose their defaults from measurements (issue 17).
//!
//! ```text
//! cargo run --release -p audiox-train --features train --example long_form_defaults -- \
//!     runs/demo/export [--captions 8] [--seconds 40] [--teacher [--steps 25]] [--agreement]
//! ```
//!
//! For each setting, each of the first `--captions` held-out captions of the corpus is
//! generated for `--seconds` (seed = caption index) with the student (or the teacher with its
//! default Euler steps and guidance with `--teacher`), and the result is scored:
//!
//! * **seam jump**: the largest sample-to-sample change within each crossfade (5 ms either
//!   side of a cut), divided by the clip's 99.9th percentile of sample-to-sample changes. Above
//!   1 the seam is sharper than the signal itself anywhere else: an audible click. Reported as
//!   the worst seam and the share of seams above 1;
//! * **level drift**: the RMS level (dB) of each later window's new part against the first
//!   window's, mean absolute difference (continuation that fades out or blows up shows here);
//! * **silent windows**: the share of later windows whose new part is below -60 dBFS RMS;
//! * **event rate**: detected events per 10 s in the later windows' new parts against the
//!   first window (the metric's detector, `audiox_train::metric`);
//! * **time**: generation seconds per second of audio (more overlap, more windows).
//!
//! Prints a markdown table (the one in `docs/guide.md`, "Longer than one window").
//!
//! With `--agreement` it measures instead whether the model **continues** its audio prompt,
//! what windowed continuation rests on: for each caption `i` and overlap, a first window
//! (seed `i`, unnormalised), then a second one (seed `1000 + i`) whose audio prompt is
//! `overlap` seconds of the first window kept at its start with the rest blank (the prompt
//! `long_form` builds), and the same second window without a prompt. The kept seconds are the
//! first window's **first** ones, not its last: the demo corpus puts every event in a clip's
//! first seconds, so a demo window's last seconds are mostly silence, and continuing silence
//! shows nothing. Scored over the overlap, against the kept seconds:
//!
//! * **envelope correlation**: Pearson correlation of the 20 ms RMS levels in dB (floored at
//!   -80 dB); 1 when the new window's loudness follows the prompt's over time;
//! * **waveform SNR**: kept seconds' energy over the energy of the difference, in dB (0 dB:
//!   the difference is as loud as the prompt; negative: farther than silence would be).
//!
//! A model that ignores its prompt scores the same with and without it.

use std::path::PathBuf;
use std::time::Instant;

use audiox::{AudioX, DenoiserKind, LongFormOptions, Request};
use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::metric::{DetectorConfig, detect_events};

struct Args {
    dir: PathBuf,
    captions: usize,
    seconds: f64,
    teacher: bool,
    steps: Option<usize>,
    agreement: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let (mut dir, mut captions, mut seconds, mut teacher) = (None, 8, 40.0f64, false);
    let (mut steps, mut agreement) = (None, false);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--captions" => {
                let v = value("--captions")?;
                captions = v.parse().map_err(|e| format!("--captions {v:?}: {e}"))?;
            }
            "--seconds" => {
                let v = value("--seconds")?;
                seconds = v.parse().map_err(|e| format!("--seconds {v:?}: {e}"))?;
            }
            "--teacher" => teacher = true,
            "--agreement" => agreement = true,
            "--steps" => {
                let v = value("--steps")?;
                steps = Some(v.parse().map_err(|e| format!("--steps {v:?}: {e}"))?);
            }
            _ if a.starts_with("--") => return Err(format!("unknown option {a}")),
            _ if dir.is_none() => dir = Some(PathBuf::from(a)),
            _ => return Err(format!("unexpected argument {a}")),
        }
    }
    let dir =
        dir.ok_or("usage: long_form_defaults EXPORT_DIR [--captions N] [--seconds S] [--teacher [--steps N]] [--agreement]")?;
    if captions == 0 || !(seconds.is_finite() && seconds > 0.0) {
        return Err("--captions must be at least 1 and --seconds above 0".into());
    }
    if steps.is_some() && !teacher {
        return Err("--steps applies to the teacher (--teacher); the student has its 4".into());
    }
    Ok(Args {
        dir,
        captions,
        seconds,
        teacher,
        steps,
        agreement,
    })
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

/// RMS level in dB (relative to full scale) of `x`, floored at -120 dB.
fn level_db(x: &[f32]) -> f64 {
    if x.is_empty() {
        return -120.0;
    }
    let power = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    (10.0 * power.log10()).max(-120.0)
}

/// What one clip scored.
#[derive(Default)]
struct ClipScore {
    seam_ratios: Vec<f64>,
    level_drifts_db: Vec<f64>,
    silent_windows: usize,
    later_windows: usize,
    first_rate: f64,
    later_rates: Vec<f64>,
}

/// Scores mono `x` at `rate` generated in windows of `window` s with `overlap` and `crossfade`.
fn score(x: &[f32], rate: u32, window: f64, overlap: f64, crossfade: f64) -> ClipScore {
    let sr = rate as f64;
    let at = |s: f64| ((s * sr).round() as usize).min(x.len());
    let mut diffs: Vec<f32> = x.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    let reference = if diffs.is_empty() {
        0.0
    } else {
        let k = ((diffs.len() as f64 * 0.999) as usize).min(diffs.len() - 1);
        *diffs.select_nth_unstable_by(k, f32::total_cmp).1 as f64
    };
    let hop = window - overlap;
    let total = x.len() as f64 / sr;
    let cfg = DetectorConfig::default();
    let events_per_10s = |a: usize, b: usize| {
        let n = detect_events(&x[a..b], rate, &cfg).len() as f64;
        10.0 * n / ((b - a) as f64 / sr).max(1e-9)
    };
    let first_end = at(window.min(total));
    let mut out = ClipScore {
        first_rate: events_per_10s(0, first_end),
        ..ClipScore::default()
    };
    let first_level = level_db(&x[..first_end]);
    let mut k = 1;
    while (k as f64) * hop + overlap < total {
        let start = k as f64 * hop;
        // The seam: the crossfade at the end of the overlap (5 ms either side of a cut).
        let (a, b) = if crossfade > 0.0 {
            (at(start + overlap - crossfade), at(start + overlap))
        } else {
            (at(start + overlap - 0.005), at(start + overlap + 0.005))
        };
        let jump = x[a..b.max(a + 1).min(x.len())]
            .windows(2)
            .map(|w| (w[1] - w[0]).abs() as f64)
            .fold(0.0, f64::max);
        if reference > 0.0 {
            out.seam_ratios.push(jump / reference);
        }
        // The window's new part: after the overlap, to the window's end or the clip's.
        let (n0, n1) = (at(start + overlap), at((start + window).min(total)));
        if n1 > n0 {
            let level = level_db(&x[n0..n1]);
            out.level_drifts_db.push((level - first_level).abs());
            out.silent_windows += usize::from(level < -60.0);
            out.later_windows += 1;
            out.later_rates.push(events_per_10s(n0, n1));
        }
        k += 1;
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let mut builder = AudioX::builder().checkpoint_dir(&args.dir);
    if args.teacher {
        builder = builder
            .teacher_checkpoint(
                args.dir
                    .join("pretrained_ckpt")
                    .join("pretrained_ckpt.safetensors"),
            )
            .denoiser(DenoiserKind::Teacher);
    }
    let model = builder.build()?;
    let rate = model.config().sample_rate;
    let window = model.max_duration();
    let corpus = Corpus::new(CorpusConfig {
        sample_rate: rate,
        ..CorpusConfig::default()
    })?;
    let scenes = corpus.try_held_out_scenes(args.captions)?;
    if args.agreement {
        return agreement(&model, &scenes, &args);
    }
    println!(
        "{} held-out captions x {} s, {:?}, window {window} s, seeds 0..{}",
        args.captions,
        args.seconds,
        model.kind(),
        args.captions
    );
    println!(
        "| overlap | crossfade | windows | worst seam jump | seams > 1 | level drift (dB, mean) | silent windows | events / 10 s, first -> later (median) | s per s of audio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for overlap in [1.0, 2.5, 4.0, 5.0] {
        for share in [0.0, 0.25, 1.0] {
            let crossfade = overlap * share;
            let options = LongFormOptions::default()
                .overlap(overlap)
                .crossfade(crossfade);
            let mut all = ClipScore::default();
            let mut first_rates = Vec::new();
            let mut windows = 0;
            let started = Instant::now();
            for (i, scene) in scenes.iter().enumerate() {
                let mut request = Request::text(scene.caption())
                    .seed(i as u64)
                    .duration(args.seconds);
                if let Some(steps) = args.steps {
                    request = request.steps(steps);
                }
                let generation = model.generate_long(request, options.clone())?;
                let s = score(&mono(&generation), rate, window, overlap, crossfade);
                windows = 1 + s.later_windows;
                all.seam_ratios.extend(s.seam_ratios);
                all.level_drifts_db.extend(s.level_drifts_db);
                all.silent_windows += s.silent_windows;
                all.later_windows += s.later_windows;
                all.later_rates.extend(s.later_rates);
                first_rates.push(s.first_rate);
            }
            let per_second = started.elapsed().as_secs_f64() / (args.seconds * scenes.len() as f64);
            let worst = all.seam_ratios.iter().copied().fold(0.0, f64::max);
            let over = all.seam_ratios.iter().filter(|&&r| r > 1.0).count();
            let drift =
                all.level_drifts_db.iter().sum::<f64>() / all.level_drifts_db.len().max(1) as f64;
            println!(
                "| {overlap:.1} s | {crossfade:.2} s | {windows} | {worst:.2} | {over} of {} | {drift:.1} | {} of {} | {:.1} -> {:.1} | {per_second:.3} |",
                all.seam_ratios.len(),
                all.silent_windows,
                all.later_windows,
                median(first_rates),
                median(all.later_rates),
            );
        }
    }
    Ok(())
}

/// The mono mixdown of a generation's first sample.
fn mono(generation: &audiox::Generation) -> Vec<f32> {
    let audio = &generation.audio[0];
    let channels = audio.channels();
    (0..audio.num_frames())
        .map(|f| channels.iter().map(|c| c[f]).sum::<f32>() / channels.len() as f32)
        .collect()
}

/// Pearson correlation of the 20 ms RMS levels (dB, floored at -80) of `x` and `y`.
fn envelope_correlation(x: &[f32], y: &[f32], rate: u32) -> f64 {
    let frame = (rate as usize / 50).max(1);
    let levels =
        |v: &[f32]| -> Vec<f64> { v.chunks(frame).map(|c| level_db(c).max(-80.0)).collect() };
    let (a, b) = (levels(x), levels(y));
    let n = a.len().min(b.len()) as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (p, q) in a.iter().zip(&b) {
        sab += (p - ma) * (q - mb);
        saa += (p - ma).powi(2);
        sbb += (q - mb).powi(2);
    }
    if saa == 0.0 || sbb == 0.0 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

/// `x` against the reference `r`: reference energy over difference energy, in dB.
fn snr_db(x: &[f32], r: &[f32]) -> f64 {
    let signal: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
    let noise: f64 = x
        .iter()
        .zip(r)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum();
    10.0 * (signal.max(1e-30) / noise.max(1e-30)).log10()
}

/// The `--agreement` table (see the module docs).
fn agreement(
    model: &AudioX,
    scenes: &[audiox_train::corpus::Scene],
    args: &Args,
) -> Result<(), Box<dyn std::error::Error>> {
    use audiox::{Audio, AudioPrompt, AudioPromptMask};
    let rate = model.config().sample_rate;
    let window = model.config().prompt_samples();
    let with_steps = |r: Request| match args.steps {
        Some(s) => r.steps(s),
        None => r,
    };
    println!(
        "{} held-out captions, {:?}{}, a second window prompted with a first window's first seconds (seeds 1000 + i and i)",
        scenes.len(),
        model.kind(),
        args.steps.map_or(String::new(), |s| format!(", {s} steps"))
    );
    println!(
        "| overlap | envelope corr., prompted (median) | without prompt | waveform SNR, prompted (median) | without prompt | prompts above -60 dBFS |"
    );
    println!("|---|---|---|---|---|---|");
    let firsts: Vec<Vec<f32>> = scenes
        .iter()
        .enumerate()
        .map(|(i, scene)| {
            let request = Request::text(scene.caption())
                .seed(i as u64)
                .normalize(false);
            Ok(mono(&model.generate(with_steps(request))?))
        })
        .collect::<Result<_, audiox::Error>>()?;
    let unprompted: Vec<Vec<f32>> = scenes
        .iter()
        .enumerate()
        .map(|(i, scene)| {
            let request = Request::text(scene.caption())
                .seed(1000 + i as u64)
                .normalize(false);
            Ok(mono(&model.generate(with_steps(request))?))
        })
        .collect::<Result<_, audiox::Error>>()?;
    for overlap in [1.0, 2.5, 4.0, 5.0] {
        let n = (overlap * rate as f64).round() as usize;
        let (mut corr, mut corr0, mut snr, mut snr0, mut audible) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0);
        for (i, scene) in scenes.iter().enumerate() {
            let first = &firsts[i];
            let tail = first[..n].to_vec();
            if level_db(&tail) < -60.0 {
                continue;
            }
            audible += 1;
            let mut prompt = tail.clone();
            prompt.resize(window, 0.0);
            let request = Request::text(scene.caption())
                .seed(1000 + i as u64)
                .normalize(false)
                .audio_prompt(AudioPrompt {
                    audio: Audio::new(rate, vec![prompt])?,
                    start_seconds: 0.0,
                    mask: AudioPromptMask::Blank(
                        (n as f64 + 0.5) / rate as f64..window as f64 / rate as f64,
                    ),
                });
            let second = mono(&model.generate(with_steps(request))?);
            corr.push(envelope_correlation(&second[..n], &tail, rate));
            snr.push(snr_db(&second[..n], &tail));
            corr0.push(envelope_correlation(&unprompted[i][..n], &tail, rate));
            snr0.push(snr_db(&unprompted[i][..n], &tail));
        }
        println!(
            "| {overlap:.1} s | {:.2} | {:.2} | {:.1} dB | {:.1} dB | {audible} of {} |",
            median(corr),
            median(corr0),
            median(snr),
            median(snr0),
            scenes.len()
        );
    }
    Ok(())
}
