//! VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks", Table 1),
//! torchvision layout: `features.{i}` (conv [, bn], relu, pool in one Sequential),
//! `classifier.{0,3,6}` (4096 → 4096 → classes after a 7×7 adaptive average pool).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::mlp;
use crate::layers::{
    global_avg_pool, linear, Activation, AdaptiveAvgPool2d, Conv2d, ConvSpec, Linear, MaxPool2d, PoolSpec,
};
use crate::model::{ModelOptions, Network};

/// One entry of Table 1: a 3×3 conv with this many channels, or a 2×2 max pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L {
    C(usize),
    M,
}
use L::{C, M};

/// Table 1, configurations A (11 layers), B (13), D (16), E (19).
#[rustfmt::skip]
pub const VGG11: &[L] = &[C(64), M, C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
#[rustfmt::skip]
pub const VGG13: &[L] = &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), M, C(512), C(512), M, C(512), C(512), M];
#[rustfmt::skip]
pub const VGG16: &[L] = &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), M, C(512), C(512), C(512), M, C(512), C(512), C(512), M];
#[rustfmt::skip]
pub const VGG19: &[L] = &[C(64), C(64), M, C(128), C(128), M, C(256), C(256), C(256), C(256), M, C(512), C(512), C(512), C(512), M, C(512), C(512), C(512), C(512), M];

#[derive(Debug, Clone, Copy)]
pub struct VggConfig {
    pub name: &'static str,
    pub layers: &'static [L],
    /// BatchNorm after every convolution (the `_bn` variants, not in the paper).
    pub batch_norm: bool,
}

/// The configuration for `vgg{depth}[_bn]`; depth ∈ {11, 13, 16, 19}.
pub fn config(depth: usize, batch_norm: bool) -> VggConfig {
    let (name, layers) = match (depth, batch_norm) {
        (11, false) => ("vgg11", VGG11),
        (13, false) => ("vgg13", VGG13),
        (16, false) => ("vgg16", VGG16),
        (19, false) => ("vgg19", VGG19),
        (11, true) => ("vgg11_bn", VGG11),
        (13, true) => ("vgg13_bn", VGG13),
        (16, true) => ("vgg16_bn", VGG16),
        (19, true) => ("vgg19_bn", VGG19),
        _ => panic!("VGG depth must be 11, 13, 16 or 19 (ArchName::parse checks), got {depth}"),
    };
    VggConfig {
        name,
        layers,
        batch_norm,
    }
}

macro_rules! vgg_fns {
    ($($f:ident => $depth:literal, $bn:literal),*) => {$(
        #[doc = concat!("`", stringify!($f), "` with `num_classes` outputs.")]
        pub fn $f(vb: VarBuilder, num_classes: usize) -> Result<Vgg> {
            Vgg::new(config($depth, $bn), &ModelOptions::with_classes(num_classes), vb)
        }
    )*};
}
vgg_fns!(vgg11 => 11, false, vgg13 => 13, false, vgg16 => 16, false, vgg19 => 19, false,
         vgg11_bn => 11, true, vgg13_bn => 13, true, vgg16_bn => 16, true, vgg19_bn => 19, true);

#[derive(Debug, Clone)]
enum Layer {
    Conv(Box<Conv2d>),
    Pool,
}

#[derive(Debug, Clone)]
pub struct Vgg {
    name: &'static str,
    features: Vec<Layer>,
    classifier: Option<[Linear; 3]>,
    num_classes: usize,
}

impl Vgg {
    pub fn new(cfg: VggConfig, opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let fvb = vb.pp("features");
        let norm = opts.norm(1e-5);
        let (mut features, mut idx, mut cin) = (Vec::new(), 0, 3);
        for &l in cfg.layers {
            match l {
                M => {
                    features.push(Layer::Pool);
                    idx += 1;
                }
                C(cout) => {
                    let spec = ConvSpec::new(cin, cout, 3).pad(1).act(Activation::Relu);
                    let conv = if cfg.batch_norm {
                        let c = Conv2d::load_conv_norm(&fvb.pp(idx), &fvb.pp(idx + 1), spec, norm, true)?;
                        idx += 3; // conv, bn, relu
                        c
                    } else {
                        let c = Conv2d::load(&fvb.pp(idx), spec, true)?;
                        idx += 2; // conv, relu
                        c
                    };
                    features.push(Layer::Conv(Box::new(conv)));
                    cin = cout;
                }
            }
        }
        let classifier = if opts.include_top {
            let c = vb.pp("classifier");
            Some([
                linear(512 * 7 * 7, 4096, c.pp(0))?,
                linear(4096, 4096, c.pp(3))?,
                linear(4096, opts.num_classes, c.pp(6))?,
            ])
        } else {
            None
        };
        Ok(Self {
            name: cfg.name,
            features,
            classifier,
            num_classes: opts.num_classes,
        })
    }
}

impl Network for Vgg {
    fn name(&self) -> &str {
        self.name
    }
    /// On channel-blocked data ([`crate::kernels::nchwc`]) from the first convolution's output
    /// on where the CPU allows (`layers::blocked_usable`; the layers take either
    /// layout), unblocked at the end.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let blocked = crate::layers::blocked_usable(x);
        let mut h = x.clone();
        for (i, l) in self.features.iter().enumerate() {
            h = match l {
                Layer::Conv(c) if blocked && i == 0 => crate::layers::stem_into_blocks(c, &h)?,
                Layer::Conv(c) => c.forward(&h)?,
                Layer::Pool => MaxPool2d(PoolSpec::new(2, 2)).forward(&h)?,
            };
        }
        if blocked {
            h = crate::layers::unblock(&h, self.num_features())?;
        }
        Ok(h) // N×512×H/32×W/32
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        match &self.classifier {
            Some(fc) if !pre_logits => {
                let h = AdaptiveAvgPool2d(7, 7).forward(f)?.flatten_from(1)?; // N×25088
                mlp(fc, &["classifier.0", "classifier.3", "classifier.6"], &h)
            }
            _ => global_avg_pool(f),
        }
    }
    fn num_features(&self) -> usize {
        512
    }
    fn num_classes(&self) -> Option<usize> {
        self.classifier.as_ref().map(|_| self.num_classes)
    }
    fn min_input_size(&self) -> usize {
        32
    }
}
