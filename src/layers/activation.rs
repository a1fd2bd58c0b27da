//! Pointwise activations applied inside (fused into) convolutions and blocks.

use candle_core::{Result, Tensor};

/// The activation that follows a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity: the "linear bottleneck" of MobileNetV2, the last conv of a residual branch.
    #[default]
    None,
    Relu,
    /// min(max(x, 0), 6): MobileNet v1/v2.
    Relu6,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::None => Ok(x.clone()),
            Activation::Relu => x.relu(),
            Activation::Relu6 => x.clamp(0f32, 6f32),
        }
    }

    /// The activation of one value (the CPU kernels' epilogues).
    #[inline(always)]
    pub fn of(self, v: f32) -> f32 {
        match self {
            Activation::None => v,
            Activation::Relu => v.max(0.0),
            Activation::Relu6 => v.clamp(0.0, 6.0),
        }
    }
}
