//! Sampling with a sampler written outside the library: the explicit midpoint method, compared
//! with the built-in Euler and Heun samplers on the same request.
//!
//! ```text
//! cargo run --release --example custom_sampler [-- --checkpoint-dir checkpoints]
//! ```
//!
//! Without `--checkpoint-dir` the random-weight model of the repository is used.

use std::path::PathBuf;
use std::sync::Arc;

use audiox::sampler::{Guidance, Sampler, SamplerKind, Schedule, Step};
use audiox::{AudioX, Request};
use burn::tensor::Tensor;

/// The explicit midpoint rule on the rectified-flow ODE `dz/dt = v(z, t)`: two evaluations per
/// step, second order. The library's driver runs the loop (guidance, progress, cancellation,
/// checks); the sampler is its update rule.
#[derive(Debug)]
struct Midpoint {
    schedule: Schedule,
    guidance: Guidance,
}

impl Sampler for Midpoint {
    fn name(&self) -> &str {
        "midpoint"
    }
    fn schedule(&self) -> &Schedule {
        &self.schedule
    }
    fn guidance(&self) -> Guidance {
        self.guidance
    }
    fn evaluations_per_step(&self) -> usize {
        2
    }
    fn step(&self, x: Tensor<3>, step: &mut Step<'_>) -> audiox::Result<Tensor<3>> {
        let (t, dt) = (step.t(), step.dt());
        let half = x.clone() + step.velocity(&x, t)?.mul_scalar(0.5 * dt);
        Ok(x + step.velocity(&half, t + 0.5 * dt)?.mul_scalar(dt))
    }
}

fn main() -> audiox::Result<()> {
    let dir = std::env::args()
        .skip_while(|a| a != "--checkpoint-dir")
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../fixtures/tiny/bundle"
            ))
        });
    let model = AudioX::builder().checkpoint_dir(dir).build()?;
    let request = || Request::text("a dog barks twice, then a car passes").seed(1);
    let midpoint: Arc<dyn Sampler> = Arc::new(Midpoint {
        schedule: Schedule::linear(8),
        guidance: Guidance::none(),
    });
    let runs = [
        ("midpoint, 8 steps", request().sampler(midpoint)),
        (
            "euler, 16 steps",
            request().sampler(SamplerKind::Euler).steps(16),
        ),
        (
            "heun, 8 steps",
            request().sampler(SamplerKind::Heun).steps(8),
        ),
    ];
    for (label, r) in runs {
        let out = model.generate(r)?;
        let path = format!("custom_sampler_{}.wav", out.sampler);
        out.audio[0].write_wav(&path)?;
        println!(
            "{label}: wrote {path} in {:.2} s",
            out.timings.sampling.as_secs_f64()
        );
    }
    Ok(())
}
