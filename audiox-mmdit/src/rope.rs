//! Rotary position embedding of the DiT's self-attention: adjacent-pair (GPT-J style)
//! rotation of each head's query and key, positions `0..N` (the time token is position 0).

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use audiox_core::Result;
use audiox_core::tensor::from_vec;

/// The rotation table for `seq_len` positions and heads of `head_dim` elements. Not a weight:
/// it is recomputed from the sizes, in f32 as the reference builds it.
///
/// Element pairs `(2i, 2i + 1)` of a head at position `n` rotate by
/// `theta = n * base^(-2i / head_dim)`:
/// `y[2i] = cos(theta) x[2i] - sin(theta) x[2i+1]`, `y[2i+1] = sin(theta) x[2i] + cos(theta) x[2i+1]`.
/// Computed as `y = x * cos + swap_pairs(x) * sin_signed` with per-element tables.
#[derive(Module, Debug)]
pub struct RotaryTable {
    /// `cos(theta)` repeated over each pair, `[1, N, 1, head_dim]`.
    cos: Tensor<4>,
    /// `-sin(theta)` at even and `+sin(theta)` at odd elements, `[1, N, 1, head_dim]`.
    sin_signed: Tensor<4>,
}

impl RotaryTable {
    /// The table for `seq_len` positions of `head_dim` (even) elements with frequency base
    /// `base` (10000 in AudioX).
    pub fn new(seq_len: usize, head_dim: usize, base: f32, device: &Device) -> Result<Self> {
        let pairs = head_dim / 2;
        // upstream: frequencies and angles are f32 (`compute_rope_rotations` builds them in
        // float32 with autocast off); only cos/sin of the f32 angle are evaluated exactly.
        let freqs: Vec<f32> = (0..pairs)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(seq_len * head_dim);
        let mut sin_signed = Vec::with_capacity(seq_len * head_dim);
        for n in 0..seq_len {
            for &f in &freqs {
                let angle = (n as f32 * f) as f64;
                let (s, c) = (angle.sin() as f32, angle.cos() as f32);
                cos.extend([c, c]);
                sin_signed.extend([-s, s]);
            }
        }
        let shape = [1, seq_len, 1, head_dim];
        Ok(RotaryTable {
            cos: from_vec(cos, shape, device)?,
            sin_signed: from_vec(sin_signed, shape, device)?,
        })
    }

    /// Positions the table covers.
    pub fn seq_len(&self) -> usize {
        self.cos.dims()[1]
    }

    /// Rotates `x` `[B, N, heads, head_dim]` (positions along axis 1).
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, n, h, d] = x.dims();
        let swapped = x
            .clone()
            .reshape([b, n, h, d / 2, 2])
            .flip([4])
            .reshape([b, n, h, d]);
        x * self.cos.clone() + swapped * self.sin_signed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use audiox_core::tensor::to_vec;

    /// The table form equals the explicit pairwise rotation.
    #[test]
    fn rotates_adjacent_pairs() {
        let device = Device::flex();
        let (n, h, d) = (5, 2, 6);
        let values: Vec<f32> = (0..n * h * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = from_vec(values.clone(), [1, n, h, d], &device).unwrap();
        let table = RotaryTable::new(n, d, 10000.0, &device).unwrap();
        let got = to_vec(table.apply(x));
        for pos in 0..n {
            for head in 0..h {
                for i in 0..d / 2 {
                    let theta = pos as f64 * 10000f64.powf(-2.0 * i as f64 / d as f64);
                    let at = (pos * h + head) * d + 2 * i;
                    let (x0, x1) = (values[at] as f64, values[at + 1] as f64);
                    let y0 = theta.cos() * x0 - theta.sin() * x1;
                    let y1 = theta.sin() * x0 + theta.cos() * x1;
                    assert!((got[at] as f64 - y0).abs() < 1e-5, "pos {pos} pair {i}");
                    assert!((got[at + 1] as f64 - y1).abs() < 1e-5, "pos {pos} pair {i}");
                }
            }
        }
    }
}
