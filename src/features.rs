//! Features for transfer learning and visual search: pooled embeddings before the classifier
//! (`include_top = false`), a linear softmax head trained on them ("take off the top layer and
//! only train the weights of that layer"), and an exact cosine-similarity index.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};

use crate::error::{Error, Result};
use crate::pretrained::Model;

pub const HEAD_FORMAT: &str = "ferrovision-head/1";
pub const INDEX_FORMAT: &str = "ferrovision-index/1";

/// How the last feature map becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pool {
    #[default]
    Avg,
    Max,
}

impl Pool {
    pub fn as_str(self) -> &'static str {
        match self {
            Pool::Avg => "avg",
            Pool::Max => "max",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "avg" => Some(Pool::Avg),
            "max" => Some(Pool::Max),
            _ => None,
        }
    }
}

/// L2-normalises each row of an N×D tensor.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

impl Model {
    /// Pooled features of images given as views (see [`Model::views`]), averaged over views:
    /// N×D, L2-normalised when `normalize`.
    pub fn embed_views(&self, views: &[Tensor], pool: Pool, normalize: bool) -> Result<Tensor> {
        let per_image = views[0].dim(0)?;
        let f = self.net.forward_features(&Tensor::cat(views, 0)?)?; // (N·V)×C×h×w
        let pooled = match pool {
            Pool::Avg => f.mean((2, 3))?,
            Pool::Max => f.max(3)?.max(2)?,
        }
        .to_dtype(DType::F32)?;
        let d = pooled.dim(1)?;
        let e = pooled.reshape((views.len(), per_image, d))?.mean(1)?;
        if normalize {
            l2_normalize(&e)
        } else {
            Ok(e)
        }
    }
}

/// A linear classifier over a backbone's pooled, L2-normalised features.
#[derive(Debug, Clone)]
pub struct Head {
    pub linear: candle_nn::Linear,
    pub classes: Vec<String>,
    pub pool: Pool,
    /// SHA-256 of the backbone's weights file and its variant name.
    pub backbone_sha256: String,
    pub backbone_variant: String,
}

impl Head {
    /// Logits N×classes from images given as views.
    pub fn forward_views(&self, model: &Model, views: &[Tensor]) -> Result<Tensor> {
        let e = model.embed_views(views, self.pool, true)?;
        Ok(self.linear.forward(&e)?)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([
            ("format".to_string(), HEAD_FORMAT.to_string()),
            (
                "classes".to_string(),
                serde_json::to_string(&self.classes).expect("strings"),
            ),
            ("pool".to_string(), self.pool.as_str().to_string()),
            ("normalize".to_string(), "l2".to_string()),
            ("backbone_sha256".to_string(), self.backbone_sha256.clone()),
            ("backbone_variant".to_string(), self.backbone_variant.clone()),
        ]);
        let w = self.linear.weight().to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let b = self
            .linear
            .bias()
            .expect("heads have a bias")
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?;
        crate::weights::save_with_metadata(path, &[("weight", &w), ("bias", &b)], meta)
    }

    /// Loads a head and checks that it was trained on `model`'s backbone.
    pub fn load(path: &Path, model: &Model) -> Result<Self> {
        let head = Self::read(path, model.device())?;
        let err = |msg: String| Error::File {
            path: path.to_path_buf(),
            msg,
        };
        let ours = model.fingerprint()?;
        if head.backbone_sha256 != ours {
            let short = |s: &str| s.chars().take(12).collect::<String>();
            return Err(err(format!(
                "this head was trained on another backbone ({}, sha256 {}…); {} is {} (sha256 {}…)",
                head.backbone_variant,
                short(&head.backbone_sha256),
                model.path().display(),
                model.meta.variant,
                short(&ours)
            )));
        }
        let dim = model.net.num_features();
        if head.linear.weight().dim(1)? != dim {
            return Err(err(format!(
                "the head takes {} features, the backbone gives {dim}",
                head.linear.weight().dim(1)?
            )));
        }
        Ok(head)
    }

    /// Reads and checks a head file on its own (metadata, tensors and their shapes).
    pub fn read(path: &Path, device: &Device) -> Result<Self> {
        let err = |msg: String| Error::File {
            path: path.to_path_buf(),
            msg,
        };
        let meta = TaggedMetadata::read(path, HEAD_FORMAT, "a head")?;
        let get = |k: &str| meta.get(k);
        let classes: Vec<String> =
            serde_json::from_str(&get("classes")?).map_err(|e| err(format!("bad `classes` metadata: {e}")))?;
        if classes.is_empty() {
            return Err(err("a head needs at least one class".into()));
        }
        let pool = Pool::parse(&get("pool")?).ok_or_else(|| err("bad `pool` metadata".into()))?;
        let (sha, variant) = (get("backbone_sha256")?, get("backbone_variant")?);
        let t = candle_core::safetensors::load(path, device).map_err(|e| err(format!("unreadable: {e}")))?;
        let (w, b) = match (t.get("weight"), t.get("bias")) {
            (Some(w), Some(b)) => (w.to_dtype(DType::F32)?, b.to_dtype(DType::F32)?),
            _ => return Err(err("head file lacks `weight` or `bias`".into())),
        };
        let fits = w.rank() == 2 && w.dim(0)? == classes.len() && w.dim(1)? > 0 && b.dims() == [classes.len()];
        if !fits {
            return Err(err(format!(
                "head weight {:?} and bias {:?} do not fit {} classes",
                w.dims(),
                b.dims(),
                classes.len()
            )));
        }
        let finite =
            |t: &Tensor| -> Result<bool> { Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite())) };
        if !finite(&w)? || !finite(&b)? {
            return Err(err("head weights hold NaN or infinite values".into()));
        }
        Ok(Self {
            linear: candle_nn::Linear::new(w, Some(b)),
            classes,
            pool,
            backbone_sha256: sha,
            backbone_variant: variant,
        })
    }
}

/// Training settings for [`train_head`].
#[derive(Debug, Clone)]
pub struct TrainOptions {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Fraction of each class held out for validation (early stopping); classes with a single
    /// image keep it for training.
    pub val_split: f64,
    /// Stop after this many epochs without a better validation loss.
    pub patience: usize,
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            epochs: 300,
            lr: 0.05,
            weight_decay: 1e-4,
            val_split: 0.2,
            patience: 30,
            seed: 0,
        }
    }
}

/// What happened during training.
#[derive(Debug, Clone)]
pub struct TrainReport {
    pub epochs_run: usize,
    pub train_loss: f32,
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f32>,
    pub train_size: usize,
    pub val_size: usize,
}

/// Trains a linear softmax head (AdamW, cross-entropy, weight decay, early stopping on the
/// validation split) on L2-normalised embeddings N×D with class indices `targets`.
/// `on_epoch(epoch, train_loss, val_accuracy)` reports progress.
pub fn train_head(
    embeddings: &Tensor,
    targets: &[u32],
    num_classes: usize,
    opts: &TrainOptions,
    mut on_epoch: impl FnMut(usize, f32, Option<f32>),
) -> Result<(candle_nn::Linear, TrainReport)> {
    let dev = embeddings.device().clone();
    let (n, dim) = embeddings.dims2()?;
    if n != targets.len() {
        return Err(Error::Message(format!("{n} embeddings for {} targets", targets.len())));
    }
    // deterministic split: the last ⌊len · val_split⌋ images of each class (never all of them)
    let (mut train_idx, mut val_idx) = (Vec::new(), Vec::new());
    for c in 0..num_classes as u32 {
        let members: Vec<usize> = (0..n).filter(|&i| targets[i] == c).collect();
        let n_val = (((members.len() as f64) * opts.val_split).floor() as usize).min(members.len().saturating_sub(1));
        let (t, v) = members.split_at(members.len() - n_val);
        train_idx.extend_from_slice(t);
        val_idx.extend_from_slice(v);
    }
    let pick = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
        let ids = Tensor::new(idx.iter().map(|&i| i as u32).collect::<Vec<_>>().as_slice(), &dev)?;
        let y: Vec<u32> = idx.iter().map(|&i| targets[i]).collect();
        Ok((embeddings.index_select(&ids, 0)?, Tensor::new(y.as_slice(), &dev)?))
    };
    let (xt, yt) = pick(&train_idx)?;
    let val = if val_idx.is_empty() {
        None
    } else {
        Some(pick(&val_idx)?)
    };

    // Imprinted weights (Qi et al. 2018, "Low-Shot Learning with Imprinted Weights"): start from
    // the normalised class means, so that training begins at the nearest-class-mean classifier.
    let mut means = Vec::with_capacity(num_classes);
    for c in 0..num_classes as u32 {
        let members: Vec<u32> = train_idx
            .iter()
            .filter(|&&i| targets[i] == c)
            .map(|&i| i as u32)
            .collect();
        if members.is_empty() {
            return Err(Error::Message(format!("class {c} has no training image")));
        }
        let ids = Tensor::new(members.as_slice(), &dev)?;
        means.push(embeddings.index_select(&ids, 0)?.mean_keepdim(0)?);
    }
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
    let head = candle_nn::linear(dim, num_classes, vb)?;
    varmap
        .data()
        .lock()
        .expect("not poisoned")
        .get("weight")
        .expect("linear weight")
        .set(&l2_normalize(&Tensor::cat(&means, 0)?)?)?;
    varmap
        .data()
        .lock()
        .expect("not poisoned")
        .get("bias")
        .expect("linear bias")
        .set(&Tensor::zeros(num_classes, DType::F32, &dev)?)?;
    let mut opt = AdamW::new(
        varmap.all_vars(),
        ParamsAdamW {
            lr: opts.lr,
            weight_decay: opts.weight_decay,
            ..Default::default()
        },
    )?;
    // Class-balanced cross-entropy: every class weighs the same whatever its number of images.
    let counts: Vec<f32> = (0..num_classes as u32)
        .map(|c| train_idx.iter().filter(|&&i| targets[i] == c).count() as f32)
        .collect();
    let sample_w: Vec<f32> = train_idx
        .iter()
        .map(|&i| 1.0 / (counts[targets[i] as usize] * num_classes as f32))
        .collect();
    let sample_w = Tensor::new(sample_w.as_slice(), &dev)?;
    let balanced_ce = |logits: &Tensor, y: &Tensor| -> Result<Tensor> {
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        let picked = logp.gather(&y.unsqueeze(1)?, 1)?.squeeze(1)?;
        Ok((picked * &sample_w)?.sum_all()?.neg()?)
    };
    // features are unit vectors: scale logits so that a linear layer can reach confident outputs
    let scale = 10.0;
    let logits = |x: &Tensor| -> Result<Tensor> { Ok((head.forward(x)? * scale)?) };
    let (mut best, mut best_state, mut since_best) = (f32::INFINITY, None, 0);
    let (mut epochs_run, mut train_loss, mut val_loss, mut val_acc) = (0, f32::NAN, None, None);
    for epoch in 1..=opts.epochs {
        let loss = balanced_ce(&logits(&xt)?, &yt)?;
        opt.backward_step(&loss)?;
        train_loss = loss.to_scalar::<f32>()?;
        epochs_run = epoch;
        let monitored = if let Some((xv, yv)) = &val {
            let lv = logits(xv)?;
            let l = candle_nn::loss::cross_entropy(&lv, yv)?.to_scalar::<f32>()?;
            let correct = lv
                .argmax(1)?
                .eq(yv)?
                .to_dtype(DType::F32)?
                .mean_all()?
                .to_scalar::<f32>()?;
            val_loss = Some(l);
            val_acc = Some(correct);
            l
        } else {
            train_loss
        };
        on_epoch(epoch, train_loss, val_acc);
        if monitored < best - 1e-6 {
            best = monitored;
            best_state = Some((head.weight().copy()?, head.bias().expect("bias").copy()?));
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= opts.patience {
                break;
            }
        }
    }
    let (w, b) = best_state.unwrap_or((head.weight().copy()?, head.bias().expect("bias").copy()?));
    let trained = candle_nn::Linear::new((w * scale)?, Some((b * scale)?));
    let report = TrainReport {
        epochs_run,
        train_loss,
        val_loss,
        val_accuracy: val_acc,
        train_size: train_idx.len(),
        val_size: val_idx.len(),
    };
    Ok((trained, report))
}

/// Exact cosine-similarity search over L2-normalised embeddings.
#[derive(Debug, Clone)]
pub struct Index {
    pub paths: Vec<String>,
    /// N×D, unit rows.
    pub embeddings: Tensor,
    pub pool: Pool,
    pub backbone_sha256: String,
    pub backbone_variant: String,
}

impl Index {
    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = HashMap::from([
            ("format".to_string(), INDEX_FORMAT.to_string()),
            (
                "paths".to_string(),
                serde_json::to_string(&self.paths).expect("strings"),
            ),
            ("pool".to_string(), self.pool.as_str().to_string()),
            ("backbone_sha256".to_string(), self.backbone_sha256.clone()),
            ("backbone_variant".to_string(), self.backbone_variant.clone()),
        ]);
        let e = self.embeddings.to_device(&Device::Cpu)?;
        crate::weights::save_with_metadata(path, &[("embeddings", &e)], meta)
    }

    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let err = |msg: String| Error::File {
            path: path.to_path_buf(),
            msg,
        };
        let meta = TaggedMetadata::read(path, INDEX_FORMAT, "an index")?;
        let get = |k: &str| meta.get(k);
        let paths: Vec<String> = serde_json::from_str(&get("paths")?).map_err(|e| err(format!("bad `paths`: {e}")))?;
        let t = candle_core::safetensors::load(path, device).map_err(|e| err(format!("unreadable: {e}")))?;
        let embeddings = t
            .get("embeddings")
            .ok_or_else(|| err("no `embeddings` tensor".into()))?
            .clone();
        if embeddings.dims().len() != 2 || embeddings.dim(0)? != paths.len() {
            return Err(err(format!(
                "{:?} embeddings for {} paths",
                embeddings.dims(),
                paths.len()
            )));
        }
        Ok(Self {
            paths,
            embeddings,
            pool: Pool::parse(&get("pool")?).ok_or_else(|| err("bad `pool`".into()))?,
            backbone_sha256: get("backbone_sha256")?,
            backbone_variant: get("backbone_variant")?,
        })
    }

    /// The `k` most similar entries to a unit query vector (D), best first: (path, cosine).
    pub fn search(&self, query: &Tensor, k: usize) -> Result<Vec<(String, f32)>> {
        let sims: Vec<f32> = self.embeddings.matmul(&query.unsqueeze(1)?)?.squeeze(1)?.to_vec1()?;
        let mut idx: Vec<usize> = (0..sims.len()).collect();
        idx.sort_by(|&a, &b| sims[b].total_cmp(&sims[a]));
        Ok(idx
            .into_iter()
            .take(k)
            .map(|i| (self.paths[i].clone(), sims[i]))
            .collect())
    }
}

/// The metadata of one of our own safetensors formats (head, index), its `format` checked.
struct TaggedMetadata<'a> {
    path: &'a Path,
    what: &'static str,
    meta: HashMap<String, String>,
}

impl<'a> TaggedMetadata<'a> {
    fn read(path: &'a Path, format: &str, what: &'static str) -> Result<Self> {
        let t = Self {
            path,
            what,
            meta: crate::pretrained::read_metadata(path)?,
        };
        if t.get("format")? != format {
            return Err(Error::File {
                path: path.to_path_buf(),
                msg: format!("not {what} file (format is not {format})"),
            });
        }
        Ok(t)
    }

    fn get(&self, k: &str) -> Result<String> {
        self.meta.get(k).cloned().ok_or_else(|| Error::File {
            path: self.path.to_path_buf(),
            msg: format!("not {} file: no `{k}` metadata", self.what),
        })
    }
}

/// One sub-folder per class: (class names sorted, image files per class).
pub fn class_folders(dir: &Path) -> Result<(Vec<String>, Vec<Vec<PathBuf>>)> {
    let err = |msg: String| Error::File {
        path: dir.to_path_buf(),
        msg,
    };
    let mut classes: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| err(format!("cannot read the data folder: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    classes.sort();
    if classes.len() < 2 {
        return Err(err(format!(
            "needs one sub-folder per class and at least two classes, found {}",
            classes.len()
        )));
    }
    let mut names = Vec::new();
    let mut files = Vec::new();
    for c in classes {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&c)
            .map_err(|e| err(format!("cannot read {}: {e}", c.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        f.sort();
        if f.is_empty() {
            return Err(Error::File {
                path: c.clone(),
                msg: "class folder has no files".into(),
            });
        }
        names.push(c.file_name().unwrap_or_default().to_string_lossy().into_owned());
        files.push(f);
    }
    Ok((names, files))
}
