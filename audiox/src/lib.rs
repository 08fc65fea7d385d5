//! AudioX-Turbo in Rust: anything-to-audio generation on burn.
