//! ResNet residual blocks (He et al. 2016, Table 1) in torchvision's layout.
//! torchvision's Bottleneck puts the stride on the 3×3 convolution ("ResNet v1.5"); the paper
//! and Keras put it on the first 1×1 ("v1"): [`ResidualStyle`] says which.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec, Norm};

/// Where a checkpoint's residual blocks differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualStyle {
    pub norm: Norm,
    /// Bottleneck stride on the 3×3 (torchvision, "v1.5") rather than the first 1×1 (v1, Keras).
    pub stride_on_3x3: bool,
    /// Convolutions carry a bias before their BatchNorm (Keras).
    pub conv_bias: bool,
}

impl ResidualStyle {
    /// torchvision: v1.5, bias-free convolutions.
    pub fn torchvision(norm: Norm) -> Self {
        Self {
            norm,
            stride_on_3x3: true,
            conv_bias: false,
        }
    }

    fn conv(&self, vb: &VarBuilder, conv: &str, bn: &str, spec: ConvSpec) -> Result<Conv2d> {
        Conv2d::load_conv_norm(&vb.pp(conv), &vb.pp(bn), spec, self.norm, self.conv_bias)
    }
}

/// The projection shortcut `downsample.0` (1×1 conv, stride s) + `downsample.1` (BN).
fn downsample(vb: &VarBuilder, cin: usize, cout: usize, stride: usize, st: ResidualStyle) -> Result<Option<Conv2d>> {
    if stride == 1 && cin == cout {
        return Ok(None);
    }
    let spec = ConvSpec::new(cin, cout, 1).stride(stride);
    Ok(Some(st.conv(&vb.pp("downsample"), "0", "1", spec)?))
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

    pub fn load(vb: &VarBuilder, cin: usize, planes: usize, stride: usize, st: ResidualStyle) -> Result<Self> {
        let c1 = ConvSpec::new(cin, planes, 3)
            .stride(stride)
            .pad(1)
            .act(Activation::Relu);
        let c2 = ConvSpec::new(planes, planes, 3).pad(1);
        Ok(Self {
            conv1: st.conv(vb, "conv1", "bn1", c1)?,
            conv2: st.conv(vb, "conv2", "bn2", c2)?,
            downsample: downsample(vb, cin, planes, stride, st)?,
        })
    }
}

impl Module for BasicBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv1.forward(x)?;
        self.conv2
            .forward_residual(&y, &shortcut(&self.downsample, x)?, Activation::Relu)
    }
}

/// 1×1 reduce → 3×3 → 1×1 expand ×4 (ResNet-50/101/152); the stride sits on the 3×3 (v1.5)
/// or the first 1×1 (v1) as [`ResidualStyle`] says.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    pub conv1: Conv2d,
    pub conv2: Conv2d,
    pub conv3: Conv2d,
    pub downsample: Option<Conv2d>,
}

impl Bottleneck {
    pub const EXPANSION: usize = 4;

    pub fn load(vb: &VarBuilder, cin: usize, planes: usize, stride: usize, st: ResidualStyle) -> Result<Self> {
        let cout = planes * Self::EXPANSION;
        let (s1, s3) = if st.stride_on_3x3 { (1, stride) } else { (stride, 1) };
        let c1 = ConvSpec::new(cin, planes, 1).stride(s1).act(Activation::Relu);
        let c2 = ConvSpec::new(planes, planes, 3).stride(s3).pad(1).act(Activation::Relu);
        let c3 = ConvSpec::new(planes, cout, 1);
        Ok(Self {
            conv1: st.conv(vb, "conv1", "bn1", c1)?,
            conv2: st.conv(vb, "conv2", "bn2", c2)?,
            conv3: st.conv(vb, "conv3", "bn3", c3)?,
            downsample: downsample(vb, cin, cout, stride, st)?,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.conv2.forward(&self.conv1.forward(x)?)?;
        self.conv3
            .forward_residual(&y, &shortcut(&self.downsample, x)?, Activation::Relu)
    }
}
