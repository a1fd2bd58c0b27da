//! Inverted residual with linear bottleneck, MobileNetV2 (Sandler et al. 2018, Table 1):
//! 1×1 expansion (×t) + ReLU6 → 3×3 depthwise + ReLU6 → 1×1 linear projection,
//! with an identity shortcut when stride is 1 and input and output widths agree.

use std::sync::OnceLock;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec, Norm, PaddingMode};
use crate::kernels::nchwc::{self, Depthwise3x3, Pointwise};

/// Weight names follow torchvision: `conv.0.{0,1}` expansion (absent when t = 1),
/// then the depthwise `conv.k.{0,1}`, the projection conv `conv.k+1` and its BN `conv.k+2`.
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    pub expand: Option<Conv2d>,
    pub depthwise: Conv2d,
    pub project: Conv2d,
    pub use_residual: bool,
    /// The three layers packed for [`InvertedResidual::forward_blocked`] on first use (`None`
    /// where one of them does not fit the blocked kernels).
    pub blocked: OnceLock<Option<BlockedLayers>>,
}

/// An inverted residual's layers packed for the channel-blocked kernels.
#[derive(Debug, Clone)]
pub struct BlockedLayers {
    expand: Option<Pointwise>,
    depthwise: Depthwise3x3,
    project: Pointwise,
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
            blocked: OnceLock::new(),
        })
    }

    /// The block on channel-blocked data ([`nchwc`]): `x` N×⌈C/16⌉×H×W×16, f32 on the CPU,
    /// where [`nchwc::available`]. Returns `None` (nothing run) where a layer does not fit the
    /// blocked kernels (f16 weights, other kernel sizes).
    pub fn forward_blocked(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(l) = self.blocked_layers() else {
            return Ok(None);
        };
        let (n, _, h, w, _) = x.dims5()?;
        let cin = self.depthwise.spec().in_channels;
        let hidden = match &self.expand {
            Some(e) => e.spec().out_channels,
            None => cin,
        };
        let cout = self.project.spec().out_channels;
        let blocked = |v: Vec<f32>, c: usize, h: usize, w: usize| {
            Tensor::from_vec(v, (n, nchwc::blocks(c), h, w, nchwc::BLOCK), x.device())
        };
        let hx = match (&self.expand, &l.expand) {
            (Some(conv), Some(p)) => {
                let act = conv.spec().activation;
                let y = super::with_cpu_f32(x, "expand", |xs| nchwc::pointwise(xs, n, h * w, p, act, None))?;
                conv.traced(blocked(y, hidden, h, w)?, h, w)?
            }
            _ => x.clone(),
        };
        let g = self.depthwise.geometry_of((n, hidden, h, w))?;
        let dg = nchwc::Geometry::from(&g);
        let act = self.depthwise.spec().activation;
        let d = super::with_cpu_f32(&hx, "depthwise", |hs| {
            nchwc::depthwise3x3(hs, n, &dg, &l.depthwise, act)
        })?;
        let d = self
            .depthwise
            .traced(blocked(d, hidden, dg.out_h, dg.out_w)?, dg.out_h, dg.out_w)?;
        let pixels = dg.out_h * dg.out_w;
        let y = super::with_cpu_f32(&d, "project", |ds| {
            if self.use_residual {
                // linear bottleneck: the shortcut is added after the projection, no activation
                super::with_cpu_f32(x, "shortcut", |xs| {
                    nchwc::pointwise(ds, n, pixels, &l.project, Activation::None, Some(xs))
                })
            } else {
                Ok(nchwc::pointwise(ds, n, pixels, &l.project, Activation::None, None))
            }
        })??;
        let y = self
            .project
            .traced(blocked(y, cout, dg.out_h, dg.out_w)?, dg.out_h, dg.out_w)?;
        Ok(Some(y))
    }

    /// The layers packed for [`InvertedResidual::forward_blocked`] (packed on first call), or
    /// `None` where one does not fit the blocked kernels.
    pub fn blocked_layers(&self) -> Option<&BlockedLayers> {
        self.blocked.get_or_init(|| self.pack_blocked().ok().flatten()).as_ref()
    }

    fn pack_blocked(&self) -> Result<Option<BlockedLayers>> {
        let expand = match &self.expand {
            Some(e) => match e.blocked_pointwise()? {
                Some(p) => Some(p),
                None => return Ok(None),
            },
            None => None,
        };
        let (Some(depthwise), Some(project)) = (self.depthwise.blocked_depthwise()?, self.project.blocked_pointwise()?)
        else {
            return Ok(None);
        };
        Ok(Some(BlockedLayers {
            expand,
            depthwise,
            project,
        }))
    }
}

impl Module for InvertedResidual {
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
