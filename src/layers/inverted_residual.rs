//! Inverted residual with linear bottleneck, MobileNetV2 (Sandler et al. 2018, Table 1):
//! 1×1 expansion (×t) + ReLU6 → 3×3 depthwise + ReLU6 → 1×1 linear projection,
//! with an identity shortcut when stride is 1 and input and output widths agree.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec, Norm, PaddingMode};

/// Weight names follow torchvision: `conv.0.{0,1}` expansion (absent when t = 1),
/// then the depthwise `conv.k.{0,1}`, the projection conv `conv.k+1` and its BN `conv.k+2`.
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    pub expand: Option<Conv2d>,
    pub depthwise: Conv2d,
    pub project: Conv2d,
    pub use_residual: bool,
}

impl InvertedResidual {
    pub fn load(
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        stride: usize,
        expand_ratio: usize,
        padding: PaddingMode,
        norm: Norm,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let hidden = cin * expand_ratio;
        let mut i = 0;
        let expand = if expand_ratio != 1 {
            let spec = ConvSpec::new(cin, hidden, 1).act(Activation::Relu6);
            i += 1;
            Some(Conv2d::load_with_norm(&vb.pp(0).pp(0), &vb.pp(0).pp(1), spec, norm)?)
        } else {
            None
        };
        let dw = ConvSpec::new(hidden, hidden, 3)
            .stride(stride)
            .padding(padding.for_kernel(3))
            .groups(hidden)
            .act(Activation::Relu6);
        let depthwise = Conv2d::load_with_norm(&vb.pp(i).pp(0), &vb.pp(i).pp(1), dw, norm)?;
        let pw = ConvSpec::new(hidden, cout, 1);
        let project = Conv2d::load_with_norm(&vb.pp(i + 1), &vb.pp(i + 2), pw, norm)?;
        Ok(Self {
            expand,
            depthwise,
            project,
            use_residual: stride == 1 && cin == cout,
        })
    }
}

impl InvertedResidual {
    /// As `forward`, also returning the expansion's output (the input itself when t = 1): SSD
    /// reads a feature map there (TF-slim's `layer_15/expansion_output`).
    /// Output channels (the projection's).
    pub fn out_channels(&self) -> usize {
        self.project.spec().out_channels
    }

    pub fn forward_with_expansion(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let e = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward(&e)?;
        let out = if self.use_residual {
            self.project.forward_residual(&h, x, Activation::None)?
        } else {
            self.project.forward(&h)?
        };
        Ok((e, out))
    }
}

impl Module for InvertedResidual {
    /// On NCHW, or on channel-blocked data (rank 5, see [`crate::kernels::nchwc`]).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.expand {
            Some(e) => e.forward(x)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward(&h)?;
        if self.use_residual {
            // linear bottleneck: the shortcut is added after the projection, no activation
            self.project.forward_residual(&h, x, Activation::None)
        } else {
            self.project.forward(&h)
        }
    }
}
