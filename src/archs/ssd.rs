//! SSD (Liu et al. 2016, "SSD: Single Shot MultiBox Detector") on MobileNetV2, as the TensorFlow
//! Object Detection API builds `ssd_mobilenet_v2` (its `ssd_mobilenet_v2_feature_extractor.py`
//! and `samples/configs/ssd_mobilenet_v2_coco.config`):
//!
//! | feature map | from | 300×300 input | anchors per cell |
//! |---|---|---|---|
//! | 0 | expansion output of `features.14` (TF-slim `layer_15/expansion_output`) | 576×19×19 | 3 |
//! | 1 | the last 1×1 conv `features.18` (`layer_19`) | 1280×10×10 | 6 |
//! | 2..5 | extra layers: 1×1 to d/2, then 3×3 stride 2 to d, d = 512, 256, 256, 128 | 5, 3, 2, 1 | 6 |
//!
//! On each map a 1×1 box encoding predictor (4 per anchor) and a 1×1 class predictor
//! (classes + background per anchor). Weight names:
//!
//! | path | layer |
//! |---|---|
//! | `backbone.features.*` | MobileNetV2 in torchvision's names ([`super::mobilenet`]) |
//! | `extra.{0..3}.{0,1}.{weight,bias}` | `layer_19_1_Conv2d_{j}_1x1_*` and `layer_19_2_Conv2d_{j}_3x3_s2_*`, j = 2..5 |
//! | `head.box_encoding.{0..5}.{weight,bias}` | `BoxPredictor_i/BoxEncodingPredictor` |
//! | `head.class_prediction.{0..5}.{weight,bias}` | `BoxPredictor_i/ClassPredictor` |
//! | `anchors` | A×4 (y, x, h, w) anchors stored in a TFLite file, for the decoder ([`crate::detect`]) |
//!
//! `forward` returns the raw predictions N×A×(4 + classes): box encodings, then class logits
//! (background at column 0), anchors in TF's order (feature map, row, column, anchor).

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::mobilenet::MobileNetV2;
use crate::layers::{global_avg_pool, Activation, Conv2d, ConvSpec, PaddingMode};
use crate::model::{ModelOptions, Network};

/// The MobileNetV2 block whose expansion output is feature map 0 (TF-slim `layer_15`).
pub const TAP_BLOCK: usize = 14;

/// `layer_depth` of the extra feature maps 2..5: a 1×1 conv to d/2, then a 3×3 stride-2 conv
/// to d, both BN + ReLU6 (`feature_map_layout` of `ssd_mobilenet_v2_feature_extractor.py`).
pub const EXTRA_DEPTHS: [usize; 4] = [512, 256, 256, 128];

/// Anchors per cell on each feature map: 3 on the lowest (`reduce_boxes_in_lowest_layer`),
/// else one per aspect ratio plus the interpolated scale ([`AnchorGenerator::ssd_mobilenet_v2`]).
pub const ANCHORS_PER_CELL: [usize; 6] = [3, 6, 6, 6, 6, 6];

/// TF's `ssd_anchor_generator` (`anchor_generators/multiple_grid_anchor_generator.py`,
/// `create_ssd_anchors`), as recorded in a weights file's `detection.anchors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnchorGenerator {
    pub num_layers: usize,
    pub min_scale: f64,
    pub max_scale: f64,
    pub aspect_ratios: Vec<f64>,
    pub interpolated_scale_aspect_ratio: f64,
    pub reduce_boxes_in_lowest_layer: bool,
}

impl AnchorGenerator {
    /// `ssd_mobilenet_v2_coco.config`: 6 layers, scales 0.2 to 0.95, aspect ratios 1, 2, 1/2, 3,
    /// 0.3333, interpolated scale with aspect ratio 1, 3 boxes on the lowest layer.
    pub fn ssd_mobilenet_v2() -> Self {
        Self {
            num_layers: 6,
            min_scale: 0.2,
            max_scale: 0.95,
            aspect_ratios: vec![1.0, 2.0, 0.5, 3.0, 0.3333],
            interpolated_scale_aspect_ratio: 1.0,
            reduce_boxes_in_lowest_layer: true,
        }
    }

    /// (scale, aspect ratio) of each anchor of each layer.
    pub fn box_specs(&self) -> Vec<Vec<(f64, f64)>> {
        let n = self.num_layers;
        let mut scales: Vec<f64> = (0..n)
            .map(|i| self.min_scale + (self.max_scale - self.min_scale) * i as f64 / (n as f64 - 1.0).max(1.0))
            .collect();
        scales.push(1.0);
        (0..n)
            .map(|layer| {
                let (s, s_next) = (scales[layer], scales[layer + 1]);
                if layer == 0 && self.reduce_boxes_in_lowest_layer {
                    return vec![(0.1, 1.0), (s, 2.0), (s, 0.5)];
                }
                let mut specs: Vec<(f64, f64)> = self.aspect_ratios.iter().map(|&a| (s, a)).collect();
                if self.interpolated_scale_aspect_ratio > 0.0 {
                    specs.push(((s * s_next).sqrt(), self.interpolated_scale_aspect_ratio));
                }
                specs
            })
            .collect()
    }

    /// Anchors (y_center, x_center, height, width), normalised to the image, for feature maps of
    /// `grids` (rows, columns) on a square input: cell centres at (i + 0.5) / rows, heights
    /// scale / √ratio, widths scale · √ratio (`grid_anchor_generator.tile_anchors`); order
    /// feature map, row, column, anchor.
    pub fn generate(&self, grids: &[(usize, usize)]) -> Result<Vec<[f32; 4]>> {
        let specs = self.box_specs();
        if grids.len() != specs.len() {
            bail!("anchor generator: {} layers, {} feature maps", specs.len(), grids.len())
        }
        let mut out = Vec::new();
        for (&(rows, cols), layer) in grids.iter().zip(&specs) {
            let (sy, sx) = (1.0 / rows as f64, 1.0 / cols as f64);
            for i in 0..rows {
                for j in 0..cols {
                    for &(scale, ratio) in layer {
                        let r = ratio.sqrt();
                        let (yc, xc) = (sy * 0.5 + i as f64 * sy, sx * 0.5 + j as f64 * sx);
                        out.push([yc as f32, xc as f32, (scale / r) as f32, (scale * r) as f32]);
                    }
                }
            }
        }
        Ok(out)
    }
}

/// SSD with a MobileNetV2 feature extractor. BN folded (TFLite files) or not; TF "SAME" padding.
#[derive(Debug, Clone)]
pub struct SsdMobileNetV2 {
    backbone: MobileNetV2,
    extra: Vec<[Conv2d; 2]>,
    /// Per feature map, the box encoding and class predictors as one 1×1 convolution (their
    /// weights stacked at load: one pass over the map), k·4 then k·classes output channels.
    predictor: Vec<Conv2d>,
    /// Class-score columns, background included.
    num_classes: usize,
}

impl SsdMobileNetV2 {
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let padding = opts.padding.unwrap_or(PaddingMode::TfSame);
        let backbone_opts = ModelOptions {
            include_top: false,
            padding: Some(padding),
            bn_eps: Some(opts.bn_eps.unwrap_or(1e-3)),
            ..opts.clone()
        };
        let backbone = MobileNetV2::new(&backbone_opts, vb.pp("backbone"))?;
        let norm = backbone_opts.norm(1e-3);
        let expansion = super::mobilenet::make_divisible(96.0 * opts.width, 8) * 6; // features.14's input × t
        let mut channels = vec![expansion, backbone.num_features()];
        let mut extra = Vec::new();
        for (j, &d) in EXTRA_DEPTHS.iter().enumerate() {
            let (vb, cin) = (vb.pp("extra").pp(j), *channels.last().expect("two maps"));
            let reduce = ConvSpec::new(cin, d / 2, 1).act(Activation::Relu6);
            let down = ConvSpec::new(d / 2, d, 3)
                .stride(2)
                .padding(padding.for_kernel(3))
                .act(Activation::Relu6);
            extra.push([
                Conv2d::load_with_norm(&vb.pp(0), &vb.pp(0).pp("bn"), reduce, norm)?,
                Conv2d::load_with_norm(&vb.pp(1), &vb.pp(1).pp("bn"), down, norm)?,
            ]);
            channels.push(d);
        }
        let num_classes = opts.num_classes;
        let mut predictor = Vec::new();
        for (i, (&c, &k)) in channels.iter().zip(&ANCHORS_PER_CELL).enumerate() {
            let head = vb.pp("head");
            let boxes = Conv2d::load(&head.pp("box_encoding").pp(i), ConvSpec::new(c, k * 4, 1), true)?;
            let classes = Conv2d::load(
                &head.pp("class_prediction").pp(i),
                ConvSpec::new(c, k * num_classes, 1),
                true,
            )?;
            let bias = |conv: &Conv2d| conv.bias().expect("loaded with a bias").flatten_all();
            let weight = Tensor::cat(&[boxes.weight(), classes.weight()], 0)?;
            let bias = Tensor::cat(&[bias(&boxes)?, bias(&classes)?], 0)?;
            let spec = ConvSpec::new(c, k * (4 + num_classes), 1);
            predictor.push(Conv2d::from_tensors(weight, Some(bias), spec, &format!("head.{i}"))?);
        }
        Ok(Self {
            backbone,
            extra,
            predictor,
            num_classes,
        })
    }

    /// The six feature maps the predictors read: channel-blocked (rank 5) where the CPU allows,
    /// else NCHW (see [`MobileNetV2::forward_taps`]).
    pub fn feature_maps(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let (f0, f1) = self.backbone.forward_taps(x, TAP_BLOCK)?; // N×576×19×19, N×1280×10×10
        let mut maps = vec![f0, f1];
        for (j, [reduce, down]) in self.extra.iter().enumerate() {
            let h = reduce.forward(maps.last().expect("two maps"))?; // N×d/2×h×w
            let h = down.forward(&h)?; // N×d×⌈h/2⌉×⌈w/2⌉
            crate::trace::record_lazy(|| format!("extra.{j}"), "ConvBNReLU6×2", &h, 0);
            maps.push(h);
        }
        Ok(maps)
    }

    /// Grid sizes (rows, columns) of the six feature maps for an `h`×`w` input: the stem and
    /// four stride-2 blocks to `features.14`'s input (/16), one more to `features.18` (/32),
    /// then each extra layer halves (TF "SAME": rounding up).
    pub fn grids(h: usize, w: usize) -> Vec<(usize, usize)> {
        let mut g = vec![(h, w)];
        for _ in 0..5 + EXTRA_DEPTHS.len() {
            let &(h, w) = g.last().expect("non-empty");
            g.push((h.div_ceil(2), w.div_ceil(2)));
        }
        g[4..].to_vec()
    }

    /// Raw predictions: box encodings N×A×4 (ty, tx, th, tw) and class logits N×A×classes.
    pub fn predict(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let maps = self.feature_maps(x)?;
        let n = x.dim(0)?;
        let (mut boxes, mut logits) = (Vec::new(), Vec::new());
        for (f, (conv, &k)) in maps.iter().zip(self.predictor.iter().zip(&ANCHORS_PER_CELL)) {
            let mut y = conv.forward(f)?; // N×k·(4+C)×h×w
            if y.rank() == 5 {
                y = crate::layers::unblock(&y, conv.spec().out_channels)?;
            }
            // N×(k·4 | k·C)×h×w → N×h×w×(k·4 | k·C) → N×(h·w·k)×4 and N×(h·w·k)×C: TF's NHWC order
            let y = y.permute((0, 2, 3, 1))?;
            let (h, w, c) = (y.dim(1)?, y.dim(2)?, self.num_classes);
            boxes.push(y.narrow(3, 0, k * 4)?.contiguous()?.reshape((n, h * w * k, 4))?);
            logits.push(y.narrow(3, k * 4, k * c)?.contiguous()?.reshape((n, h * w * k, c))?);
        }
        let boxes = Tensor::cat(&boxes, 1)?; // N×A×4
        let logits = Tensor::cat(&logits, 1)?; // N×A×classes
        crate::trace::record("head.box_encoding", "BoxPredictor", &boxes, 0);
        crate::trace::record("head.class_prediction", "BoxPredictor", &logits, 0);
        Ok((boxes, logits))
    }
}

impl Network for SsdMobileNetV2 {
    fn name(&self) -> &str {
        "ssd_mobilenet_v2"
    }
    /// The backbone's last feature map (N×1280×h×w), as for MobileNetV2.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.backbone.forward_features(x)
    }
    /// With `pre_logits`, the pooled backbone features (an embedding); SSD's own head reads
    /// six feature maps, so without it this is an error: use `forward`.
    fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        if pre_logits {
            return global_avg_pool(features);
        }
        bail!("ssd_mobilenet_v2: the detection head reads six feature maps; call forward")
    }
    /// Raw predictions N×A×(4 + classes): box encodings, then class logits.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::model::check_input(self.name(), x, self.min_input_size())?;
        let _awake = crate::kernels::hot_workers();
        let (boxes, logits) = self.predict(x)?;
        let logits = logits.to_dtype(boxes.dtype())?;
        Tensor::cat(&[boxes, logits], 2) // N×A×(4+C)
    }
    fn num_features(&self) -> usize {
        self.backbone.num_features()
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.num_classes)
    }
    fn min_input_size(&self) -> usize {
        32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_count_and_grids_match_tf_for_300() {
        let g = AnchorGenerator::ssd_mobilenet_v2();
        let grids = [(19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)];
        assert_eq!(SsdMobileNetV2::grids(300, 300), grids);
        assert_eq!(g.generate(&grids).unwrap().len(), 1917);
        let specs = g.box_specs();
        assert_eq!(specs.iter().map(Vec::len).collect::<Vec<_>>(), ANCHORS_PER_CELL);
        // scales 0.2, 0.35, 0.5, 0.65, 0.8, 0.95; the interpolated one √(0.95 · 1.0)
        assert!((specs[1][0].0 - 0.35).abs() < 1e-12);
        assert!((specs[5][5].0 - 0.95f64.sqrt()).abs() < 1e-12);
    }
}
