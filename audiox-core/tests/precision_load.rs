//! Loading into a reduced precision: only matmul weights are converted, each one as it is read,
//! to exactly what converting the f32 module would give.

use std::collections::BTreeMap;

use audiox_core::nn::{TorchEncoderLayer, TorchEncoderLayerConfig, with_torch_mha_names};
use audiox_core::precision::{WeightPrecision, convert_module, held_precision, is_held_transposed};
use audiox_core::tensor::to_vec;
use audiox_core::weights::{Layout, StateDict, WeightSource, load_module, official_names};
use burn::module::Module;
use burn::tensor::{DType, Device, Distribution, Tensor};

/// Deterministic values for every official tensor of the layer.
fn checkpoint(layer: &TorchEncoderLayer, layout: &Layout) -> StateDict {
    let names: BTreeMap<String, Vec<usize>> = official_names(layer, layout);
    let tensors = names
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n: usize = shape.iter().product();
            let values = (0..n)
                .map(|j| {
                    let x = ((i * 7919 + j) as u32).wrapping_mul(2_654_435_761);
                    ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.4
                })
                .collect();
            (name, shape, values)
        })
        .collect();
    StateDict::from_f32("memory", tensors).unwrap()
}

fn load(dict: &StateDict, layout: &Layout, p: WeightPrecision) -> TorchEncoderLayer {
    let device = Device::flex();
    // Sizes from the layer config; the heads divide the width.
    let fresh = TorchEncoderLayerConfig::new(64, 4, 128).init(&device);
    load_module(fresh, layout, &[WeightSource::new(dict).with_precision(p)])
        .unwrap()
        .0
}

#[test]
fn only_matmul_weights_are_converted_and_match_an_in_memory_conversion() {
    let device = Device::flex();
    let layout = with_torch_mha_names(Layout::new());
    let template = TorchEncoderLayerConfig::new(64, 4, 128).init(&device);
    let dict = checkpoint(&template, &layout);
    let reference = load(&dict, &layout, WeightPrecision::F32);
    let x = Tensor::<3>::random([2, 5, 64], Distribution::Default, &device);
    let want = to_vec(reference.forward(x.clone()));
    for p in [WeightPrecision::Bf16, WeightPrecision::Int8] {
        let layer = load(&dict, &layout, p);
        for w in [
            layer.linear1.weight.val(),
            layer.linear2.weight.val(),
            layer.self_attn.in_proj.weight.val(),
            layer.self_attn.out_proj.weight.val(),
        ] {
            assert_eq!(held_precision(&w), p);
            // Held transposed where this CPU's kernel for the precision (AMX) reads it
            // fastest; every size here fits the tiles.
            let [k, n] = w.dims();
            let prefers = match p {
                WeightPrecision::Bf16 => audiox_kernels::bf16::prefers_transposed(k, n),
                _ => audiox_kernels::int8::prefers_transposed(k, n, k.min(255)),
            };
            assert_eq!(is_held_transposed(&w), prefers, "{p} [{k}, {n}]");
        }
        // Biases and norms stay f32.
        assert_eq!(
            layer.linear1.bias.as_ref().unwrap().val().dtype(),
            DType::F32
        );
        assert_eq!(layer.norm1.gamma.val().dtype(), DType::F32);
        // The loader's conversion is the in-memory one, value for value.
        let converted = convert_module(reference.clone(), p);
        let got = to_vec(layer.forward(x.clone()));
        assert_eq!(got, to_vec(converted.forward(x.clone())), "{p}");
        let (mut e, mut n) = (0.0f64, 0.0f64);
        for (a, b) in got.iter().zip(&want) {
            e += ((a - b) as f64).powi(2);
            n += (*b as f64).powi(2);
        }
        let rel = (e / n).sqrt();
        assert!(rel > 0.0 && rel < 2e-2, "{p}: {rel}");
        assert_eq!(layer.num_params(), reference.num_params());
    }
}

/// A linear weight handed over in torch's `[out, in]` layout is held exactly as the general
/// path holds it after transposing (values, scales, layout), or handed back untouched where
/// it would not be held transposed.
#[test]
fn a_weight_given_transposed_is_held_as_the_general_path_holds_it() {
    use audiox_core::precision::{hold_matmul_weight, hold_matmul_weight_transposed};
    let device = Device::flex();
    for (k, n) in [
        (192usize, 64usize),
        (128, 96),
        (256, 32),
        (100, 64),
        (64, 40),
    ] {
        let official: Vec<f32> = (0..n * k)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 8) as f32 / 16_777_216.0 - 0.5)
            .collect();
        // Ours: [k, n], row r column c = official [c, r].
        let mut ours = vec![0.0f32; k * n];
        for c in 0..n {
            for r in 0..k {
                ours[r * n + c] = official[c * k + r];
            }
        }
        for p in WeightPrecision::ALL {
            let want: Tensor<2> = hold_matmul_weight(ours.clone(), vec![k, n], p, &device);
            match hold_matmul_weight_transposed::<2>(official.clone(), &[k, n], p, &device) {
                Ok(got) => {
                    assert!(is_held_transposed(&got), "{p} [{k}, {n}]");
                    assert!(is_held_transposed(&want), "{p} [{k}, {n}]: general path");
                    assert_eq!(got.dtype(), want.dtype());
                    assert_eq!(got.into_data(), want.into_data(), "{p} [{k}, {n}]");
                }
                Err(back) => {
                    assert_eq!(back, official, "handed back untouched");
                    assert!(
                        !is_held_transposed(&want),
                        "{p} [{k}, {n}]: missed the fast path"
                    );
                }
            }
        }
    }
}
