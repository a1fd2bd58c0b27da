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

/// Whether a model's forward pass on `x` runs on channel-blocked data
/// ([`crate::kernels::nchwc`]): AVX-512, f32 on the CPU, and no tracer that wants NCHW layer
/// outputs ([`crate::trace::wants_nchw`]).
pub(crate) fn blocked_usable(x: &candle_core::Tensor) -> bool {
    crate::kernels::nchwc::available()
        && x.dtype() == candle_core::DType::F32
        && x.device().is_cpu()
        && !crate::trace::wants_nchw()
}

/// A model's first convolution on NCHW `x`, its output in channel blocks: straight from the
/// blocked stem kernel where it fits, else computed on NCHW and blocked.
pub(crate) fn stem_into_blocks(conv: &Conv2d, x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::Module;
    match conv.forward_blocked(x, None, conv.spec().activation)? {
        Some(y) => Ok(y),
        None => block(&conv.forward(x)?),
    }
}

/// NCHW `x` (f32, CPU) in channel blocks, N×⌈C/16⌉×H×W×16 ([`crate::kernels::nchwc`]).
pub(crate) fn block(x: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
    use crate::kernels::nchwc;
    let (n, c, h, w) = x.dims4()?;
    let y = with_cpu_f32(&x.contiguous()?, "block", |v| nchwc::to_blocked(v, n, c, h * w))?;
    candle_core::Tensor::from_vec(y, (n, nchwc::blocks(c), h, w, nchwc::BLOCK), x.device())
}

/// Blocked `x` (N×⌈C/16⌉×H×W×16) as NCHW with its first `c` channels.
pub(crate) fn unblock(x: &candle_core::Tensor, c: usize) -> candle_core::Result<candle_core::Tensor> {
    use crate::kernels::nchwc;
    let (n, _, h, w, _) = x.dims5()?;
    let y = with_cpu_f32(x, "unblock", |v| nchwc::from_blocked(v, n, c, h * w))?;
    candle_core::Tensor::from_vec(y, (n, c, h, w), x.device())
}

/// The channels of `x`: NCHW, or blocked (rank 5: its blocks × 16, where every channel count
/// is whole blocks, as in the concatenations of [`cat_into`]).
pub(crate) fn channels_of(x: &candle_core::Tensor) -> candle_core::Result<usize> {
    match x.rank() {
        5 => Ok(x.dim(1)? * crate::kernels::nchwc::BLOCK),
        _ => x.dim(1),
    }
}

/// One part of a channel concatenation ([`cat_into`]): a tensor, or a convolution of a tensor,
/// which then writes straight into its channels of the result. Each is computed when
/// [`cat_into`] reaches it, in order, as the branches of a module would be one after another.
pub enum Part<'a> {
    Tensor(Box<dyn FnOnce() -> candle_core::Result<candle_core::Tensor> + 'a>),
    Conv(
        &'a Conv2d,
        Box<dyn FnOnce() -> candle_core::Result<candle_core::Tensor> + 'a>,
    ),
}

/// `cat_channels` of the parts (N×Cᵢ×H×W, `channels` = ΣCᵢ) without the copy where it can:
/// on the CPU in f32 (`x`, the module's input, says) each convolution part writes its output
/// into its channel slice of one uninitialised N×C×H×W array, and other parts (pools, or a
/// convolution our kernels do not run) are copied in; elsewhere candle's `cat` of the parts.
/// SqueezeNet's Fire and GoogLeNet's and Inception v3's modules end this way.
pub fn cat_into(
    x: &candle_core::Tensor,
    channels: usize,
    parts: Vec<Part<'_>>,
) -> candle_core::Result<candle_core::Tensor> {
    use crate::kernels::{assume_init, copy_into, uninit_output, Dest, SyncPtr};
    use candle_core::{bail, DType, Module, Tensor};
    if x.rank() == 5 {
        return cat_blocks(x, channels, parts);
    }
    if x.dtype() != DType::F32 || !x.device().is_cpu() {
        let parts = parts
            .into_iter()
            .map(|p| match p {
                Part::Tensor(f) => f(),
                Part::Conv(conv, f) => conv.forward(&f()?),
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        return Tensor::cat(&parts, 1);
    }
    // the output, allocated at the first part (which gives N×H×W), and the next channel
    type Out = (Vec<std::mem::MaybeUninit<f32>>, (usize, usize, usize));
    let mut out: Option<Out> = None;
    let mut offset = 0;
    for part in parts {
        let (conv, input) = match part {
            Part::Tensor(f) => (None, f()?),
            Part::Conv(conv, f) => (Some(conv), f()?),
        };
        let (n, c, h, w) = match conv {
            Some(conv) => {
                let (n, _, h, w) = input.dims4()?;
                let (ho, wo) = conv.out_size(h, w)?;
                (n, conv.spec().out_channels, ho, wo)
            }
            None => input.dims4()?,
        };
        let (buf, shape) = out.get_or_insert_with(|| (uninit_output(n * channels * h * w), (n, h, w)));
        if *shape != (n, h, w) || offset + c > channels {
            bail!(
                "cat_into: a part of shape {:?} does not fit {shape:?} with {channels} channels at channel {offset}",
                (n, c, h, w)
            )
        }
        let dest = Dest {
            // SAFETY: offset < channels, so within image 0 of `buf`
            ptr: unsafe { SyncPtr(buf.as_mut_ptr().cast::<f32>()).add(offset * h * w) },
            image_stride: channels * h * w,
        };
        // SAFETY: `dest` is channels offset..offset + c of every image of `buf`, which this part
        // alone writes, all of it (the shape was checked above).
        let written = match conv {
            Some(conv) => unsafe { conv.forward_into(&input, dest)? },
            None => false,
        };
        if !written {
            let t = match conv {
                Some(conv) => conv.forward(&input)?,
                None => input,
            };
            with_cpu_f32(&t.contiguous()?, "cat_into", |v| unsafe { copy_into(v, n, dest) })?;
        }
        offset += c;
    }
    let Some((buf, (n, h, w))) = out else {
        bail!("cat_into: no parts")
    };
    if offset != channels {
        bail!("cat_into: the parts have {offset} channels, expected {channels}")
    }
    // SAFETY: the parts wrote every channel of every image.
    Tensor::from_vec(unsafe { assume_init(buf) }, (n, channels, h, w), x.device())
}

/// [`cat_into`] on channel-blocked data ([`crate::kernels::nchwc`]): each convolution part
/// writes its blocks of one uninitialised array, other parts are copied in. Every part but the
/// last must have whole blocks of channels (an error otherwise).
fn cat_blocks(
    x: &candle_core::Tensor,
    channels: usize,
    parts: Vec<Part<'_>>,
) -> candle_core::Result<candle_core::Tensor> {
    use crate::kernels::nchwc::{self, BLOCK};
    use candle_core::{bail, Module, Tensor};
    let total = nchwc::blocks(channels);
    type Out = (Vec<std::mem::MaybeUninit<f32>>, (usize, usize, usize));
    let mut out: Option<Out> = None;
    let mut offset = 0; // channels
    for part in parts {
        if offset % BLOCK != 0 {
            bail!("cat_into: a part starts at channel {offset}, inside a block of {BLOCK}")
        }
        let (conv, input) = match part {
            Part::Tensor(f) => (None, f()?),
            Part::Conv(conv, f) => (Some(conv), f()?),
        };
        let (n, cb, h, w) = match conv {
            Some(conv) => {
                let (n, _, h, w, _) = input.dims5()?;
                let (ho, wo) = conv.out_size(h, w)?;
                (n, nchwc::blocks(conv.spec().out_channels), ho, wo)
            }
            None => {
                let (n, cb, h, w, _) = input.dims5()?;
                (n, cb, h, w)
            }
        };
        let (buf, shape) =
            out.get_or_insert_with(|| (crate::kernels::uninit_output(n * total * h * w * BLOCK), (n, h, w)));
        if *shape != (n, h, w) || offset / BLOCK + cb > total {
            bail!(
                "cat_into: a part of {cb} blocks of {:?} does not fit {shape:?} with {channels} channels at channel {offset}",
                (n, h, w)
            )
        }
        let first = offset / BLOCK;
        let to = nchwc::Target {
            y: buf,
            blocks: total,
            first,
        };
        let written = match conv {
            Some(conv) => conv.forward_blocked_into(&input, conv.spec().activation, to)?,
            None => false,
        };
        if !written {
            let t = match conv {
                Some(conv) => conv.forward(&input)?,
                None => input,
            };
            let dest = crate::kernels::Dest {
                // SAFETY: block `first` of image 0, inside `buf` (checked above)
                ptr: unsafe { crate::kernels::SyncPtr(buf.as_mut_ptr().cast::<f32>()).add(first * h * w * BLOCK) },
                image_stride: total * h * w * BLOCK,
            };
            // SAFETY: `dest` is blocks first..first + cb of every image of `buf`, which this
            // part alone writes, all of it (its shape was checked above)
            with_cpu_f32(&t.contiguous()?, "cat_into", |v| unsafe {
                crate::kernels::copy_into(v, n, dest)
            })?;
        }
        offset += match conv {
            Some(conv) => conv.spec().out_channels,
            None => cb * BLOCK,
        };
    }
    let Some((buf, (n, h, w))) = out else {
        bail!("cat_into: no parts")
    };
    if offset != channels {
        bail!("cat_into: the parts have {offset} channels, expected {channels}")
    }
    // SAFETY: the parts wrote every block of every image (checked: their channels add up).
    Tensor::from_vec(
        unsafe { crate::kernels::assume_init(buf) },
        (n, total, h, w, BLOCK),
        x.device(),
    )
}

/// `Tensor::cat(parts, 1)` for N×Cᵢ×H×W tensors: [`cat_into`] with every part copied in (on
/// the CPU in f32, one parallel copy per image into an uninitialised output); other ranks,
/// dtypes or devices take candle's `cat`.
pub fn cat_channels(parts: &[candle_core::Tensor]) -> candle_core::Result<candle_core::Tensor> {
    let Some(first) = parts.first().filter(|_| parts.iter().all(|t| t.rank() == 4)) else {
        return candle_core::Tensor::cat(parts, 1);
    };
    let channels = parts.iter().map(|t| t.dim(1)).sum::<candle_core::Result<usize>>()?;
    let parts = parts
        .iter()
        .map(|t| Part::Tensor(Box::new(move || Ok(t.clone()))))
        .collect();
    cat_into(first, channels, parts)
}
