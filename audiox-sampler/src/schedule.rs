//! Time schedules: the decreasing times `t_0 > t_1 > ... > t_N` a sampler visits.
//!
//! Time runs from 1 (pure noise) to 0 (data). A [`Schedule`] is a small description
//! (`Linear`, `Shifted`, `Custom`) that [`Schedule::times`] turns into the concrete f32 grid,
//! validated: at least two points, finite, inside `[0, 1]`, strictly decreasing.

use audiox_core::{Error, Result};

/// PyTorch's float32 `torch.linspace(start, end, n)`, bit for bit (its scalar CPU and CUDA
/// kernels).
///
/// torch computes `step = (end - start) / (n - 1)` in f32 and fills the two halves from their
/// own ends: `start + i * step` for `i < n / 2`, `end - (n - 1 - i) * step` otherwise, so both
/// endpoints are exact. (torch's vectorised CPU loop, taken for `n` of at least twice the SIMD
/// width, adds `step` lane by lane from a block base and can differ from this by an ulp.)
///
/// ```
/// use audiox_sampler::torch_linspace;
///
/// assert_eq!(torch_linspace(1.0, 0.0, 5), vec![1.0, 0.75, 0.5, 0.25, 0.0]);
/// // Not the same as `1.0 - i as f32 / 8.0` accumulated one way: the second half counts
/// // back from the end.
/// let t = torch_linspace(1.0, 0.0, 9);
/// assert_eq!((t[0], t[8]), (1.0, 0.0));
/// assert_eq!(torch_linspace(0.3, 0.3, 1), vec![0.3]);
/// ```
pub fn torch_linspace(start: f32, end: f32, n: usize) -> Vec<f32> {
    match n {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (end - start) / (n - 1) as f32;
            let halfway = n / 2;
            (0..n)
                .map(|i| {
                    if i < halfway {
                        start + step * i as f32
                    } else {
                        end - step * (n - 1 - i) as f32
                    }
                })
                .collect()
        }
    }
}

/// Which times a sampler visits. Build one with [`Schedule::linear`], [`Schedule::shifted`] or
/// [`Schedule::custom`]; [`Schedule::times`] gives the validated grid.
///
/// ```
/// use audiox_sampler::Schedule;
///
/// let s = Schedule::linear(4);
/// assert_eq!(s.steps(), 4);
/// assert_eq!(s.times()?, vec![1.0, 0.75, 0.5, 0.25, 0.0]);
///
/// // A variation of existing audio starts part-way (the reference's `init_noise_level`).
/// let partial = Schedule::linear_from(0.5, 2);
/// assert_eq!(partial.times()?, vec![0.5, 0.25, 0.0]);
///
/// // Shift > 1 spends more steps at high noise (SD3-style time shift).
/// let shifted = Schedule::shifted(4, 3.0).times()?;
/// assert!(shifted[1] > 0.75);
///
/// assert!(Schedule::custom(vec![1.0, 0.4, 0.6, 0.0]).times().is_err());
/// # Ok::<(), audiox_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `steps` equal steps from `start` to 0: `torch_linspace(start, 0, steps + 1)`. Both
    /// reference samplers use this with `start = 1`.
    Linear {
        /// Number of steps (one more time point).
        steps: usize,
        /// First time, in `(0, 1]`.
        start: f32,
    },
    /// The linear grid from 1 to 0 warped by `t -> shift * t / (1 + (shift - 1) * t)`
    /// (the time shift of SD3-style flow matching; `shift = 1` is the linear grid). Computed in
    /// f64 and rounded to f32.
    Shifted {
        /// Number of steps.
        steps: usize,
        /// Shift factor, > 0.
        shift: f32,
    },
    /// Explicit times, first to last.
    Custom(Vec<f32>),
}

impl Schedule {
    /// `steps` equal steps from 1 to 0 (the reference schedule).
    pub fn linear(steps: usize) -> Self {
        Self::linear_from(1.0, steps)
    }

    /// `steps` equal steps from `start` to 0.
    pub fn linear_from(start: f32, steps: usize) -> Self {
        Schedule::Linear { steps, start }
    }

    /// `steps` steps from 1 to 0 with the time shift `shift`.
    pub fn shifted(steps: usize, shift: f32) -> Self {
        Schedule::Shifted { steps, shift }
    }

    /// Explicit times (validated by [`Schedule::times`]).
    pub fn custom(times: Vec<f32>) -> Self {
        Schedule::Custom(times)
    }

    /// Number of steps (intervals between consecutive times).
    pub fn steps(&self) -> usize {
        match self {
            Schedule::Linear { steps, .. } | Schedule::Shifted { steps, .. } => *steps,
            Schedule::Custom(times) => times.len().saturating_sub(1),
        }
    }

    /// The validated time grid, `steps() + 1` values from first to last.
    pub fn times(&self) -> Result<Vec<f32>> {
        let times = match self {
            Schedule::Linear { steps, start } => {
                if !(start.is_finite() && *start > 0.0 && *start <= 1.0) {
                    return Err(invalid(format!(
                        "a linear schedule must start in (0, 1], got {start}"
                    )));
                }
                torch_linspace(*start, 0.0, steps + 1)
            }
            Schedule::Shifted { steps, shift } => {
                if !(shift.is_finite() && *shift > 0.0) {
                    return Err(invalid(format!(
                        "the time shift must be finite and > 0, got {shift}"
                    )));
                }
                let s = *shift as f64;
                torch_linspace(1.0, 0.0, steps + 1)
                    .into_iter()
                    .map(|t| {
                        let t = t as f64;
                        (s * t / (1.0 + (s - 1.0) * t)) as f32
                    })
                    .collect()
            }
            Schedule::Custom(times) => times.clone(),
        };
        validate(&times)?;
        Ok(times)
    }

    /// Checks the schedule without keeping the grid.
    pub fn validate(&self) -> Result<()> {
        self.times().map(drop)
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidRequest(format!("sampler schedule: {message}"))
}

fn validate(times: &[f32]) -> Result<()> {
    if times.len() < 2 {
        return Err(invalid(format!(
            "needs at least one step (two time points), got {} point(s)",
            times.len()
        )));
    }
    if let Some(bad) = times
        .iter()
        .find(|t| !(t.is_finite() && (0.0..=1.0).contains(*t)))
    {
        return Err(invalid(format!("time {bad} is outside [0, 1]")));
    }
    if let Some(w) = times.windows(2).find(|w| w[1] >= w[0]) {
        return Err(invalid(format!(
            "times must strictly decrease, found {} then {}",
            w[0], w[1]
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linspace_is_two_sided() {
        // With n = 4 from 0 to 1 the step 1/3 is inexact: the first half counts up from 0,
        // the second half counts down from 1.
        let t = torch_linspace(0.0, 1.0, 4);
        let step = 1.0f32 / 3.0;
        assert_eq!(t, vec![0.0, step, 1.0 - step, 1.0]);
        assert_eq!(t[3], 1.0);
        // 1 - 2 * step in f32 differs from 2 * step in the last bit here.
        assert_ne!(t[2], 2.0 * step);
    }

    #[test]
    fn shifted_grid_keeps_the_endpoints_and_bends_towards_noise() {
        let t = Schedule::shifted(8, 3.0).times().unwrap();
        assert_eq!((t[0], t[8]), (1.0, 0.0));
        let lin = Schedule::linear(8).times().unwrap();
        for (s, l) in t.iter().zip(&lin).skip(1).take(7) {
            assert!(s > l);
        }
        assert_eq!(Schedule::shifted(8, 1.0).times().unwrap(), lin);
        assert!(Schedule::shifted(8, 0.0).times().is_err());
    }

    #[test]
    fn invalid_grids_are_typed_errors() {
        for s in [
            Schedule::linear(0),
            Schedule::linear_from(0.0, 4),
            Schedule::linear_from(1.5, 4),
            Schedule::custom(vec![1.0]),
            Schedule::custom(vec![1.0, 1.0, 0.0]),
            Schedule::custom(vec![1.2, 0.0]),
            Schedule::custom(vec![1.0, f32::NAN, 0.0]),
        ] {
            assert!(
                matches!(s.validate(), Err(Error::InvalidRequest(_))),
                "{s:?} should be refused"
            );
        }
        assert_eq!(Schedule::custom(vec![0.9, 0.2]).steps(), 1);
    }
}
