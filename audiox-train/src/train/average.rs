//! Weight averaging: the parameter-by-parameter mean of several copies of one module, e.g.
//! checkpoints of one run over a stretch of training (stochastic weight averaging, [`mean`]),
//! and the exponential moving average the training loop keeps when a stage's
//! [`LoopSettings::ema_decay`](super::LoopSettings::ema_decay) is set ([`ema_update`]).
//!
//! On the demo teacher it is worth about ten points of held-out count: the mean of fifteen
//! checkpoints of run TP2 (and its continuation TP2d), steps 41,600 to 43,000 every 100,
//! counts 63 % of 100 held-out captions, where the first and the last of them count 51 % and
//! 53 % (`docs/training.md`, session of 2026-12-04 morning).
//! `examples/average_checkpoints.rs` writes such a mean as a checkpoint.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

use super::{TrainError, TrainResult};

/// Every float parameter of a module, flattened, in the module's visiting order, with its
/// shape (and, in `ids`, its id).
#[derive(Default)]
struct Collect {
    params: Vec<(Vec<usize>, Tensor<1>)>,
    ids: Vec<ParamId>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let dims = value.dims().to_vec();
        let n = value.shape().num_elements();
        self.params.push((dims, value.reshape([n])));
        self.ids.push(param.id);
    }
}

fn float_params<M: Module>(module: &M) -> Vec<(Vec<usize>, Tensor<1>)> {
    collect(module).params
}

fn collect<M: Module>(module: &M) -> Collect {
    let mut collect = Collect::default();
    module.visit(&mut collect);
    collect
}

/// The shapes of `module`'s float parameters, in visiting order.
fn shapes<M: Module>(module: &M) -> Vec<Vec<usize>> {
    float_params(module).into_iter().map(|(s, _)| s).collect()
}

/// `module`'s float parameters, checked against `shapes` (another module's, see [`shapes`]):
/// the same count, the same shape each; otherwise a [`TrainError::Config`] on `field` that
/// names `this` module and the `other`.
fn checked_terms<M: Module>(
    module: &M,
    shapes: &[Vec<usize>],
    field: &str,
    this: &str,
    other: &str,
) -> TrainResult<Collect> {
    let collected = collect(module);
    if collected.params.len() != shapes.len() {
        return Err(TrainError::config(
            field,
            format!(
                "{this} has {} float parameters, {other} {}",
                collected.params.len(),
                shapes.len()
            ),
        ));
    }
    for (p, ((dims, _), expected)) in collected.params.iter().zip(shapes).enumerate() {
        if dims != expected {
            return Err(TrainError::config(
                field,
                format!("parameter {p} of {this} has shape {dims:?}, {other}'s {expected:?}"),
            ));
        }
    }
    Ok(collected)
}

/// Replaces each float parameter `p` by `(p + term) * scale`, taking the terms in visiting
/// order (`p * scale` once they run out); the parameter's id and its gradient requirement are
/// kept.
struct AddScaled {
    terms: std::vec::IntoIter<Tensor<1>>,
    scale: f32,
}

impl ModuleMapper for AddScaled {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // `mean` checked the count and the shapes of the terms it passes.
        let term = self.terms.next();
        let scale = self.scale;
        param.map(|t| {
            let require_grad = t.is_require_grad();
            let shape = t.shape();
            let sum = match term {
                Some(term) => t + term.reshape(shape),
                None => t,
            };
            (sum * scale).detach().set_require_grad(require_grad)
        })
    }
}

/// The mean of `modules`, parameter by parameter (float parameters only; integer and boolean
/// parameters, and every parameter id, are the first module's).
///
/// The modules must share one architecture: the same float parameters in the same order with
/// the same shapes; otherwise a [`TrainError::Config`] says which parameter differs. An empty
/// list is an error too.
pub fn mean<M: Module>(modules: Vec<M>) -> TrainResult<M> {
    let count = modules.len();
    let mut modules = modules.into_iter();
    let mut sum = modules
        .next()
        .ok_or_else(|| TrainError::config("average", "no module to average"))?;
    let shapes = shapes(&sum);
    for (index, module) in modules.enumerate() {
        let this = format!("module {}", index + 1);
        let terms = checked_terms(&module, &shapes, "average", &this, "the first")?.params;
        sum = sum.map(&mut AddScaled {
            terms: terms
                .into_iter()
                .map(|(_, value)| value)
                .collect::<Vec<_>>()
                .into_iter(),
            scale: 1.0,
        });
    }
    Ok(sum.map(&mut AddScaled {
        terms: Vec::new().into_iter(),
        scale: 1.0 / count as f32,
    }))
}

/// Replaces each float parameter `a` by `decay * a + (1 - decay) * m`, taking `m` from the
/// terms in visiting order (a term whose flag is set is copied as it is); the result is
/// detached and requires no gradient.
struct Blend {
    terms: std::vec::IntoIter<(Tensor<1>, bool)>,
    decay: f32,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // `ema_update` checked the count and the shapes of the terms.
        let term = self.terms.next();
        let decay = self.decay;
        param.map(|a| {
            let shape = a.shape();
            let blended = match term {
                Some((m, true)) => m.reshape(shape),
                Some((m, false)) => a * decay + m.reshape(shape) * (1.0 - decay),
                None => a,
            };
            blended.detach().set_require_grad(false)
        })
    }
}

/// One step of an exponential moving average of weights: every float parameter `a` of
/// `average` becomes `decay * a + (1 - decay) * m`, where `m` is the same parameter of
/// `model` (the weights after the optimiser's step). Parameters of `model` whose ids are in
/// `frozen` (the ones the optimiser leaves as they are, [`Stage::frozen`](super::Stage::frozen))
/// are copied instead, so that they stay bit for bit what they are (the blend of two equal
/// values can be off by a rounding). The average's parameters are detached and require no
/// gradient; its parameter ids are kept.
///
/// With `decay` 0.999 the average weighs the last ~1,000 steps (its time constant is
/// `1 / (1 - decay)` steps). `model` must share `average`'s architecture; otherwise a
/// [`TrainError::Config`] names the parameter that differs. `decay` must lie in `[0, 1)`.
pub fn ema_update<M: Module>(
    average: M,
    model: &M,
    decay: f64,
    frozen: &[ParamId],
) -> TrainResult<M> {
    if !(0.0..1.0).contains(&decay) {
        return Err(TrainError::config(
            "ema_decay",
            format!("{decay} is not within [0, 1)"),
        ));
    }
    let Collect { params, ids } = checked_terms(
        model,
        &shapes(&average),
        "ema_decay",
        "the model",
        "its average",
    )?;
    // The model's values only: the average must not hold on to its autodiff graph.
    let terms: Vec<(Tensor<1>, bool)> = params
        .into_iter()
        .zip(ids)
        .map(|((_, value), id)| (value.detach(), frozen.contains(&id)))
        .collect();
    Ok(average.map(&mut Blend {
        terms: terms.into_iter(),
        decay: decay as f32,
    }))
}

/// Sets each float parameter of `average` to require gradients exactly where the same
/// parameter of `model` does (in visiting order): the moving average, which requires none
/// while it is kept, made trainable as the weights it averages were, e.g. for a student stage
/// that trains copies of the teacher's trainable parameters. Values and ids are kept.
pub fn with_gradient_requirements_of<M: Module>(average: M, model: &M) -> M {
    struct Flags(Vec<bool>);
    impl ModuleVisitor for Flags {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.val().is_require_grad());
        }
    }
    struct Apply(std::vec::IntoIter<bool>);
    impl ModuleMapper for Apply {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let flag = self.0.next().unwrap_or(false);
            param.map(|t| t.detach().set_require_grad(flag))
        }
    }
    let mut flags = Flags(Vec::new());
    model.visit(&mut flags);
    average.map(&mut Apply(flags.0.into_iter()))
}

/// A copy of `model` to start an exponential moving average from: the same values, detached,
/// requiring no gradient.
pub fn ema_start<M: Module>(model: &M) -> M {
    model.clone().map(&mut Blend {
        terms: Vec::new().into_iter(),
        decay: 1.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::{Device, TensorData};

    fn linear_with(weight: [[f32; 3]; 2], bias: [f32; 3], device: &Device) -> Linear {
        let mut linear = LinearConfig::new(2, 3).init(device);
        linear.weight = Param::from_tensor(Tensor::from_data(TensorData::from(weight), device));
        linear.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::from(bias),
            device,
        )));
        linear
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec::<f32>().unwrap()
    }

    #[test]
    fn mean_is_the_elementwise_mean_and_keeps_the_first_ids() {
        let device = Device::flex();
        let a = linear_with([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [1.0, 1.0, 1.0], &device);
        let b = linear_with([[3.0, 2.0, 1.0], [0.0, 5.0, 8.0]], [2.0, 3.0, 4.0], &device);
        let c = linear_with([[2.0, 5.0, 2.0], [2.0, 2.0, 1.0]], [0.0, 2.0, 1.0], &device);
        let id = a.weight.id;
        let m = mean(vec![a, b, c]).unwrap();
        assert_eq!(m.weight.id, id);
        assert_eq!(
            values(m.weight.val()),
            vec![2.0, 3.0, 2.0, 2.0, 4.0, 5.0],
            "weights"
        );
        let bias: Vec<f32> = m
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(bias, vec![1.0, 2.0, 2.0]);
    }

    #[test]
    fn mean_of_one_module_is_that_module() {
        let device = Device::flex();
        let a = linear_with(
            [[1.5, -2.0, 3.25], [4.0, 0.5, 6.0]],
            [1.0, -1.0, 0.0],
            &device,
        );
        let before = values(a.weight.val());
        let m = mean(vec![a]).unwrap();
        assert_eq!(values(m.weight.val()), before);
    }

    #[test]
    fn ema_update_blends_towards_the_model_and_needs_no_gradient() {
        let device = Device::flex();
        let average = linear_with([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [0.0, 0.0, 0.0], &device);
        let model = linear_with(
            [[3.0, 2.0, 1.0], [0.0, 5.0, 8.0]],
            [2.0, 4.0, -4.0],
            &device,
        );
        let id = average.weight.id;
        let blended = ema_update(average, &model, 0.75, &[]).unwrap();
        assert_eq!(blended.weight.id, id);
        assert_eq!(
            values(blended.weight.val()),
            vec![1.5, 2.0, 2.5, 3.0, 5.0, 6.5]
        );
        let bias: Vec<f32> = blended
            .bias
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(bias, vec![0.5, 1.0, -1.0]);
        assert!(!blended.weight.val().is_require_grad());
        // Decay 0 copies the model; a decay outside [0, 1) is refused.
        let copied = ema_update(blended, &model, 0.0, &[]).unwrap();
        assert_eq!(values(copied.weight.val()), values(model.weight.val()));
        assert!(ema_update(copied.clone(), &model, 1.0, &[]).is_err());
        assert!(ema_update(copied, &model, f64::NAN, &[]).is_err());
    }

    #[test]
    fn frozen_parameters_are_copied_not_blended() {
        let device = Device::flex();
        let average = linear_with([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [0.0, 0.0, 0.0], &device);
        // Values whose blend with themselves is not exact in f32 (0.1 * 0.999 + 0.1 * 0.001).
        let model = linear_with(
            [[0.1, 0.7, 1.3], [2.9, -0.3, 1e-7]],
            [2.0, 4.0, -4.0],
            &device,
        );
        let blended = ema_update(average, &model, 0.999, &[model.weight.id]).unwrap();
        assert_eq!(values(blended.weight.val()), values(model.weight.val()));
        let bias: Vec<f32> = blended
            .bias
            .unwrap()
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        // The bias is not frozen: blended.
        for (got, want) in bias.iter().zip([0.002f32, 0.004, -0.004]) {
            assert!((got - want).abs() < 1e-6, "{got} against {want}");
        }
    }

    #[test]
    fn gradient_requirements_follow_the_model() {
        let device = Device::flex().autodiff();
        let mut model = LinearConfig::new(2, 3).init(&device);
        // A frozen bias, a trainable weight.
        model.bias = model.bias.map(|b| b.map(|t| t.set_require_grad(false)));
        let average = ema_start(&model);
        assert!(!average.weight.val().is_require_grad());
        let trainable = with_gradient_requirements_of(average, &model);
        assert!(trainable.weight.val().is_require_grad());
        assert!(!trainable.bias.as_ref().unwrap().val().is_require_grad());
        assert_eq!(values(trainable.weight.val()), values(model.weight.val()));
    }

    #[test]
    fn ema_start_copies_without_gradients_and_refuses_other_shapes() {
        let device = Device::flex().autodiff();
        let model = LinearConfig::new(2, 3).init(&device);
        assert!(model.weight.val().is_require_grad());
        let start = ema_start(&model);
        assert_eq!(values(start.weight.val()), values(model.weight.val()));
        assert!(!start.weight.val().is_require_grad());
        let other = LinearConfig::new(3, 2).init(&device);
        let err = ema_update(start, &other, 0.9, &[]).unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
    }

    #[test]
    fn modules_of_other_shapes_are_refused() {
        let device = Device::flex();
        let a = LinearConfig::new(2, 3).init(&device);
        let b = LinearConfig::new(3, 2).init(&device);
        let err = mean(vec![a, b]).unwrap_err().to_string();
        assert!(err.contains("shape"), "{err}");
        let c = LinearConfig::new(2, 3).with_bias(false).init(&device);
        let d = LinearConfig::new(2, 3).init(&device);
        let err = mean(vec![c, d]).unwrap_err().to_string();
        assert!(err.contains("float parameters"), "{err}");
        assert!(mean(Vec::<Linear>::new()).is_err());
    }
}
