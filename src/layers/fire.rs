//! Fire module, SqueezeNet (Iandola et al. 2016, Fig. 1): a 1×1 "squeeze" layer feeding
//! parallel 1×1 and 3×3 "expand" layers whose outputs are concatenated. All with bias + ReLU.

use std::sync::OnceLock;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{Activation, Conv2d, ConvSpec};
use crate::kernels::nchwc::{self, Pointwise, Target};

/// Weight names: `squeeze`, `expand1x1`, `expand3x3` (torchvision).
#[derive(Debug, Clone)]
pub struct Fire {
    pub squeeze: Conv2d,
    pub expand1x1: Conv2d,
    pub expand3x3: Conv2d,
    /// The three layers packed for [`Fire::forward_blocked`] on first use (`None` where they
    /// do not fit the blocked kernels).
    pub blocked: OnceLock<Option<BlockedFire>>,
}

/// A Fire module's layers packed for the channel-blocked kernels.
#[derive(Debug, Clone)]
pub struct BlockedFire {
    squeeze: Pointwise,
    expand1x1: Pointwise,
    expand3x3: nchwc::Conv,
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
            blocked: OnceLock::new(),
        })
    }

    pub fn out_channels(&self) -> usize {
        self.expand1x1.spec().out_channels + self.expand3x3.spec().out_channels
    }

    /// The module on channel-blocked data ([`nchwc`]): `x` N×⌈C/16⌉×H×W×16, f32 on the CPU,
    /// where [`nchwc::available`]. Both expand layers write their blocks of the output, so the
    /// concatenation costs nothing. Returns `None` (nothing run) where the layers do not fit
    /// the blocked kernels (f16 weights, an expand 1×1 width that is not whole blocks).
    pub fn forward_blocked(&self, x: &Tensor) -> Result<Option<Tensor>> {
        let Some(l) = self.blocked_layers() else {
            return Ok(None);
        };
        let (n, _, h, w, _) = x.dims5()?;
        let sq = self.squeeze.spec();
        let s = super::with_cpu_f32(x, "squeeze", |xs| {
            nchwc::pointwise(xs, n, h * w, &l.squeeze, sq.activation, None)
        })?;
        let s = Tensor::from_vec(s, (n, nchwc::blocks(sq.out_channels), h, w, nchwc::BLOCK), x.device())?;
        let s = self.squeeze.traced(s, h, w)?;
        let g = nchwc::Geometry::from(&self.expand3x3.geometry_of((n, sq.out_channels, h, w))?);
        let (ho, wo) = (g.out_h, g.out_w);
        if (ho, wo) != (h, w) {
            candle_core::bail!("fire: expand3x3 output {ho}×{wo}, expected {h}×{w}")
        }
        let (b1, b3) = (
            nchwc::blocks(self.expand1x1.spec().out_channels),
            nchwc::blocks(self.expand3x3.spec().out_channels),
        );
        let mut y = crate::kernels::uninit_output(n * (b1 + b3) * h * w * nchwc::BLOCK);
        super::with_cpu_f32(&s, "expand", |ss| {
            let to = Target {
                y: &mut y,
                blocks: b1 + b3,
                first: 0,
            };
            nchwc::pointwise_into(ss, n, h * w, &l.expand1x1, self.expand1x1.spec().activation, None, to);
            self.expand1x1.traced_shape(&[n, b1, h, w, nchwc::BLOCK], h, w);
            let to = Target {
                y: &mut y,
                blocks: b1 + b3,
                first: b1,
            };
            nchwc::conv_into(ss, n, &g, &l.expand3x3, self.expand3x3.spec().activation, None, to);
            self.expand3x3.traced_shape(&[n, b3, h, w, nchwc::BLOCK], h, w);
        })?;
        // SAFETY: the two expand layers wrote blocks 0..b1 and b1..b1 + b3 of every image.
        let y = unsafe { crate::kernels::assume_init(y) };
        Tensor::from_vec(y, (n, b1 + b3, h, w, nchwc::BLOCK), x.device()).map(Some)
    }

    /// The layers packed for [`Fire::forward_blocked`] (packed on first call), or `None` where
    /// they do not fit the blocked kernels.
    pub fn blocked_layers(&self) -> Option<&BlockedFire> {
        self.blocked.get_or_init(|| self.pack_blocked().ok().flatten()).as_ref()
    }

    fn pack_blocked(&self) -> Result<Option<BlockedFire>> {
        if !self.expand1x1.spec().out_channels.is_multiple_of(nchwc::BLOCK) {
            return Ok(None);
        }
        let (Some(squeeze), Some(expand1x1), Some(expand3x3)) = (
            self.squeeze.blocked_pointwise()?,
            self.expand1x1.blocked_pointwise()?,
            self.expand3x3.blocked_conv()?,
        ) else {
            return Ok(None);
        };
        Ok(Some(BlockedFire {
            squeeze,
            expand1x1,
            expand3x3,
        }))
    }
}

impl Module for Fire {
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
