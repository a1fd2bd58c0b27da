//! PoseNet (Papandreou et al. 2018, "PersonLab: Person Pose Estimation and Instance
//! Segmentation with a Bottom-Up, Part-Based, Geometric Embedding Model", §3.1) on MobileNet v1,
//! as Google's PoseNet / Coral's `posenet_mobilenet_v1_075_*_16` files build it:
//!
//! | part | layer | output (481×641 input, α 0.75) |
//! |---|---|---|
//! | `backbone.features.*` | MobileNet v1 ([`super::mobilenet`], [`BLOCKS`]) at output stride 16: block 12 keeps stride 1 | 384×31×41 |
//! | `heatmap` | 1×1 conv: one heatmap logit per keypoint (K = 17) | K×31×41 |
//! | `offset` | 1×1 conv: short-range offsets (y for the K keypoints, then x) | 2K×31×41 |
//! | `displacement_fwd` | 1×1 conv: mid-range displacements along each edge of the part tree | 2(K−1)×31×41 |
//! | `displacement_bwd` | 1×1 conv: the same against each edge | 2(K−1)×31×41 |
//!
//! The four heads are stacked into one 1×1 convolution at load. `forward` returns them in that
//! order, N×(K + 2K + 4(K−1))×h×w, the layout of Coral's `PosenetDecoderOp` inputs (heatmaps,
//! short offsets, then the forward and backward displacements concatenated);
//! [`crate::pose`] decodes them.
//!
//! Coral's files pad the input with one zero row and column at the bottom and right before the
//! stem (an explicit `PAD` op): [`crate::ModelOptions::input_pad`].

use candle_core::{bail, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::mobilenet::MobileNetV1;
use crate::layers::{global_avg_pool, Conv2d, ConvSpec};
use crate::model::{ModelOptions, Network};

/// PoseNet's MobileNet v1 (Google's TF.js checkpoints, which Coral's files convert): Table 1
/// of the MobileNet paper with the last two blocks at 512 rather than 1024 channels (the 0.75
/// checkpoint's `Conv2d_12/13_pointwise` are 384 = 512·0.75 wide), at output stride 16.
#[rustfmt::skip]
pub const BLOCKS: [(usize, usize); 13] = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (512, 2), (512, 1),
];

/// A head's output channels as a function of the keypoint count K.
pub type HeadChannels = fn(usize) -> usize;

/// The heads in output order: (weight path, channels as a function of the keypoint count K).
pub const HEADS: [(&str, HeadChannels); 4] = [
    ("heatmap", |k| k),
    ("offset", |k| 2 * k),
    ("displacement_fwd", |k| 2 * (k - 1)),
    ("displacement_bwd", |k| 2 * (k - 1)),
];

/// PoseNet on MobileNet v1: backbone plus the stacked heads.
#[derive(Debug, Clone)]
pub struct PoseNet {
    backbone: MobileNetV1,
    head: Conv2d,
    num_keypoints: usize,
    input_pad: [usize; 4],
}

impl PoseNet {
    /// `opts.num_classes` is the keypoint count K (17 for COCO).
    pub fn new(opts: &ModelOptions, vb: VarBuilder) -> Result<Self> {
        let k = opts.num_classes;
        if k < 2 {
            bail!("posenet: needs at least 2 keypoints, got {k}")
        }
        let backbone_opts = ModelOptions {
            include_top: false,
            ..opts.clone()
        };
        let backbone = MobileNetV1::with_blocks(&backbone_opts, vb.pp("backbone"), &BLOCKS)?;
        let c = backbone.num_features();
        let (mut weights, mut biases) = (Vec::new(), Vec::new());
        for (name, channels) in HEADS {
            let conv = Conv2d::load(&vb.pp(name), ConvSpec::new(c, channels(k), 1), true)?;
            weights.push(conv.weight().clone());
            biases.push(conv.bias().expect("loaded with a bias").flatten_all()?);
        }
        let spec = ConvSpec::new(c, k + 2 * k + 4 * (k - 1), 1);
        let head = Conv2d::from_tensors(Tensor::cat(&weights, 0)?, Some(Tensor::cat(&biases, 0)?), spec, "heads")?;
        Ok(Self {
            backbone,
            head,
            num_keypoints: k,
            input_pad: opts.input_pad,
        })
    }

    pub fn num_keypoints(&self) -> usize {
        self.num_keypoints
    }

    /// The zero padding [top, bottom, left, right] applied before the stem.
    fn pad_input(&self, x: &Tensor) -> Result<Tensor> {
        let [t, b, l, r] = self.input_pad;
        let mut x = x.clone();
        if t + b > 0 {
            x = x.pad_with_zeros(2, t, b)?;
        }
        if l + r > 0 {
            x = x.pad_with_zeros(3, l, r)?;
        }
        Ok(x)
    }
}

impl Network for PoseNet {
    fn name(&self) -> &str {
        "posenet_mobilenet_v1"
    }
    /// The backbone's last feature map, N×d(512)×H/16×W/16.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.backbone.forward_features(&self.pad_input(x)?)
    }
    /// With `pre_logits`, the pooled features; otherwise the heads (as `forward`, from features).
    fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor> {
        if pre_logits {
            return global_avg_pool(features);
        }
        let y = self.head.forward(features)?; // N×(K + 2K + 4(K−1))×h×w
        crate::trace::record("heads", "PoseNetHeads", &y, 0);
        Ok(y)
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::model::check_input(self.name(), x, self.min_input_size())?;
        let _awake = crate::kernels::hot_workers();
        let f = self.forward_features(x)?;
        self.forward_head(&f, false)
    }
    fn num_features(&self) -> usize {
        self.backbone.num_features()
    }
    fn num_classes(&self) -> Option<usize> {
        Some(self.num_keypoints)
    }
    fn min_input_size(&self) -> usize {
        32
    }
}
