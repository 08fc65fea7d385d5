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

use audiox::sampler::{
    Denoiser, Guidance, Guided, Sampler, Schedule, StepControl, StepInfo, velocity_at,
};
use audiox::{AudioX, NoiseSource, Request};
use burn::tensor::Tensor;

/// The explicit midpoint rule on the rectified-flow ODE `dz/dt = v(z, t)`: two evaluations per
/// step, second order.
#[derive(Debug)]
struct Midpoint {
    schedule: Schedule,
    guidance: Guidance,
}

impl Sampler for Midpoint {
    fn name(&self) -> &str {
        "midpoint"
    }
    fn steps(&self) -> usize {
        self.schedule.steps()
    }
    fn evaluations(&self) -> usize {
        2 * self.steps()
    }
    fn guidance(&self) -> Guidance {
        self.guidance
    }
    fn sample(
        &self,
        denoiser: &dyn Denoiser,
        noise: Tensor<3>,
        _rng: &mut dyn NoiseSource,
        control: &mut StepControl<'_>,
    ) -> audiox::Result<Tensor<3>> {
        let times = self.schedule.times()?;
        let denoiser = Guided::new(denoiser, self.guidance);
        let total = times.len() - 1;
        let mut x = noise;
        for (k, w) in times.windows(2).enumerate() {
            control.check_cancelled(k, total)?;
            let (t, dt) = (w[0], w[1] - w[0]);
            let half = x.clone() + velocity_at(&denoiser, &x, t)?.mul_scalar(0.5 * dt);
            x = x + velocity_at(&denoiser, &half, t + 0.5 * dt)?.mul_scalar(dt);
            control.report(&StepInfo::new(k, total, t, w[1], &x));
        }
        Ok(x)
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
            request().sampler_named("euler").steps(16),
        ),
        ("heun, 8 steps", request().sampler_named("heun").steps(8)),
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
