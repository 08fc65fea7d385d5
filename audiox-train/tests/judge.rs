//! The judge of the filtered regression pairs hears audio as the metric does: the corpus's own
//! clips follow their captions, at any level, and fail a caption that asks for another count.

use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::metric::DetectorConfig;
use audiox_train::train::judge::{follows_caption, score_audio};

fn stereo(samples: &[f32], gain: f32) -> Vec<f32> {
    let mut out: Vec<f32> = samples.iter().map(|s| s * gain).collect();
    out.extend(samples.iter().map(|s| s * gain));
    out
}

#[test]
fn rendered_clips_follow_their_captions_and_not_others() {
    let corpus = Corpus::new(CorpusConfig::default()).unwrap();
    let detector = DetectorConfig::default();
    let clips: Vec<_> = (0..24).map(|i| corpus.training_clip(i)).collect();
    let mut followed = 0;
    let mut other_count_refused = 0;
    let mut compared = 0;
    for clip in &clips {
        let at = |gain: f32| {
            score_audio(
                &clip.scene,
                &stereo(&clip.samples, gain),
                2,
                clip.sample_rate,
                &detector,
            )
            .unwrap()
        };
        let score = at(1.0);
        // The level does not change the verdict.
        assert_eq!(at(0.5), score, "{}", clip.caption);
        followed += usize::from(follows_caption(&score));
        // Against a scene of another event count the count is wrong.
        let asked = clip.scene.expected_events().len();
        if let Some(other) = clips
            .iter()
            .find(|c| c.scene.expected_events().len() != asked)
        {
            compared += 1;
            let wrong = score_audio(
                &other.scene,
                &stereo(&clip.samples, 1.0),
                2,
                clip.sample_rate,
                &detector,
            )
            .unwrap();
            other_count_refused += usize::from(!follows_caption(&wrong));
        }
    }
    assert!(
        followed >= 22,
        "{followed} of {} clips follow their caption",
        clips.len()
    );
    assert!(compared > 20, "{compared}");
    assert!(
        other_count_refused >= compared - 2,
        "{other_count_refused} of {compared} refused"
    );
}
