//! Every random number of the pipeline comes from a [`NoiseSource`].
//!
//! The reference draws, in this order: the initial latent noise, the audio-prompt mask ratio
//! and mask start, the VAE posterior noise of the audio prompt, then one fresh noise per
//! re-noising sampler step. There is no global generator: a request owns its source.
//!
//! * [`SeededNoise`] is what users get: a seed gives the same numbers on every platform and
//!   thread count. The generator is ChaCha20 (`rand_chacha::ChaCha20Rng`, a value-stable
//!   stream) keyed by the 64-bit seed expanded to 32 bytes with SplitMix64. Normal draws use the
//!   Box-Muller transform in f64 with the portable `libm` functions (two normals per pair of
//!   53-bit uniforms), rounded to f32. Uniform f32 draws take the top 24 bits of a 32-bit word.
//!   Integers use rejection sampling, so they are exactly uniform.
//! * [`ReplayNoise`] hands out recorded values in order, checking kind, label and shape of
//!   every draw. The parity tests inject the reference's draws through it.

use std::collections::VecDeque;

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::error::{Error, Result};

/// Well-known labels of the reference's draws, in their order.
pub mod labels {
    /// Initial latent noise `[B, C, L]`.
    pub const INITIAL_NOISE: &str = "initial_noise";
    /// Audio-prompt mask ratio, one uniform per batch item.
    pub const AUDIO_MASK_RATIO: &str = "audio_mask_ratio";
    /// Audio-prompt mask start, one integer per batch item.
    pub const AUDIO_MASK_START: &str = "audio_mask_start";
    /// VAE posterior noise of the audio prompt `[B, C, La]`.
    pub const VAE_NOISE: &str = "vae_noise";
    /// Fresh noise of a re-noising sampler step `[B, C, L]`.
    pub const STEP_NOISE: &str = "step_noise";
}

/// A source of random draws. `label` names what a draw is for (see [`labels`]); a seeded source
/// ignores it, a replay source checks it.
pub trait NoiseSource: Send {
    /// Standard-normal values for a tensor of `shape` (row-major).
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// Uniform values in `[0, 1)` for a tensor of `shape` (row-major).
    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>>;

    /// One uniform integer in `[low, high)` per entry of `bounds`.
    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>>;
}

impl<N: NoiseSource + ?Sized> NoiseSource for &mut N {
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        (**self).normal(label, shape)
    }
    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        (**self).uniform(label, shape)
    }
    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        (**self).integers(label, bounds)
    }
}

impl<N: NoiseSource + ?Sized> NoiseSource for Box<N> {
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        (**self).normal(label, shape)
    }
    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        (**self).uniform(label, shape)
    }
    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        (**self).integers(label, bounds)
    }
}

/// Checks every draw of an inner source against the [`NoiseSource`] contract, so that values
/// from a caller's source never reach a tensor or an index unchecked: a draw has exactly the
/// asked number of values, normals are finite, uniforms lie in `[0, 1)`, integers in their
/// `[low, high)`. A breach is an [`Error::Contract`] naming the draw's label.
///
/// ```
/// use audiox_core::noise::{CheckedNoise, NoiseSource, ReplayNoise};
///
/// let replay = ReplayNoise::new().with_uniform("ratio", &[2], vec![0.5, 1.5]);
/// let err = CheckedNoise::new(replay).uniform("ratio", &[2]).unwrap_err();
/// assert!(err.to_string().contains("outside [0, 1)"), "{err}");
/// ```
#[derive(Debug, Clone)]
pub struct CheckedNoise<N>(N);

impl<N: NoiseSource> CheckedNoise<N> {
    /// Checks the draws of `inner`.
    pub fn new(inner: N) -> Self {
        CheckedNoise(inner)
    }

    /// The inner source.
    pub fn into_inner(self) -> N {
        self.0
    }
}

fn breach(label: &str, message: String) -> Error {
    Error::contract(format!("noise source, draw `{label}`"), message)
}

fn check_len(label: &str, asked: usize, got: usize) -> Result<()> {
    if asked != got {
        return Err(breach(label, format!("{got} values for a draw of {asked}")));
    }
    Ok(())
}

fn checked_floats(
    label: &str,
    shape: &[usize],
    values: Vec<f32>,
    ok: impl Fn(f32) -> bool,
    range: &str,
) -> Result<Vec<f32>> {
    check_len(label, shape.iter().product(), values.len())?;
    if let Some(i) = values.iter().position(|&v| !ok(v)) {
        return Err(breach(
            label,
            format!("value {i} is {}, outside {range}", values[i]),
        ));
    }
    Ok(values)
}

impl<N: NoiseSource> NoiseSource for CheckedNoise<N> {
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let values = self.0.normal(label, shape)?;
        checked_floats(label, shape, values, f32::is_finite, "the finite numbers")
    }

    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let values = self.0.uniform(label, shape)?;
        checked_floats(label, shape, values, |v| (0.0..1.0).contains(&v), "[0, 1)")
    }

    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        let values = self.0.integers(label, bounds)?;
        check_len(label, bounds.len(), values.len())?;
        for (i, (&v, &(low, high))) in values.iter().zip(bounds).enumerate() {
            if !(low..high).contains(&v) {
                return Err(breach(
                    label,
                    format!("value {i} is {v}, outside the asked range [{low}, {high})"),
                ));
            }
        }
        Ok(values)
    }
}

/// The deterministic generator users get. See the [module docs](self) for the algorithm.
#[derive(Debug, Clone)]
pub struct SeededNoise {
    seed: u64,
    rng: ChaCha20Rng,
}

impl SeededNoise {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut key = [0u8; 32];
        let mut state = seed;
        for chunk in key.chunks_exact_mut(8) {
            chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
        }
        SeededNoise {
            seed,
            rng: ChaCha20Rng::from_seed(key),
        }
    }

    /// The seed this generator was made from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A uniform f64 in `(0, 1]` from 53 random bits.
    fn open_unit(&mut self) -> f64 {
        ((self.rng.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform f64 in `[0, 1)` from 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl NoiseSource for SeededNoise {
    fn normal(&mut self, _label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let r = libm::sqrt(-2.0 * libm::log(self.open_unit()));
            let theta = 2.0 * std::f64::consts::PI * self.unit();
            out.push((r * libm::cos(theta)) as f32);
            out.push((r * libm::sin(theta)) as f32);
        }
        out.truncate(n);
        Ok(out)
    }

    fn uniform(&mut self, _label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let n: usize = shape.iter().product();
        Ok((0..n)
            .map(|_| (self.rng.next_u32() >> 8) as f32 * (1.0 / (1u32 << 24) as f32))
            .collect())
    }

    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        bounds
            .iter()
            .map(|&(low, high)| {
                if high <= low {
                    return Err(Error::InvalidRequest(format!(
                        "{label}: empty integer range [{low}, {high})"
                    )));
                }
                let range = (high - low) as u64;
                // Largest multiple of `range` that fits: reject above it to stay unbiased.
                let zone = u64::MAX - (u64::MAX % range);
                loop {
                    let x = self.rng.next_u64();
                    if x < zone {
                        return Ok(low + (x % range) as i64);
                    }
                }
            })
            .collect()
    }
}

/// Recorded values of one draw.
#[derive(Debug, Clone)]
enum Values {
    Normal(Vec<f32>),
    Uniform(Vec<f32>),
    Integers(Vec<i64>),
}

impl Values {
    fn kind(&self) -> &'static str {
        match self {
            Values::Normal(_) => "normal",
            Values::Uniform(_) => "uniform",
            Values::Integers(_) => "integers",
        }
    }
}

#[derive(Debug, Clone)]
struct Recorded {
    label: Option<String>,
    shape: Vec<usize>,
    values: Values,
}

/// Hands out recorded draws in order. Each draw must match the next recording in kind, shape
/// and (when the recording has one) label; anything else is an [`Error::NoiseReplay`].
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    queue: VecDeque<Recorded>,
    served: usize,
}

impl ReplayNoise {
    /// An empty replay source.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(mut self, label: Option<&str>, shape: &[usize], values: Values) -> Self {
        self.queue.push_back(Recorded {
            label: label.map(str::to_string),
            shape: shape.to_vec(),
            values,
        });
        self
    }

    /// Records a normal draw of `shape` with these values.
    pub fn with_normal(self, label: &str, shape: &[usize], values: Vec<f32>) -> Self {
        self.push(Some(label), shape, Values::Normal(values))
    }

    /// Records a uniform draw of `shape` with these values.
    pub fn with_uniform(self, label: &str, shape: &[usize], values: Vec<f32>) -> Self {
        self.push(Some(label), shape, Values::Uniform(values))
    }

    /// Records an integer draw (one value per bound) with these values.
    pub fn with_integers(self, label: &str, values: Vec<i64>) -> Self {
        let n = values.len();
        self.push(Some(label), &[n], Values::Integers(values))
    }

    /// Draws not yet handed out.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }

    /// Errors unless every recorded draw was consumed.
    pub fn finish(&self) -> Result<()> {
        match self.queue.front() {
            None => Ok(()),
            Some(r) => Err(Error::NoiseReplay {
                message: format!(
                    "{} recorded draw(s) left unused after {} served; next is {} `{}` {:?}",
                    self.queue.len(),
                    self.served,
                    r.values.kind(),
                    r.label.as_deref().unwrap_or("?"),
                    r.shape
                ),
            }),
        }
    }

    fn next(&mut self, kind: &'static str, label: &str, shape: &[usize]) -> Result<Values> {
        let Some(rec) = self.queue.pop_front() else {
            return Err(Error::NoiseReplay {
                message: format!(
                    "asked for {kind} `{label}` {shape:?} but all {} recorded draws were used",
                    self.served
                ),
            });
        };
        let index = self.served;
        self.served += 1;
        if rec.values.kind() != kind {
            return Err(Error::NoiseReplay {
                message: format!(
                    "draw {index}: asked for {kind} `{label}`, recorded {} ",
                    rec.values.kind()
                ),
            });
        }
        if let Some(l) = &rec.label
            && l != label
        {
            return Err(Error::NoiseReplay {
                message: format!("draw {index}: asked for `{label}`, recorded `{l}`"),
            });
        }
        if rec.shape != shape {
            return Err(Error::NoiseReplay {
                message: format!(
                    "draw {index} `{label}`: asked for shape {shape:?}, recorded {:?}",
                    rec.shape
                ),
            });
        }
        Ok(rec.values)
    }
}

impl NoiseSource for ReplayNoise {
    fn normal(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.next("normal", label, shape)? {
            Values::Normal(v) => Ok(v),
            _ => unreachable!("kind checked in next()"),
        }
    }

    fn uniform(&mut self, label: &str, shape: &[usize]) -> Result<Vec<f32>> {
        match self.next("uniform", label, shape)? {
            Values::Uniform(v) => Ok(v),
            _ => unreachable!("kind checked in next()"),
        }
    }

    fn integers(&mut self, label: &str, bounds: &[(i64, i64)]) -> Result<Vec<i64>> {
        let values = match self.next("integers", label, &[bounds.len()])? {
            Values::Integers(v) => v,
            _ => unreachable!("kind checked in next()"),
        };
        for (i, (&v, &(low, high))) in values.iter().zip(bounds).enumerate() {
            if v < low || v >= high {
                return Err(Error::NoiseReplay {
                    message: format!(
                        "`{label}`[{i}] = {v} is outside the asked range [{low}, {high})"
                    ),
                });
            }
        }
        Ok(values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_known_values() {
        let mut a = SeededNoise::new(7);
        let mut b = SeededNoise::new(7);
        let x = a.normal("x", &[3, 5]).unwrap();
        assert_eq!(x, b.normal("x", &[3, 5]).unwrap());
        assert_eq!(x.len(), 15);
        // A different seed gives different numbers.
        let y = SeededNoise::new(8).normal("x", &[3, 5]).unwrap();
        assert_ne!(x, y);
        // Pinned values: a change of generator or transform is a breaking change for users who
        // stored seeds, so it must show up here.
        let pinned = SeededNoise::new(0).normal("x", &[4]).unwrap();
        assert_eq!(pinned, vec![-0.30381757, 0.5520225, -1.2863911, 1.0751727]);
        let pinned = SeededNoise::new(0).uniform("x", &[2]).unwrap();
        assert_eq!(pinned, vec![0.7577849, 0.8199458]);
        let pinned = SeededNoise::new(0)
            .integers("x", &[(0, 1000), (0, 1000)])
            .unwrap();
        assert_eq!(pinned, vec![462, 725]);
    }

    #[test]
    fn normal_moments_are_standard() {
        let v = SeededNoise::new(1).normal("x", &[200_000]).unwrap();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.01, "var {var}");
    }

    #[test]
    fn uniform_and_integers_stay_in_range() {
        let mut s = SeededNoise::new(3);
        let u = s.uniform("u", &[10_000]).unwrap();
        assert!(u.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = u.iter().sum::<f32>() / u.len() as f32;
        assert!((mean - 0.5).abs() < 0.02);
        let k = s.integers("k", &[(5, 8); 1000]).unwrap();
        assert!(k.iter().all(|&x| (5..8).contains(&x)));
        for want in 5..8 {
            assert!(k.contains(&want));
        }
        assert!(s.integers("k", &[(3, 3)]).is_err());
    }

    /// A source of the caller's that breaks the contract in the way it is built with.
    #[derive(Clone)]
    struct Liar {
        normal: Vec<f32>,
        uniform: Vec<f32>,
        integers: Vec<i64>,
    }

    impl NoiseSource for Liar {
        fn normal(&mut self, _: &str, _: &[usize]) -> Result<Vec<f32>> {
            Ok(self.normal.clone())
        }
        fn uniform(&mut self, _: &str, _: &[usize]) -> Result<Vec<f32>> {
            Ok(self.uniform.clone())
        }
        fn integers(&mut self, _: &str, _: &[(i64, i64)]) -> Result<Vec<i64>> {
            Ok(self.integers.clone())
        }
    }

    #[test]
    fn checked_noise_turns_every_breach_into_a_contract_error() {
        let honest = Liar {
            normal: vec![0.5, -2.0],
            uniform: vec![0.0, 0.999],
            integers: vec![3, 0],
        };
        let bounds = [(0, 4), (0, 1)];
        let mut ok = CheckedNoise::new(honest.clone());
        assert_eq!(ok.normal("n", &[2]).unwrap(), honest.normal);
        assert_eq!(ok.uniform("u", &[1, 2]).unwrap(), honest.uniform);
        assert_eq!(ok.integers("k", &bounds).unwrap(), honest.integers);
        let breaches: [(Liar, &str); 7] = [
            (
                Liar {
                    normal: vec![0.0, f32::NAN],
                    ..honest.clone()
                },
                "NaN",
            ),
            (
                Liar {
                    normal: vec![f32::INFINITY, 0.0],
                    ..honest.clone()
                },
                "inf",
            ),
            (
                Liar {
                    normal: vec![0.0],
                    ..honest.clone()
                },
                "1 values for a draw of 2",
            ),
            (
                Liar {
                    uniform: vec![0.5, 1.0],
                    ..honest.clone()
                },
                "outside [0, 1)",
            ),
            (
                Liar {
                    uniform: vec![-0.1, 0.5],
                    ..honest.clone()
                },
                "outside [0, 1)",
            ),
            (
                Liar {
                    integers: vec![3, 1],
                    ..honest.clone()
                },
                "outside the asked range [0, 1)",
            ),
            (
                Liar {
                    integers: vec![3],
                    ..honest.clone()
                },
                "1 values for a draw of 2",
            ),
        ];
        for (liar, needle) in breaches {
            let mut n = CheckedNoise::new(liar);
            let err = n
                .normal("n", &[2])
                .and_then(|_| n.uniform("u", &[2]))
                .and_then(|_| n.integers("k", &bounds))
                .unwrap_err();
            assert!(matches!(&err, Error::Contract { .. }), "{err}");
            assert!(err.to_string().contains(needle), "{err} lacks {needle}");
        }
    }

    #[test]
    fn replay_serves_in_order_and_checks() {
        let mut r = ReplayNoise::new()
            .with_normal("a", &[2], vec![1.0, 2.0])
            .with_uniform("b", &[1], vec![0.5])
            .with_integers("c", vec![4]);
        assert_eq!(r.normal("a", &[2]).unwrap(), vec![1.0, 2.0]);
        assert!(r.finish().is_err());
        // Wrong kind.
        assert!(r.clone().normal("b", &[1]).is_err());
        // Wrong label.
        assert!(r.clone().uniform("x", &[1]).is_err());
        // Wrong shape.
        assert!(r.clone().uniform("b", &[2]).is_err());
        assert_eq!(r.uniform("b", &[1]).unwrap(), vec![0.5]);
        // Out of the asked range.
        assert!(r.clone().integers("c", &[(0, 4)]).is_err());
        assert_eq!(r.integers("c", &[(0, 5)]).unwrap(), vec![4]);
        r.finish().unwrap();
        // Exhausted.
        assert!(r.normal("a", &[2]).is_err());
    }
}
