//! The architectures, one file per family, each next to its paper's table.

pub mod alexnet;
pub mod inception;
pub mod mobilenet;
pub mod resnet;
pub mod squeezenet;
pub mod vgg;

use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module};

/// Applies a classifier MLP: ReLU after every layer but the last (dropout is the identity).
pub(crate) fn mlp(layers: &[Linear], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, l) in layers.iter().enumerate() {
        h = l.forward(&h)?;
        if i + 1 < layers.len() {
            h = h.relu()?;
        }
    }
    Ok(h)
}
