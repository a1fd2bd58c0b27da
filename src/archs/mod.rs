//! The architectures, one file per family, each next to its paper's table.

pub mod alexnet;
pub mod inception;
pub mod mobilenet;
pub mod movenet;
pub mod posenet;
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

    /// Class activation maps on a feature map N×C×h×w, N×classes×h×w. One Linear: CAM
    /// (Zhou et al. 2016, Eq. 2), `M_k = Σ_c W[k, c] · f_c`. An MLP of ReLU layers is linear
    /// wherever its ReLUs keep their state, `y = J·p + b'` with `J = W_L·D_{L−1}·…·D_1·W_1` (D the
    /// 0/1 masks of the hidden units at this image's pooled features p): its maps use J in place
    /// of W, which is Grad-CAM (Selvaraju et al. 2017, Eq. 1–2, without its final ReLU) for this
    /// head. Either way a map's spatial mean is the logit less the (effective) bias.
    pub(crate) fn activation_maps(&self, features: &Tensor) -> Result<Tensor> {
        let layers = match self {
            Self::Linear { layer, .. } => return Ok(linear_cams(Some(layer), features)?.expect("a classifier")),
            Self::Mlp(layers) => layers,
        };
        let (n, c, h, w) = features.dims4()?;
        let f = features.to_dtype(candle_core::DType::F32)?;
        let pooled = f.mean_keepdim(3)?.mean_keepdim(2)?.reshape((n, c))?; // N×C
        let weight = |l: &Linear| l.weight().to_dtype(candle_core::DType::F32);
        let mut maps = Vec::with_capacity(n);
        for i in 0..n {
            // the Jacobian of the head at this image's pooled features, layer by layer
            let mut x = pooled.narrow(0, i, 1)?; // 1×C
            let mut jac = Tensor::eye(c, candle_core::DType::F32, features.device())?; // C×C
            for (k, l) in layers.iter().enumerate() {
                let wk = weight(l)?; // O×I
                jac = wk.matmul(&jac)?;
                x = candle_core::Module::forward(l, &x)?;
                if k + 1 < layers.len() {
                    let mask = x.gt(0f32)?.to_dtype(candle_core::DType::F32)?.t()?; // O×1
                    jac = jac.broadcast_mul(&mask)?;
                    x = x.relu()?;
                }
            }
            let fi = f.narrow(0, i, 1)?.reshape((c, h * w))?;
            maps.push(jac.matmul(&fi)?.reshape((1, (), h, w))?); // 1×K×h×w
        }
        Tensor::cat(&maps, 0)
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use crate::model::{ModelOptions, Network};
    use crate::synthetic::Synthetic;

    /// The maps of an MLP head against finite differences through `forward_head` itself: the
    /// Jacobian column of channel k is the change of the logits when channel k of the whole
    /// feature map moves by ε (so its pooled value does), and map = Σ_k J[:, k] · f_k.
    #[test]
    fn mlp_head_maps_match_finite_differences() {
        let opts = ModelOptions {
            num_classes: 5,
            hidden: vec![16, 8],
            ..ModelOptions::default()
        };
        let vb = VarBuilder::from_backend(Box::new(Synthetic::new("mlp-cam")), DType::F32, Device::Cpu);
        let net = super::mobilenet::MobileNetV2::new(&opts, vb).unwrap();
        let (n, c, h, w) = (2, 1280, 3, 3);
        let vals: Vec<f32> = (0..n * c * h * w).map(|i| ((i * 7919) % 601) as f32 / 100.0).collect(); // 0..6, as ReLU6 gives
        let f = Tensor::from_vec(vals, (n, c, h, w), &Device::Cpu).unwrap();
        let maps = net.class_activation_maps(&f).unwrap().unwrap(); // N×5×h×w
        assert_eq!(maps.dims(), [n, 5, h, w]);
        let y0: Vec<Vec<f32>> = net.forward_head(&f, false).unwrap().to_vec2().unwrap();
        let eps = 0.1f32; // the head is piecewise linear: a large step is exact unless a ReLU flips
        let fv: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
        let got: Vec<f32> = maps.flatten_all().unwrap().to_vec1().unwrap();
        let mut want = vec![0f32; n * 5 * h * w];
        for k in 0..c {
            let mut bumped = fv.clone();
            for i in 0..n {
                for p in 0..h * w {
                    bumped[(i * c + k) * h * w + p] += eps;
                }
            }
            let y1: Vec<Vec<f32>> = net
                .forward_head(&Tensor::from_vec(bumped, (n, c, h, w), &Device::Cpu).unwrap(), false)
                .unwrap()
                .to_vec2()
                .unwrap();
            for i in 0..n {
                for cls in 0..5 {
                    let jac = (y1[i][cls] - y0[i][cls]) / eps;
                    for p in 0..h * w {
                        want[(i * 5 + cls) * h * w + p] += jac * fv[(i * c + k) * h * w + p];
                    }
                }
            }
        }
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "the synthetic head must pass something");
        let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-2 * scale, "max |Δ| {worst} against a scale of {scale}");
    }
}
