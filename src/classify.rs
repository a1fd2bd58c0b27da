//! Classifying images with a loaded [`Model`]: single or multiple views, top-k or threshold,
//! rule-mapped labels, raw logits.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::ops::softmax_last_dim;
use image::DynamicImage;
use rayon::prelude::*;

use crate::error::Result;
use crate::preprocess::{load_image, Crops};
use crate::pretrained::{Model, Prediction};
use crate::rules::{Label, Rules};

/// How to classify.
#[derive(Debug, Clone)]
pub struct ClassifyOptions {
    /// Classes reported per image (ignored when `threshold` is set).
    pub top_k: usize,
    /// Report every class whose probability reaches this (multi-label), most probable first.
    pub threshold: Option<f32>,
    /// Views per image; their probabilities are averaged.
    pub crops: Crops,
    /// Keep the full output vector before softmax (averaged over views).
    pub raw: bool,
}

impl Default for ClassifyOptions {
    fn default() -> Self {
        Self {
            top_k: 5,
            threshold: None,
            crops: Crops::Center,
            raw: false,
        }
    }
}

/// The result for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct Classification {
    pub predictions: Vec<Prediction>,
    /// Rule-mapped labels (empty without rules).
    pub labels: Vec<Label>,
    /// The model's output before softmax, with [`ClassifyOptions::raw`].
    pub logits: Option<Vec<f32>>,
    /// The judgement of the rules' moderation rule, when they have one (`rules/nsfw.yaml`).
    pub moderation: Option<crate::rules::Verdict>,
}

/// Per-image rows of a batch's output: softmax probabilities and the logits before it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    pub probs: Vec<Vec<f32>>,
    pub logits: Vec<Vec<f32>>,
}

impl Classification {
    /// The JSON object of one image, as `classify --format json` writes it (`path` is the file
    /// or the request's name for it): `{"path", "predictions", "labels", "error"}`, plus
    /// `"logits"` when they were kept.
    pub fn to_json(path: &str, result: &std::result::Result<Classification, String>) -> serde_json::Value {
        use serde_json::json;
        match result {
            Ok(c) => {
                let mut obj = json!({
                    "path": path,
                    "predictions": c.predictions.iter()
                        .map(|x| json!({"class_id": x.class_id, "label": x.label, "score": x.score}))
                        .collect::<Vec<_>>(),
                    "labels": c.labels,
                    "error": null,
                });
                if let Some(l) = &c.logits {
                    obj["logits"] = json!(l);
                }
                if let Some(v) = &c.moderation {
                    obj["nsfw"] = json!(v.nsfw);
                    obj["nsfw_score"] = json!(v.score);
                }
                obj
            }
            Err(e) => json!({"path": path, "predictions": [], "labels": [], "error": e}),
        }
    }
}

impl Model {
    /// Whether output 0 is TF-slim's "background" (ImageNet class i is then output i + 1).
    pub fn background_offset(&self) -> usize {
        if self.head.is_some() {
            return 0;
        }
        let l = &self.meta.labels;
        usize::from(l.len() == 1001 && l.first().is_some_and(|s| s == "background"))
    }

    /// Preprocessed views of images: one tensor per image, V×3×H×W.
    pub fn views(&self, images: &[DynamicImage], crops: Crops) -> Result<Vec<Tensor>> {
        images
            .iter()
            .map(|img| {
                let views = self.meta.preprocessing.apply_crops(img, crops, self.device())?;
                Ok(Tensor::stack(&views, 0)?.to_dtype(self.compute_dtype())?)
            })
            .collect()
    }

    /// Class probabilities and logits of images whose views were made by [`Model::views`] (all
    /// with the same count): one row per image, views averaged (a trained head averages the
    /// views' embeddings instead). This is the batched part of classifying; [`Model::classification`]
    /// then reads one image's row.
    pub fn scores(&self, views: &[Tensor]) -> Result<Scores> {
        if views.is_empty() {
            return Ok(Scores::default());
        }
        let (probs, logits) = match &self.head {
            // a trained head: one embedding per image (views averaged), then the linear layer
            Some(head) => {
                let logits = head.forward_views(self, views)?;
                (softmax_last_dim(&logits)?, logits)
            }
            None => {
                let per_image = views[0].dim(0)?;
                let batch = Tensor::cat(views, 0)?; // (N·V)×3×H×W
                let logits = self.net.forward(&batch)?.to_dtype(DType::F32)?;
                let classes = logits.dim(1)?;
                let per_view = |t: Tensor| t.reshape((views.len(), per_image, classes))?.mean(1);
                (per_view(softmax_last_dim(&logits)?)?, per_view(logits)?)
            }
        };
        Ok(Scores {
            probs: probs.to_vec2()?,
            logits: logits.to_vec2()?,
        })
    }

    /// One image's classification from its row of [`Model::scores`].
    pub fn classification(
        &self,
        probs: &[f32],
        logits: &[f32],
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Classification {
        // a moderation rule names classes (the head's, when one is attached); label rules speak
        // of ImageNet classes: not of a head's own
        let moderation = rules
            .and_then(|r| r.moderation.as_ref())
            .and_then(|m| m.judge(self.class_names(), probs).ok());
        let rules = if self.head.is_some() { None } else { rules };
        let predictions = match opts.threshold {
            Some(t) => self
                .top_k(probs, probs.len())
                .into_iter()
                .take_while(|x| x.score >= t)
                .collect(),
            None => self.top_k(probs, opts.top_k),
        };
        Classification {
            predictions,
            labels: rules
                .map(|r| r.apply(probs, self.background_offset()))
                .unwrap_or_default(),
            logits: opts.raw.then(|| logits.to_vec()),
            moderation,
        }
    }

    /// Classifies images whose views were made by [`Model::views`] (all with the same count).
    pub fn classify_views(
        &self,
        views: &[Tensor],
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Result<Vec<Classification>> {
        let scores = self.scores(views)?;
        Ok(scores
            .probs
            .iter()
            .zip(&scores.logits)
            .map(|(p, l)| self.classification(p, l, opts, rules))
            .collect())
    }

    /// Classifies decoded images.
    pub fn classify_images(
        &self,
        images: &[DynamicImage],
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Result<Vec<Classification>> {
        self.classify_views(&self.views(images, opts.crops)?, opts, rules)
    }

    /// Classifies image files: decoding and preprocessing run in parallel, then one forward pass
    /// over the images that decoded. A file that fails gets its own error; the others go on.
    pub fn classify_paths(
        &self,
        paths: &[PathBuf],
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Vec<(PathBuf, Result<Classification>)> {
        let views: Vec<Result<Tensor>> = paths.par_iter().map(|p| self.load_views(p, opts.crops)).collect();
        self.finish(paths, views, opts, rules)
    }

    /// Decodes and preprocesses one file into its V×3×H×W views.
    pub fn load_views(&self, path: &Path, crops: Crops) -> Result<Tensor> {
        let img = load_image(path)?;
        Ok(self.views(std::slice::from_ref(&img), crops)?.remove(0))
    }

    /// Runs the network on the views that loaded and pairs every path with its result.
    pub fn finish(
        &self,
        paths: &[PathBuf],
        views: Vec<Result<Tensor>>,
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Vec<(PathBuf, Result<Classification>)> {
        let good: Vec<Tensor> = views.iter().filter_map(|v| v.as_ref().ok().cloned()).collect();
        let mut results = match self.classify_views(&good, opts, rules) {
            Ok(r) => r.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(e) => (0..good.len())
                .map(|_| {
                    Err(crate::Error::InvalidOption {
                        arch: "model".into(),
                        msg: e.to_string(),
                    })
                })
                .collect(),
        }
        .into_iter();
        paths
            .iter()
            .zip(views)
            .map(|(p, v)| {
                (
                    p.clone(),
                    v.and_then(|_| results.next().expect("one result per good image")),
                )
            })
            .collect()
    }
}
