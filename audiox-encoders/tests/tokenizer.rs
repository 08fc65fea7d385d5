//! T5 tokenizer: the bundle's expected ids and masks, and bad input.

use audiox_core::Error;
use audiox_core::fixtures::{FixtureSet, assert_all_pass};
use audiox_encoders::parity::text::check_tokenizer;
use audiox_encoders::tokenizer::T5Tokenizer;

fn bundle_tokenizer(max_length: usize) -> Option<T5Tokenizer> {
    let set = FixtureSet::open_default().unwrap();
    let path = set.bundle_dir().join("t5-base").join("tokenizer.json");
    if !path.exists() {
        eprintln!("no bundle tokenizer in {}; skipped", set.dir().display());
        return None;
    }
    Some(T5Tokenizer::from_file(path, max_length).unwrap())
}

#[test]
fn tokenizer_matches_the_reference() {
    let set = FixtureSet::open_default().unwrap();
    if !set
        .bundle_dir()
        .join("expected")
        .join("tokenizer.json")
        .exists()
    {
        eprintln!("no bundle tokenizer expectations; skipped");
        return;
    }
    let checks = check_tokenizer(&set).unwrap();
    assert!(checks.len() >= 3);
    assert_all_pass("tokenizer", &checks);
}

#[test]
fn empty_and_whitespace_prompts_are_the_empty_prompt() {
    let Some(tok) = bundle_tokenizer(8) else {
        return;
    };
    let empty = tok.encode("").unwrap();
    assert_eq!(empty.ids, vec![1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        empty.mask,
        vec![true, false, false, false, false, false, false, false]
    );
    for blank in [" ", "   ", "\t\n ", "\u{3000}"] {
        let t = tok.encode(blank).unwrap();
        assert_eq!(t.ids, empty.ids, "{blank:?}");
        assert_eq!(t.mask, empty.mask, "{blank:?}");
        assert!(!t.truncated());
    }
}

#[test]
fn long_prompts_are_truncated_visibly() {
    let Some(tok) = bundle_tokenizer(8) else {
        return;
    };
    let long = "a dog barks twice, then a car passes ".repeat(20);
    let t = tok.encode_batch(&[long.as_str(), "a dog"]).unwrap();
    assert_eq!(t.batch, 2);
    assert!(t.truncated());
    assert!(t.dropped[0] > 100, "{:?}", t.dropped);
    assert_eq!(t.dropped[1], 0);
    // Room is kept for </s>: the last of the 8 tokens is </s>, every token is real.
    assert_eq!(t.ids_of(0)[7], 1);
    assert!(t.mask_of(0).iter().all(|&m| m));
    // The short prompt is padded.
    assert!(!t.mask_of(1)[7]);
    // At the boundary: 7 pieces + </s> fit exactly, 8 pieces lose one.
    let fits = tok.encode("a dog bark").unwrap();
    assert_eq!(fits.dropped, vec![0]);
    assert!(fits.mask.iter().all(|&m| m));
    assert_eq!(fits.ids[7], 1);
    let one_more = tok.encode("a dog barks").unwrap();
    assert_eq!(one_more.dropped, vec![1]);
    assert_eq!(one_more.ids, fits.ids);
}

#[test]
fn bad_tokenizer_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Missing file.
    let r = T5Tokenizer::from_file(dir.path().join("absent.json"), 8);
    assert!(matches!(r, Err(Error::Tokenizer { .. })), "{r:?}");
    // Not JSON.
    let p = dir.path().join("garbage.json");
    std::fs::write(&p, b"\x00\x01 not a tokenizer").unwrap();
    let r = T5Tokenizer::from_file(&p, 8);
    assert!(matches!(r, Err(Error::Tokenizer { .. })), "{r:?}");
    // JSON, but not a tokenizer.
    std::fs::write(&p, br#"{"version": "1.0", "model": 3}"#).unwrap();
    let r = T5Tokenizer::from_file(&p, 8);
    assert!(matches!(r, Err(Error::Tokenizer { .. })), "{r:?}");
    // Truncated real file.
    let set = FixtureSet::open_default().unwrap();
    let real = set.bundle_dir().join("t5-base").join("tokenizer.json");
    if let Ok(bytes) = std::fs::read(&real) {
        std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
        let r = T5Tokenizer::from_file(&p, 8);
        assert!(matches!(r, Err(Error::Tokenizer { .. })), "{r:?}");
        // No room for </s>.
        let r = T5Tokenizer::from_file(&real, 1);
        assert!(matches!(r, Err(Error::Tokenizer { .. })), "{r:?}");
    }
}
