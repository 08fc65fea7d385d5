//! Small conversions between burn tensors and plain vectors.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};

/// A float tensor of rank `D` from row-major values. Errors if `values` does not fill `shape`.
pub fn from_vec<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Result<Tensor<D>> {
    let n: usize = shape.iter().product();
    if n != values.len() {
        return Err(Error::input_shape(
            "tensor data",
            format!("{shape:?} ({n} values)"),
            &[values.len()],
        ));
    }
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

/// A float tensor from a dynamic shape (rank must be `D`).
pub fn from_dyn<const D: usize>(
    values: Vec<f32>,
    shape: &[usize],
    device: &Device,
) -> Result<Tensor<D>> {
    let dims: [usize; D] = shape
        .try_into()
        .map_err(|_| Error::input_shape("tensor data", format!("rank {D}"), shape))?;
    from_vec(values, dims, device)
}

/// The values of a float tensor, row-major, as f32.
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("a converted f32 tensor reads back as f32")
}

/// The shape of a tensor as a `Vec`.
pub fn dims<const D: usize>(t: &Tensor<D>) -> Vec<usize> {
    t.dims().to_vec()
}
