//! The demo T5 tokenizer: built from the fixture's T5 tokenizer by `tokenizer::demo_tokenizer`,
//! one known piece per caption word, no `<unk>` in any caption of the grammar.

use audiox_encoders::tokenizer::T5Tokenizer;
use audiox_train::corpus::{Corpus, CorpusConfig};
use audiox_train::tokenizer::{DEMO_TOKENIZER_JSON, caption_words, demo_tokenizer, vocab_size};
use serde_json::Value;

const UNK: i64 = 2;

fn committed() -> Value {
    serde_json::from_str(DEMO_TOKENIZER_JSON).unwrap()
}

#[test]
fn the_committed_tokenizer_is_what_the_builder_makes_from_the_fixture() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tiny/bundle/t5-base/tokenizer.json"
    );
    let base: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let built = demo_tokenizer(&base).unwrap();
    assert_eq!(built, committed());
    // The fixture's own vocabulary has no digits: times would be lost.
    let fixture = T5Tokenizer::from_file(path, 24).unwrap();
    let a = fixture.encode_batch(&["a bell at 4 seconds"]).unwrap();
    assert!(a.ids.contains(&UNK), "{:?}", a.ids);
    assert!(demo_tokenizer(&serde_json::json!({"model": {"type": "BPE"}})).is_err());
}

#[test]
fn every_caption_word_is_one_known_piece_and_no_caption_has_unknowns() {
    let max_length = 24;
    let tokenizer = T5Tokenizer::from_bytes(DEMO_TOKENIZER_JSON.as_bytes(), max_length).unwrap();
    let config: Value = serde_json::from_str(audiox_train::tokenizer::DEMO_T5_CONFIG_JSON).unwrap();
    assert!(config["vocab_size"].as_u64().unwrap() as usize >= vocab_size(&committed()));
    for word in caption_words() {
        let t = tokenizer.encode_batch(&[word.as_str()]).unwrap();
        let real: Vec<i64> = t
            .ids
            .iter()
            .zip(&t.mask)
            .filter(|(_, m)| **m)
            .map(|(i, _)| *i)
            .collect();
        // The word's piece and `</s>`.
        assert_eq!(real.len(), 2, "`{word}` -> {real:?}");
        assert_ne!(real[0], UNK, "`{word}` is unknown");
    }
    let corpus = Corpus::new(CorpusConfig::default()).unwrap();
    let mut captions: Vec<String> = (0..2_000)
        .map(|i| corpus.training_scene(i).caption())
        .collect();
    captions.extend(corpus.held_out_scenes(200).iter().map(|s| s.caption()));
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let t = tokenizer.encode_batch(&refs).unwrap();
    assert!(
        !t.truncated(),
        "a caption is longer than {max_length} tokens"
    );
    assert!(!t.ids.contains(&UNK), "a caption has an unknown piece");
    let longest = (0..t.batch)
        .map(|i| t.mask_of(i).iter().filter(|m| **m).count())
        .max()
        .unwrap();
    assert!(longest <= 16, "{longest} tokens");
    // Numbers survive: two times give two different token sequences.
    let times = tokenizer
        .encode_batch(&["a bell at 4 seconds", "a bell at 5 seconds"])
        .unwrap();
    assert_ne!(times.ids_of(0), times.ids_of(1));
}

/// `demo_tokenizer_json(fill, 0)` appends `fill` real `</s>` tokens after each prompt's own
/// (mask 1), before the padding; 0 is the committed file.
#[test]
fn fill_tokens_follow_the_caption_as_real_tokens() {
    use audiox_train::tokenizer::{LONGEST_CAPTION_TOKENS, demo_tokenizer_json};
    assert_eq!(demo_tokenizer_json(0, 0), DEMO_TOKENIZER_JSON);
    let (fill, max_length) = (5, LONGEST_CAPTION_TOKENS + 5 + 3);
    let plain = T5Tokenizer::from_bytes(DEMO_TOKENIZER_JSON.as_bytes(), max_length).unwrap();
    let filled =
        T5Tokenizer::from_bytes(demo_tokenizer_json(fill, 0).as_bytes(), max_length).unwrap();
    let captions = ["a click", "three knocks, then a low bell at 4 seconds", ""];
    let (p, f) = (
        plain.encode_batch(&captions).unwrap(),
        filled.encode_batch(&captions).unwrap(),
    );
    assert!(!f.truncated());
    for i in 0..captions.len() {
        let real = p.mask_of(i).iter().filter(|m| **m).count();
        // The caption and its `</s>` as before, then `fill` more `</s>`, then padding.
        assert_eq!(&f.ids_of(i)[..real], &p.ids_of(i)[..real]);
        assert!(f.ids_of(i)[real..real + fill].iter().all(|&id| id == 1));
        assert!(f.mask_of(i)[..real + fill].iter().all(|m| *m));
        assert!(f.mask_of(i)[real + fill..].iter().all(|m| !*m));
        assert!(f.ids_of(i)[real + fill..].iter().all(|&id| id == 0));
    }
    // The longest corpus caption still fits with the fill at the documented bound.
    let corpus = Corpus::new(CorpusConfig::default()).unwrap();
    let captions: Vec<String> = (0..2_000)
        .map(|i| corpus.training_scene(i).caption())
        .collect();
    let refs: Vec<&str> = captions.iter().map(String::as_str).collect();
    let tight = T5Tokenizer::from_bytes(
        demo_tokenizer_json(fill, 0).as_bytes(),
        LONGEST_CAPTION_TOKENS + fill,
    )
    .unwrap();
    assert!(!tight.encode_batch(&refs).unwrap().truncated());
}

/// `demo_tokenizer_json(fill, slots)` puts `slots` distinct new tokens before every prompt (the
/// same ids at the same indices whatever the caption), keeps the caption's pieces and `</s>`,
/// then the fill; the slots are new ids after the base vocabulary, counted by `vocab_size`.
#[test]
fn slot_tokens_precede_every_caption_at_fixed_indices() {
    use audiox_train::tokenizer::{LONGEST_CAPTION_TOKENS, demo_tokenizer_json, slot_token};
    let (slots, fill) = (6, 2);
    let max_length = LONGEST_CAPTION_TOKENS + slots + fill + 1;
    let base: Value = serde_json::from_str(DEMO_TOKENIZER_JSON).unwrap();
    let json = demo_tokenizer_json(fill, slots);
    let parsed: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(vocab_size(&parsed), vocab_size(&base) + slots);
    let plain = T5Tokenizer::from_bytes(DEMO_TOKENIZER_JSON.as_bytes(), max_length).unwrap();
    let slotted = T5Tokenizer::from_bytes(json.as_bytes(), max_length).unwrap();
    assert_eq!(slotted.vocab_size(), plain.vocab_size() + slots);
    let captions = ["a click", "three knocks, then a low bell at 4 seconds", ""];
    let (p, s) = (
        plain.encode_batch(&captions).unwrap(),
        slotted.encode_batch(&captions).unwrap(),
    );
    assert!(!s.truncated());
    let first = vocab_size(&base) as i64;
    for i in 0..captions.len() {
        let ids = s.ids_of(i);
        let real = p.mask_of(i).iter().filter(|m| **m).count();
        assert_eq!(
            ids[..slots],
            (first..first + slots as i64).collect::<Vec<_>>()
        );
        assert_eq!(&ids[slots..slots + real], &p.ids_of(i)[..real]);
        assert!(
            ids[slots + real..slots + real + fill]
                .iter()
                .all(|&id| id == 1)
        );
        let used = slots + real + fill;
        assert!(s.mask_of(i)[..used].iter().all(|m| *m));
        assert!(s.mask_of(i)[used..].iter().all(|m| !*m));
    }
    // A slot's name typed in a prompt is that slot (an added special token), as T5's own
    // `<extra_id_N>` would be.
    let typed = slotted.encode(&slot_token(2)).unwrap();
    assert_eq!(typed.ids_of(0)[slots], first + 2);
}
