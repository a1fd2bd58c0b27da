//! `embed`, `train-head`, `index` and `similar`: features before the classifier, a new head on
//! them, and visual search.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use candle_core::Tensor;
use clap::{Args, ValueEnum};
use ferrovision::features::{class_folders, train_head, Head, Index, Pool, TrainOptions};
use ferrovision::preprocess::Crops;
use ferrovision::Model;
use rayon::prelude::*;
use serde_json::json;

use super::classify::{collect, load_model_from};

#[derive(Clone, Copy, ValueEnum)]
pub enum PoolArg {
    Avg,
    Max,
}

impl From<PoolArg> for Pool {
    fn from(p: PoolArg) -> Self {
        match p {
            PoolArg::Avg => Pool::Avg,
            PoolArg::Max => Pool::Max,
        }
    }
}

/// Embeddings of the files that could be read, and the failures.
struct Embedded {
    good: Vec<PathBuf>,
    /// One row per good file.
    embeddings: Tensor,
    failed: Vec<(PathBuf, String)>,
}

/// Embeds files in batches of 16, decoding each batch in parallel.
fn embed_files(model: &Model, files: &[PathBuf], pool: Pool, normalize: bool) -> anyhow::Result<Embedded> {
    let (mut good, mut rows, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    let progress = bar(files.len() as u64);
    for chunk in files.chunks(16) {
        let views: Vec<_> = chunk.par_iter().map(|p| model.load_views(p, Crops::Center)).collect();
        let mut ok = Vec::new();
        for (p, v) in chunk.iter().zip(views) {
            match v {
                Ok(v) => {
                    good.push(p.clone());
                    ok.push(v);
                }
                Err(e) => failed.push((p.clone(), e.to_string())),
            }
        }
        if !ok.is_empty() {
            rows.push(model.embed_views(&ok, pool, normalize)?);
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    if rows.is_empty() {
        anyhow::bail!("no image could be read ({} failed)", failed.len());
    }
    Ok(Embedded {
        good,
        embeddings: Tensor::cat(&rows, 0)?,
        failed,
    })
}

fn bar(n: u64) -> indicatif::ProgressBar {
    if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(n)
    } else {
        indicatif::ProgressBar::hidden()
    }
}

fn report_failures(failed: &[(PathBuf, String)]) {
    for (_, e) in failed {
        eprintln!("skipped: {e}");
    }
}

#[derive(Args)]
pub struct EmbedArgs {
    /// Weights file [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Pooling of the last feature map.
    #[arg(long, value_enum, default_value_t = PoolArg::Avg)]
    pub pool: PoolArg,
    /// L2-normalise each embedding.
    #[arg(long)]
    pub normalize: bool,
    /// Write a safetensors file (`embeddings` N×D, image paths in its metadata) instead of JSON lines.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Image files or directories.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn embed(args: &EmbedArgs) -> anyhow::Result<bool> {
    let model = load_model_from(args.weights.as_ref())?;
    let Embedded {
        good,
        embeddings: emb,
        failed,
    } = embed_files(&model, &collect(&args.paths), args.pool.into(), args.normalize)?;
    report_failures(&failed);
    match &args.out {
        Some(out) => {
            let index = Index {
                paths: good.iter().map(|p| p.display().to_string()).collect(),
                embeddings: emb,
                pool: args.pool.into(),
                backbone_sha256: model.fingerprint()?,
                backbone_variant: model.meta.variant.clone(),
            };
            index.save(out)?;
            eprintln!(
                "wrote {} embeddings of {} dimensions to {}",
                good.len(),
                model.net.num_features(),
                out.display()
            );
        }
        None => {
            let rows: Vec<Vec<f32>> = emb.to_vec2()?;
            let mut o = std::io::stdout().lock();
            for (p, r) in good.iter().zip(rows) {
                writeln!(
                    o,
                    "{}",
                    json!({"path": p.display().to_string(), "embedding": r, "error": null})
                )?;
            }
            for (p, e) in &failed {
                writeln!(
                    o,
                    "{}",
                    json!({"path": p.display().to_string(), "embedding": null, "error": e})
                )?;
            }
        }
    }
    Ok(failed.is_empty())
}

#[derive(Args)]
pub struct TrainHeadArgs {
    /// Backbone weights file [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// A folder with one sub-folder of images per class.
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write the head.
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the training embeddings (full batch).
    #[arg(long, default_value_t = 100)]
    pub epochs: usize,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 1e-2)]
    pub weight_decay: f64,
    /// Fraction of each class held out for early stopping (classes with one image keep it).
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Pooling of the backbone's last feature map.
    #[arg(long, value_enum, default_value_t = PoolArg::Avg)]
    pub pool: PoolArg,
}

pub fn train(args: &TrainHeadArgs) -> anyhow::Result<bool> {
    let model = load_model_from(args.weights.as_ref())?;
    let (classes, files) = class_folders(&args.data)?;
    let (mut all, mut targets) = (Vec::new(), Vec::new());
    for (c, fs) in files.iter().enumerate() {
        all.extend(fs.iter().cloned());
        targets.extend(std::iter::repeat_n(c as u32, fs.len()));
    }
    // embeddings are computed once; every epoch reuses them
    let Embedded {
        good,
        embeddings: emb,
        failed,
    } = embed_files(&model, &all, args.pool.into(), true)?;
    report_failures(&failed);
    let targets: Vec<u32> = all
        .iter()
        .zip(&targets)
        .filter(|(p, _)| good.contains(p))
        .map(|(_, &t)| t)
        .collect();
    for (c, name) in classes.iter().enumerate() {
        if !targets.contains(&(c as u32)) {
            anyhow::bail!("class `{name}` has no readable image");
        }
    }
    let progress = bar(args.epochs as u64);
    let opts = TrainOptions {
        epochs: args.epochs,
        lr: args.lr,
        weight_decay: args.weight_decay,
        val_split: args.val_split,
        ..TrainOptions::default()
    };
    let (linear, report) = train_head(&emb, &targets, classes.len(), &opts, |epoch, loss, acc| {
        progress.set_position(epoch as u64);
        progress.set_message(match acc {
            Some(a) => format!("loss {loss:.4}, val acc {:.1}%", a * 100.0),
            None => format!("loss {loss:.4}"),
        });
    })?;
    progress.finish_and_clear();
    let head = Head {
        linear,
        classes: classes.clone(),
        pool: args.pool.into(),
        backbone_sha256: model.fingerprint()?,
        backbone_variant: model.meta.variant.clone(),
    };
    head.save(&args.out)?;
    eprintln!(
        "trained a head for {} classes ({}) on {} images ({} held out) in {} epochs: train loss {:.4}{}; wrote {}",
        classes.len(),
        classes.join(", "),
        report.train_size,
        report.val_size,
        report.epochs_run,
        report.train_loss.max(0.0),
        report
            .val_accuracy
            .map(|a| format!(", val accuracy {:.1}%", a * 100.0))
            .unwrap_or_default(),
        args.out.display()
    );
    Ok(failed.is_empty())
}

#[derive(Args)]
pub struct IndexArgs {
    /// Backbone weights file [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Where to write the index.
    #[arg(long)]
    pub out: PathBuf,
    /// Images or folders to index.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn index(args: &IndexArgs) -> anyhow::Result<bool> {
    let emb = EmbedArgs {
        weights: args.weights.clone(),
        pool: PoolArg::Avg,
        normalize: true,
        out: Some(args.out.clone()),
        paths: args.paths.clone(),
    };
    embed(&emb)
}

#[derive(Args)]
pub struct SimilarArgs {
    /// An index written by `ferrovision index`.
    #[arg(long)]
    pub index: PathBuf,
    /// The backbone the index was made with [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// One JSON object per query image.
    #[arg(long)]
    pub json: bool,
    /// Query images.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

pub fn similar(args: &SimilarArgs) -> anyhow::Result<bool> {
    let model = load_model_from(args.weights.as_ref())?;
    let index = Index::load(&args.index, model.device())?;
    if index.backbone_sha256 != model.fingerprint()? {
        anyhow::bail!(
            "{} was made with another backbone ({}); pass its --weights",
            args.index.display(),
            index.backbone_variant
        );
    }
    let mut o = std::io::stdout().lock();
    let mut ok = true;
    for q in &args.images {
        match model
            .load_views(q, Crops::Center)
            .and_then(|v| model.embed_views(&[v], index.pool, true))
        {
            Ok(e) => {
                let hits = index.search(&e.squeeze(0)?, args.top_k)?;
                if args.json {
                    let hits: Vec<_> = hits.iter().map(|(p, s)| json!({"path": p, "similarity": s})).collect();
                    writeln!(
                        o,
                        "{}",
                        json!({"query": q.display().to_string(), "results": hits, "error": null})
                    )?;
                } else {
                    writeln!(o, "{}", q.display())?;
                    for (p, s) in hits {
                        writeln!(o, "  {s:.4}  {p}")?;
                    }
                }
            }
            Err(e) => {
                ok = false;
                if args.json {
                    writeln!(
                        o,
                        "{}",
                        json!({"query": q.display().to_string(), "results": [], "error": e.to_string()})
                    )?;
                } else {
                    writeln!(o, "{}\n  error: {e}", q.display())?;
                }
            }
        }
    }
    Ok(ok)
}

/// Attaches `--head FILE` to a loaded model (checks the backbone).
pub fn attach_head(model: &mut Model, head: Option<&Path>) -> anyhow::Result<()> {
    if let Some(h) = head {
        model.head = Some(Head::load(h, model).with_context(|| format!("loading head {}", h.display()))?);
    }
    Ok(())
}
