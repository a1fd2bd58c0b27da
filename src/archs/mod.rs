//! The architectures, one file per family, each next to its paper's table.

pub mod alexnet;
pub mod inception;
pub mod mobilenet;
pub mod resnet;
pub mod squeezenet;
pub mod vgg;

use candle_core::{Result, Tensor};
use candle_nn::Linear;

/// Applies a classifier MLP: ReLU after every layer but the last (dropout is the identity).
/// `names` are the layers' module paths.
pub(crate) fn mlp(layers: &[Linear], names: &[&str], x: &Tensor) -> Result<Tensor> {
    let mut h = x.clone();
    for (i, (l, name)) in layers.iter().zip(names).enumerate() {
        h = crate::trace::linear(name, l, &h)?;
        if i + 1 < layers.len() {
            h = h.relu()?;
        }
    }
    Ok(h)
}
