//! AlexNet (Krizhevsky et al. 2012, Fig. 2), torchvision's single-tower variant (64/192/384/256/256
//! channels, from "One weird trick", Krizhevsky 2014): `features.{0,3,6,8,10}` convs,
//! 6×6 adaptive average pool, `classifier.{1,4,6}`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::mlp;
use crate::layers::{
    global_avg_pool, linear, Activation, AdaptiveAvgPool2d, Conv2d, ConvSpec, Linear, MaxPool2d, PoolSpec,
};
use crate::model::{ModelOptions, Network};

/// (index in `features`, in, out, kernel, stride, padding, max pool after).
#[rustfmt::skip]
const FEATURES: [(usize, usize, usize, usize, usize, usize, bool); 5] = [
    (0,    3,  64, 11, 4, 2, true),
    (3,   64, 192,  5, 1, 2, true),
    (6,  192, 384,  3, 1, 1, false),
    (8,  384, 256,  3, 1, 1, false),
    (10, 256, 256,  3, 1, 1, true),
];

/// torchvision's `alexnet` with `num_classes` outputs.
pub fn alexnet(vb: VarBuilder, num_classes: usize) -> Result<AlexNet> {
    AlexNet::new(&ModelOptions::with_classes(num_classes), vb)
}

#[derive(Debug, Clone)]
pub struct AlexNet {
    features: Vec<(Conv2d, bool)>,
    classifier: Option<[Linear; 3]>,
    num_classes: usize,
}

impl AlexNet {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let f = vb.pp("features");
        let features = FEATURES
            .iter()
            .map(|&(i, cin, cout, k, s, p, pool)| {
                let spec = ConvSpec::new(cin, cout, k).stride(s).pad(p).act(Activation::Relu);
                Ok((Conv2d::load(&f.pp(i), spec, true)?, pool))
            })
            .collect::<Result<Vec<_>>>()?;
        let classifier = if opts.include_top {
            let c = vb.pp("classifier");
            Some([
                linear(256 * 6 * 6, 4096, c.pp(1))?,
                linear(4096, 4096, c.pp(4))?,
                linear(4096, opts.num_classes, c.pp(6))?,
            ])
        } else {
            None
        };
        Ok(Self {
            features,
            classifier,
            num_classes: opts.num_classes,
        })
    }
}

impl Network for AlexNet {
    fn name(&self) -> &str {
        "alexnet"
    }
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (conv, pool) in &self.features {
            h = conv.forward(&h)?;
            if *pool {
                h = MaxPool2d(PoolSpec::new(3, 2)).forward(&h)?;
            }
        }
        Ok(h) // N×256×6×6 at 224
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        match &self.classifier {
            Some(fc) if !pre_logits => mlp(
                fc,
                &["classifier.1", "classifier.4", "classifier.6"],
                &AdaptiveAvgPool2d(6, 6).forward(f)?.flatten_from(1)?,
            ),
            _ => global_avg_pool(f),
        }
    }
    fn num_features(&self) -> usize {
        256
    }
    fn num_classes(&self) -> Option<usize> {
        self.classifier.as_ref().map(|_| self.num_classes)
    }
    fn min_input_size(&self) -> usize {
        63
    }
}
