//! MobileNet v1 (Howard et al. 2017, Table 1) and MobileNetV2 (Sandler et al. 2018, Table 2),
//! with a width multiplier α and any input size ≥ 32.
//!
//! MobileNet v1 has no torchvision model; its parameter names follow the same style:
//!
//! | path | layer |
//! |---|---|
//! | `features.0.0.weight` | stem conv 3×3/2, 3 → d(32) |
//! | `features.0.1.{weight,bias,running_mean,running_var}` | stem BatchNorm |
//! | `features.{1..13}.depthwise.0.weight` | depthwise 3×3 conv (groups = channels) |
//! | `features.{1..13}.depthwise.1.*` | its BatchNorm |
//! | `features.{1..13}.pointwise.0.weight` | pointwise 1×1 conv |
//! | `features.{1..13}.pointwise.1.*` | its BatchNorm |
//! | `classifier.1.{weight,bias}` | Linear d(1024) → classes (TF-slim's 1×1 `Conv2d_1c_1x1`) |
//!
//! With BN folded (TFLite files), each `*.0` conv carries a `bias` and the `*.1` entries are absent.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{forward_stages, Stage};
use crate::layers::{global_avg_pool, Activation, Conv2d, ConvSpec, DepthwiseSeparable, InvertedResidual, PaddingMode};
use crate::model::{ModelOptions, Network};

/// Table 1 of the MobileNet paper after the stem: (output channels, stride) per
/// depthwise-separable block, at α = 1.
#[rustfmt::skip]
pub const V1_BLOCKS: [(usize, usize); 13] = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
];

/// TF-slim's channel rounding for MobileNet v1: `max(int(d · α), min_depth = 8)`.
pub fn v1_depth(d: usize, alpha: f64) -> usize {
    ((d as f64 * alpha) as usize).max(8)
}

/// (stride, dilation) of each block of [`V1_BLOCKS`] under `opts.output_stride` (TF-slim's
/// `mobilenet_v1_base`): once the stem and blocks have reached the output stride, a block
/// that would stride keeps stride 1, and with `opts.atrous` every later block is dilated by
/// the product of the strides skipped so far.
pub fn v1_strides(opts: &ModelOptions, blocks: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let target = opts.output_stride.unwrap_or(usize::MAX);
    let (mut current, mut rate) = (2, 1); // the stem strides by 2
    blocks
        .iter()
        .map(|&(_, s)| {
            if current >= target && s > 1 {
                let dilation = if opts.atrous { rate } else { 1 };
                rate *= s;
                (1, dilation)
            } else {
                current *= s;
                (s, if opts.atrous { rate } else { 1 })
            }
        })
        .collect()
}

/// MobileNet v1. BatchNorm ε = 1e-3 (TF-slim); TensorFlow "SAME" padding by default.
#[derive(Debug, Clone)]
pub struct MobileNetV1 {
    stem: Conv2d,
    blocks: Vec<DepthwiseSeparable>,
    classifier: Option<super::Classifier>,
    num_features: usize,
    num_classes: usize,
}

impl MobileNetV1 {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        Self::with_blocks(opts, vb, &V1_BLOCKS)
    }

    /// MobileNet v1 with another (channels, stride) table than Table 1's (PoseNet's).
    pub fn with_blocks(opts: &ModelOptions, vb: VarBuilder, table: &[(usize, usize)]) -> Result<Self> {
        let (alpha, norm) = (opts.width, opts.norm(1e-3));
        let padding = opts.padding.unwrap_or(PaddingMode::TfSame);
        let f = vb.pp("features");
        let mut cin = v1_depth(32, alpha);
        let stem_spec = ConvSpec::new(3, cin, 3)
            .stride(2)
            .padding(padding.for_kernel(3))
            .act(Activation::Relu6);
        let stem = Conv2d::load_with_norm(&f.pp(0).pp(0), &f.pp(0).pp(1), stem_spec, norm)?;
        let mut blocks = Vec::with_capacity(table.len());
        for (i, (&(c, _), (s, d))) in table.iter().zip(v1_strides(opts, table)).enumerate() {
            let cout = v1_depth(c, alpha);
            blocks.push(DepthwiseSeparable::load(&f.pp(i + 1), cin, cout, s, d, padding, norm)?);
            cin = cout;
        }
        let classifier = super::Classifier::load(opts, cin, &vb, "classifier.1")?;
        Ok(Self {
            stem,
            blocks,
            classifier,
            num_features: cin,
            num_classes: opts.num_classes,
        })
    }
}

impl Network for MobileNetV1 {
    fn name(&self) -> &str {
        "mobilenet_v1"
    }
    /// On channel-blocked data ([`crate::kernels::nchwc`]) from the stem's output on where the
    /// CPU allows (`layers::blocked_usable`; the layers take either layout),
    /// unblocked at the end.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let blocked = crate::layers::blocked_usable(x);
        let mut h = if blocked {
            crate::layers::stem_into_blocks(&self.stem, x)?
        } else {
            self.stem.forward(x)?
        }; // N×d(32)×H/2×W/2
        crate::trace::record("features.0", "ConvBNReLU6", &h, 0);
        for (i, b) in self.blocks.iter().enumerate() {
            h = b.forward(&h)?;
            crate::trace::record_lazy(|| format!("features.{}", i + 1), "DepthwiseSeparable", &h, 0);
        }
        if blocked {
            h = crate::layers::unblock(&h, self.num_features)?;
        }
        Ok(h) // N×d(1024)×H/32×W/32
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(f)?;
        match &self.classifier {
            Some(c) if !pre_logits => c.forward(&pooled),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        self.num_features
    }
    fn num_classes(&self) -> Option<usize> {
        self.classifier.as_ref().map(|_| self.num_classes)
    }
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.classifier
            .as_ref()
            .map(|c| c.activation_maps(features))
            .transpose()
    }
    fn min_input_size(&self) -> usize {
        32
    }
}

/// MobileNet v1 at width `alpha` with `num_classes` outputs (TF "SAME" padding, separate BN).
pub fn mobilenet_v1(vb: VarBuilder, num_classes: usize, alpha: f64) -> Result<MobileNetV1> {
    MobileNetV1::new(
        &ModelOptions {
            width: alpha,
            ..ModelOptions::with_classes(num_classes)
        },
        vb,
    )
}

/// torchvision's `mobilenet_v2(width_mult=alpha)` with `num_classes` outputs.
pub fn mobilenet_v2(vb: VarBuilder, num_classes: usize, alpha: f64) -> Result<MobileNetV2> {
    MobileNetV2::new(
        &ModelOptions {
            width: alpha,
            ..ModelOptions::with_classes(num_classes)
        },
        vb,
    )
}

/// Table 2 of the MobileNetV2 paper: expansion t, output channels c, repeats n, first stride s.
#[rustfmt::skip]
pub const V2_BLOCKS: [(usize, usize, usize, usize); 7] = [
    // t,   c, n, s
    (1,  16, 1, 1),
    (6,  24, 2, 2),
    (6,  32, 3, 2),
    (6,  64, 4, 2),
    (6,  96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];

/// torchvision's `_make_divisible(v, 8)`: nearest multiple of 8, at least 8, never more than
/// 10% below `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (new_v as f64) < 0.9 * v {
        new_v += divisor;
    }
    new_v
}

/// MobileNetV2 in torchvision's layout (`features.0` stem, `features.1..17` inverted residuals,
/// `features.18` 1×1 to the last channel, `classifier.1`). The last channel 1280 is widened
/// only for α > 1. BatchNorm ε = 1e-5 (torchvision); PyTorch padding by default.
#[derive(Debug, Clone)]
pub struct MobileNetV2 {
    stem: Conv2d,
    blocks: Vec<InvertedResidual>,
    last: Conv2d,
    classifier: Option<super::Classifier>,
    num_features: usize,
    num_classes: usize,
}

impl MobileNetV2 {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let (alpha, norm) = (opts.width, opts.norm(1e-5));
        let padding = opts.padding.unwrap_or(PaddingMode::Torch);
        let f = vb.pp("features");
        let mut cin = make_divisible(32.0 * alpha, 8);
        let last_channel = make_divisible(1280.0 * alpha.max(1.0), 8);
        let stem_spec = ConvSpec::new(3, cin, 3)
            .stride(2)
            .padding(padding.for_kernel(3))
            .act(Activation::Relu6);
        let stem = Conv2d::load_with_norm(&f.pp(0).pp(0), &f.pp(0).pp(1), stem_spec, norm)?;
        let mut blocks = Vec::new();
        for &(t, c, n, s) in &V2_BLOCKS {
            let cout = make_divisible(c as f64 * alpha, 8);
            for i in 0..n {
                let stride = if i == 0 { s } else { 1 };
                blocks.push(InvertedResidual::load(
                    &f.pp(blocks.len() + 1),
                    cin,
                    cout,
                    stride,
                    t,
                    padding,
                    norm,
                )?);
                cin = cout;
            }
        }
        let idx = blocks.len() + 1;
        let last_spec = ConvSpec::new(cin, last_channel, 1).act(Activation::Relu6);
        let last = Conv2d::load_with_norm(&f.pp(idx).pp(0), &f.pp(idx).pp(1), last_spec, norm)?;
        let classifier = super::Classifier::load(opts, last_channel, &vb, "classifier.1")?;
        Ok(Self {
            stem,
            blocks,
            last,
            classifier,
            num_features: last_channel,
            num_classes: opts.num_classes,
        })
    }
}

impl MobileNetV2 {
    /// The two feature maps SSD reads (TF Object Detection API's `ssd_mobilenet_v2`): the
    /// expansion output of block `features.{tap}` and the last 1×1's output. Both are
    /// channel-blocked ([`crate::kernels::nchwc`], rank 5) where the CPU allows
    /// (`layers::blocked_usable`; the layers take either layout), else NCHW.
    pub fn forward_taps(&self, x: &Tensor, tap: usize) -> Result<(Tensor, Tensor)> {
        if tap == 0 || tap > self.blocks.len() {
            candle_core::bail!("mobilenet_v2: no block features.{tap} to tap")
        }
        let mut h = if crate::layers::blocked_usable(x) {
            crate::layers::stem_into_blocks(&self.stem, x)?
        } else {
            self.stem.forward(x)?
        }; // N×32α×H/2×W/2
        crate::trace::record("backbone.features.0", "ConvBNReLU6", &h, 0);
        let mut tapped = None;
        for (i, b) in self.blocks.iter().enumerate() {
            if i + 1 == tap {
                let (e, out) = b.forward_with_expansion(&h)?;
                tapped = Some(e);
                h = out;
            } else {
                h = b.forward(&h)?;
            }
            crate::trace::record_lazy(|| format!("backbone.features.{}", i + 1), "InvertedResidual", &h, 0);
        }
        let last = self.last.forward(&h)?; // N×1280·max(1,α)×H/32×W/32
        crate::trace::record("backbone.features.18", "ConvBNReLU6", &last, 0);
        Ok((tapped.expect("tap within the blocks"), last))
    }
}

impl MobileNetV2 {
    /// The outputs of `features.{i}` for each `i` of `taps` (0 the stem, 1..=17 the inverted
    /// residuals, 18 the last 1×1), in NCHW: the inputs of a feature pyramid (MoveNet's FPN
    /// reads 3, 6, 10 and 18). `taps` ascending.
    pub fn forward_outputs(&self, x: &Tensor, taps: &[usize]) -> Result<Vec<Tensor>> {
        let last = self.blocks.len() + 1;
        if taps.windows(2).any(|w| w[0] >= w[1]) || taps.iter().any(|&t| t > last) {
            candle_core::bail!("mobilenet_v2: taps {taps:?} must ascend within features.0..={last}")
        }
        let blocked = crate::layers::blocked_usable(x);
        let take = |h: &Tensor, channels: usize| -> Result<Tensor> {
            if h.rank() == 5 {
                crate::layers::unblock(h, channels)
            } else {
                Ok(h.clone())
            }
        };
        let mut out = Vec::with_capacity(taps.len());
        let mut h = if blocked {
            crate::layers::stem_into_blocks(&self.stem, x)?
        } else {
            self.stem.forward(x)?
        }; // N×32α×H/2×W/2
        if taps.first() == Some(&0) {
            out.push(take(&h, self.stem.spec().out_channels)?);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if out.len() == taps.len() {
                return Ok(out);
            }
            h = b.forward(&h)?;
            crate::trace::record_lazy(|| format!("backbone.features.{}", i + 1), "InvertedResidual", &h, 0);
            if taps.contains(&(i + 1)) {
                out.push(take(&h, b.out_channels())?);
            }
        }
        if taps.last() == Some(&last) {
            let h = self.last.forward(&h)?; // N×1280·max(1,α)×H/32×W/32
            crate::trace::record("backbone.features.18", "ConvBNReLU6", &h, 0);
            out.push(take(&h, self.last.spec().out_channels)?);
        }
        Ok(out)
    }
}

impl Network for MobileNetV2 {
    fn name(&self) -> &str {
        "mobilenet_v2"
    }
    /// On channel-blocked data ([`crate::kernels::nchwc`]) from the stem's output to
    /// `features.18`'s where the CPU allows (`layers::blocked_usable`; the layers take
    /// either layout), unblocked after it.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let blocked = crate::layers::blocked_usable(x);
        let mut stages: Vec<Stage> = vec![Box::new(|x| {
            let h = if blocked {
                crate::layers::stem_into_blocks(&self.stem, x)?
            } else {
                self.stem.forward(x)?
            }; // N×32α×H/2×W/2
            crate::trace::record("features.0", "ConvBNReLU6", &h, 0);
            Ok(h)
        })];
        for (i, b) in self.blocks.iter().enumerate() {
            stages.push(Box::new(move |h| {
                let h = b.forward(h)?;
                crate::trace::record_lazy(|| format!("features.{}", i + 1), "InvertedResidual", &h, 0);
                Ok(h)
            }));
        }
        stages.push(Box::new(|h| {
            let mut h = self.last.forward(h)?; // N×1280·max(1,α)×H/32×W/32
            if blocked {
                h = crate::layers::unblock(&h, self.last.spec().out_channels)?;
            }
            crate::trace::record("features.18", "ConvBNReLU6", &h, 0);
            Ok(h)
        }));
        forward_stages(x, &stages)
    }
    fn forward_head(&self, f: &Tensor, pre_logits: bool) -> Result<Tensor> {
        let pooled = global_avg_pool(f)?;
        match &self.classifier {
            Some(c) if !pre_logits => c.forward(&pooled),
            _ => Ok(pooled),
        }
    }
    fn num_features(&self) -> usize {
        self.num_features
    }
    fn num_classes(&self) -> Option<usize> {
        self.classifier.as_ref().map(|_| self.num_classes)
    }
    fn class_activation_maps(&self, features: &Tensor) -> Result<Option<Tensor>> {
        self.classifier
            .as_ref()
            .map(|c| c.activation_maps(features))
            .transpose()
    }
    fn min_input_size(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_rounding_matches_references() {
        // torchvision: α = 0.35 → stem 16, α = 1.4 → stem 48, last 1792.
        assert_eq!(make_divisible(32.0 * 0.35, 8), 16);
        assert_eq!(make_divisible(32.0 * 1.4, 8), 48);
        assert_eq!(make_divisible(1280.0 * 1.4, 8), 1792);
        assert_eq!(make_divisible(16.0 * 0.35, 8), 8);
        assert_eq!(make_divisible(24.0 * 0.75, 8), 24); // 18 → 16 would be > 10% below
                                                        // TF-slim v1: α = 0.25 → 8, 16, …, 256.
        assert_eq!(v1_depth(32, 0.25), 8);
        assert_eq!(v1_depth(1024, 0.25), 256);
        assert_eq!(v1_depth(16, 0.25), 8);
    }

    #[test]
    fn output_stride_keeps_later_blocks_unstrided() {
        let strides = |os: Option<usize>, atrous: bool| {
            v1_strides(
                &ModelOptions {
                    output_stride: os,
                    atrous,
                    ..ModelOptions::default()
                },
                &V1_BLOCKS,
            )
        };
        // the stride-2 blocks are 2, 4, 6 and 12 (1-based); stem 2 → 4, 8, 16, 32
        let plain = strides(None, false);
        assert_eq!(plain.iter().map(|p| p.0).product::<usize>() * 2, 32);
        let os16 = strides(Some(16), false);
        assert_eq!(os16[11], (1, 1));
        assert_eq!(os16.iter().map(|p| p.0).product::<usize>() * 2, 16);
        // TF-slim atrous: the skipped stride 2 becomes dilation 2 from block 12 on
        let atrous = strides(Some(16), true);
        assert_eq!(&atrous[10..], &[(1, 1), (1, 1), (1, 2)]);
        let os8 = strides(Some(8), true);
        assert_eq!(
            &os8[5..],
            &[(1, 1), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 2), (1, 4)]
        );
    }
}
