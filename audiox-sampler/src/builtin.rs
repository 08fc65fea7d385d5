//! The built-in samplers as a typed value, and every sampler default in one place.

use std::fmt;
use std::str::FromStr;

use audiox_core::{Error, Result};

use crate::guidance::Guidance;
use crate::sampler::Sampler;

/// A built-in sampler. Parses from its name (what the `generate` program's `--sampler`
/// takes); an unknown name is an error that lists the valid ones.
///
/// ```
/// use audiox_sampler::{Guidance, Sampler, SamplerKind};
///
/// let kind: SamplerKind = "heun".parse()?;
/// assert_eq!(kind, SamplerKind::Heun);
/// let s = kind.build(10, Guidance::cfg(4.0));
/// assert_eq!((s.name(), s.steps(), s.evaluations()), ("heun", 10, 20));
/// let err = "ddim".parse::<SamplerKind>().unwrap_err();
/// assert!(err.to_string().contains("dmd, euler, heun, dpmpp-2m"), "{err}");
/// # Ok::<(), audiox_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// [`Dmd`](crate::Dmd), `"dmd"`: the AudioX-Turbo student's few-step sampler.
    Dmd,
    /// [`Euler`](crate::Euler), `"euler"`: the base model's first-order sampler.
    Euler,
    /// [`Heun`](crate::Heun), `"heun"`: second-order predictor-corrector.
    Heun,
    /// [`DpmPp2M`](crate::DpmPp2M), `"dpmpp-2m"`: DPM-Solver++(2M).
    DpmPp2M,
}

impl SamplerKind {
    /// Every built-in, in the order of the docs.
    pub const ALL: [SamplerKind; 4] = [
        SamplerKind::Dmd,
        SamplerKind::Euler,
        SamplerKind::Heun,
        SamplerKind::DpmPp2M,
    ];

    /// The name (also [`Sampler::name`] of the built sampler).
    pub const fn name(self) -> &'static str {
        match self {
            SamplerKind::Dmd => "dmd",
            SamplerKind::Euler => "euler",
            SamplerKind::Heun => "heun",
            SamplerKind::DpmPp2M => "dpmpp-2m",
        }
    }

    /// Steps when a request names this sampler and sets none (the table in
    /// `docs/samplers.md`): `dmd` 4 and `euler` 250, the reference's settings of the student
    /// and of the base model ([`Defaults::STUDENT`], [`Defaults::TEACHER`]); `heun` and
    /// `dpmpp-2m` 100 (no reference setting; both are second order, so they reach Euler's
    /// accuracy in fewer steps).
    pub const fn default_steps(self) -> usize {
        match self {
            SamplerKind::Dmd => Defaults::STUDENT.steps,
            SamplerKind::Euler => Defaults::TEACHER.steps,
            SamplerKind::Heun | SamplerKind::DpmPp2M => 100,
        }
    }

    /// The sampler with `steps` linear steps from 1 to 0 and `guidance`.
    pub fn build(self, steps: usize, guidance: Guidance) -> Box<dyn Sampler> {
        match self {
            SamplerKind::Dmd => Box::new(crate::Dmd::new(steps).with_guidance(guidance)),
            SamplerKind::Euler => Box::new(crate::Euler::new(steps).with_guidance(guidance)),
            SamplerKind::Heun => Box::new(crate::Heun::new(steps).with_guidance(guidance)),
            SamplerKind::DpmPp2M => Box::new(crate::DpmPp2M::new(steps).with_guidance(guidance)),
        }
    }

    /// The valid names, comma-separated (for messages).
    fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SamplerKind {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| {
                Error::InvalidRequest(format!(
                    "unknown sampler `{name}`; the built-in samplers are {}",
                    Self::names()
                ))
            })
    }
}

/// The sampler settings a model runs when a request sets none: sampler, steps and guidance.
/// This is the one place the defaults live; `docs/samplers.md` shows them as a table.
///
/// A request to the `audiox` pipeline takes the loaded model's defaults
/// ([`STUDENT`](Self::STUDENT) or [`TEACHER`](Self::TEACHER)) for everything it leaves unset,
/// except the steps of a sampler it names, which come from
/// [`SamplerKind::default_steps`].
///
/// ```
/// use audiox_sampler::{Defaults, Guidance, SamplerKind};
///
/// assert_eq!(Defaults::STUDENT.sampler, SamplerKind::Dmd);
/// assert_eq!(Defaults::TEACHER.guidance, Guidance::cfg(6.0));
/// let euler = Defaults::TEACHER.build();
/// assert_eq!((euler.name(), euler.steps()), ("euler", 250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Defaults {
    /// The sampler.
    pub sampler: SamplerKind,
    /// Its steps.
    pub steps: usize,
    /// Its guidance.
    pub guidance: Guidance,
}

impl Defaults {
    /// AudioX-Turbo, the DMD-distilled student: 4 DMD steps without guidance (the reference's
    /// `sample_dmd`, and the step count it was distilled for).
    pub const STUDENT: Defaults = Defaults {
        sampler: SamplerKind::Dmd,
        steps: 4,
        guidance: Guidance::none(),
    };

    /// The base (teacher) model: 250 Euler steps with guidance scale 6, no rescale (the
    /// reference's `sample_discrete_euler` settings).
    pub const TEACHER: Defaults = Defaults {
        sampler: SamplerKind::Euler,
        steps: 250,
        guidance: Guidance::cfg(6.0),
    };

    /// The sampler these settings describe.
    pub fn build(&self) -> Box<dyn Sampler> {
        self.sampler.build(self.steps, self.guidance)
    }
}
