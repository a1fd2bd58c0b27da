//! Fire module, SqueezeNet (Iandola et al. 2016, Fig. 1): a 1×1 "squeeze" layer feeding
//! parallel 1×1 and 3×3 "expand" layers whose outputs are concatenated. All with bias + ReLU.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec};

/// Weight names: `squeeze`, `expand1x1`, `expand3x3` (torchvision).
#[derive(Debug, Clone)]
pub struct Fire {
    pub squeeze: Conv2d,
    pub expand1x1: Conv2d,
    pub expand3x3: Conv2d,
}

impl Fire {
    pub fn load(vb: &VarBuilder, cin: usize, squeeze: usize, e1: usize, e3: usize) -> Result<Self> {
        let relu = Activation::Relu;
        Ok(Self {
            squeeze: Conv2d::load(&vb.pp("squeeze"), ConvSpec::new(cin, squeeze, 1).act(relu), true)?,
            expand1x1: Conv2d::load(&vb.pp("expand1x1"), ConvSpec::new(squeeze, e1, 1).act(relu), true)?,
            expand3x3: Conv2d::load(
                &vb.pp("expand3x3"),
                ConvSpec::new(squeeze, e3, 3).pad(1).act(relu),
                true,
            )?,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.expand1x1.spec().out_channels + self.expand3x3.spec().out_channels
    }
}

impl Module for Fire {
    /// On NCHW, or on channel-blocked data (rank 5, see [`crate::kernels::nchwc`]: each
    /// expand layer then writes its blocks of the output, which needs the expand 1×1's width
    /// in whole blocks of 16).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let s = self.squeeze.forward(x)?;
        let expand = |conv| super::Part::Conv(conv, Box::new(|| Ok(s.clone())));
        super::cat_into(
            &s,
            self.out_channels(),
            vec![expand(&self.expand1x1), expand(&self.expand3x3)],
        )
    }
}
