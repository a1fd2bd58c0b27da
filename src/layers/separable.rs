//! Depthwise-separable convolution, MobileNet v1 (Howard et al. 2017, Fig. 3):
//! 3×3 depthwise conv + BN + ReLU6, then 1×1 pointwise conv + BN + ReLU6.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec, Norm, PaddingMode};

/// Weight names: `depthwise.0` (conv), `depthwise.1` (BN), `pointwise.0`, `pointwise.1`.
#[derive(Debug, Clone)]
pub struct DepthwiseSeparable {
    pub depthwise: Conv2d,
    pub pointwise: Conv2d,
}

impl DepthwiseSeparable {
    pub fn load(
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        stride: usize,
        dilation: usize,
        padding: PaddingMode,
        norm: Norm,
    ) -> Result<Self> {
        let dw = ConvSpec::new(cin, cin, 3)
            .stride(stride)
            .dilation(dilation)
            .padding(padding.for_kernel(3))
            .groups(cin)
            .act(Activation::Relu6);
        let pw = ConvSpec::new(cin, cout, 1).act(Activation::Relu6);
        let (d, p) = (vb.pp("depthwise"), vb.pp("pointwise"));
        Ok(Self {
            depthwise: Conv2d::load_with_norm(&d.pp(0), &d.pp(1), dw, norm)?,
            pointwise: Conv2d::load_with_norm(&p.pp(0), &p.pp(1), pw, norm)?,
        })
    }
}

impl Module for DepthwiseSeparable {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(x)?)
    }
}
