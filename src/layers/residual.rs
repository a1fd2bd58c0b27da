//! ResNet residual blocks (He et al. 2016, Table 1) in torchvision's layout.
//! Bottleneck puts the stride on the 3×3 convolution ("ResNet v1.5"), not on the first 1×1.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec, Norm};

/// The projection shortcut `downsample.0` (1×1 conv, stride s) + `downsample.1` (BN).
fn downsample(vb: &VarBuilder, cin: usize, cout: usize, stride: usize, norm: Norm) -> Result<Option<Conv2d>> {
    if stride == 1 && cin == cout {
        return Ok(None);
    }
    let vb = vb.pp("downsample");
    let spec = ConvSpec::new(cin, cout, 1).stride(stride);
    Ok(Some(Conv2d::load_with_norm(&vb.pp(0), &vb.pp(1), spec, norm)?))
}

fn shortcut(down: &Option<Conv2d>, x: &Tensor) -> Result<Tensor> {
    match down {
        Some(d) => d.forward(x),
        None => Ok(x.clone()),
    }
}

/// Two 3×3 convolutions (ResNet-18/34). Expansion 1.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub downsample: Option<Conv2d>,
}

impl BasicBlock {
    pub const EXPANSION: usize = 1;

    pub fn load(vb: &VarBuilder, cin: usize, planes: usize, stride: usize, norm: Norm) -> Result<Self> {
        let c1 = ConvSpec::new(cin, planes, 3)
            .stride(stride)
            .pad(1)
            .act(Activation::Relu);
        let c2 = ConvSpec::new(planes, planes, 3).pad(1);
        Ok(Self {
            conv1: Conv2d::load_with_norm(&vb.pp("conv1"), &vb.pp("bn1"), c1, norm)?,
            conv2: Conv2d::load_with_norm(&vb.pp("conv2"), &vb.pp("bn2"), c2, norm)?,
            downsample: downsample(vb, cin, planes, stride, norm)?,
        })
    }
}

impl Module for BasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv2.forward(&self.conv1.forward(x)?)?;
        (y + shortcut(&self.downsample, x)?)?.relu()
    }
}

/// 1×1 reduce → 3×3 (stride here, v1.5) → 1×1 expand ×4 (ResNet-50/101/152).
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv3: Conv2d,
    pub downsample: Option<Conv2d>,
}

impl Bottleneck {
    pub const EXPANSION: usize = 4;

    pub fn load(vb: &VarBuilder, cin: usize, planes: usize, stride: usize, norm: Norm) -> Result<Self> {
        let cout = planes * Self::EXPANSION;
        let c1 = ConvSpec::new(cin, planes, 1).act(Activation::Relu);
        let c2 = ConvSpec::new(planes, planes, 3)
            .stride(stride)
            .pad(1)
            .act(Activation::Relu);
        let c3 = ConvSpec::new(planes, cout, 1);
        Ok(Self {
            conv1: Conv2d::load_with_norm(&vb.pp("conv1"), &vb.pp("bn1"), c1, norm)?,
            conv2: Conv2d::load_with_norm(&vb.pp("conv2"), &vb.pp("bn2"), c2, norm)?,
            conv3: Conv2d::load_with_norm(&vb.pp("conv3"), &vb.pp("bn3"), c3, norm)?,
            downsample: downsample(vb, cin, cout, stride, norm)?,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv3.forward(&self.conv2.forward(&self.conv1.forward(x)?)?)?;
        (y + shortcut(&self.downsample, x)?)?.relu()
    }
}
