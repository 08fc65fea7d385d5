//! The corpus is deterministic, its captions follow the grammar, the held-out set never leaks
//! into training, and the metric recovers the ground truth of rendered clips (and rejects the
//! wrong scene).

use audiox_train::corpus::{Connective, Corpus, CorpusConfig, EventGroup, EventKind, Pitch, Scene};
use audiox_train::metric::{ClipScore, DetectorConfig, Report, detect_events, score_clip};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn corpus() -> Corpus {
    Corpus::new(CorpusConfig::default()).unwrap()
}

#[test]
fn clips_are_deterministic_and_differ_by_index() {
    let c = corpus();
    let a = c.training_clip(3);
    let b = c.training_clip(3);
    assert_eq!(a.caption, b.caption);
    assert_eq!(a.samples, b.samples);
    let other = c.training_clip(4);
    assert_ne!(a.samples, other.samples);
    let cfg = c.config();
    assert_eq!(
        a.samples.len(),
        (cfg.duration_s * cfg.sample_rate as f32) as usize
    );
    // A different seed gives a different stream.
    let c2 = Corpus::new(CorpusConfig {
        seed: 1,
        ..CorpusConfig::default()
    })
    .unwrap();
    assert_ne!(c2.training_clip(3).samples, a.samples);
}

#[test]
fn captions_follow_the_grammar() {
    let scene = Scene {
        groups: vec![
            EventGroup {
                kind: EventKind::Knock,
                count: 2,
                pitch: None,
                at_seconds: None,
            },
            EventGroup {
                kind: EventKind::Thud,
                count: 1,
                pitch: Some(Pitch::Low),
                at_seconds: None,
            },
        ],
        connective: Connective::Then,
    };
    assert_eq!(scene.caption(), "two knocks, then a low thud");
    let scene = Scene {
        groups: vec![EventGroup {
            kind: EventKind::Bell,
            count: 1,
            pitch: None,
            at_seconds: Some(4),
        }],
        connective: Connective::FollowedBy,
    };
    assert_eq!(scene.caption(), "a bell at 4 seconds");
    let scene = Scene {
        groups: vec![
            EventGroup {
                kind: EventKind::Chirp,
                count: 1,
                pitch: None,
                at_seconds: None,
            },
            EventGroup {
                kind: EventKind::Whoosh,
                count: 3,
                pitch: None,
                at_seconds: None,
            },
        ],
        connective: Connective::FollowedBy,
    };
    assert_eq!(scene.caption(), "a chirp followed by three whooshes");

    let c = corpus();
    let captions: Vec<String> = (0..2000).map(|i| c.training_scene(i).caption()).collect();
    for needle in [
        "a ",
        "two ",
        "three ",
        "four ",
        "five ",
        ", then ",
        " followed by ",
        " seconds",
        " high ",
        " low ",
    ] {
        assert!(
            captions.iter().any(|s| s.contains(needle)),
            "no caption contains {needle:?}"
        );
    }
    for kind in EventKind::ALL {
        assert!(
            captions.iter().any(|s| s.contains(kind.noun())),
            "{kind:?} never drawn"
        );
    }
}

#[test]
fn held_out_captions_never_reach_training() {
    let c = corpus();
    let held: Vec<String> = c.held_out_scenes(150).iter().map(Scene::caption).collect();
    assert_eq!(held.len(), 150);
    assert!(held.iter().all(|s| c.is_held_out(s)));
    let held: std::collections::HashSet<_> = held.into_iter().collect();
    for i in 0..3000 {
        let caption = c.training_scene(i).caption();
        assert!(!c.is_held_out(&caption));
        assert!(
            !held.contains(&caption),
            "training scene {i} is held out: {caption}"
        );
    }
}

#[test]
fn distinct_training_scenes_are_the_first_new_captions_in_index_order() {
    let c = corpus();
    let n = 300;
    let got: Vec<String> = c
        .distinct_training_scenes(n)
        .iter()
        .map(Scene::caption)
        .collect();
    // The same list built by hand: walk the training scenes, keep each caption once.
    let (mut expected, mut seen, mut index) = (Vec::new(), std::collections::HashSet::new(), 0);
    let mut expected_indices = Vec::new();
    while expected.len() < n {
        let caption = c.training_scene(index).caption();
        if seen.insert(caption.clone()) {
            expected.push(caption);
            expected_indices.push(index);
        }
        index += 1;
    }
    assert!(
        index as usize > n,
        "no caption repeated among the first {index} training scenes: the test checks nothing"
    );
    assert_eq!(got, expected);
    assert!(got.iter().all(|caption| !c.is_held_out(caption)));
    // Their indices: the clip at each renders that caption, and a shorter list is a prefix.
    let indices = c.distinct_training_indices(n);
    assert_eq!(indices, expected_indices);
    assert_eq!(c.distinct_training_indices(n / 3), indices[..n / 3]);
    assert_eq!(c.training_clip(indices[7]).caption, got[7]);
}

fn score_rendered(c: &Corpus, clips: impl Iterator<Item = audiox_train::corpus::Clip>) -> Report {
    let cfg = DetectorConfig::default();
    let scores: Vec<ClipScore> = clips
        .map(|clip| {
            assert!(clip.samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));
            let last = clip
                .events
                .iter()
                .map(|e| e.onset_s + e.duration_s)
                .fold(0.0, f32::max);
            assert!(
                last <= c.config().duration_s,
                "{}: ends at {last}",
                clip.caption
            );
            let found = detect_events(&clip.samples, clip.sample_rate, &cfg);
            score_clip(&clip.scene, &found, &cfg)
        })
        .collect();
    Report::from_scores(&scores)
}

#[test]
fn metric_recovers_the_ground_truth_of_rendered_clips() {
    let c = corpus();
    let train = score_rendered(&c, (0..250).map(|i| c.training_clip(i)));
    let held = c.held_out_scenes(80);
    let held = score_rendered(
        &c,
        held.iter()
            .enumerate()
            .map(|(i, s)| c.held_out_clip(s, i as u64)),
    );
    for (name, r) in [("training", &train), ("held-out", &held)] {
        println!("{}", r.markdown_row(name));
        assert!(r.event_count_accuracy >= 0.97, "{name}: {r:?}");
        assert!(r.order_accuracy.unwrap() >= 0.95, "{name}: {r:?}");
        assert!(r.pitch_accuracy.unwrap() >= 0.97, "{name}: {r:?}");
    }
    assert!(train.median_onset_error_s.unwrap() <= 0.02, "{train:?}");
}

#[test]
fn metric_rejects_the_wrong_scene_and_silence() {
    let c = corpus();
    let cfg = DetectorConfig::default();
    let scores: Vec<ClipScore> = (0..120)
        .map(|i| {
            let clip = c.training_clip(i);
            let wrong = c.training_scene(i + 1000);
            let found = detect_events(&clip.samples, clip.sample_rate, &cfg);
            score_clip(&wrong, &found, &cfg)
        })
        .collect();
    let r = Report::from_scores(&scores);
    assert!(r.event_count_accuracy < 0.5, "{r:?}");
    assert!(detect_events(&vec![0.0; 16_000], 16_000, &cfg).is_empty());
    // A bell at 4 seconds, rendered, is found there; shifted by a second, the error says so.
    let scene = Scene {
        groups: vec![EventGroup {
            kind: EventKind::Bell,
            count: 1,
            pitch: Some(Pitch::High),
            at_seconds: Some(4),
        }],
        connective: Connective::Then,
    };
    let clip = c.held_out_clip(&scene, 0);
    let found = detect_events(&clip.samples, clip.sample_rate, &cfg);
    let s = score_clip(&scene, &found, &cfg);
    assert!(
        s.count_correct && s.pitch_correct == vec![true],
        "{s:?} {found:?}"
    );
    assert!(s.onset_errors_s[0] < 0.02, "{s:?}");
    let mut shifted = vec![0.0; clip.samples.len()];
    shifted[16_000..].copy_from_slice(&clip.samples[..clip.samples.len() - 16_000]);
    let found = detect_events(&shifted, clip.sample_rate, &cfg);
    let s = score_clip(&scene, &found, &cfg);
    assert!((s.onset_errors_s[0] - 1.0).abs() < 0.02, "{s:?}");
}

#[test]
fn metric_ignores_a_constant_offset() {
    // A decoder may leave a constant offset in silence; the detector removes the clip's mean,
    // so the events are those of the clean clip (without that, an offset 40 dB under the
    // clip's peak makes its first frame an onset).
    let c = corpus();
    let cfg = DetectorConfig::default();
    for (i, scene) in c.held_out_scenes(20).iter().enumerate() {
        let clip = c.held_out_clip(scene, i as u64);
        let peak = clip.samples.iter().fold(0f32, |m, s| m.max(s.abs()));
        let offset = 0.01 * peak;
        let shifted: Vec<f32> = clip.samples.iter().map(|s| s + offset).collect();
        let clean = detect_events(&clip.samples, clip.sample_rate, &cfg);
        let found = detect_events(&shifted, clip.sample_rate, &cfg);
        let summary = |events: &[audiox_train::metric::DetectedEvent]| {
            events
                .iter()
                .map(|e| (e.onset_s, e.class))
                .collect::<Vec<_>>()
        };
        assert_eq!(summary(&found), summary(&clean), "{}", clip.caption);
    }
}

#[test]
fn bad_configs_are_errors() {
    for cfg in [
        CorpusConfig {
            sample_rate: 100,
            ..CorpusConfig::default()
        },
        CorpusConfig {
            duration_s: f32::NAN,
            ..CorpusConfig::default()
        },
        CorpusConfig {
            duration_s: 2.0,
            ..CorpusConfig::default()
        },
        CorpusConfig {
            held_out_every: 0,
            ..CorpusConfig::default()
        },
    ] {
        assert!(Corpus::new(cfg).is_err());
    }
}

#[test]
fn asking_for_more_held_out_captions_than_exist_ends() {
    let c = corpus();
    // The whole held-out set, whatever its size: asking for more returns it, not a hang.
    let all = c.held_out_scenes(1_000_000);
    eprintln!("{} held-out captions", all.len());
    assert!(all.len() > 80, "only {} held-out captions", all.len());
    assert!(c.try_held_out_scenes(all.len()).is_ok());
    assert!(c.try_held_out_scenes(all.len() + 1).is_err());
}

#[test]
fn a_generator_is_scored_on_held_out_captions() {
    use audiox_train::metric::evaluate_generator;
    let c = corpus();
    let held = c.held_out_scenes(12);
    let rate = c.config().sample_rate;
    // The reference renderings of each caption score like the metric's ceiling ...
    let mut reference = |caption: &str, i: u64| -> Result<Vec<f32>, String> {
        let scene = &held[i as usize];
        assert_eq!(scene.caption(), caption);
        Ok(c.held_out_clip(scene, i).samples)
    };
    let good = evaluate_generator(&c, 12, rate, &mut reference).unwrap();
    assert_eq!(good.clips, 12);
    assert!(good.event_count_accuracy >= 0.9, "{good:?}");
    // ... another caption's rendering does not ...
    let mut shifted = |_: &str, i: u64| -> Result<Vec<f32>, String> {
        let j = (i as usize + 1) % held.len();
        Ok(c.held_out_clip(&held[j], j as u64).samples)
    };
    let bad = evaluate_generator(&c, 12, rate, &mut shifted).unwrap();
    assert!(
        bad.event_count_accuracy < good.event_count_accuracy,
        "{bad:?}"
    );
    // ... and a failing generator's error comes back.
    let mut failing = |_: &str, _: u64| -> Result<Vec<f32>, String> { Err("boom".into()) };
    assert!(evaluate_generator(&c, 3, rate, &mut failing).is_err());
}

/// `timing_jitter` narrows only the onsets: the same clip index keeps its caption, kinds,
/// registers and levels, the first onset of an untimed scene stays within `0.3 + 0.9 * j` s,
/// steps inside a group within `spacing + 0.25 * j` s, and at 0 every clip of a caption has
/// the same layout.
#[test]
fn timing_jitter_narrows_the_onsets_and_nothing_else() {
    let full = corpus();
    let with = |j: f32| {
        Corpus::new(CorpusConfig {
            timing_jitter: j,
            ..CorpusConfig::default()
        })
        .unwrap()
    };
    let (tenth, none) = (with(0.1), with(0.0));
    let mut first_full = Vec::new();
    for i in 0..200 {
        let (a, b) = (full.training_clip(i), tenth.training_clip(i));
        assert_eq!(a.caption, b.caption);
        assert_eq!(a.events.len(), b.events.len());
        for (x, y) in a.events.iter().zip(&b.events) {
            assert_eq!((x.kind, x.pitch, x.level_db), (y.kind, y.pitch, y.level_db));
        }
        let untimed = b.scene.groups.iter().all(|g| g.at_seconds.is_none());
        if untimed {
            first_full.push(a.events[0].onset_s);
            let first = b.events[0].onset_s;
            assert!(
                (0.3..=0.3 + 0.09 + 1e-4).contains(&first),
                "clip {i}: {first}"
            );
            let group = &b.scene.groups[0];
            if group.count >= 2 {
                // The kind's spacing: the step at zero jitter.
                let z = none.render(&b.scene, &mut ChaCha8Rng::seed_from_u64(0));
                let spacing = z.events[1].onset_s - z.events[0].onset_s;
                for w in b.events[..group.count as usize].windows(2) {
                    let step = w[1].onset_s - w[0].onset_s;
                    assert!(
                        step >= spacing - 1e-4 && step <= spacing + 0.025 + 1e-4,
                        "clip {i}: step {step} against spacing {spacing}"
                    );
                }
            }
        }
        // Zero jitter: the layout depends on the caption only.
        let z1 = none.render(&b.scene, &mut ChaCha8Rng::seed_from_u64(1));
        let z2 = none.render(&b.scene, &mut ChaCha8Rng::seed_from_u64(2));
        let onsets =
            |c: &audiox_train::corpus::Clip| c.events.iter().map(|e| e.onset_s).collect::<Vec<_>>();
        assert_eq!(onsets(&z1), onsets(&z2), "clip {i}");
    }
    // The full range is really wider (so the bounds above test something).
    let spread = first_full.iter().cloned().fold(0.0f32, f32::max)
        - first_full.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 0.5,
        "first onsets at full jitter spread over {spread} s"
    );
    for bad in [f32::NAN, -0.1, 1.5] {
        assert!(
            Corpus::new(CorpusConfig {
                timing_jitter: bad,
                ..CorpusConfig::default()
            })
            .is_err()
        );
    }
}

/// Whooshes sweep a band-pass up to 2.5-3.5 kHz: the filter must stay stable at every corpus
/// rate (corpus version 1's was not above fs / 6: NaN at 8 kHz, and at 16 kHz sweeps that grew
/// towards their end, the highest by orders of magnitude, a burst after normalisation).
#[test]
fn whooshes_are_finite_and_spread_over_their_sweep_at_every_rate() {
    let scene = Scene {
        groups: vec![EventGroup {
            kind: EventKind::Whoosh,
            count: 1,
            pitch: None,
            at_seconds: Some(2),
        }],
        connective: Connective::Then,
    };
    for rate in [8_000, 16_000, 44_100] {
        let c = Corpus::new(CorpusConfig {
            sample_rate: rate,
            ..CorpusConfig::default()
        })
        .unwrap();
        for seed in 0..8 {
            let clip = c.render(&scene, &mut ChaCha8Rng::seed_from_u64(seed));
            assert!(
                clip.samples.iter().all(|s| s.is_finite()),
                "{rate} Hz, seed {seed}"
            );
            let e = &clip.events[0];
            let start = (e.onset_s * rate as f32) as usize;
            let n = (e.duration_s * rate as f32) as usize;
            let energy = |a: usize, b: usize| -> f32 {
                clip.samples[start + a..start + b]
                    .iter()
                    .map(|s| s * s)
                    .sum()
            };
            // The middle half against the last quarter (attack and release excluded by the
            // halves' placement): a stable sweep keeps them within a factor of a few.
            let (middle, last) = (energy(n / 4, 3 * n / 4) / 2.0, energy(3 * n / 4, n));
            assert!(
                middle > 0.2 * last,
                "{rate} Hz, seed {seed}: middle {middle}, last quarter {last}"
            );
        }
    }
}

/// A decaying low tone like the corpus's thuds (40 Hz, 0.35 s) at `onset_s` in `samples`,
/// with half-cycle number `dip` (from 0) scaled by 0.1: the uneven lobe a generated thud can
/// have.
fn add_thud(samples: &mut [f32], rate: u32, onset_s: f32, dip: Option<usize>) {
    let (f, start) = (40.0f32, (onset_s * rate as f32) as usize);
    let half = rate as f32 / (2.0 * f);
    for i in 0..(0.35 * rate as f32) as usize {
        let t = i as f32 / rate as f32;
        let lobe = (i as f32 / half) as usize;
        let gain = if Some(lobe) == dip { 0.1 } else { 1.0 };
        samples[start + i] += gain * 0.5 * (-t / 0.1).exp() * (std::f32::consts::TAU * f * t).sin();
    }
}

#[test]
fn metric_counts_a_low_tone_with_an_uneven_lobe_once() {
    // Over 10 ms frames (the detector's baseline until 2026-12-05) the weak half-cycle of a
    // 40 Hz tone (12.5 ms; here the one 200 ms in, past the 150 ms minimum gap) is a frame
    // 20 dB down, and the next lobe "rises" into a second onset; measured over 30 ms, the
    // baseline holds a whole period and the tone is one event.
    let rate = 16_000;
    let cfg = DetectorConfig::default();
    let earlier = DetectorConfig {
        window_s: 0.01,
        ..DetectorConfig::default()
    };
    let mut x = vec![0.0f32; 3 * rate as usize];
    add_thud(&mut x, rate, 1.0, Some(16));
    assert_eq!(
        detect_events(&x, rate, &cfg).len(),
        1,
        "{:?}",
        detect_events(&x, rate, &cfg)
    );
    assert!(
        detect_events(&x, rate, &earlier).len() > 1,
        "the case no longer tests the change"
    );
    // Two such thuds at the corpus's spacing are still two events, at their onsets.
    add_thud(&mut x, rate, 1.5, Some(16));
    let found = detect_events(&x, rate, &cfg);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!((found[0].onset_s - 1.0).abs() <= 0.01 && (found[1].onset_s - 1.5).abs() <= 0.01);
}

#[test]
fn metric_finds_a_quiet_click_after_a_loud_tone() {
    // The rising frame is measured alone: a 10 ms click 28 dB under a sustained tone is within
    // the 32 dB floor (over 30 ms it would be 33 dB under and lost).
    let rate = 16_000usize;
    let mut x = vec![0.0f32; 3 * rate];
    for (i, s) in x[rate..rate + rate / 2].iter_mut().enumerate() {
        *s = 0.5 * (std::f32::consts::TAU * 300.0 * i as f32 / rate as f32).sin();
    }
    // The tone's mean square is 0.125; the click's 28 dB less, as alternating samples.
    let amp = (0.125f32 * 10f32.powf(-2.8)).sqrt();
    for (i, s) in x[2 * rate..2 * rate + rate / 100].iter_mut().enumerate() {
        *s = if i % 2 == 0 { amp } else { -amp };
    }
    let found = detect_events(&x, rate as u32, &DetectorConfig::default());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!((found[1].onset_s - 2.0).abs() <= 0.01, "{found:?}");
}
