//! The text conditioning of the most recent prompts, kept so that a prompt repeated across
//! requests (every window of a long-form request, the variations of a sound bank, a negative
//! prompt used with many prompts) runs T5 once.
//!
//! The cache holds the single-sample condition of each prompt (tokens `[1, n, d]`, mask
//! `[1, n]`) and its token ids; a hit returns clones (burn tensors share their storage). T5 is
//! deterministic, so a hit is exactly what a recomputation would give.

use std::sync::Mutex;

use audiox_encoders::conditioners::Condition;
use audiox_encoders::tokenizer::Tokens;

/// How many prompts are kept: a prompt and its negative prompt, plus one more.
const CAPACITY: usize = 3;

/// The last [`CAPACITY`] prompts' text conditions, most recent last.
#[derive(Default)]
pub(crate) struct TextCache {
    entries: Mutex<Vec<(String, Condition, Tokens)>>,
}

impl TextCache {
    /// The cached condition of `prompt`, moved to the most recent place.
    pub(crate) fn get(&self, prompt: &str) -> Option<(Condition, Tokens)> {
        // A poisoned lock only means another thread panicked while holding it; the entries
        // are whole values either way.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries.iter().position(|(p, _, _)| p == prompt)?;
        let entry = entries.remove(i);
        let hit = (entry.1.clone(), entry.2.clone());
        entries.push(entry);
        Some(hit)
    }

    /// Keeps `prompt`'s condition, dropping the least recently used entry when full.
    pub(crate) fn put(&self, prompt: &str, condition: &Condition, tokens: &Tokens) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(p, _, _)| p != prompt);
        if entries.len() == CAPACITY {
            entries.remove(0);
        }
        entries.push((prompt.to_string(), condition.clone(), tokens.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor};

    fn entry(id: i64) -> (Condition, Tokens) {
        let device = Device::flex();
        let condition = Condition {
            tokens: Tensor::<3>::zeros([1, 2, 3], &device).add_scalar(id as f32),
            mask: Tensor::<2>::ones([1, 2], &device),
        };
        let tokens = Tokens {
            ids: vec![id, 1],
            mask: vec![true, true],
            batch: 1,
            max_length: 2,
            dropped: vec![0],
        };
        (condition, tokens)
    }

    fn cached_id(cache: &TextCache, prompt: &str) -> Option<i64> {
        cache.get(prompt).map(|(_, t)| t.ids[0])
    }

    #[test]
    fn keeps_the_most_recently_used_prompts() {
        let cache = TextCache::default();
        for (i, p) in ["a", "b", "c"].iter().enumerate() {
            let (c, t) = entry(i as i64);
            cache.put(p, &c, &t);
        }
        // "a" used again: "b" is now the least recently used and goes first.
        assert_eq!(cached_id(&cache, "a"), Some(0));
        let (c, t) = entry(3);
        cache.put("d", &c, &t);
        assert_eq!(cached_id(&cache, "b"), None);
        assert_eq!(cached_id(&cache, "a"), Some(0));
        assert_eq!(cached_id(&cache, "c"), Some(2));
        assert_eq!(cached_id(&cache, "d"), Some(3));
        // A prompt is matched exactly, not by prefix or case.
        assert_eq!(cached_id(&cache, "A"), None);
        assert_eq!(cached_id(&cache, ""), None);
        // Putting a prompt again replaces its entry instead of adding a second.
        let (c, t) = entry(9);
        cache.put("a", &c, &t);
        assert_eq!(cached_id(&cache, "a"), Some(9));
        assert_eq!(cached_id(&cache, "c"), Some(2));
        assert_eq!(cached_id(&cache, "d"), Some(3));
    }
}
