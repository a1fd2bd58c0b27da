//! SqueezeNet (Iandola et al. 2016, Table 1) v1.0 and torchvision's v1.1 (3×3 stem, earlier
//! pooling, 2.4× fewer MACs). Max pools use ceil mode. The classifier is a 1×1 conv to the
//! classes followed by ReLU and a global average pool: torchvision's model really applies ReLU
//! to the class scores, and we reproduce it for parity.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::Stage;
use crate::kernels::nchwc;
use crate::layers::{global_avg_pool, Activation, Conv2d, ConvSpec, Fire, MaxPool2d, PoolSpec};
use crate::model::{ModelOptions, Network};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1_0,
    V1_1,
}

/// One entry of `features`: a Fire module (squeeze, expand 1×1, expand 3×3) or a 3×3/2 ceil max pool.
#[derive(Debug, Clone, Copy)]
pub enum L {
    Fire(usize, usize, usize),
    Pool,
}
use L::{Fire as F, Pool as P};

/// Table 1, after the stem conv (`features.0`, ReLU `features.1`, pool `features.2`).
#[rustfmt::skip]
pub const V1_0: [L; 10] = [
    F(16, 64, 64), F(16, 64, 64), F(32, 128, 128), P,
    F(32, 128, 128), F(48, 192, 192), F(48, 192, 192), F(64, 256, 256), P,
    F(64, 256, 256),
];
/// torchvision's SqueezeNet 1.1.
#[rustfmt::skip]
pub const V1_1: [L; 10] = [
    F(16, 64, 64), F(16, 64, 64), P,
    F(32, 128, 128), F(32, 128, 128), P,
    F(48, 192, 192), F(48, 192, 192), F(64, 256, 256), F(64, 256, 256),
];

/// torchvision's `squeezenet1_0` with `num_classes` outputs.
pub fn squeezenet1_0(vb: VarBuilder, num_classes: usize) -> Result<SqueezeNet> {
    SqueezeNet::new(Version::V1_0, &ModelOptions::with_classes(num_classes), vb)
}

/// torchvision's `squeezenet1_1` with `num_classes` outputs.
pub fn squeezenet1_1(vb: VarBuilder, num_classes: usize) -> Result<SqueezeNet> {
    SqueezeNet::new(Version::V1_1, &ModelOptions::with_classes(num_classes), vb)
}

const POOL: MaxPool2d = MaxPool2d(PoolSpec::new(3, 2).ceil());

#[derive(Debug, Clone)]
enum Layer {
    Fire(Box<Fire>),
    Pool,
}

#[derive(Debug, Clone)]
pub struct SqueezeNet {
    version: Version,
    stem: Conv2d,
    features: Vec<Layer>,
    classifier: Option<Conv2d>,
    num_classes: usize,
}

impl SqueezeNet {
    pub fn new(version: Version, opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let f = vb.pp("features");
        let (stem_spec, table) = match version {
            Version::V1_0 => (ConvSpec::new(3, 96, 7).stride(2), &V1_0),
            Version::V1_1 => (ConvSpec::new(3, 64, 3).stride(2), &V1_1),
        };
        let stem = Conv2d::load(&f.pp(0), stem_spec.act(Activation::Relu), true)?;
        let mut cin = stem_spec.out_channels;
        let features = table
            .iter()
            .enumerate()
            .map(|(i, l)| match *l {
                L::Pool => Ok(Layer::Pool),
                L::Fire(s, e1, e3) => {
                    let fire = Fire::load(&f.pp(i + 3), cin, s, e1, e3)?;
                    cin = fire.out_channels();
                    Ok(Layer::Fire(Box::new(fire)))
                }
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = if opts.include_top {
            let spec = ConvSpec::new(512, opts.num_classes, 1).act(Activation::Relu);
            Some(Conv2d::load(&vb.pp("classifier").pp(1), spec, true)?)
        } else {
            None
        };
        Ok(Self {
            version,
            stem,
            features,
            classifier,
            num_classes: opts.num_classes,
        })
    }

    /// [`Network::forward_features`] on channel-blocked data ([`nchwc`]): the stem writes
    /// blocks, each Fire module's expand layers write their blocks of its output (no
    /// concatenation copy), the pools run on blocks, and the last output is unblocked. `None`
    /// where that does not run: no AVX-512, not f32 on the CPU, a tracer that wants NCHW
    /// outputs ([`crate::trace::wants_nchw`]), or an expand 1×1 width not in whole blocks.
    fn forward_features_blocked(&self, x: &Tensor) -> Result<Option<Tensor>> {
        // each expand layer writes its blocks of the Fire's output: the 1×1's in whole blocks
        let aligned = |l: &Layer| match l {
            Layer::Fire(f) => f.expand1x1.spec().out_channels.is_multiple_of(nchwc::BLOCK),
            Layer::Pool => true,
        };
        if !crate::layers::blocked_usable(x) || !self.features.iter().all(aligned) {
            return Ok(None);
        }
        let mut stages: Vec<Stage> = vec![Box::new(|x| {
            let h = crate::layers::stem_into_blocks(&self.stem, x)?;
            let h = POOL.forward(&h)?;
            crate::trace::record_lazy(|| "features.2".to_string(), "MaxPool2d", &h, 0);
            Ok(h)
        })];
        for (i, l) in self.features.iter().enumerate() {
            stages.push(Box::new(move |h| {
                let h = match l {
                    Layer::Fire(f) => f.forward(h)?,
                    Layer::Pool => POOL.forward(h)?,
                };
                let kind = if matches!(l, Layer::Fire(_)) {
                    "Fire"
                } else {
                    "MaxPool2d"
                };
                crate::trace::record_lazy(|| format!("features.{}", i + 3), kind, &h, 0);
                Ok(h)
            }));
        }
        // the stem and first pool image by image, so that the stem's output (3.1 MB per image
        // at 224) is pooled from cache; the rest batched (a tracer sees one batched run). Batch 8, 2 threads, against all
        // batched, alternating per forward pass: 0.96-0.98 in 4 runs of 20 pairs (all stages
        // image by image, as `forward_stages` would: 0.94 and 1.17-1.18 in different runs)
        let h = match x.dim(0)? {
            n if n == 1 || crate::trace::active() => stages.iter().try_fold(x.clone(), |h, s| s(&h))?,
            n => {
                let first = (0..n)
                    .map(|i| stages[0](&x.narrow(0, i, 1)?))
                    .collect::<Result<Vec<_>>>()?;
                stages[1..].iter().try_fold(Tensor::cat(&first, 0)?, |h, s| s(&h))?
            }
        };
        let (n, _, hh, ww, _) = h.dims5()?;
        let c = self.num_features();
        let y = crate::layers::with_cpu_f32(&h, "features", |hs| nchwc::from_blocked(hs, n, c, hh * ww))?;
        Tensor::from_vec(y, (n, c, hh, ww), x.device()).map(Some) // N×512×h×w (13×13 at 224)
    }

    /// The classifier and average pool on channel-blocked data (the features blocked again:
    /// 512×13×13 at 224, a few µs), where [`SqueezeNet::forward_features_blocked`] runs.
    fn class_scores_blocked(&self, f: &Tensor) -> Result<Option<Tensor>> {
        let Some(conv) = self.classifier.as_ref().filter(|_| crate::layers::blocked_usable(f)) else {
            return Ok(None);
        };
        let (n, c, h, w) = f.dims4()?;
        if c != conv.spec().in_channels {
            candle_core::bail!(
                "classifier: features have {c} channels, expected {}",
                conv.spec().in_channels
            )
        }
        let o = conv.spec().out_channels;
        let y = conv.forward(&crate::layers::block(f)?)?; // N×⌈classes/16⌉×h×w×16
        let y = crate::layers::with_cpu_f32(&y, "classifier", |ys| nchwc::global_avg_pool(ys, n, o, h * w))?;
        let y = Tensor::from_vec(y, (n, o), f.device())?;
        Ok(Some(y)) // N×classes
    }
}

impl Network for SqueezeNet {
    fn name(&self) -> &str {
        match self.version {
            Version::V1_0 => "squeezenet1_0",
            Version::V1_1 => "squeezenet1_1",
        }
    }
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(f) = self.forward_features_blocked(x)? {
            return Ok(f);
        }
        let mut h = POOL.forward(&self.stem.forward(x)?)?;
        crate::trace::record_lazy(|| "features.2".to_string(), "MaxPool2d", &h, 0);
        for (i, l) in self.features.iter().enumerate() {
            h = match l {
                Layer::Fire(f) => f.forward(&h)?,
                Layer::Pool => POOL.forward(&h)?,
            };
            let kind = if matches!(l, Layer::Fire(_)) {
                "Fire"
            } else {
                "MaxPool2d"
            };
            crate::trace::record_lazy(|| format!("features.{}", i + 3), kind, &h, 0);
        }
        Ok(h) // N×512×h×w (13×13 at 224)
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        match &self.classifier {
            Some(c) if !pre_logits => match self.class_scores_blocked(f)? {
                Some(y) => Ok(y),
                None => global_avg_pool(&c.forward(f)?), // N×classes
            },
            _ => global_avg_pool(f),
        }
    }
    fn num_features(&self) -> usize {
        512
    }
    fn num_classes(&self) -> Option<usize> {
        self.classifier.as_ref().map(|_| self.num_classes)
    }
    /// SqueezeNet's classifier is a 1×1 convolution (+ ReLU) before the average pool: its output
    /// is the class map itself.
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.classifier.as_ref().map(|c| c.forward(features)).transpose()
    }
    fn min_input_size(&self) -> usize {
        32
    }
}
