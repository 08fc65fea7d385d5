//! The teacher's timeline supervision (`audiox_train::train::timeline`): the targets mark each
//! rendered event once and its class while it sounds, and the term compares only the
//! supervised channels of the latent frames' conditioning.

use audiox_train::corpus::{Corpus, CorpusConfig, EventKind, Pitch, RenderedEvent};
use audiox_train::train::timeline::{
    CHANNELS, TimelineBasis, timeline, timeline_batch, timeline_batch_projected, timeline_loss,
    with_oracle,
};
use burn::tensor::{Device, Tensor, TensorData};

fn event(kind: EventKind, pitch: Option<Pitch>, onset_s: f32, duration_s: f32) -> RenderedEvent {
    RenderedEvent {
        kind,
        pitch,
        onset_s,
        duration_s,
        frequency_hz: None,
        level_db: -10.0,
    }
}

/// Frames where channel 0 has a local maximum of at least 0.5.
fn peaks(t: &[f32]) -> Vec<usize> {
    let onset: Vec<f32> = t.chunks(CHANNELS).map(|r| r[0]).collect();
    (0..onset.len())
        .filter(|&f| {
            onset[f] >= 0.5
                && (f == 0 || onset[f] > onset[f - 1])
                && (f + 1 == onset.len() || onset[f] >= onset[f + 1])
        })
        .collect()
}

#[test]
fn each_onset_is_one_peak_and_each_class_is_marked_while_it_sounds() {
    let frame_s = 0.02;
    let events = [
        event(EventKind::Beep, Some(Pitch::High), 1.0, 0.2),
        event(EventKind::Thud, None, 3.0, 0.1),
        event(EventKind::Click, None, 5.0, 0.006),
    ];
    let t = timeline(&events, 500, frame_s);
    assert_eq!(t.len(), 500 * CHANNELS);
    assert_eq!(peaks(&t), vec![50, 150, 250]);
    let at = |f: usize, c: usize| t[f * CHANNELS + c];
    assert_eq!(at(50, 0), 1.0);
    assert!((at(51, 0) - (-0.5f32).exp()).abs() < 1e-6);
    assert!(at(60, 0) < 1e-6);
    // The beep is high while it sounds (frames 50..60), and nothing else.
    for f in 0..500 {
        let high = (50..60).contains(&f);
        assert_eq!(at(f, 1), if high { 1.0 } else { 0.0 }, "frame {f}");
    }
    // A thud is low; a click (6 ms) is noise for at least MIN_ACTIVE_S (two frames).
    assert_eq!(at(150, 2), 1.0);
    assert_eq!(at(154, 2), 1.0);
    assert_eq!(at(155, 2), 0.0);
    assert_eq!((at(250, 3), at(251, 3), at(252, 3)), (1.0, 1.0, 0.0));
    assert_eq!(at(250, 1) + at(250, 2), 0.0);
    // An event named with no register (a tonal kind) may sound either way: both marked.
    let t = timeline(&[event(EventKind::Bell, None, 0.5, 0.3)], 500, frame_s);
    assert_eq!((t[25 * CHANNELS + 1], t[25 * CHANNELS + 2]), (1.0, 1.0));
    // Nothing for a silent clip or a zero frame length.
    assert!(timeline(&[], 10, frame_s).iter().all(|&v| v == 0.0));
    assert!(timeline(&events, 10, 0.0).iter().all(|&v| v == 0.0));
}

#[test]
fn the_timelines_of_corpus_clips_count_their_events() {
    let corpus = Corpus::new(CorpusConfig {
        sample_rate: 8_000,
        timing_jitter: 0.1,
        ..CorpusConfig::default()
    })
    .unwrap();
    let frames = 500;
    let frame_s = corpus.config().duration_s / frames as f32;
    let mut checked = 0;
    for i in 0..40 {
        let clip = corpus.training_clip(i);
        let onsets: Vec<f32> = clip.events.iter().map(|e| e.onset_s / frame_s).collect();
        // Onsets closer than three frames merge into one bump: not counted apart.
        if onsets.windows(2).any(|w| w[1] - w[0] < 3.0) {
            continue;
        }
        checked += 1;
        let t = timeline(&clip.events, frames, frame_s);
        assert_eq!(
            peaks(&t).len(),
            clip.events.len(),
            "clip {i} {:?}",
            clip.caption
        );
    }
    assert!(checked >= 30, "only {checked} of 40 clips checked");
}

#[test]
fn the_term_compares_only_the_supervised_channels_of_the_latent_frames() {
    let device = Device::flex();
    let (b, frames, width) = (2, 5, 6);
    let events = [
        vec![event(EventKind::Knock, None, 0.02, 0.05)],
        vec![event(EventKind::Chirp, Some(Pitch::Low), 0.06, 0.04)],
    ];
    let refs: Vec<&[RenderedEvent]> = events.iter().map(|e| e.as_slice()).collect();
    let targets = timeline_batch(&refs, frames, 0.02, &device);
    assert_eq!(targets.dims(), [b, frames, CHANNELS]);
    let target_values = targets.clone().into_data().try_into_vec::<f32>().unwrap();
    // A conditioning sequence equal to the targets on channels 0..CHANNELS of positions
    // 1..=frames, anything elsewhere (the time token's position, the other channels).
    let sequence = |bump: f32| {
        let mut v = Vec::new();
        for row in 0..b {
            for p in 0..=frames {
                for c in 0..width {
                    v.push(if p > 0 && c < CHANNELS {
                        target_values[(row * frames + p - 1) * CHANNELS + c]
                            + if (row, p, c) == (1, 3, 2) { bump } else { 0.0 }
                    } else {
                        7.0 + (row * 100 + p * 10 + c) as f32
                    });
                }
            }
        }
        Tensor::<3>::from_data(TensorData::new(v, [b, frames + 1, width]), &device)
    };
    let loss = |s: Tensor<3>| {
        timeline_loss(s, targets.clone())
            .unwrap()
            .into_scalar::<f32>()
    };
    assert_eq!(loss(sequence(0.0)), 0.0);
    // One supervised value off by 2: 4 over every supervised value.
    let expected = 4.0 / (b * frames * CHANNELS) as f32;
    assert!((loss(sequence(2.0)) - expected).abs() < 1e-6);
    // Shapes that do not fit are refused.
    let short = Tensor::<3>::zeros([b, frames, width], &device);
    assert!(timeline_loss(short, targets.clone()).is_err());
    let narrow = Tensor::<3>::zeros([b, frames + 1, CHANNELS - 1], &device);
    assert!(timeline_loss(narrow, targets).is_err());
}

/// The layout oracle writes the targets into the supervised channels of the latent frames of
/// the kept rows, and leaves everything else (the time token's position, the other channels,
/// the rows whose condition is dropped) as it was.
#[test]
fn the_oracle_replaces_only_the_supervised_channels_of_kept_rows() {
    let device = Device::flex();
    let (b, frames, width) = (3, 4, 6);
    let original: Vec<f32> = (0..b * (frames + 1) * width)
        .map(|i| 10.0 + i as f32)
        .collect();
    let sequence = Tensor::<3>::from_data(
        TensorData::new(original.clone(), [b, frames + 1, width]),
        &device,
    );
    let target_values: Vec<f32> = (0..b * frames * CHANNELS)
        .map(|i| -1.0 - i as f32)
        .collect();
    let targets = Tensor::<3>::from_data(
        TensorData::new(target_values.clone(), [b, frames, CHANNELS]),
        &device,
    );
    let kept = [true, false, true];
    let out = with_oracle(sequence.clone(), targets.clone(), &kept).unwrap();
    assert_eq!(out.dims(), [b, frames + 1, width]);
    let values = out.into_data().try_into_vec::<f32>().unwrap();
    for row in 0..b {
        for p in 0..=frames {
            for c in 0..width {
                let at = (row * (frames + 1) + p) * width + c;
                let expected = if kept[row] && p > 0 && c < CHANNELS {
                    target_values[(row * frames + p - 1) * CHANNELS + c]
                } else {
                    original[at]
                };
                assert_eq!(values[at], expected, "row {row} position {p} channel {c}");
            }
        }
    }
    // Shapes or flags that do not fit are refused.
    assert!(with_oracle(sequence.clone(), targets.clone(), &kept[..2]).is_err());
    let short = Tensor::<3>::zeros([b, frames, width], &device);
    assert!(with_oracle(short, targets.clone(), &kept).is_err());
    let narrow = Tensor::<3>::zeros([b, frames + 1, CHANNELS - 1], &device);
    assert!(with_oracle(narrow, targets, &kept).is_err());
}

/// A timeline basis projects each channel onto `mean + span(rows)`: a timeline inside the
/// span comes back as it was, one orthogonal to it comes back as the mean; the file format
/// round-trips and malformed files are typed errors.
#[test]
fn a_timeline_basis_projects_onto_its_span() {
    let frames = 6;
    let frame_s = 0.1;
    // Rows: unit vectors on frames 1 and 2.
    let unit = |f: usize| (0..frames).map(|i| f32::from(i == f)).collect::<Vec<f32>>();
    let means: Vec<f32> = (0..CHANNELS * frames).map(|i| 0.01 * i as f32).collect();
    let basis = TimelineBasis::new(frames, means.clone(), vec![unit(1), unit(2)]).unwrap();
    assert_eq!((basis.frames(), basis.rank()), (frames, 2));
    let events = [event(EventKind::Knock, None, 0.15, 0.05)];
    let original = timeline(&events, frames, frame_s);
    let mut projected = original.clone();
    basis.project(&mut projected);
    for f in 0..frames {
        for c in 0..CHANNELS {
            let (x, p, m) = (
                original[f * CHANNELS + c],
                projected[f * CHANNELS + c],
                means[c * frames + f],
            );
            // Frames 1 and 2 keep their value; the others become the mean.
            let expected = if f == 1 || f == 2 { x } else { m };
            assert!(
                (p - expected).abs() < 1e-6,
                "frame {f} channel {c}: {p} vs {expected}"
            );
        }
    }
    // The batch helper applies it to every row.
    let device = Device::flex();
    let refs: Vec<&[RenderedEvent]> = vec![&events, &events];
    let batch = timeline_batch_projected(&refs, frames, frame_s, Some(&basis), &device);
    let values = batch.into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(&values[..frames * CHANNELS], projected.as_slice());
    assert_eq!(&values[frames * CHANNELS..], projected.as_slice());
    // The file format round-trips.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("basis.f32");
    let mut file: Vec<f32> = vec![2.0, frames as f32];
    file.extend(&means);
    file.extend(unit(1));
    file.extend(unit(2));
    let bytes: Vec<u8> = file.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(TimelineBasis::read(&path).unwrap(), basis);
    // Malformed: truncated, a bad header, a stray byte, a missing file.
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert!(TimelineBasis::read(&path).is_err());
    let mut bad = bytes.clone();
    bad[..4].copy_from_slice(&0.5f32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(TimelineBasis::read(&path).is_err());
    let mut stray = bytes.clone();
    stray.push(0);
    std::fs::write(&path, &stray).unwrap();
    assert!(TimelineBasis::read(&path).is_err());
    assert!(TimelineBasis::read(&dir.path().join("missing.f32")).is_err());
    // Rows of the wrong length or non-finite values are refused.
    assert!(TimelineBasis::new(frames, means.clone(), vec![vec![0.0; frames + 1]]).is_err());
    assert!(TimelineBasis::new(frames, means, vec![vec![f32::NAN; frames]]).is_err());
}
