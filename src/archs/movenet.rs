//! MoveNet single-pose (Google 2021, MoveNet model card; CenterNet heads after Zhou et al.
//! 2019, "Objects as Points"): MobileNetV2, a feature pyramid (Lin et al. 2017, "Feature
//! Pyramid Networks for Object Detection") back up to stride 4, and four CenterNet heads, as
//! the TF Hub `movenet/singlepose/lightning` TFLite file builds them:
//!
//! | part | layer | output (192×192 input) |
//! |---|---|---|
//! | `backbone.features.*` | MobileNetV2 ([`super::mobilenet`]), read at `features.{3,6,10,18}` | 24×48², 32×24², 64×12², 1280×6² |
//! | `fpn.lateral.{0..3}` | 1×1 conv (bias) on `features.18`, `.10`, `.6`, `.3` ([`LATERAL_TAPS`]) | 64, 64, 32, 24 channels |
//! | `fpn.output.{0..2}` | the top-down sum (bilinear ×2 of the coarser level + lateral) → 3×3 depthwise + 1×1 conv, ReLU ([`FPN_DEPTHS`]) | 32×12², 24×24², 24×48² |
//! | `head.{center,keypoint_heatmap,keypoint_offset,keypoint_regress}` | `.0`: 3×3 depthwise + 1×1 to 96, ReLU; `.1`: 1×1 conv | 1, K, 2K, 2K channels at 48² |
//!
//! `forward` returns the four heads' raw outputs concatenated, N×(1 + K + 2K + 2K)×h×w, in that
//! order (centre and heatmap logits, offsets and regressions in (y, x) pairs per keypoint);
//! [`crate::pose`] decodes them.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::mobilenet::{make_divisible, MobileNetV2};
use crate::layers::{global_avg_pool, Activation, Conv2d, ConvSpec, PaddingMode};
use crate::model::{ModelOptions, Network};

/// The backbone outputs the pyramid reads, coarsest first: `features.18` (stride 32), then
/// `features.10` (16), `features.6` (8), `features.3` (4): Keras' `out_relu`, `block_9_add`,
/// `block_5_add`, `block_2_add`.
pub const LATERAL_TAPS: [usize; 4] = [18, 10, 6, 3];

/// Channels of the pyramid: the lateral 1×1 convs' outputs, coarsest first, and of each
/// merged level after its separable conv (the last is the heads' input).
pub const LATERAL_DEPTHS: [usize; 4] = [64, 64, 32, 24];
pub const FPN_DEPTHS: [usize; 3] = [32, 24, 24];

/// Channels inside each head, between its separable conv and its last 1×1.
pub const HEAD_DEPTH: usize = 96;

/// A head's output channels as a function of the keypoint count K.
pub type HeadChannels = fn(usize) -> usize;

/// The heads in output order: (weight path, channels as a function of the keypoint count K).
pub const HEADS: [(&str, HeadChannels); 4] = [
    ("center", |_| 1),
    ("keypoint_heatmap", |k| k),
    ("keypoint_offset", |k| 2 * k),
    ("keypoint_regress", |k| 2 * k),
];

/// A Keras `SeparableConv2D`: 3×3 depthwise (bias), then 1×1 pointwise with `act`.
#[derive(Debug, Clone)]
pub struct SeparableConv {
    pub depthwise: Conv2d,
    pub pointwise: Conv2d,
}

impl SeparableConv {
    pub fn load(vb: &VarBuilder, cin: usize, cout: usize, padding: PaddingMode, act: Activation) -> Result<Self> {
        let dw = ConvSpec::new(cin, cin, 3).padding(padding.for_kernel(3)).groups(cin);
        let pw = ConvSpec::new(cin, cout, 1).act(act);
        Ok(Self {
            depthwise: Conv2d::load(&vb.pp("depthwise"), dw, true)?,
            pointwise: Conv2d::load(&vb.pp("pointwise"), pw, true)?,
        })
    }
}

impl Module for SeparableConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(x)?)
    }
}

/// One CenterNet head: separable conv to [`HEAD_DEPTH`] with ReLU, then a 1×1 conv.
#[derive(Debug, Clone)]
pub struct CenterNetHead {
    pub hidden: SeparableConv,
    pub out: Conv2d,
}

impl Module for CenterNetHead {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&self.hidden.forward(x)?)
    }
}

/// MoveNet: backbone, feature pyramid, heads.
#[derive(Debug, Clone)]
pub struct MoveNet {
    backbone: MobileNetV2,
    lateral: Vec<Conv2d>,
    output: Vec<SeparableConv>,
    heads: Vec<CenterNetHead>,
    num_keypoints: usize,
}

impl MoveNet {
    /// `opts.num_classes` is the keypoint count K (17 for COCO).
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let padding = opts.padding.unwrap_or(PaddingMode::TfSame);
        let backbone_opts = ModelOptions {
            include_top: false,
            padding: Some(padding),
            bn_eps: Some(opts.bn_eps.unwrap_or(1e-3)),
            ..opts.clone()
        };
        let backbone = MobileNetV2::new(&backbone_opts, vb.pp("backbone"))?;
        let alpha = opts.width;
        // channels of features.3, .6, .10 (Table 2's c = 24, 32, 64 at width α) and features.18
        let tap_channels = [
            backbone.num_features(),
            make_divisible(64.0 * alpha, 8),
            make_divisible(32.0 * alpha, 8),
            make_divisible(24.0 * alpha, 8),
        ];
        let fpn = vb.pp("fpn");
        let lateral = tap_channels
            .iter()
            .zip(LATERAL_DEPTHS)
            .enumerate()
            .map(|(i, (&cin, d))| Conv2d::load(&fpn.pp("lateral").pp(i), ConvSpec::new(cin, d, 1), true))
            .collect::<Result<Vec<_>>>()?;
        let mut output = Vec::new();
        for (i, &d) in FPN_DEPTHS.iter().enumerate() {
            let vb = fpn.pp("output").pp(i);
            output.push(SeparableConv::load(
                &vb,
                LATERAL_DEPTHS[i + 1],
                d,
                padding,
                Activation::Relu,
            )?);
        }
        let k = opts.num_classes;
        let c = FPN_DEPTHS[FPN_DEPTHS.len() - 1];
        let heads = HEADS
            .iter()
            .map(|&(name, channels)| {
                let vb = vb.pp("head").pp(name);
                Ok(CenterNetHead {
                    hidden: SeparableConv::load(&vb.pp(0), c, HEAD_DEPTH, padding, Activation::Relu)?,
                    out: Conv2d::load(&vb.pp(1), ConvSpec::new(HEAD_DEPTH, channels(k), 1), true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            backbone,
            lateral,
            output,
            heads,
            num_keypoints: k,
        })
    }

    pub fn num_keypoints(&self) -> usize {
        self.num_keypoints
    }

    /// The top-down pathway: from the coarsest lateral, repeatedly upsample ×2 (bilinear,
    /// half-pixel centres, as Keras' `UpSampling2D(interpolation="bilinear")`), add the next
    /// lateral, and apply that level's separable conv. Returns the finest level, N×24×H/4×W/4.
    fn pyramid(&self, taps: &[Tensor]) -> Result<Tensor> {
        let mut p = self.lateral[0].forward(&taps[0])?; // N×64×H/32×W/32
        for (i, out) in self.output.iter().enumerate() {
            let lateral = self.lateral[i + 1].forward(&taps[i + 1])?;
            let up = upsample_like(&p, &lateral)?; // N×c×2h×2w
            p = out.forward(&(up + lateral)?)?; // N×FPN_DEPTHS[i]×2h×2w
            crate::trace::record_lazy(|| format!("fpn.output.{i}"), "FpnLevel", &p, 0);
        }
        Ok(p)
    }
}

/// `x` bilinearly resized (half-pixel centres) to `like`'s height and width: our ×2 kernel
/// ([`crate::kernels::resize`]) for f32 on the CPU at exactly twice the size, candle's
/// `upsample_bilinear2d` otherwise (the same sampling).
fn upsample_like(x: &Tensor, like: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (oh, ow) = (like.dim(2)?, like.dim(3)?);
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && (oh, ow) == (2 * h, 2 * w) {
        let data = x.flatten_all()?.to_vec1::<f32>()?;
        let up = crate::kernels::resize::upsample2x_bilinear(&data, n * c, h, w);
        return Tensor::from_vec(up, (n, c, oh, ow), x.device());
    }
    x.upsample_bilinear2d(oh, ow, false)
}

impl Network for MoveNet {
    fn name(&self) -> &str {
        "movenet"
    }
    /// The pyramid's finest level, N×24×H/4×W/4: what the heads read.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let taps = self.backbone.forward_outputs(x, &[3, 6, 10, 18])?; // ascending
        let taps: Vec<Tensor> = taps.into_iter().rev().collect(); // coarsest first, as LATERAL_TAPS
        self.pyramid(&taps)
    }
    /// With `pre_logits`, the pooled pyramid features; otherwise the heads.
    fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        if pre_logits {
            return global_avg_pool(features);
        }
        let outs = self
            .heads
            .iter()
            .map(|h| h.forward(features))
            .collect::<Result<Vec<_>>>()?;
        let y = Tensor::cat(&outs, 1)?; // N×(1 + K + 2K + 2K)×H/4×W/4
        crate::trace::record("head", "CenterNetHeads", &y, 0);
        Ok(y)
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::model::check_input(self.name(), x, self.min_input_size())?;
        let _awake = crate::kernels::hot_workers();
        let f = self.forward_features(x)?;
        self.forward_head(&f, false)
    }
    fn num_features(&self) -> usize {
        FPN_DEPTHS[FPN_DEPTHS.len() - 1]
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.num_keypoints)
    }
    fn min_input_size(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// TensorFlow's `resize_bilinear` with `half_pixel_centers` (the TFLite file's
    /// RESIZE_BILINEAR options), written out from its definition.
    fn tf_half_pixel(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
        let mut out = vec![0f32; oh * ow];
        let (sy, sx) = (h as f32 / oh as f32, w as f32 / ow as f32);
        for y in 0..oh {
            let fy = (y as f32 + 0.5) * sy - 0.5;
            let (y0, ly) = (fy.floor(), fy - fy.floor());
            let (top, bottom) = ((y0.max(0.0)) as usize, (fy.ceil() as usize).min(h - 1));
            for x in 0..ow {
                let fx = (x as f32 + 0.5) * sx - 0.5;
                let (x0, lx) = (fx.floor(), fx - fx.floor());
                let (left, right) = ((x0.max(0.0)) as usize, (fx.ceil().max(0.0) as usize).min(w - 1));
                let t = src[top * w + left] + (src[top * w + right] - src[top * w + left]) * lx;
                let b = src[bottom * w + left] + (src[bottom * w + right] - src[bottom * w + left]) * lx;
                out[y * ow + x] = t + (b - t) * ly;
            }
        }
        out
    }

    #[test]
    fn upsampling_is_tf_half_pixel_bilinear() -> candle_core::Result<()> {
        let (h, w) = (3, 5);
        let src: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 23) as f32 - 11.0).collect();
        let t = Tensor::from_vec(src.clone(), (1, 1, h, w), &Device::Cpu)?;
        let got = t
            .upsample_bilinear2d(2 * h, 2 * w, false)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let want = tf_half_pixel(&src, h, w, 2 * h, 2 * w);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
        Ok(())
    }
}
