//! `ferrovision classify`: image files and folders → top classes and rule-mapped labels,
//! streamed as they finish. Decoding runs in parallel, one batch ahead of the network.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, ValueEnum};
use ferrovision::classify::{Classification, ClassifyOptions};
use ferrovision::preprocess::Crops;
use ferrovision::rules::Rules;
use ferrovision::Model;

#[derive(Args)]
pub struct ClassifyArgs {
    /// Weights file written by scripts/convert_weights.py [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Classes reported per image.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Report every class whose probability reaches P (multi-label) instead of the top k.
    #[arg(long, value_name = "P")]
    pub threshold: Option<f32>,
    /// Views per image, probabilities averaged: the framework's centre view, PhotoPrism's 3 squares
    /// along the long side, or the classic ten-crop.
    #[arg(long, value_enum, default_value_t = CropsArg::Center)]
    pub crops: CropsArg,
    /// A head trained with `ferrovision train-head` on these weights: its classes replace the model's.
    #[arg(long)]
    pub head: Option<PathBuf>,
    /// Label rules (YAML, PhotoPrism style); `default` = the built-in ImageNet-1k rules.
    #[arg(long, value_name = "FILE|default")]
    pub rules: Option<String>,
    /// Add the output vector before softmax ("logits") to JSON output.
    #[arg(long)]
    pub raw: bool,
    /// Output format: table for people, JSON lines, CSV (one row per prediction).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Worker threads for decoding and inference [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the network runs: cpu, cuda, cuda:N, metal, metal:N (cuda / metal need a build with
    /// that feature).
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Store the weights as f32, f16 or bf16: half storage halves memory; on the CPU compute stays
    /// f32, on a GPU it is done in this dtype.
    #[arg(long, value_enum, default_value_t = super::WeightsDtype::F32)]
    pub weights_dtype: super::WeightsDtype,
    /// Also classify the files (or directories) listed in LIST, one path per line (`-`: read the
    /// list from stdin); blank lines are skipped, relative paths are relative to the working directory.
    #[arg(long, value_name = "LIST", value_parser = read_file_list)]
    pub files_from: Option<FileList>,
    /// Image files or directories (searched recursively for jpg, png, bmp, gif, webp, tiff).
    #[arg(required_unless_present = "files_from")]
    pub paths: Vec<PathBuf>,
}

/// The paths of a `--files-from` list, read while the arguments are parsed (so that a list that
/// cannot be read is a usage error: exit status 2).
#[derive(Clone, Debug, Default)]
pub struct FileList(pub Vec<PathBuf>);

/// Reads a `--files-from` list: one path per line (`\n` or `\r\n`), blank lines skipped; `-` is stdin.
fn read_file_list(arg: &str) -> Result<FileList, String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = if arg == "-" {
        std::io::stdin().lock().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::File::open(arg).and_then(|mut f| f.read_to_end(&mut bytes).map(|_| ()))
    };
    read.map_err(|e| {
        format!(
            "cannot read the list {}: {e}",
            if arg == "-" { "on stdin" } else { arg }
        )
    })?;
    Ok(FileList(
        bytes
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
            .map(path_from_bytes)
            .collect(),
    ))
}

#[cfg(unix)]
fn path_from_bytes(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

#[cfg(not(unix))]
fn path_from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(b).into_owned())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CropsArg {
    Center,
    #[value(name = "3")]
    Three,
    #[value(name = "10")]
    Ten,
}

const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff"];

/// Files named on the command line, and image files found under directories (sorted).
pub fn collect(paths: &[PathBuf]) -> Vec<PathBuf> {
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

/// Loads the model named by `--weights` / the default, with its `--head` if any.
pub fn load_model(args: &ClassifyArgs) -> anyhow::Result<Model> {
    let mut model = load_model_as(args.weights.as_ref(), args.device.device()?, args.weights_dtype.dtype())?;
    if model.detector.is_some() {
        anyhow::bail!(
            "{} holds a detector ({}): use `ferrovision detect`",
            model.path().display(),
            model.meta.architecture
        );
    }
    if model.pose_decoder().is_ok() {
        anyhow::bail!(
            "{} holds a pose estimator ({}): use `ferrovision pose`",
            model.path().display(),
            model.meta.architecture
        );
    }
    super::features::attach_head(&mut model, args.head.as_deref())?;
    Ok(model)
}

/// Loads weights on the CPU (see [`load_model_on`]).
pub fn load_model_from(weights: Option<&PathBuf>) -> anyhow::Result<Model> {
    load_model_on(weights, candle_core::Device::Cpu)
}

/// Loads `weights` or the default model, with a how-to when it is missing.
pub fn load_model_on(weights: Option<&PathBuf>, device: candle_core::Device) -> anyhow::Result<Model> {
    load_model_as(weights, device, candle_core::DType::F32)
}

/// As [`load_model_on`], with the weights stored as `storage`.
pub fn load_model_as(
    weights: Option<&PathBuf>,
    device: candle_core::Device,
    storage: candle_core::DType,
) -> anyhow::Result<Model> {
    let path = weights.cloned().unwrap_or_else(default_weights);
    if !path.is_file() {
        anyhow::bail!(
            "no weights at {}.\nGet the default model (MobileNet v2 from ../shared's TFLite file) with:\n  scripts/quickstart.sh\nor pass --weights FILE / set FERROVISION_WEIGHTS.",
            path.display()
        );
    }
    let model = Model::load_as(&path, &device, storage).with_context(|| format!("loading {}", path.display()))?;
    ferrovision::kernels::trim_freed_memory();
    Ok(model)
}

pub fn load_rules(arg: Option<&str>) -> anyhow::Result<Option<Rules>> {
    Ok(match arg {
        None => None,
        Some("default") => Some(Rules::default_imagenet1k()),
        Some(path) => Some(Rules::load(Path::new(path))?),
    })
}

/// Classifies everything and streams the results; returns the number of failed images.
pub fn run(args: &ClassifyArgs, model: &Model, rules: Option<&Rules>) -> anyhow::Result<usize> {
    let listed = args.files_from.iter().flat_map(|l| l.0.iter().cloned());
    let files = collect(&args.paths.iter().cloned().chain(listed).collect::<Vec<_>>());
    let opts = ClassifyOptions {
        top_k: args.top_k,
        threshold: args.threshold,
        crops: match args.crops {
            CropsArg::Center => Crops::Center,
            CropsArg::Three => Crops::Three,
            CropsArg::Ten => Crops::Ten,
        },
        raw: args.raw,
    };
    let mut out = std::io::stdout().lock();
    if let Format::Csv = args.format {
        writeln!(out, "path,rank,class_id,label,score,error")?;
    }
    let mut failures = 0;
    let crops = opts.crops;
    let secs = super::stream_batches(
        &files,
        args.batch_size,
        |p| model.load_views(p, crops),
        |chunk, views| {
            for (path, result) in model.finish(chunk, views, &opts, rules) {
                failures += usize::from(result.is_err());
                write_result(&mut out, args.format, &path, &result.map_err(|e| e.to_string()))?;
            }
            out.flush()?;
            Ok(())
        },
    )?;
    eprintln!(
        "classified {} images in {secs:.2} s ({:.1} images/s), {failures} failed",
        files.len(),
        files.len() as f64 / secs.max(1e-9)
    );
    Ok(failures)
}

fn write_result(
    out: &mut impl Write,
    format: Format,
    path: &Path,
    result: &Result<Classification, String>,
) -> anyhow::Result<()> {
    let p = path.display().to_string();
    match format {
        Format::Json => writeln!(out, "{}", Classification::to_json(&p, result))?,
        Format::Csv => match result {
            Ok(c) => {
                for (rank, x) in c.predictions.iter().enumerate() {
                    writeln!(
                        out,
                        "{},{},{},{},{:.6},",
                        csv(&p),
                        rank + 1,
                        x.class_id,
                        csv(&x.label),
                        x.score
                    )?;
                }
            }
            Err(e) => writeln!(out, "{},,,,,{}", csv(&p), csv(e))?,
        },
        Format::Table => match result {
            Ok(c) => {
                writeln!(out, "{p}")?;
                for x in &c.predictions {
                    writeln!(out, "  {:>6.2}%  {:>5}  {}", x.score * 100.0, x.class_id, x.label)?;
                }
                if let Some(v) = &c.moderation {
                    writeln!(out, "  nsfw: {} (score {:.2}%)", v.nsfw, v.score * 100.0)?;
                }
                if !c.labels.is_empty() {
                    let labels: Vec<String> = c
                        .labels
                        .iter()
                        .map(|l| format!("{} ({:.0}%)", l.label, l.score * 100.0))
                        .collect();
                    writeln!(out, "  labels: {}", labels.join(", "))?;
                }
            }
            Err(e) => writeln!(out, "{p}\n  error: {e}")?,
        },
    }
    Ok(())
}

pub fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}
