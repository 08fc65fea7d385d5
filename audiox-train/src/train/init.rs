//! Random initial weights, drawn from a seeded stream in the module's visiting order.
//!
//! The inference modules build their parameters as zeros until a checkpoint is loaded; training
//! starts from PyTorch's default scales instead: a convolution or linear weight is uniform in
//! `+-1/sqrt(fan_in)` (standard deviation `1/sqrt(3 fan_in)`; the training notes found
//! `1/sqrt(fan_in)` as a standard deviation made the stacked Snake residual units blow up),
//! biases and the SnakeBeta log-parameters are zero (`alpha = beta = 0`: frequency and
//! magnitude 1), layer-norm gains one, anything else normal with standard deviation 0.02.
//! Exceptions that follow the official constructors: the learned Fourier time frequencies and
//! the MAF expert pool are standard normal, the MAF bypass gates -10 (practically closed), and
//! a token convolution (`TokenConv`, stored `[k, in, out]`) has `fan_in = k x in`.
//!
//! [`InitScheme::ScalePreserving`] (the VAE stage's option, see [`random_init_with`]) changes
//! the convolutions of the Oobleck VAE: PyTorch's default scale shrinks every layer's output by
//! about `sqrt(3)` (and a transposed convolution of kernel `2s`, stride `s` by far more, since
//! each output sample sees only two input positions), so at the demo sizes the encoder's gain is
//! 0.07 and the decoder's 0.007 (`tests/trainer.rs`): the first reconstruction is ~66 dB under
//! its input, and training starts from silence. Scale-preserving: convolution weights uniform in
//! `+-sqrt(3 / fan_in)` (standard deviation `1/sqrt(fan_in)`), a transposed convolution's
//! `fan_in` being `2 x in` (the positions that reach one output sample), and the last
//! convolution of each residual unit at a tenth of that, so that the residual stacks start near
//! the identity (the training notes saw the 24 stacked residual units blow up at full scale).

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::{Rng, SeedableRng};

/// Which scales [`random_init_with`] draws convolution weights at (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InitScheme {
    /// PyTorch's default scales for every parameter.
    #[default]
    PytorchDefault,
    /// Scale-preserving convolutions in the Oobleck VAE (weight-normalised convolutions and
    /// transposed convolutions); everything else as [`InitScheme::PytorchDefault`].
    ScalePreserving,
}

/// Re-initialises every float parameter of `module` from `seed` (see the module docs).
/// Deterministic: the same module structure and seed give the same weights.
pub fn random_init<M: Module>(module: M, seed: u64) -> M {
    random_init_with(module, seed, InitScheme::PytorchDefault)
}

/// [`random_init`] with the convolution scales of `scheme`.
pub fn random_init_with<M: Module>(module: M, seed: u64, scheme: InitScheme) -> M {
    let mut mapper = RandomInit {
        rng: ChaCha8Rng::seed_from_u64(seed),
        path: Vec::new(),
        containers: Vec::new(),
        scheme,
    };
    module.map(&mut mapper)
}

struct RandomInit {
    rng: ChaCha8Rng,
    path: Vec<String>,
    containers: Vec<String>,
    scheme: InitScheme,
}

impl RandomInit {
    fn uniform(&mut self) -> f32 {
        // 24 random bits -> [0, 1).
        (self.rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        // Box-Muller.
        let u1 = self.uniform().max(f32::MIN_POSITIVE);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }

    fn values(&mut self, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let leaf = self.path.last().map(String::as_str).unwrap_or("");
        // The owning module: the innermost struct container (the last one is the parameter's).
        let owner = self
            .containers
            .iter()
            .rev()
            .find_map(|c| c.strip_prefix("Struct:"))
            .unwrap_or("");
        match (owner, leaf) {
            ("FourierFeatures", "weight") | ("MafBlock", "unified_experts") => {
                return (0..n).map(|_| self.normal()).collect();
            }
            ("MafBlock", gate) if gate.starts_with("bypass_gate") => return vec![-10.0; n],
            ("WeightNormConv1d" | "WeightNormConvTranspose1d", "weight")
                if shape.len() == 3 && self.scheme == InitScheme::ScalePreserving =>
            {
                let transposed = owner == "WeightNormConvTranspose1d";
                // [in, out, 2s] for a transposed convolution of stride s: two input positions
                // reach each output sample.
                let fan_in = if transposed {
                    2 * shape[0]
                } else {
                    shape[1] * shape[2]
                };
                let in_residual = self.containers.iter().any(|c| c == "Struct:ResidualUnit");
                let last_of_unit =
                    self.path.iter().rev().nth(1).map(String::as_str) == Some("conv2");
                let gain = if in_residual && last_of_unit {
                    0.1
                } else {
                    1.0
                };
                let bound = gain * (3.0 / fan_in.max(1) as f32).sqrt();
                return (0..n)
                    .map(|_| (2.0 * self.uniform() - 1.0) * bound)
                    .collect();
            }
            ("TokenConv", "weight") if shape.len() == 3 => {
                let bound = 1.0 / ((shape[0] * shape[1]).max(1) as f32).sqrt();
                return (0..n)
                    .map(|_| (2.0 * self.uniform() - 1.0) * bound)
                    .collect();
            }
            _ => {}
        }
        match (leaf, shape.len()) {
            ("weight", 3) | ("weight", 2) => {
                // [out, in, k] (conv), [in, out, k] (transposed: PyTorch's fan_in is also
                // dim 1 x k), [in, out] (burn linear: fan_in is dim 0).
                let fan_in = if shape.len() == 3 {
                    shape[1] * shape[2]
                } else {
                    shape[0]
                };
                let bound = 1.0 / (fan_in.max(1) as f32).sqrt();
                (0..n)
                    .map(|_| (2.0 * self.uniform() - 1.0) * bound)
                    .collect()
            }
            ("bias", _) | ("alpha", _) | ("beta", _) => vec![0.0; n],
            ("gamma", _) => vec![1.0; n],
            _ => (0..n).map(|_| 0.02 * self.normal()).collect(),
        }
    }
}

impl ModuleMapper for RandomInit {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let shape = param.lazy_shape().to_vec();
        let values = self.values(&shape);
        param.map(move |old| {
            // Keeps the parameter's gradient tracking (on an autodiff device: on).
            let require_grad = old.is_require_grad();
            Tensor::from_data(TensorData::new(values, shape), &old.device())
                .set_require_grad(require_grad)
        })
    }
}
