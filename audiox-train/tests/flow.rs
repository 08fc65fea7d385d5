//! The rectified-flow objective: the reference's convention, condition dropout, and a tiny DiT
//! (the test model's sizes) that learns under burn's autodiff.

use audiox_train::train::flow::{TimeSampler, drop_condition, flow_batch, flow_loss, normals};
use audiox_train::train::init::random_init;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

#[test]
fn the_flow_batch_follows_the_reference_convention() {
    let device = Device::flex();
    let dims = [3, 4, 5];
    let n: usize = dims.iter().product();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let x0_values = normals(&mut rng, n);
    let x0 = Tensor::<3>::from_data(TensorData::new(x0_values.clone(), dims), &device);
    for sampler in [TimeSampler::LogitNormal, TimeSampler::Uniform] {
        let b = flow_batch(x0.clone(), sampler, 0.0, &mut rng, &device);
        let t = values(b.t.clone());
        assert!(t.iter().all(|&t| t > 0.0 && t < 1.0), "{t:?}");
        // x0 = z_t - t v, and z_t is x0 at t = 0 and the noise at t = 1 (v = eps - x0).
        let z = values(b.z_t.clone());
        let v = values(b.target.clone());
        let per_row = n / dims[0];
        for i in 0..n {
            let ti = t[i / per_row];
            let back = z[i] - ti * v[i];
            assert!(
                (back - x0_values[i]).abs() < 1e-5,
                "{back} vs {}",
                x0_values[i]
            );
            let eps = v[i] + x0_values[i];
            assert!((z[i] - ((1.0 - ti) * x0_values[i] + ti * eps)).abs() < 1e-5);
        }
        assert!(b.dropped.iter().all(|&d| !d));
    }
    assert!(
        flow_batch(x0.clone(), TimeSampler::Uniform, 1.0, &mut rng, &device)
            .dropped
            .iter()
            .all(|&d| d)
    );

    let context = Tensor::<3>::ones([3, 2, 2], &device);
    let dropped = values(drop_condition(context, &[false, true, false]));
    assert_eq!(dropped, [1., 1., 1., 1., 0., 0., 0., 0., 1., 1., 1., 1.]);
}

#[test]
fn a_tiny_dit_fits_a_fixed_batch_under_autodiff() {
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build_global();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/tiny/bundle/config.json"
    );
    let config = audiox::ModelConfig::from_file(path).unwrap();
    let device = Device::flex().autodiff();
    let mut dit = random_init(config.dit().clone().init(&device).unwrap(), 3);
    let (c, l) = (dit.io_channels(), dit.latent_length());
    let [tokens, d] = dit.context_shape();
    let batch = 2;
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x0 = Tensor::<3>::from_data(
        TensorData::new(normals(&mut rng, batch * c * l), [batch, c, l]),
        &device,
    );
    let context = Tensor::<3>::from_data(
        TensorData::new(normals(&mut rng, batch * tokens * d), [batch, tokens, d]),
        &device,
    );
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::new();
    for _ in 0..40 {
        // The same times and noise every step: a fixed regression problem.
        let mut step_rng = ChaCha8Rng::seed_from_u64(9);
        let out = flow_loss(
            &dit,
            x0.clone(),
            context.clone(),
            TimeSampler::LogitNormal,
            0.0,
            &mut step_rng,
        )
        .unwrap();
        losses.push(out.terms["flow_mse"]);
        let grads = GradientsParams::from_grads(out.loss.backward(), &dit);
        dit = optim.step(1e-3, dit, grads);
    }
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(
        last < 0.5 * first,
        "flow loss {first} -> {last}: {losses:?}"
    );
}

/// The model's linear layers (`audiox_core::precision::matmul_weight`, whose f32 products on
/// the CPU take `audiox_kernels::linear_f32`) keep burn's autodiff graph: at a shape the fast
/// kernel would take outside autodiff (several rows, more than 128 columns), the gradients of
/// the input, weight and bias are burn's own `linear`'s, value for value.
#[test]
fn the_model_linear_layers_keep_their_gradients_under_autodiff() {
    let device = Device::flex().autodiff();
    let (m, k, n) = (24, 40, 300);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Tensor::<3>::from_data(
        TensorData::new(normals(&mut rng, m * k), [1, m, k]),
        &device,
    );
    let w = Tensor::<2>::from_data(TensorData::new(normals(&mut rng, k * n), [k, n]), &device);
    let b = Tensor::<1>::from_data(TensorData::new(normals(&mut rng, n), [n]), &device);
    let upstream = Tensor::<3>::from_data(
        TensorData::new(normals(&mut rng, m * n), [1, m, n]),
        &device,
    );
    let gradients = |ours: bool| {
        let (x, w, b) = (
            x.clone().require_grad(),
            w.clone().require_grad(),
            b.clone().require_grad(),
        );
        let y = if ours {
            audiox_core::precision::matmul_weight(x.clone(), w.clone(), Some(b.clone()))
        } else {
            burn::tensor::module::linear(x.clone(), w.clone(), Some(b.clone()))
        };
        let grads = (y * upstream.clone()).sum().backward();
        [
            values(x.grad(&grads).expect("x has a gradient")),
            values(w.grad(&grads).expect("w has a gradient")),
            values(b.grad(&grads).expect("b has a gradient")),
        ]
    };
    let (ours, burns) = (gradients(true), gradients(false));
    for (name, (a, b)) in ["x", "w", "b"].iter().zip(ours.iter().zip(&burns)) {
        assert_eq!(a.len(), b.len(), "{name}");
        assert!(a.iter().any(|v| *v != 0.0), "{name}: no gradient flowed");
        assert!(a == b, "{name}: the gradient differs from burn's linear");
    }
}
