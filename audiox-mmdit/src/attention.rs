//! The DiT block's two attentions: self-attention over the token sequence and the degenerate
//! cross-attention to the time token.
//!
//! Both official projections pack their outputs **interleaved**: feature `i = head * hd + d`
//! of part `j` (q/k/v, or k/v) sits at row `i * parts + j` (einops `(h d j)`, `j` fastest). At
//! load we permute the rows into contiguous parts (`[q | k | v]`, each head-major) with a
//! [`Transform::PermuteRows`] override (see [`interleaved_rows`]), so the forward pass splits
//! by plain slicing.

use std::sync::Arc;

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use audiox_core::nn::{merge_heads, sdpa};
use audiox_core::precision::{
    WeightPrecision, for_products, held_precision, linear, reduce, weight_as, widen,
};
use audiox_core::weights::{Layout, Source, Transform};

use crate::rope::RotaryTable;

/// Epsilon of the weightless RMS norm on queries and keys.
pub(crate) const QK_NORM_EPS: f64 = 1e-6;

/// Row permutation from an interleaved packed projection to contiguous parts: our row
/// `j * width + i` is official row `i * parts + j`, for `rows = parts * width`.
pub(crate) fn interleaved_to_contiguous(rows: usize, parts: usize) -> Vec<usize> {
    let width = rows / parts;
    (0..parts)
        .flat_map(|j| (0..width).map(move |i| i * parts + j))
        .collect()
}

/// Adds a layout override that loads the parameters matching `pattern` (the weight and bias of
/// an interleaved packed projection with `parts` parts) with their rows made contiguous.
pub(crate) fn interleaved_rows(layout: Layout, pattern: &str, parts: usize) -> Layout {
    layout.with_source(pattern, move |spec, official| {
        // burn Linear weight [in, parts * width]; bias [parts * width].
        let rows = *spec
            .shape
            .last()
            .expect("a projection parameter has a shape");
        Source {
            keys: vec![official.to_string()],
            transform: Transform::PermuteRows(Arc::new(interleaved_to_contiguous(rows, parts))),
        }
    })
}

/// The official interleaved layout of a packed projection's output `[B, N, parts * W]` held
/// contiguously by us (the layout the fixtures record): element `i * parts + j` = part `j`,
/// feature `i`.
pub(crate) fn to_interleaved(packed: Tensor<3>, parts: usize) -> Tensor<3> {
    let [b, n, width] = packed.dims();
    packed
        .reshape([b, n, parts, width / parts])
        .swap_dims(2, 3)
        .reshape([b, n, width])
}

/// Weightless RMS normalisation over the last axis: `x / sqrt(mean(x^2) + eps)` (the mean of
/// squares in f32 for half-precision activations, [`audiox_core::half::rms_norm`]).
pub(crate) fn rms_norm<const D: usize>(x: Tensor<D>, eps: f64) -> Tensor<D> {
    audiox_core::half::rms_norm(x, eps)
}

/// Configuration of a [`SelfAttention`] and a [`TimeCrossAttention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Width `E`.
    pub width: usize,
    /// Heads (`E / heads` elements each).
    pub heads: usize,
}

/// Multi-head self-attention with RMS-normalised, rotary-embedded queries and keys, without an
/// output projection (the block's `linear1` convolution follows).
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Packed projection `E -> 3E`, rows loaded as contiguous `[q | k | v]`, each head-major
    /// (official `attn.qkv`, interleaved).
    pub qkv: Linear,
    /// Heads.
    pub heads: usize,
}

impl AttentionConfig {
    /// Builds the self-attention; parameters stay lazy.
    pub fn init_self(&self, device: &Device) -> SelfAttention {
        SelfAttention {
            qkv: LinearConfig::new(self.width, 3 * self.width).init(device),
            heads: self.heads,
        }
    }

    /// Builds the cross-attention; parameters stay lazy.
    pub fn init_cross(&self, device: &Device) -> TimeCrossAttention {
        TimeCrossAttention {
            to_q: LinearConfig::new(self.width, self.width)
                .with_bias(false)
                .init(device),
            to_kv: LinearConfig::new(self.width, 2 * self.width)
                .with_bias(false)
                .init(device),
            heads: self.heads,
        }
    }
}

impl SelfAttention {
    /// The packed projection `[B, N, E]` -> `[B, N, 3E]` (our contiguous `[q | k | v]` layout).
    pub fn project(&self, x: Tensor<3>) -> Tensor<3> {
        linear(&self.qkv, x)
    }

    /// Attention from the packed projection: `[B, N, 3E]` -> heads merged `[B, N, E]`
    /// (feature `head * hd + d`).
    pub fn attend(&self, qkv: Tensor<3>, rope: &RotaryTable) -> Tensor<3> {
        let [b, n, three_e] = qkv.dims();
        let e = three_e / 3;
        let (h, hd) = (self.heads, e / self.heads);
        // q and k together: [B, N, 2H, hd], normalised per head, then rotated.
        let qk = qkv.clone().narrow(2, 0, 2 * e).reshape([b, n, 2 * h, hd]);
        let qk = rope.apply(rms_norm(qk, QK_NORM_EPS));
        let q = qk.clone().narrow(2, 0, h).swap_dims(1, 2);
        let k = qk.narrow(2, h, h).swap_dims(1, 2);
        let v = qkv
            .narrow(2, 2 * e, e)
            .reshape([b, n, h, hd])
            .swap_dims(1, 2);
        // Default scale 1/sqrt(hd), no mask.
        merge_heads(sdpa(q, k, v, None))
    }
}

/// The block's cross-attention, whose context is the single time token.
///
/// upstream: `CrossAttention.forward` unpacks its `(q, k, v)` as `(q, v, k)` and attends with
/// the RMS-normed key projection as the *values* and the raw value projection as the *keys*.
/// With one context token every softmax weight is exactly 1, so the output is that token's
/// RMS-normed key projection, the same for every position, whatever the queries: no
/// normalisation, modulation, gate or output projection is involved and `to_q` has no effect.
/// We compute only that vector ([`TimeCrossAttention::time_term`]): one `[E, E]` matvec per
/// block instead of an `[N, E] x [E, E]` projection plus an attention. `to_q` and the value
/// half of `to_kv` are still held so that the official weights load one-to-one.
#[derive(Module, Debug)]
pub struct TimeCrossAttention {
    /// Query projection (official `cross_attn.to_q`); mathematically dead, never computed.
    pub to_q: Linear,
    /// Packed key/value projection `E -> 2E`, rows loaded as contiguous `[k | v]`, head-major
    /// (official `cross_attn.to_kv`, interleaved); only the key half is computed.
    pub to_kv: Linear,
    /// Heads.
    pub heads: usize,
}

/// A bias-free `Linear` of no size, standing in for a released dead projection.
pub(crate) fn released_linear(device: &Device) -> Linear {
    Linear {
        weight: burn::module::Param::from_tensor(Tensor::zeros([0, 0], device)),
        bias: None,
    }
}

impl TimeCrossAttention {
    /// Releases what never reaches the output: `to_q` entirely and the value half of `to_kv`
    /// (which becomes the contiguous `[E, E]` key projection). Output-identical; the module no
    /// longer has the official shapes. See [`crate::Dit::without_dead_weights`].
    pub fn without_dead_weights(self) -> Self {
        let device = self.to_kv.weight.device();
        let [e, two_e] = self.to_kv.weight.shape().dims();
        let key_half = if two_e == 2 * e {
            // Copied out of the packed weight, in the precision it is held in.
            let weight = self.to_kv.weight.val();
            let precision = held_precision(&weight);
            let data = widen(weight).narrow(1, 0, e).into_data();
            for_products(reduce(Tensor::<2>::from_data(data, &device), precision))
        } else {
            self.to_kv.weight.val() // already released
        };
        TimeCrossAttention {
            to_q: released_linear(&device),
            to_kv: Linear {
                weight: burn::module::Param::from_tensor(key_half),
                bias: None,
            },
            heads: self.heads,
        }
    }

    /// The cross-attention output for the time token `time` `[B, E]`: `[B, 1, E]`, to be added
    /// to every position.
    pub fn time_term(&self, time: Tensor<2>) -> Tensor<3> {
        // upstream: the reference attends with keys = raw v and values = RMS(k); a single
        // context token gets softmax weight exactly 1, so the result is RMS(k) itself.
        let [b, e] = time.dims();
        let hd = e / self.heads;
        let weight = self.to_kv.weight.val();
        let key = if held_precision(&weight) == WeightPrecision::F32 {
            // [E, E] in the time token's float type (no copy when it already is).
            let dtype = time.dtype();
            time.matmul(weight_as(weight, dtype).narrow(1, 0, e))
        } else {
            // A reduced weight multiplied where it lies, by the precision's kernel, and the
            // key half of the output kept: widening it to f32 for this matvec wrote the whole
            // weight out again at every step (5-7 % of a bf16 or int8 DiT step, measured).
            linear(&self.to_kv, time).narrow(1, 0, e)
        };
        let key = key.reshape([b, 1, self.heads, hd]);
        rms_norm(key, QK_NORM_EPS).reshape([b, 1, e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiox_core::tensor::{from_vec, to_vec};
    use audiox_core::weights::{StateDict, WeightSource, load_module};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let x = (i as u32 ^ seed).wrapping_mul(2_654_435_761);
                ((x >> 8) as f32 / (1u32 << 24) as f32) - 0.5
            })
            .collect()
    }

    /// The shortcut equals the reference's swapped attention computed the long way from the
    /// official interleaved weights: queries `RMS(to_q(h))` per head, keys = the raw value
    /// half of `to_kv(t)`, values = the RMS-normed key half, softmax attention, heads merged.
    #[test]
    fn time_term_equals_the_swapped_attention() {
        let device = Device::flex();
        let (b, n, e, heads) = (2, 5, 12, 3);
        let hd = e / heads;
        let wq = values(e * e, 1); // torch [out, in]
        let wkv = values(2 * e * e, 2); // torch [2E, E], rows interleaved (h d j)
        let dict = StateDict::from_f32(
            "memory",
            vec![
                ("to_q.weight".into(), vec![e, e], wq.clone()),
                ("to_kv.weight".into(), vec![2 * e, e], wkv.clone()),
            ],
        )
        .unwrap();
        let layout = interleaved_rows(Layout::new(), r"^to_kv\.weight$", 2);
        let cross = AttentionConfig::new(e, heads).init_cross(&device);
        let (cross, _) = load_module(cross, &layout, &[WeightSource::new(&dict)]).unwrap();

        let h = from_vec(values(b * n * e, 3), [b, n, e], &device).unwrap();
        let time = from_vec(values(b * e, 4), [b, e], &device).unwrap();
        let shortcut = to_vec(cross.time_term(time.clone()).repeat_dim(1, n));

        // The long way, on official layouts.
        let wq_t = from_vec(wq, [e, e], &device).unwrap().transpose();
        let q = h.matmul(wq_t.unsqueeze()).reshape([b, n, heads, hd]);
        let q = rms_norm(q, QK_NORM_EPS).swap_dims(1, 2); // [B, H, N, hd]
        let kv = to_vec(time.matmul(from_vec(wkv, [2 * e, e], &device).unwrap().transpose()));
        let part = |j: usize| -> Vec<f32> {
            (0..b)
                .flat_map(|bi| (0..e).map(move |i| (bi, i)))
                .map(|(bi, i)| kv[bi * 2 * e + i * 2 + j])
                .collect()
        };
        let as_heads = |v: Vec<f32>| {
            from_vec(v, [b, 1, heads, hd], &device)
                .unwrap()
                .swap_dims(1, 2)
        };
        let k = rms_norm(as_heads(part(0)), QK_NORM_EPS);
        let v = as_heads(part(1));
        // upstream swap: keys <- raw v, values <- normed k.
        let long = to_vec(merge_heads(sdpa(q, v, k, None)));

        assert_eq!(shortcut.len(), long.len());
        let err = shortcut
            .iter()
            .zip(&long)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-6, "max err {err}");
    }

    /// With the key/value projection held in bf16 or int8 the time term is the precision's
    /// product on the whole packed weight, key half kept (no f32 copy of the weight): it stays
    /// within that precision's error of the f32 term, also after the value half is released.
    #[test]
    fn time_term_with_a_reduced_weight_follows_the_f32_term() {
        let device = Device::flex();
        // Sizes the int8 and AMX kernels take natively (multiples of 64).
        let (b, e, heads) = (3, 128, 4);
        let cross = AttentionConfig::new(e, heads).init_cross(&device);
        let weight = from_vec(values(e * 2 * e, 7), [e, 2 * e], &device).unwrap();
        let cross = TimeCrossAttention {
            to_kv: Linear {
                weight: burn::module::Param::from_tensor(weight),
                bias: None,
            },
            ..cross
        };
        let time = from_vec(values(b * e, 8), [b, e], &device).unwrap();
        let want = to_vec(cross.time_term(time.clone()));
        for (precision, tolerance) in [
            (WeightPrecision::Bf16, 2e-2f32),
            (WeightPrecision::Int8, 4e-2),
        ] {
            let held = audiox_core::precision::convert_module(cross.clone(), precision);
            assert_eq!(held_precision(&held.to_kv.weight.val()), precision);
            for module in [held.clone(), held.without_dead_weights()] {
                let got = to_vec(module.time_term(time.clone()));
                assert_eq!(got.len(), want.len());
                // RMS-normed outputs are of order one.
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(err < tolerance, "{precision}: max err {err}");
                assert!(err > 0.0, "{precision}: the reduced weight was not used");
            }
        }
    }

    #[test]
    fn interleaved_permutation_gathers_each_part() {
        // 2 parts of width 3: official rows q0 k0 q1 k1 q2 k2.
        assert_eq!(interleaved_to_contiguous(6, 2), vec![0, 2, 4, 1, 3, 5]);
        assert_eq!(interleaved_to_contiguous(6, 3), vec![0, 3, 1, 4, 2, 5]);
    }
}
