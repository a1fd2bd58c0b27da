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

/// `Tensor::cat(parts, 1)` for N×Cᵢ×H×W tensors (Fire and Inception modules): on the CPU in
/// f32, one parallel copy per (image, part) into an uninitialised output
/// ([`crate::kernels::concat_channels_f32`]); elsewhere candle's `cat`.
pub fn cat_channels(parts: &[candle_core::Tensor]) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Storage, Tensor};
    let fast = !parts.is_empty()
        && parts
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.device().is_cpu() && t.rank() == 4)
        && parts.iter().all(|t| {
            let (d0, d) = (parts[0].dims(), t.dims());
            d[0] == d0[0] && d[2..] == d0[2..]
        });
    if !fast {
        return Tensor::cat(parts, 1);
    }
    let parts: Vec<Tensor> = parts
        .iter()
        .map(|t| t.contiguous())
        .collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = parts.iter().map(|t| t.storage_and_layout()).collect();
    let mut slices = Vec::with_capacity(parts.len());
    for (storage, layout) in &guards {
        let Storage::Cpu(cpu) = &**storage else {
            candle_core::bail!("cat_channels: expected a CPU tensor")
        };
        let (a, z) = layout.contiguous_offsets().expect("contiguous");
        slices.push(&cpu.as_slice::<f32>()?[a..z]);
    }
    let (n, _, h, w) = parts[0].dims4()?;
    let channels: Vec<usize> = parts.iter().map(|t| t.dim(1)).collect::<candle_core::Result<_>>()?;
    let y = crate::kernels::concat_channels_f32(&slices, &channels, n, h * w);
    let c = channels.iter().sum::<usize>();
    drop(guards);
    Tensor::from_vec(y, (n, c, h, w), parts[0].device())
}
