//! `ferrovision classify`: top-k classes for image files and folders, streamed as they finish.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferrovision::preprocess::load_image;
use ferrovision::{Model, Prediction};
use rayon::prelude::*;
use serde_json::json;

#[derive(Args)]
pub struct ClassifyArgs {
    /// Weights file (default: $FERROVISION_WEIGHTS, else weights/default.safetensors).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Classes reported per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Image files or directories (searched recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// Files named on the command line, and image files found under directories (sorted).
fn collect(paths: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            out.push(dir.to_path_buf()); // reported as an error when read
            return;
        };
        let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out);
            } else if p
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out);
        } else {
            out.push(p.clone());
        }
    }
    out
}

pub fn default_weights() -> PathBuf {
    std::env::var_os("FERROVISION_WEIGHTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weights/default.safetensors"))
}

/// Returns the number of images that failed.
pub fn run(args: &ClassifyArgs, model: &Model) -> anyhow::Result<usize> {
    let files = collect(&args.paths);
    let mut out = std::io::stdout().lock();
    if let Format::Csv = args.format {
        writeln!(out, "path,rank,class_id,label,score,error")?;
    }
    let mut failures = 0;
    for chunk in files.chunks(args.batch_size.max(1)) {
        // decode + preprocess in parallel; one forward pass per chunk of good images
        let decoded: Vec<_> = chunk
            .par_iter()
            .map(|p| load_image(p).and_then(|img| model.meta.preprocessing.apply(&img, model.device())))
            .collect();
        let good: Vec<_> = decoded.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
        let mut preds = if good.is_empty() {
            Vec::new()
        } else {
            let batch = candle_core::Tensor::stack(&good, 0)?;
            let probs: Vec<Vec<f32>> = model.probabilities(&batch)?.to_vec2()?;
            probs.iter().map(|p| model.top_k(p, args.top_k)).collect()
        }
        .into_iter();
        for (path, res) in chunk.iter().zip(&decoded) {
            let result = match res {
                Ok(_) => Ok(preds.next().expect("one prediction per good image")),
                Err(e) => {
                    failures += 1;
                    Err(e.to_string())
                }
            };
            write_result(&mut out, args.format, path, &result)?;
        }
        out.flush()?;
    }
    Ok(failures)
}

fn write_result(
    out: &mut impl Write,
    format: Format,
    path: &Path,
    result: &Result<Vec<Prediction>, String>,
) -> anyhow::Result<()> {
    let p = path.display().to_string();
    match format {
        Format::Json => {
            let (preds, err) = match result {
                Ok(v) => (
                    v.iter()
                        .map(|p| json!({"class_id": p.class_id, "label": p.label, "score": p.score}))
                        .collect(),
                    None,
                ),
                Err(e) => (Vec::new(), Some(e.clone())),
            };
            writeln!(out, "{}", json!({"path": p, "predictions": preds, "error": err}))?;
        }
        Format::Csv => match result {
            Ok(v) => {
                for (rank, pr) in v.iter().enumerate() {
                    writeln!(
                        out,
                        "{},{},{},{},{:.6},",
                        csv(&p),
                        rank + 1,
                        pr.class_id,
                        csv(&pr.label),
                        pr.score
                    )?;
                }
            }
            Err(e) => writeln!(out, "{},,,,,{}", csv(&p), csv(e))?,
        },
        Format::Table => match result {
            Ok(v) => {
                writeln!(out, "{p}")?;
                for pr in v {
                    writeln!(out, "  {:>6.2}%  {:>5}  {}", pr.score * 100.0, pr.class_id, pr.label)?;
                }
            }
            Err(e) => writeln!(out, "{p}\n  error: {e}")?,
        },
    }
    Ok(())
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Loads the model named by `--weights` / the default, with a how-to when it is missing.
pub fn load_model(weights: Option<&PathBuf>) -> anyhow::Result<Model> {
    let path = weights.cloned().unwrap_or_else(default_weights);
    if !path.is_file() {
        anyhow::bail!(
            "no weights at {}.\nGet the default model (MobileNet v2, converted from ../shared's TFLite file) with:\n  scripts/get_default_weights.sh\nor pass --weights FILE / set FERROVISION_WEIGHTS.",
            path.display()
        );
    }
    Model::load(&path, &candle_core::Device::Cpu).with_context(|| format!("loading {}", path.display()))
}
