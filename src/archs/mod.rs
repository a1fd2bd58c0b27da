//! The architectures, one file per family, each next to its paper's table.

pub mod alexnet;
pub mod inception;
pub mod mobilenet;
pub mod resnet;
pub mod squeezenet;
pub mod vgg;

use crate::layers::Linear;
use candle_core::{Result, Tensor};

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

/// Class activation maps of a linear classifier after global average pooling:
/// `M_k(x, y) = Σ_c W[k, c] · f_c(x, y)` (Zhou et al. 2016, Eq. 2), N×K×h×w.
pub(crate) fn linear_cams(classifier: Option<&Linear>, features: &Tensor) -> Result<Option<Tensor>> {
    let Some(fc) = classifier else { return Ok(None) };
    let (n, c, h, w) = features.dims4()?;
    let f = features.reshape((n, c, h * w))?;
    let k = fc.weight().dim(0)?;
    let maps = fc
        .weight()
        .to_dtype(features.dtype())?
        .unsqueeze(0)?
        .broadcast_as((n, k, c))?
        .contiguous()?
        .matmul(&f)?; // N×K×hw
    Ok(Some(maps.reshape((n, k, h, w))?))
}
