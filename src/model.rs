//! One interface over every architecture ([`Network`]) and building one from a name string.

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;

use crate::archs::{alexnet, inception, mobilenet, movenet, posenet, resnet, squeezenet, ssd, vgg};
use crate::error::Error;
use crate::layers::{Norm, PaddingMode};

/// What every architecture offers, in timm's shape: `forward_features` → feature map,
/// `forward_head` → logits (or pooled features), `forward` = both.
pub trait Network: Send + Sync {
    /// Variant name, e.g. `resnet50`.
    fn name(&self) -> &str;
    /// The last feature map before the head: N×C×h×w.
    fn forward_features(&self, x: &Tensor) -> Result<Tensor>;
    /// Logits N×num_classes from a feature map; with `pre_logits` (or without a classifier)
    /// the globally average-pooled features N×C instead.
    fn forward_head(&self, features: &Tensor, pre_logits: bool) -> Result<Tensor>;
    /// Channels of the pooled features (the embedding size).
    fn num_features(&self) -> usize;
    /// Output classes, `None` when built with `include_top = false`.
    fn num_classes(&self) -> Option<usize>;
    /// Smallest input height/width the network accepts.
    fn min_input_size(&self) -> usize;

    /// Class activation maps (Zhou et al. 2016) from a feature map: N×classes×h×w maps whose
    /// spatial mean is the logits less the bias (for a Keras-style MLP head, the bias of the
    /// linear piece the image's features fall in: Grad-CAM's weights for that head). `None` for architectures whose classifier does
    /// not follow a global average pool (VGG, AlexNet) or without a classifier.
    fn class_activation_maps(&self, _features: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// N×3×H×W (normalised as the weights expect) → logits, or pooled features without a top.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        check_input(self.name(), x, self.min_input_size())?;
        let _awake = crate::kernels::hot_workers();
        let f = self.forward_features(x)?;
        self.forward_head(&f, self.num_classes().is_none())
    }
}

/// Clear error for a batch that is not N×3×H×W with H, W ≥ `min`.
pub fn check_input(name: &str, x: &Tensor, min: usize) -> Result<()> {
    let dims = x.dims();
    let [_, c, h, w] = dims else {
        bail!("{name}: expected an N×3×H×W batch, got shape {dims:?}")
    };
    if *c != 3 {
        bail!("{name}: expected 3 input channels (RGB), got {c}")
    }
    if *h < min || *w < min {
        bail!("{name}: input {h}×{w} is too small; this architecture needs at least {min}×{min}")
    }
    Ok(())
}

/// Whose variant of an architecture a checkpoint was trained with, where they differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Flavor {
    /// torchvision's definitions (and our MobileNet v1, which follows TF-slim).
    #[default]
    Torchvision,
    /// `keras.applications`: ResNet v1 (stride on the first 1×1, biased convolutions),
    /// Inception v3 average pools that exclude the padding (TF "SAME" pooling).
    Keras,
}

impl Flavor {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "torchvision" => Some(Self::Torchvision),
            "keras" => Some(Self::Keras),
            _ => None,
        }
    }
}

/// Options shared by every architecture. `Default` is ImageNet-1k with a torchvision checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOptions {
    /// 1000 (ImageNet), 1001 (TF-slim, background at 0) or a fine-tuned head's.
    pub num_classes: usize,
    /// Without the classifier, `forward` returns the pooled features (N×C).
    pub include_top: bool,
    /// Width multiplier α (MobileNets only; must be 1.0 elsewhere).
    pub width: f64,
    /// Padding convention of k×k convolutions (MobileNets only; `None` = the architecture's own:
    /// TF "SAME" for MobileNet v1, PyTorch for the rest).
    pub padding: Option<PaddingMode>,
    /// BatchNorm already folded into conv weight + bias by the converter (TFLite files).
    pub bn_folded: bool,
    /// GoogLeNet / Inception v3: re-normalise ImageNet-normalised input to [-1, 1] as
    /// torchvision's pretrained checkpoints expect (`transform_input=True`).
    pub transform_input: bool,
    /// Whose variant of the architecture (see [`Flavor`]).
    pub flavor: Flavor,
    /// BatchNorm ε when the checkpoint's differs from the architecture's default
    /// (Keras ResNet50: 1.001e-5; Keras MobileNetV2: 1e-3).
    pub bn_eps: Option<f64>,
    /// Hidden widths of a multi-layer classifier on the pooled features (ReLU between, the
    /// last layer to `num_classes`), as Keras models fine-tuned with Dense layers have (nsfwjs:
    /// 256, 128). Empty: one Linear, the architecture's own. MobileNets and Inception v3 only.
    pub hidden: Vec<usize>,
    /// MobileNet v1: the network's stride stops growing at this value (PoseNet, DeepLab): the
    /// blocks that would stride past it keep stride 1 (TF-slim's `output_stride`). `None`: 32.
    pub output_stride: Option<usize>,
    /// With `output_stride`: dilate the blocks that no longer stride by the stride they skip
    /// (TF-slim's atrous convolution); without it they stay undilated (Coral's PoseNet files).
    pub atrous: bool,
    /// Zero rows and columns added to the input before the stem, `[top, bottom, left, right]`
    /// (a file's explicit `PAD` op in front of its first convolution; PoseNet only).
    pub input_pad: [usize; 4],
}

impl Default for ModelOptions {
    fn default() -> Self {
        Self {
            num_classes: 1000,
            include_top: true,
            width: 1.0,
            padding: None,
            bn_folded: false,
            transform_input: false,
            flavor: Flavor::Torchvision,
            bn_eps: None,
            hidden: Vec::new(),
            output_stride: None,
            atrous: false,
            input_pad: [0; 4],
        }
    }
}

impl ModelOptions {
    pub fn with_classes(num_classes: usize) -> Self {
        Self {
            num_classes,
            ..Self::default()
        }
    }

    /// The normalisation of this checkpoint's convolutions, given the architecture's BN ε.
    pub fn norm(&self, default_eps: f64) -> Norm {
        if self.bn_folded {
            Norm::Folded
        } else {
            Norm::BatchNorm {
                eps: self.bn_eps.unwrap_or(default_eps),
            }
        }
    }
}

/// Every architecture variant by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchName {
    Vgg {
        depth: usize,
        bn: bool,
    },
    ResNet {
        depth: usize,
    },
    MobileNetV1,
    MobileNetV2,
    SqueezeNet1_0,
    SqueezeNet1_1,
    GoogLeNet,
    InceptionV3,
    AlexNet,
    /// SSD on MobileNetV2 (a detector: `forward` gives raw box encodings and class logits).
    SsdMobileNetV2,
    /// PoseNet on MobileNet v1 (multi-person pose: heatmaps, offsets, displacements).
    PoseNet,
    /// MoveNet single-pose on MobileNetV2 with a feature pyramid and CenterNet heads.
    MoveNet,
}

impl ArchName {
    /// All names [`ArchName::parse`] accepts.
    pub const ALL: &'static [&'static str] = &[
        "vgg11",
        "vgg13",
        "vgg16",
        "vgg19",
        "vgg11_bn",
        "vgg13_bn",
        "vgg16_bn",
        "vgg19_bn",
        "resnet18",
        "resnet34",
        "resnet50",
        "resnet101",
        "resnet152",
        "mobilenet_v1",
        "mobilenet_v2",
        "squeezenet1_0",
        "squeezenet1_1",
        "googlenet",
        "inception_v3",
        "alexnet",
        "ssd_mobilenet_v2",
        "posenet_mobilenet_v1",
        "movenet",
    ];

    pub fn parse(name: &str) -> std::result::Result<Self, Error> {
        let arch = match name {
            "mobilenet_v1" => Self::MobileNetV1,
            "mobilenet_v2" => Self::MobileNetV2,
            "squeezenet1_0" => Self::SqueezeNet1_0,
            "squeezenet1_1" => Self::SqueezeNet1_1,
            "googlenet" => Self::GoogLeNet,
            "inception_v3" => Self::InceptionV3,
            "alexnet" => Self::AlexNet,
            "ssd_mobilenet_v2" => Self::SsdMobileNetV2,
            "posenet_mobilenet_v1" => Self::PoseNet,
            "movenet" => Self::MoveNet,
            "resnet18" | "resnet34" | "resnet50" | "resnet101" | "resnet152" => Self::ResNet {
                depth: name[6..].parse().expect("digits"),
            },
            "vgg11" | "vgg13" | "vgg16" | "vgg19" | "vgg11_bn" | "vgg13_bn" | "vgg16_bn" | "vgg19_bn" => Self::Vgg {
                depth: name[3..5].parse().expect("digits"),
                bn: name.ends_with("_bn"),
            },
            _ => {
                return Err(Error::UnknownArch {
                    name: name.to_string(),
                    known: Self::ALL.join(", "),
                })
            }
        };
        Ok(arch)
    }

    pub fn name(&self) -> String {
        match self {
            Self::Vgg { depth, bn } => format!("vgg{depth}{}", if *bn { "_bn" } else { "" }),
            Self::ResNet { depth } => format!("resnet{depth}"),
            Self::MobileNetV1 => "mobilenet_v1".into(),
            Self::MobileNetV2 => "mobilenet_v2".into(),
            Self::SqueezeNet1_0 => "squeezenet1_0".into(),
            Self::SqueezeNet1_1 => "squeezenet1_1".into(),
            Self::GoogLeNet => "googlenet".into(),
            Self::InceptionV3 => "inception_v3".into(),
            Self::AlexNet => "alexnet".into(),
            Self::SsdMobileNetV2 => "ssd_mobilenet_v2".into(),
            Self::PoseNet => "posenet_mobilenet_v1".into(),
            Self::MoveNet => "movenet".into(),
        }
    }

    fn is_mobilenet(&self) -> bool {
        matches!(
            self,
            Self::MobileNetV1 | Self::MobileNetV2 | Self::SsdMobileNetV2 | Self::PoseNet | Self::MoveNet
        )
    }

    /// The input size its usual weights expect: 299 for Inception v3, 300 for SSD, else 224.
    pub fn default_input_size(&self) -> usize {
        match self {
            Self::InceptionV3 => 299,
            Self::SsdMobileNetV2 => 300,
            Self::PoseNet => 257,
            Self::MoveNet => 192,
            _ => 224,
        }
    }

    /// Options of its usual weights: ImageNet-1k, or COCO's 90 ids + background for SSD.
    pub fn default_options(&self) -> ModelOptions {
        match self {
            Self::SsdMobileNetV2 => ModelOptions::with_classes(91),
            // 17 COCO keypoints; PoseNet at output stride 16 (its published files)
            Self::PoseNet => ModelOptions {
                output_stride: Some(16),
                ..ModelOptions::with_classes(17)
            },
            Self::MoveNet => ModelOptions::with_classes(17),
            _ => ModelOptions::default(),
        }
    }

    /// Whether this is a detector (its output is not one row of class logits per image).
    pub fn is_detector(&self) -> bool {
        matches!(self, Self::SsdMobileNetV2)
    }

    /// Whether this is a pose estimator (its output is keypoint maps, `num_classes` keypoints).
    pub fn is_pose(&self) -> bool {
        matches!(self, Self::PoseNet | Self::MoveNet)
    }

    /// Rejects options that make no sense for this architecture.
    pub fn validate(&self, opts: &ModelOptions) -> std::result::Result<(), Error> {
        let bad = |msg: String| Err(Error::InvalidOption { arch: self.name(), msg });
        if !(opts.width.is_finite() && opts.width > 0.0) {
            return bad(format!("width multiplier must be > 0, got {}", opts.width));
        }
        if !self.is_mobilenet() && opts.width != 1.0 {
            return bad(format!("only MobileNets take a width multiplier, got {}", opts.width));
        }
        if !self.is_mobilenet() && opts.padding == Some(PaddingMode::TfSame) {
            return bad("only MobileNets support TensorFlow SAME padding".into());
        }
        if opts.include_top && opts.num_classes == 0 {
            return bad("num_classes must be at least 1".into());
        }
        let keras_has_it = matches!(
            self,
            Self::Vgg { bn: false, .. } | Self::ResNet { .. } | Self::InceptionV3
        ) || matches!(self, Self::MobileNetV1 | Self::MobileNetV2);
        if opts.flavor == Flavor::Keras && !keras_has_it {
            return bad("keras.applications has no such model".into());
        }
        if matches!(opts.bn_eps, Some(e) if !(e.is_finite() && e > 0.0)) {
            return bad(format!("BatchNorm epsilon must be > 0, got {:?}", opts.bn_eps));
        }
        if !opts.hidden.is_empty() && !matches!(self, Self::MobileNetV1 | Self::MobileNetV2 | Self::InceptionV3) {
            return bad("a multi-layer classifier (hidden widths) is built for mobilenet_v1, mobilenet_v2 and inception_v3 only".into());
        }
        if opts.hidden.contains(&0) {
            return bad("hidden classifier widths must be at least 1".into());
        }
        if (opts.output_stride.is_some() || opts.atrous) && !matches!(self, Self::MobileNetV1 | Self::PoseNet) {
            return bad("output_stride applies to mobilenet_v1 and posenet_mobilenet_v1 only".into());
        }
        if matches!(opts.output_stride, Some(s) if !s.is_power_of_two() || !(2..=32).contains(&s)) {
            return bad(format!(
                "output_stride must be 2, 4, 8, 16 or 32, got {:?}",
                opts.output_stride
            ));
        }
        if opts.input_pad != [0; 4] && *self != Self::PoseNet {
            return bad("input_pad applies to posenet_mobilenet_v1 only".into());
        }
        if opts.transform_input && !matches!(self, Self::GoogLeNet | Self::InceptionV3) {
            return bad("transform_input applies to googlenet and inception_v3 only".into());
        }
        Ok(())
    }
}

/// Builds the architecture `name` with `opts`, reading its weights from `vb`.
pub fn build(name: &str, opts: &ModelOptions, vb: VarBuilder) -> crate::Result<Box<dyn Network>> {
    let arch = ArchName::parse(name)?;
    build_arch(arch, opts, vb)
}

/// The dtype a network computes in on `device` with its weights stored as `storage`. Layers
/// compute in their input's dtype (weights stored otherwise are cast to it), so this is the
/// dtype to give the input:
/// - on the CPU always f32: our kernels are f32, and half storage only saves memory
///   (candle's own f16/bf16 CPU convolutions would run, far slower);
/// - on CUDA and Metal `storage` itself: their f16/bf16 convolutions and matrix products.
pub fn compute_dtype(device: &candle_core::Device, storage: candle_core::DType) -> candle_core::DType {
    if device.is_cpu() {
        candle_core::DType::F32
    } else {
        storage
    }
}

/// As [`build`], from a parsed [`ArchName`].
pub fn build_arch(arch: ArchName, opts: &ModelOptions, vb: VarBuilder) -> crate::Result<Box<dyn Network>> {
    arch.validate(opts)?;
    let net: Box<dyn Network> = match arch {
        ArchName::Vgg { depth, bn } => Box::new(vgg::Vgg::new(vgg::config(depth, bn), opts, vb)?),
        ArchName::ResNet { depth } => Box::new(resnet::ResNet::new(resnet::config(depth), opts, vb)?),
        ArchName::MobileNetV1 => Box::new(mobilenet::MobileNetV1::new(opts, vb)?),
        ArchName::MobileNetV2 => Box::new(mobilenet::MobileNetV2::new(opts, vb)?),
        ArchName::SqueezeNet1_0 => Box::new(squeezenet::SqueezeNet::new(squeezenet::Version::V1_0, opts, vb)?),
        ArchName::SqueezeNet1_1 => Box::new(squeezenet::SqueezeNet::new(squeezenet::Version::V1_1, opts, vb)?),
        ArchName::GoogLeNet => Box::new(inception::GoogLeNet::new(opts, vb)?),
        ArchName::InceptionV3 => Box::new(inception::InceptionV3::new(opts, vb)?),
        ArchName::AlexNet => Box::new(alexnet::AlexNet::new(opts, vb)?),
        ArchName::SsdMobileNetV2 => Box::new(ssd::SsdMobileNetV2::new(opts, vb)?),
        ArchName::PoseNet => Box::new(posenet::PoseNet::new(opts, vb)?),
        ArchName::MoveNet => Box::new(movenet::MoveNet::new(opts, vb)?),
    };
    Ok(net)
}
