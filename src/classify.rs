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

    /// Classifies images whose views were made by [`Model::views`] (all with the same count).
    pub fn classify_views(
        &self,
        views: &[Tensor],
        opts: &ClassifyOptions,
        rules: Option<&Rules>,
    ) -> Result<Vec<Classification>> {
        if views.is_empty() {
            return Ok(Vec::new());
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
        let probs: Vec<Vec<f32>> = probs.to_vec2()?;
        let logits: Option<Vec<Vec<f32>>> = if opts.raw { Some(logits.to_vec2()?) } else { None };
        // rules speak of ImageNet classes: not of a head's own
        let rules = if self.head.is_some() { None } else { rules };
        let offset = self.background_offset();
        Ok(probs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let predictions = match opts.threshold {
                    Some(t) => self
                        .top_k(p, p.len())
                        .into_iter()
                        .take_while(|x| x.score >= t)
                        .collect(),
                    None => self.top_k(p, opts.top_k),
                };
                Classification {
                    predictions,
                    labels: rules.map(|r| r.apply(p, offset)).unwrap_or_default(),
                    logits: logits.as_ref().map(|l| l[i].clone()),
                }
            })
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
