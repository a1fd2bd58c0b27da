//! A ready-to-use classifier: a network plus what its weights file says about itself
//! (architecture, options, preprocessing, labels), written by `scripts/convert_weights.py`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::ops::softmax_last_dim;

use crate::error::{Error, Result};
use crate::layers::PaddingMode;
use crate::model::{ArchName, Flavor, ModelOptions, Network};
use crate::preprocess::Preprocessing;
use crate::weights::load_state_dict;

/// The `format` value this version reads.
pub const FORMAT: &str = "ferrovision/1";

/// What a self-describing weights file records about its model.
#[derive(Debug, Clone)]
pub struct ModelMeta {
    pub architecture: String,
    pub variant: String,
    pub options: ModelOptions,
    pub input_size: usize,
    pub preprocessing: Preprocessing,
    /// One label per output class (class id = index).
    pub labels: Vec<String>,
    /// Raw JSON of the `source` entry (framework, file, hash or URL).
    pub source: String,
    pub licence: String,
    /// What the network is for: classification, or detection with its decoding settings
    /// (metadata `task` and `detection`).
    pub task: Task,
}

/// A model's task, from its metadata.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    Classification,
    Detection(crate::detect::DetectionConfig),
    /// Keypoints of people, with the decoder the network's outputs need.
    Pose(crate::pose_task::PoseDecoder),
}

/// One class of a prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Index into the model's output vector.
    pub class_id: usize,
    pub label: String,
    pub score: f32,
}

/// A loaded classifier.
pub struct Model {
    pub net: Box<dyn Network>,
    pub meta: ModelMeta,
    /// A classifier trained on this backbone's features that replaces its own (`train-head`).
    pub head: Option<crate::features::Head>,
    /// Box decoding and anchors, for detectors.
    pub detector: Option<crate::detect::Detector>,
    device: Device,
    /// The dtype the network computes in ([`crate::model::compute_dtype`]); inputs are cast to it.
    compute: DType,
    path: std::path::PathBuf,
}

fn parse_meta(path: &Path, meta: &HashMap<String, String>) -> Result<ModelMeta> {
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let get = |k: &str| meta.get(k).ok_or_else(|| err(format!("metadata has no `{k}` entry")));
    let num = |k: &str| -> Result<f64> {
        get(k)?
            .parse::<f64>()
            .map_err(|e| err(format!("metadata `{k}` is not a number: {e}")))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(err(format!("metadata format `{format}` is not `{FORMAT}`")));
    }
    let architecture = get("architecture")?.clone();
    ArchName::parse(&architecture).map_err(|e| err(e.to_string()))?;
    let padding =
        PaddingMode::parse(get("padding")?).ok_or_else(|| err("metadata `padding` must be torch or tf_same".into()))?;
    let flag = |k: &str| meta.get(k).map(|v| v == "true").unwrap_or(false);
    let options = ModelOptions {
        num_classes: num("num_classes")? as usize,
        include_top: true,
        width: num("width_multiplier")?,
        padding: Some(padding),
        bn_folded: flag("bn_folded"),
        transform_input: flag("transform_input"),
        flavor: match meta.get("flavor") {
            None => Flavor::Torchvision,
            Some(f) => {
                Flavor::parse(f).ok_or_else(|| err(format!("metadata `flavor` `{f}` is not torchvision or keras")))?
            }
        },
        bn_eps: match meta.get("bn_eps") {
            None => None,
            Some(_) => Some(num("bn_eps")?),
        },
        hidden: match meta.get("classifier_hidden") {
            None => Vec::new(),
            Some(h) => serde_json::from_str(h)
                .map_err(|e| err(format!("metadata `classifier_hidden` must be a list of widths: {e}")))?,
        },
        output_stride: match meta.get("output_stride") {
            None => None,
            Some(_) => Some(num("output_stride")? as usize),
        },
        atrous: flag("atrous"),
        input_pad: match meta.get("input_pad") {
            None => [0; 4],
            Some(p) => serde_json::from_str(p)
                .map_err(|e| err(format!("metadata `input_pad` must be [top, bottom, left, right]: {e}")))?,
        },
    };
    let preprocessing: Preprocessing = serde_json::from_str(get("preprocessing")?)
        .map_err(|e| err(format!("metadata `preprocessing` is invalid: {e}")))?;
    let labels: Vec<String> =
        serde_json::from_str(get("labels")?).map_err(|e| err(format!("metadata `labels` is invalid: {e}")))?;
    if labels.len() != options.num_classes {
        return Err(err(format!(
            "{} labels for {} classes",
            labels.len(),
            options.num_classes
        )));
    }
    let task = match meta.get("task").map(String::as_str) {
        None | Some("classification") => Task::Classification,
        Some("detection") => Task::Detection(
            serde_json::from_str(get("detection")?)
                .map_err(|e| err(format!("metadata `detection` is invalid: {e}")))?,
        ),
        Some("pose") => {
            Task::Pose(serde_json::from_str(get("pose")?).map_err(|e| err(format!("metadata `pose` is invalid: {e}")))?)
        }
        Some(t) => {
            return Err(err(format!(
                "metadata `task` `{t}` is not classification, detection or pose"
            )))
        }
    };
    let arch = ArchName::parse(&architecture).map_err(|e| err(e.to_string()))?;
    if arch.is_detector() != matches!(task, Task::Detection(_)) || arch.is_pose() != matches!(task, Task::Pose(_)) {
        return Err(err(format!(
            "metadata `task` does not fit the architecture {architecture}"
        )));
    }
    Ok(ModelMeta {
        task,
        variant: meta.get("variant").cloned().unwrap_or_else(|| architecture.clone()),
        architecture,
        options,
        input_size: num("input_size")? as usize,
        preprocessing,
        labels,
        source: meta.get("source").cloned().unwrap_or_default(),
        licence: meta.get("licence").cloned().unwrap_or_default(),
    })
}

/// Reads only the safetensors header's `__metadata__`.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let (header, _) = crate::weights::read_header(path)?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| err(format!("corrupt safetensors header: {e}")))?;
    let meta = json.get("__metadata__").and_then(|m| m.as_object());
    Ok(meta
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default())
}

impl Model {
    /// Loads a self-describing weights file: the architecture and everything else come from
    /// its metadata.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_as(path, device, DType::F32)
    }

    /// As [`Model::load`], with the weights stored as `storage` (f32, f16 or bf16): half
    /// storage halves the model's memory. On the CPU everything is still computed in f32; on a
    /// GPU in `storage` itself ([`crate::model::compute_dtype`]).
    pub fn load_as(path: &Path, device: &Device, storage: DType) -> Result<Self> {
        let meta = parse_meta(path, &read_metadata(path)?)?;
        let arch = ArchName::parse(&meta.architecture)?;
        let net = crate::weights::load_state_dict_as(path, arch, &meta.options, device, storage)?;
        let detector = match &meta.task {
            Task::Detection(cfg) => Some(crate::detect::Detector::load(
                path,
                cfg.clone(),
                meta.preprocessing.crop_size,
            )?),
            Task::Classification | Task::Pose(_) => None,
        };
        Ok(Self {
            net,
            meta,
            head: None,
            detector,
            device: device.clone(),
            compute: crate::model::compute_dtype(device, storage),
            path: path.to_path_buf(),
        })
    }

    /// Loads a plain torchvision `state_dict` saved as safetensors, with the architecture given;
    /// torchvision's ImageNet preprocessing and numeric class labels.
    pub fn load_state_dict(path: &Path, arch: &str, opts: &ModelOptions, device: &Device) -> Result<Self> {
        let arch_name = ArchName::parse(arch)?;
        let net = load_state_dict(path, arch_name, opts, device)?;
        let size = if arch_name == ArchName::InceptionV3 { 299 } else { 224 };
        let meta = ModelMeta {
            architecture: arch.to_string(),
            variant: arch.to_string(),
            options: opts.clone(),
            input_size: size,
            preprocessing: Preprocessing::torchvision(if size == 299 { 342 } else { 256 }, size),
            labels: (0..opts.num_classes).map(|i| i.to_string()).collect(),
            source: String::new(),
            licence: String::new(),
            task: Task::Classification,
        };
        Ok(Self {
            net,
            meta,
            head: None,
            detector: None,
            device: device.clone(),
            compute: DType::F32,
            path: path.to_path_buf(),
        })
    }

    /// The weights file this model came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SHA-256 of the weights file: identifies the backbone a head or an index was made with.
    pub fn fingerprint(&self) -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut f = std::fs::File::open(&self.path).map_err(|e| Error::File {
            path: self.path.clone(),
            msg: format!("cannot read: {e}"),
        })?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h)?;
        Ok(format!("{:x}", h.finalize()))
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype the network computes in: preprocessed images are cast to it.
    pub fn compute_dtype(&self) -> DType {
        self.compute
    }

    /// Preprocesses images into one N×3×H×W batch.
    pub fn batch(&self, images: &[image::DynamicImage]) -> Result<Tensor> {
        let xs = images
            .iter()
            .map(|img| self.meta.preprocessing.apply(img, &self.device))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&xs, 0)?.to_dtype(self.compute)?)
    }

    /// Class probabilities (softmax of the logits), N×classes.
    pub fn probabilities(&self, batch: &Tensor) -> Result<Tensor> {
        let logits = self.net.forward(batch)?;
        Ok(softmax_last_dim(&logits.to_dtype(DType::F32)?)?)
    }

    /// Top-k predictions for each image.
    pub fn classify(&self, images: &[image::DynamicImage], k: usize) -> Result<Vec<Vec<Prediction>>> {
        let probs: Vec<Vec<f32>> = self.probabilities(&self.batch(images)?)?.to_vec2()?;
        Ok(probs.iter().map(|p| self.top_k(p, k)).collect())
    }

    /// The `k` most probable classes of one probability vector.
    /// Names of the output classes: the head's when one is attached, else the weights' labels.
    pub fn class_names(&self) -> &[String] {
        match &self.head {
            Some(h) => &h.classes,
            None => &self.meta.labels,
        }
    }

    pub fn top_k(&self, probs: &[f32], k: usize) -> Vec<Prediction> {
        let mut idx: Vec<usize> = (0..probs.len()).collect();
        idx.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        idx.into_iter()
            .take(k)
            .map(|i| Prediction {
                class_id: i,
                label: self.class_names()[i].clone(),
                score: probs[i],
            })
            .collect()
    }
}
