//! ResNet (He et al. 2016, "Deep Residual Learning", Table 1), torchvision layout:
//! `conv1`/`bn1` 7×7/2 stem, 3×3/2 max pool, `layer1..layer4` of BasicBlock or Bottleneck
//! (stride on the 3×3: "v1.5"), global average pool, `fc`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::ResidualStyle;
use crate::layers::{
    global_avg_pool, linear, Activation, BasicBlock, Bottleneck, Conv2d, ConvSpec, Linear, MaxPool2d, PoolSpec,
};
use crate::model::{Flavor, ModelOptions, Network};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Basic,
    Bottleneck,
}

/// A column of Table 1: the block and how many of it each stage (conv2_x … conv5_x) repeats.
#[derive(Debug, Clone, Copy)]
pub struct ResNetConfig {
    pub name: &'static str,
    pub block: BlockKind,
    pub layers: [usize; 4],
}

#[rustfmt::skip]
pub const RESNETS: [ResNetConfig; 5] = [
    ResNetConfig { name: "resnet18",  block: BlockKind::Basic,      layers: [2, 2, 2, 2] },
    ResNetConfig { name: "resnet34",  block: BlockKind::Basic,      layers: [3, 4, 6, 3] },
    ResNetConfig { name: "resnet50",  block: BlockKind::Bottleneck, layers: [3, 4, 6, 3] },
    ResNetConfig { name: "resnet101", block: BlockKind::Bottleneck, layers: [3, 4, 23, 3] },
    ResNetConfig { name: "resnet152", block: BlockKind::Bottleneck, layers: [3, 8, 36, 3] },
];

/// Table 1's column for `resnet{depth}`; depth ∈ {18, 34, 50, 101, 152}.
pub fn config(depth: usize) -> ResNetConfig {
    let name = format!("resnet{depth}");
    *RESNETS
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("ResNet depth must be 18, 34, 50, 101 or 152 (ArchName::parse checks), got {depth}"))
}

macro_rules! resnet_fns {
    ($($f:ident => $depth:literal),*) => {$(
        #[doc = concat!("`resnet", $depth, "` with `num_classes` outputs: `", stringify!($f), "(vb, 1000)?`.")]
        pub fn $f(vb: VarBuilder, num_classes: usize) -> Result<ResNet> {
            ResNet::new(config($depth), &ModelOptions::with_classes(num_classes), vb)
        }
    )*};
}
resnet_fns!(resnet18 => 18, resnet34 => 34, resnet50 => 50, resnet101 => 101, resnet152 => 152);

#[derive(Debug, Clone)]
enum Block {
    Basic(Box<BasicBlock>),
    Bottleneck(Box<Bottleneck>),
}

impl Block {
    fn kind(&self) -> &'static str {
        match self {
            Block::Basic(_) => "BasicBlock",
            Block::Bottleneck(_) => "Bottleneck",
        }
    }
}

impl Module for Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Block::Basic(b) => b.forward(x),
            Block::Bottleneck(b) => b.forward(x),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ResNet {
    name: &'static str,
    conv1: Conv2d,
    layers: Vec<Vec<Block>>,
    fc: Option<Linear>,
    num_features: usize,
    num_classes: usize,
}

impl ResNet {
    pub fn new(cfg: ResNetConfig, opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let norm = opts.norm(1e-5);
        let stem = ConvSpec::new(3, 64, 7).stride(2).pad(3).act(Activation::Relu);
        let style = match opts.flavor {
            Flavor::Torchvision => ResidualStyle::torchvision(norm),
            Flavor::Keras => ResidualStyle {
                norm,
                stride_on_3x3: false,
                conv_bias: true,
            },
        };
        let conv1 = Conv2d::load_conv_norm(&vb.pp("conv1"), &vb.pp("bn1"), stem, norm, style.conv_bias)?;
        let expansion = match cfg.block {
            BlockKind::Basic => BasicBlock::EXPANSION,
            BlockKind::Bottleneck => Bottleneck::EXPANSION,
        };
        let mut cin = 64;
        let mut layers = Vec::with_capacity(4);
        for (stage, (&n, planes)) in cfg.layers.iter().zip([64, 128, 256, 512]).enumerate() {
            let lvb = vb.pp(format!("layer{}", stage + 1));
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                let stride = if i == 0 && stage > 0 { 2 } else { 1 };
                let bvb = lvb.pp(i);
                blocks.push(match cfg.block {
                    BlockKind::Basic => Block::Basic(Box::new(BasicBlock::load(&bvb, cin, planes, stride, style)?)),
                    BlockKind::Bottleneck => {
                        Block::Bottleneck(Box::new(Bottleneck::load(&bvb, cin, planes, stride, style)?))
                    }
                });
                cin = planes * expansion;
            }
            layers.push(blocks);
        }
        let fc = if opts.include_top {
            Some(linear(cin, opts.num_classes, vb.pp("fc"))?)
        } else {
            None
        };
        Ok(Self {
            name: cfg.name,
            conv1,
            layers,
            fc,
            num_features: cin,
            num_classes: opts.num_classes,
        })
    }

    /// Output of `conv1` + max pool, then of each stage (`layer1` … `layer4`).
    pub fn stages(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        self.run(x, false)
    }

    /// [`ResNet::stages`], on channel-blocked data ([`crate::kernels::nchwc`]) from `conv1`'s output on with
    /// `blocked` (the blocks take either layout): the outputs are then blocked too.
    fn run(&self, x: &Tensor, blocked: bool) -> Result<Vec<Tensor>> {
        let mut h = if blocked {
            crate::layers::stem_into_blocks(&self.conv1, x)?
        } else {
            self.conv1.forward(x)?
        }; // N×64×H/2×W/2
        h = MaxPool2d(PoolSpec::new(3, 2).pad(1)).forward(&h)?; // N×64×H/4×W/4
        let mut out = Vec::with_capacity(4);
        for (s, blocks) in self.layers.iter().enumerate() {
            for (i, b) in blocks.iter().enumerate() {
                h = b.forward(&h)?;
                crate::trace::record_lazy(|| format!("layer{}.{i}", s + 1), b.kind(), &h, 0);
            }
            crate::trace::record_lazy(|| format!("layer{}", s + 1), "Sequential", &h, 0);
            out.push(h.clone()); // N×{64,128,256,512}·e×H/{4,8,16,32}
        }
        Ok(out)
    }
}

impl Network for ResNet {
    fn name(&self) -> &str {
        self.name
    }
    /// On channel-blocked data where the CPU allows (`layers::blocked_usable`),
    /// unblocked at the end.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let blocked = crate::layers::blocked_usable(x);
        let f = self.run(x, blocked)?.pop().expect("four stages"); // N×512·e×H/32×W/32
        if blocked {
            crate::layers::unblock(&f, self.num_features)
        } else {
            Ok(f)
        }
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(f)?; // N×512·e
        match &self.fc {
            Some(fc) if !pre_logits => crate::trace::linear("fc", fc, &pooled),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        self.num_features
    }
    fn num_classes(&self) -> Option<usize> {
        self.fc.as_ref().map(|_| self.num_classes)
    }
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        super::linear_cams(self.fc.as_ref(), features)
    }
    fn min_input_size(&self) -> usize {
        32
    }
}
