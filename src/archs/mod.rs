//! The architectures, one file per family, each next to its paper's table.

pub mod alexnet;
pub mod inception;
pub mod mobilenet;
pub mod resnet;
pub mod squeezenet;
pub mod ssd;
pub mod vgg;

use crate::layers::Linear;
use candle_core::{Result, Tensor};

/// One stage of a network's features: a layer or block (with its trace record).
pub(crate) type Stage<'a> = Box<dyn Fn(&Tensor) -> Result<Tensor> + 'a>;

/// Bytes of a stage's output for the whole batch above which [`forward_stages`] keeps running
/// image by image: half the L2 of the machines we measure on (1 MB per core).
const SPLIT_BYTES: usize = 512 << 10;

/// `stages` applied in turn to `x`, for a light network whose blocks expand their input
/// (MobileNetV2: weights of at most a few hundred KB per block, a 6× wider hidden activation
/// inside). At batch > 1 the leading stages whose output for the whole batch exceeds
/// [`SPLIT_BYTES`] run image by image, so that each image's activations stay in cache through
/// them, and the rest on the whole batch (image 0 finds the split; a tracer, and any device
/// but the CPU, sees the plain batched run). MobileNetV2 at batch 8 on 2 threads: 5.07 ms/image all batched, 4.09-4.14
/// with the first 6 of 17 blocks image by image, 4.29-4.65 with 1 or 3, 4.2-4.7 with 10 to all
/// 17; this split (stem and 7 blocks) 4.1-4.3 against 5.1-5.3 in 3 alternating runs. MobileNet
/// v1 and SqueezeNet, tried the same way, measured no better than batched, and stay so.
pub(crate) fn forward_stages(x: &Tensor, stages: &[Stage<'_>]) -> Result<Tensor> {
    let n = x.dim(0)?;
    let run = |h: Tensor, stages: &[Stage<'_>]| stages.iter().try_fold(h, |h, s| s(&h));
    // on a GPU, images one by one would only multiply the launches (MobileNetV2 at batch 256
    // f32 on an H200: 51 images/s so, against 13,792 for PyTorch eager)
    if n == 1 || !x.device().is_cpu() || crate::trace::active() {
        return run(x.clone(), stages);
    }
    let mut first = x.narrow(0, 0, 1)?;
    let mut split = 0;
    while split < stages.len() {
        first = stages[split](&first)?;
        split += 1;
        if n * first.elem_count() * first.dtype().size_in_bytes() <= SPLIT_BYTES {
            break;
        }
    }
    let mut images = vec![first];
    for i in 1..n {
        images.push(run(x.narrow(0, i, 1)?, &stages[..split])?);
    }
    run(Tensor::cat(&images, 0)?, &stages[split..])
}

/// The classifier on a network's pooled features: one Linear (torchvision's `classifier.1`,
/// `fc`, …), or a Keras-style stack of Dense layers with ReLU between them, at `head.{0..k}`
/// (nsfwjs' models: 256, 128, then the classes; [`ModelOptions::hidden`]).
#[derive(Debug, Clone)]
pub(crate) enum Classifier {
    Linear { layer: Linear, name: &'static str },
    Mlp(Vec<Linear>),
}

impl Classifier {
    /// The classifier `opts` asks for on `in_features`: `None` without a top; the MLP when
    /// `opts.hidden` lists hidden widths, else one Linear at `linear_path`.
    pub(crate) fn load(
        opts: &crate::model::ModelOptions,
        in_features: usize,
        vb: &candle_nn::VarBuilder,
        linear_path: &'static str,
    ) -> Result<Option<Self>> {
        if !opts.include_top {
            return Ok(None);
        }
        if opts.hidden.is_empty() {
            let mut p = vb.clone();
            for seg in linear_path.split('.') {
                p = p.pp(seg);
            }
            let layer = crate::layers::linear(in_features, opts.num_classes, p)?;
            return Ok(Some(Self::Linear {
                layer,
                name: linear_path,
            }));
        }
        let widths: Vec<usize> = std::iter::once(in_features)
            .chain(opts.hidden.iter().copied())
            .chain(std::iter::once(opts.num_classes))
            .collect();
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| crate::layers::linear(w[0], w[1], vb.pp("head").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Self::Mlp(layers)))
    }

    /// Logits from pooled features N×C.
    pub(crate) fn forward(&self, pooled: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear { layer, name } => crate::trace::linear(name, layer, pooled),
            Self::Mlp(layers) => {
                let names: Vec<String> = (0..layers.len()).map(|i| format!("head.{i}")).collect();
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                mlp(layers, &names, pooled)
            }
        }
    }

    /// The single linear layer, for class activation maps (an MLP has none: its maps would not
    /// sum to the logits).
    pub(crate) fn linear(&self) -> Option<&Linear> {
        match self {
            Self::Linear { layer, .. } => Some(layer),
            Self::Mlp(_) => None,
        }
    }
}

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
