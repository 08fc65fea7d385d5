//! Bounded mutation testing on the stable toolchain (test support).
//!
//! The workspace's property tests feed parsers mutated copies of valid inputs (weight files,
//! configs, audio and image files, request values) and require that every case either
//! succeeds or returns an error: a panic fails the test. [`Mutator`](crate::fuzz::Mutator) makes the mutations from
//! a fixed seed, so a run is reproducible; [`check_no_panic`](crate::fuzz::check_no_panic) runs the stored corpus of earlier
//! finds, the valid seeds, then a bounded number of mutated cases (`AUDIOX_FUZZ_CASES`
//! overrides the per-target default, for a longer local run). A panicking input is saved under
//! the system's temporary folder and named in the failure, ready to be added to the corpus.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// A deterministic generator of byte-level mutations (splitmix64 underneath).
#[derive(Debug, Clone)]
pub struct Mutator {
    state: u64,
}

/// Values that often sit on a parser's boundaries.
const INTERESTING_U32: [u32; 9] = [
    0,
    1,
    0x7f,
    0xff,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0xffff_fffe,
    1024,
];

impl Mutator {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Mutator { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// One of `items` (which must not be empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A copy of `input` with one to four mutations: bit flips, boundary bytes and 32-bit
    /// words (both byte orders), truncation, deletion, duplication and insertion of spans.
    pub fn mutate(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..1 + self.below(4) {
            let len = out.len();
            match self.below(8) {
                0 if len > 0 => {
                    let i = self.below(len);
                    out[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    out[i] = *self.pick(&[0u8, 0xff, 0x7f, 0x80, b'-', b'9']);
                }
                2 if len >= 4 => {
                    let i = self.below(len - 3);
                    let v = *self.pick(&INTERESTING_U32);
                    let bytes = if self.below(2) == 0 {
                        v.to_le_bytes()
                    } else {
                        v.to_be_bytes()
                    };
                    out[i..i + 4].copy_from_slice(&bytes);
                }
                3 => out.truncate(self.below(len + 1)),
                4 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(64));
                    out.drain(i..i + n);
                }
                5 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(64));
                    let span = out[i..i + n].to_vec();
                    let at = self.below(len + 1);
                    out.splice(at..at, span);
                }
                6 => {
                    let at = self.below(len + 1);
                    let n = 1 + self.below(16);
                    let bytes: Vec<u8> = (0..n).map(|_| self.next_u64() as u8).collect();
                    out.splice(at..at, bytes);
                }
                _ if len > 0 => {
                    // A small arithmetic change of one byte (lengths and counts off by a few).
                    let i = self.below(len);
                    out[i] = out[i].wrapping_add(self.below(7) as u8).wrapping_sub(3);
                }
                _ => out.push(self.next_u64() as u8),
            }
        }
        out
    }
}

/// Cases per target: `AUDIOX_FUZZ_CASES` when set, else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("AUDIOX_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The files of a corpus folder (none when it does not exist), sorted by name.
pub fn corpus(dir: impl AsRef<Path>) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir.as_ref()) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().map(|b| (p, b)))
        .collect()
}

/// Runs `run` on every corpus file of `corpus_dir`, every seed, then `cases` mutations of the
/// seeds (mutator seeded with `seed`). Results are ignored, panics are not: the first one
/// fails the test, naming the target, the case and a saved copy of the input.
pub fn check_no_panic<T>(
    target: &str,
    corpus_dir: impl AsRef<Path>,
    seeds: &[Vec<u8>],
    cases: usize,
    seed: u64,
    mut run: impl FnMut(&[u8]) -> T,
) {
    let mut attempt = |label: &str, input: &[u8]| {
        if catch_unwind(AssertUnwindSafe(|| drop(run(input)))).is_err() {
            let dir = std::env::temp_dir().join("audiox-fuzz-found");
            let _ = std::fs::create_dir_all(&dir);
            let name = format!("{target}-{:016x}.bin", hash(input));
            let saved = dir.join(&name);
            let _ = std::fs::write(&saved, input);
            panic!(
                "fuzz target `{target}` panicked on {label}; input saved as {} (add it to the \
                 target's corpus folder as a regression case)",
                saved.display()
            );
        }
    };
    for (path, bytes) in corpus(corpus_dir) {
        attempt(&format!("corpus file {}", path.display()), &bytes);
    }
    for (i, s) in seeds.iter().enumerate() {
        attempt(&format!("seed {i}"), s);
    }
    if seeds.is_empty() {
        return;
    }
    let mut m = Mutator::new(seed);
    for case in 0..cases {
        let base = m.pick(seeds).clone();
        let input = m.mutate(&base);
        attempt(&format!("case {case} (mutator seed {seed})"), &input);
    }
}

/// FNV-1a, for naming saved inputs.
fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_reproducible_and_change_the_input() {
        let input: Vec<u8> = (0..200u8).collect();
        let a: Vec<Vec<u8>> = {
            let mut m = Mutator::new(3);
            (0..50).map(|_| m.mutate(&input)).collect()
        };
        let b: Vec<Vec<u8>> = {
            let mut m = Mutator::new(3);
            (0..50).map(|_| m.mutate(&input)).collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().filter(|x| **x != input).count() > 40);
    }

    #[test]
    fn a_panic_fails_the_check() {
        let r = catch_unwind(|| {
            check_no_panic("selftest", "/nonexistent", &[vec![1, 2, 3]], 10, 1, |b| {
                assert!(b.len() != 3, "boom")
            })
        });
        assert!(r.is_err());
        check_no_panic("selftest", "/nonexistent", &[vec![1, 2, 3]], 10, 1, |b| {
            b.len()
        });
    }
}
