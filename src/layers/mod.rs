//! Building blocks: the layers and composite blocks the architectures are made of.
//! Each is built once at load (BatchNorm folded, kernels laid out) and implements
//! candle's [`Module`](candle_core::Module).

pub mod activation;
pub mod batch_norm;
pub mod conv;
pub mod fire;
pub mod inception;
pub mod inverted_residual;
pub mod linear;
pub mod padding;
pub mod pool;
pub mod residual;
pub mod separable;

pub use activation::Activation;
pub use batch_norm::{BatchNorm2d, Norm};
pub use conv::{Conv2d, ConvSpec};
pub use fire::Fire;
pub use inverted_residual::InvertedResidual;
pub use padding::{Padding, PaddingMode, RoundMode};
pub use pool::{global_avg_pool, AdaptiveAvgPool2d, AvgPool2d, MaxPool2d, PoolSpec};
pub use residual::{BasicBlock, Bottleneck, ResidualStyle};
pub use separable::DepthwiseSeparable;

/// `nn.Linear` (weight `out×in`, bias `out`). Dropout, which precedes it in most heads, is the
/// identity at inference and has no weights.
pub use linear::{linear, Linear};

/// `nn.Flatten(1)`: N×C×H×W → N×(C·H·W).
pub fn flatten(x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    x.flatten_from(1)
}

/// Runs `f` on the contiguous f32 data of a CPU tensor (`name` says whose, in errors).
pub(crate) fn with_cpu_f32<R>(
    x: &candle_core::Tensor,
    name: &str,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    use crate::kernels::storage::{with_tensor_view, WeightsView};
    with_tensor_view(x, name, |data| match data {
        WeightsView::F32(data) => Ok(f(data)),
        _ => candle_core::bail!("`{name}`: expected f32 data, got {:?}", x.dtype()),
    })?
}
