//! `ferrovision detect`: image files and folders → boxes with classes and scores, streamed as
//! they finish, optionally drawn. Decoding runs in parallel, one batch ahead of the network;
//! a bad file is reported on its line and the run goes on.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ferrovision::detect::{DetectOptions, Detections};
use ferrovision::Model;

use super::classify::{collect, Format};

#[derive(Args)]
pub struct DetectArgs {
    /// Detector weights written by scripts/convert_weights.py [default: $FERROVISION_DETECTOR, else weights/detector.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Report boxes whose score reaches this.
    #[arg(long, default_value_t = 0.5)]
    pub score: f32,
    /// Non-maximum suppression: a box overlapping a better one by more than this IoU is dropped.
    #[arg(long, default_value_t = 0.6)]
    pub iou: f32,
    /// At most this many boxes per image.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// Output format: table for people, JSON lines, CSV (one row per box).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write each image with its boxes and labels drawn to DIR/<file name>.png.
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Worker threads for decoding and inference [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the network runs: cpu, cuda, cuda:N, metal, metal:N.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Image files or directories (searched recursively for jpg, png, bmp, gif, webp, tiff).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

pub fn default_weights() -> PathBuf {
    std::env::var_os("FERROVISION_DETECTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weights/detector.safetensors"))
}

/// Loads the detector, refusing a classifier with a clear message.
pub fn load(args: &DetectArgs) -> anyhow::Result<Model> {
    let path = args.weights.clone().unwrap_or_else(default_weights);
    if !path.is_file() {
        anyhow::bail!(
            "no detector weights at {}.\nConvert the SSD MobileNetV2 COCO model of ../shared with:\n  python scripts/convert_weights.py tflite ../shared/models/tflite/ssd_mobilenet_v2_coco_quant_postprocess.tflite --labels ../shared/data/labels/coco_labels.txt --out weights/detector.safetensors\nor pass --weights FILE / set FERROVISION_DETECTOR.",
            path.display()
        );
    }
    let model = Model::load(&path, &args.device.device()?).with_context(|| format!("loading {}", path.display()))?;
    model.detector()?;
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --draw directory {}", dir.display()))?;
    }
    Ok(model)
}

/// Detects in everything and streams the results; returns the number of failed images.
pub fn run(args: &DetectArgs, model: &Model) -> anyhow::Result<usize> {
    let files = collect(&args.paths);
    let opts = DetectOptions {
        score_threshold: Some(args.score),
        iou_threshold: Some(args.iou),
        max_detections: Some(args.max),
    };
    let mut out = std::io::stdout().lock();
    if let Format::Csv = args.format {
        writeln!(out, "path,class_id,label,score,x0,y0,x1,y1,error")?;
    }
    let (mut failures, mut boxes) = (0, 0);
    let mut drawn = std::collections::HashSet::new();
    let secs = super::stream_batches(
        &files,
        args.batch_size,
        ferrovision::preprocess::load_image,
        |chunk, images| {
            for (path, result) in super::run_batch(chunk, images, |ok| model.detect(ok, &opts)) {
                let result = result.and_then(|(img, d)| {
                    if let Some(dir) = &args.draw {
                        draw(&dir.join(super::drawn_name(&path, &mut drawn)), &img, &d)?;
                    }
                    Ok(d)
                });
                failures += usize::from(result.is_err());
                boxes += result.as_ref().map_or(0, |d| d.detections.len());
                write_result(&mut out, args.format, &path, &result.map_err(|e| format!("{e:#}")))?;
            }
            out.flush()?;
            Ok(())
        },
    )?;
    eprintln!(
        "detected {boxes} objects in {} images in {secs:.2} s ({:.1} images/s), {failures} failed",
        files.len(),
        files.len() as f64 / secs.max(1e-9)
    );
    Ok(failures)
}

fn draw(out: &Path, img: &image::DynamicImage, d: &Detections) -> anyhow::Result<()> {
    ferrovision::draw::draw_detections(img, d)
        .save(out)
        .with_context(|| format!("cannot write {}", out.display()))
}

fn write_result(
    out: &mut impl Write,
    format: Format,
    path: &Path,
    result: &Result<Detections, String>,
) -> anyhow::Result<()> {
    let p = path.display().to_string();
    match format {
        Format::Json => writeln!(out, "{}", Detections::to_json(&p, result))?,
        Format::Csv => match result {
            Ok(d) => {
                for x in &d.detections {
                    let b = x.bbox;
                    writeln!(
                        out,
                        "{},{},{},{:.6},{:.1},{:.1},{:.1},{:.1},",
                        super::classify::csv(&p),
                        x.class_id,
                        super::classify::csv(&x.label),
                        x.score,
                        b.x0,
                        b.y0,
                        b.x1,
                        b.y1
                    )?;
                }
            }
            Err(e) => writeln!(out, "{},,,,,,,,{}", super::classify::csv(&p), super::classify::csv(e))?,
        },
        Format::Table => match result {
            Ok(d) => {
                writeln!(out, "{p} ({}×{}): {} objects", d.width, d.height, d.detections.len())?;
                for x in &d.detections {
                    let b = x.bbox;
                    writeln!(
                        out,
                        "  {:>6.2}%  {:>3}  {:<16} [{:.0}, {:.0}, {:.0}, {:.0}]",
                        x.score * 100.0,
                        x.class_id,
                        x.label,
                        b.x0,
                        b.y0,
                        b.x1,
                        b.y1
                    )?;
                }
            }
            Err(e) => writeln!(out, "{p}\n  error: {e}")?,
        },
    }
    Ok(())
}
