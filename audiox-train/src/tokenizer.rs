//! The demo model's T5 tokenizer: a small SentencePiece (Unigram) vocabulary in the Hugging
//! Face `tokenizer.json` format that `audiox`'s T5 tokenizer reads.
//!
//! The tokenizer stays a T5 tokenizer: the same file format, normalizer (the SentencePiece
//! precompiled character map, trailing-space strip, runs of spaces to one `▁`), `Metaspace`
//! pre-tokenizer, `</s>` appended by the post-processor, and the T5 special ids (`<pad>` 0,
//! `</s>` 1, `<unk>` 2). Only the vocabulary is small. [`demo_tokenizer`] builds it from a base
//! T5 `tokenizer.json` (the repository's test fixture `fixtures/tiny/bundle/t5-base/`, a
//! 200-piece Unigram model trained on English text plus T5's 100 `<extra_id_N>` sentinels):
//!
//! 1. every word of the caption grammar ([`caption_words`]) as one `▁word` piece, with a
//!    score above any combination of smaller pieces, so a caption is one piece per word;
//! 2. the base model's pieces (English sub-words, to spell other words);
//! 3. single-character fallback pieces for ASCII letters, digits and punctuation the base
//!    lacks (the base has no digits: "a bell at 4 seconds" and "a bell at 1 second" would
//!    both lose their number to `<unk>`).
//!
//! The span-corruption sentinels `<extra_id_N>` are dropped: they only serve T5's
//! pre-training objective, never an encoder used as a conditioner. Characters outside these
//! pieces (non-ASCII letters) become `<unk>`, as with any SentencePiece model.
//!
//! The result is committed as `assets/demo_t5/tokenizer.json`; `tests/tokenizer.rs` checks
//! that it equals what [`demo_tokenizer`] builds from the fixture and that no caption of the
//! grammar contains `<unk>`.

use serde_json::{Value, json};

use crate::corpus::{EventKind, Pitch};

/// The demo tokenizer file (`assets/demo_t5/tokenizer.json`).
pub const DEMO_TOKENIZER_JSON: &str = include_str!("../assets/demo_t5/tokenizer.json");

/// The Hugging Face `config.json` of the demo model's T5 encoder (`assets/demo_t5/config.json`).
pub const DEMO_T5_CONFIG_JSON: &str = include_str!("../assets/demo_t5/config.json");

/// The Hugging Face `config.json` of the demo model's CLIP vision tower
/// (`assets/demo_clip/config.json`; the demo model does not follow video, see
/// `docs/training.md`).
pub const DEMO_CLIP_CONFIG_JSON: &str = include_str!("../assets/demo_clip/config.json");

/// The longest demo caption in tokens, its `</s>` included (`tests/tokenizer.rs` checks it on
/// the corpus's captions).
pub const LONGEST_CAPTION_TOKENS: usize = 16;

/// The name of slot token `i` (see [`demo_tokenizer_json`]).
pub fn slot_token(i: usize) -> String {
    format!("<slot_{i}>")
}

/// The demo tokenizer file with `slots` slot tokens before each prompt and `fill` more `</s>`
/// tokens after its own (both 0: [`DEMO_TOKENIZER_JSON`] itself).
///
/// * **Fill tokens** (`teacher.text_fill`) are real `</s>` tokens (attention mask 1), so the
///   T5 encoder's outputs at their positions depend on the caption and survive the
///   conditioner's zeroing of padded positions. All of them are the same token, though, and T5
///   tells them apart only through its bucketed relative positions, so beyond a few tokens
///   from the caption their outputs are nearly equal.
/// * **Slot tokens** (`teacher.text_slots`) are `slots` distinct tokens `<slot_0>`,
///   `<slot_1>`, ... (new pieces after the vocabulary's last, special, attention mask 1)
///   placed *before* the caption: each has an embedding of its own, and each sits at the same
///   index of the token sequence for every caption, so the DiT's fixed token-to-position map
///   (`proj_mm_seq_len`) reads slot `i` through the same column whatever the caption's length.
///   The T5 encoder's output at a slot is then a caption-dependent value that the map can
///   place along time (like the learned queries of a set-prediction transformer).
///
/// Why: `docs/training.md`, sessions of 2026-12-03. Written into the export, so inference
/// tokenizes the same way; the T5 embedding needs [`vocab_size`] of this file's rows.
pub fn demo_tokenizer_json(fill: usize, slots: usize) -> String {
    if fill == 0 && slots == 0 {
        return DEMO_TOKENIZER_JSON.to_string();
    }
    let mut json: Value =
        serde_json::from_str(DEMO_TOKENIZER_JSON).expect("the committed tokenizer is JSON");
    let base = vocab_size(&json);
    let slot_names: Vec<String> = (0..slots).map(slot_token).collect();
    if let Some(vocab) = json
        .pointer_mut("/model/vocab")
        .and_then(Value::as_array_mut)
    {
        vocab.extend(slot_names.iter().map(|name| json!([name, 0.0])));
    }
    if let Some(added) = json
        .pointer_mut("/added_tokens")
        .and_then(Value::as_array_mut)
    {
        added.extend(slot_names.iter().enumerate().map(|(i, name)| {
            json!({
                "id": base + i,
                "content": name,
                "single_word": false,
                "lstrip": false,
                "rstrip": false,
                "normalized": false,
                "special": true
            })
        }));
    }
    if let Some(specials) = json
        .pointer_mut("/post_processor/special_tokens")
        .and_then(Value::as_object_mut)
    {
        for (i, name) in slot_names.iter().enumerate() {
            specials.insert(
                name.clone(),
                json!({ "id": name, "ids": [base + i], "tokens": [name] }),
            );
        }
    }
    if let Some(single) = json
        .pointer_mut("/post_processor/single")
        .and_then(Value::as_array_mut)
    {
        let front = slot_names
            .iter()
            .map(|name| json!({ "SpecialToken": { "id": name, "type_id": 0 } }));
        single.splice(0..0, front);
        for _ in 0..fill {
            single.push(json!({ "SpecialToken": { "id": "</s>", "type_id": 0 } }));
        }
    }
    serde_json::to_string(&json).expect("a JSON value serialises")
}

/// Score of a caption word's piece: above the base pieces' log probabilities (the best is
/// about -1.8), so a whole word always beats its spelling.
const WORD_SCORE: f64 = -1.0;
/// Score of a fallback character: below every base piece.
const CHAR_SCORE: f64 = -12.0;

/// Every word the caption grammar (`crate::corpus`) writes: counts, registers, event nouns
/// (singular and plural), connectives, "at N second(s)" with the digits.
pub fn caption_words() -> Vec<String> {
    let mut words: Vec<String> = ["a", "two", "three", "four", "five"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    words.extend(
        [Pitch::High, Pitch::Low]
            .iter()
            .map(|p| p.word().to_string()),
    );
    for kind in EventKind::ALL {
        words.push(kind.noun().to_string());
        words.push(kind.plural().to_string());
    }
    words.extend(
        ["then", "followed", "by", "at", "second", "seconds"]
            .iter()
            .map(|s| s.to_string()),
    );
    words.extend((0..10).map(|d| d.to_string()));
    words
}

/// The error of [`demo_tokenizer`]: the base file is not a T5 Unigram `tokenizer.json`.
#[derive(Debug, thiserror::Error)]
#[error("the base tokenizer is not a T5 Unigram tokenizer.json: {0}")]
pub struct TokenizerError(String);

/// Builds the demo tokenizer from a base T5 `tokenizer.json` (see the module docs).
pub fn demo_tokenizer(base: &Value) -> Result<Value, TokenizerError> {
    let err = |m: &str| TokenizerError(m.to_string());
    let model = base.get("model").ok_or_else(|| err("no `model`"))?;
    if model.get("type").and_then(Value::as_str) != Some("Unigram") {
        return Err(err("`model.type` is not Unigram"));
    }
    let vocab = model
        .get("vocab")
        .and_then(Value::as_array)
        .ok_or_else(|| err("no `model.vocab` list"))?;
    let pieces: Vec<(String, f64)> = vocab
        .iter()
        .map(|p| {
            let piece = p.get(0).and_then(Value::as_str);
            let score = p.get(1).and_then(Value::as_f64);
            piece
                .zip(score)
                .map(|(s, v)| (s.to_string(), v))
                .ok_or_else(|| err("a vocabulary entry is not [piece, score]"))
        })
        .collect::<Result<_, _>>()?;
    let specials = ["<pad>", "</s>", "<unk>"];
    if pieces.len() < 3 || pieces[..3].iter().map(|p| p.0.as_str()).ne(specials) {
        return Err(err("the first pieces are not <pad>, </s>, <unk>"));
    }
    let mut out: Vec<(String, f64)> = pieces[..3].to_vec();
    let push = |out: &mut Vec<(String, f64)>, piece: String, score: f64| {
        if !out.iter().any(|(p, _)| *p == piece) {
            out.push((piece, score));
        }
    };
    for w in caption_words() {
        push(&mut out, format!("\u{2581}{w}"), WORD_SCORE);
    }
    for (piece, score) in &pieces[3..] {
        if !piece.starts_with("<extra_id_") {
            push(&mut out, piece.clone(), *score);
        }
    }
    for c in ('a'..='z').chain('A'..='Z').chain('0'..='9') {
        push(&mut out, c.to_string(), CHAR_SCORE);
    }
    for c in ".,;:!?'\"-()/&%+".chars() {
        push(&mut out, c.to_string(), CHAR_SCORE);
    }

    let mut tokenizer = base.clone();
    tokenizer["model"]["vocab"] = Value::Array(out.iter().map(|(p, s)| json!([p, s])).collect());
    tokenizer["model"]["unk_id"] = json!(2);
    tokenizer["added_tokens"] = Value::Array(
        specials
            .iter()
            .enumerate()
            .map(|(id, content)| {
                json!({
                    "id": id,
                    "content": content,
                    "single_word": false,
                    "lstrip": false,
                    "rstrip": false,
                    "normalized": false,
                    "special": true
                })
            })
            .collect(),
    );
    Ok(tokenizer)
}

/// The number of pieces of a `tokenizer.json` (the T5 embedding's rows must be at least this).
pub fn vocab_size(tokenizer: &Value) -> usize {
    tokenizer["model"]["vocab"].as_array().map_or(0, Vec::len)
}
