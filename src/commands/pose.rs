//! `ferrovision pose`: image files and folders → people's keypoints (PoseNet or MoveNet),
//! streamed as they finish, optionally drawn. A bad file is reported on its line and the run
//! goes on.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use ferrovision::pose_task::{PoseOptions, Poses};
use ferrovision::Model;

use super::classify::{collect, Format};

#[derive(Args)]
pub struct PoseArgs {
    /// Pose weights written by scripts/convert_weights.py [default: $FERROVISION_POSE, else weights/pose.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// At most this many people per image (PoseNet; MoveNet finds one).
    #[arg(long, default_value_t = 10)]
    pub max_poses: usize,
    /// Report people whose pose score (mean keypoint score) reaches this.
    #[arg(long, default_value_t = 0.25)]
    pub min_score: f32,
    /// Output format: table for people, JSON lines, CSV (one row per keypoint).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write each image with its skeletons drawn to DIR/<file name>.png.
    #[arg(long, value_name = "DIR")]
    pub draw: Option<PathBuf>,
    /// Draw keypoints (and limbs between them) scoring at least this.
    #[arg(long, default_value_t = 0.3)]
    pub draw_min_keypoint: f32,
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
    std::env::var_os("FERROVISION_POSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("weights/pose.safetensors"))
}

/// Loads the pose estimator, refusing a classifier or detector with a clear message.
pub fn load(args: &PoseArgs) -> anyhow::Result<Model> {
    let path = args.weights.clone().unwrap_or_else(default_weights);
    if !path.is_file() {
        anyhow::bail!(
            "no pose weights at {}.\nConvert PoseNet (several people) or MoveNet (one person) of ../shared with:\n  python scripts/convert_weights.py tflite ../shared/models/tflite/posenet_mobilenet_v1_075_481_641_16_quant_decoder.tflite --out weights/pose.safetensors\n  python scripts/convert_weights.py tflite ../shared/models/tflite/movenet_single_pose_lightning_ptq.tflite --out weights/pose.safetensors\nor pass --weights FILE / set FERROVISION_POSE.",
            path.display()
        );
    }
    let model = Model::load(&path, &args.device.device()?).with_context(|| format!("loading {}", path.display()))?;
    model.pose_decoder()?;
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create --draw directory {}", dir.display()))?;
    }
    Ok(model)
}

/// Estimates poses in everything and streams the results; returns the number of failed images.
pub fn run(args: &PoseArgs, model: &Model) -> anyhow::Result<usize> {
    let files = collect(&args.paths);
    let opts = PoseOptions {
        max_poses: Some(args.max_poses),
        score_threshold: None,
        nms_radius: None,
        min_score: args.min_score,
    };
    let mut out = std::io::stdout().lock();
    if let Format::Csv = args.format {
        writeln!(out, "path,person,pose_score,part,x,y,score,error")?;
    }
    let (mut failures, mut people) = (0, 0);
    let mut drawn = std::collections::HashSet::new();
    let secs = super::stream_batches(
        &files,
        args.batch_size,
        ferrovision::preprocess::load_image,
        |chunk, images| {
            let results = super::run_batch(chunk, images, |ok| model.pose(ok, &opts));
            for (path, result) in results {
                let result = result.and_then(|(img, p)| {
                    if let Some(dir) = &args.draw {
                        let file = dir.join(super::drawn_name(&path, &mut drawn));
                        ferrovision::draw::draw_poses(&img, &p, args.draw_min_keypoint)
                            .save(&file)
                            .with_context(|| format!("cannot write {}", file.display()))?;
                    }
                    Ok(p)
                });
                failures += usize::from(result.is_err());
                people += result.as_ref().map_or(0, |p| p.people());
                write_result(&mut out, args.format, &path, &result.map_err(|e| format!("{e:#}")))?;
            }
            out.flush()?;
            Ok(())
        },
    )?;
    eprintln!(
        "found {people} people in {} images in {secs:.2} s ({:.1} images/s), {failures} failed",
        files.len(),
        files.len() as f64 / secs.max(1e-9)
    );
    Ok(failures)
}

fn write_result(
    out: &mut impl Write,
    format: Format,
    path: &Path,
    result: &Result<Poses, String>,
) -> anyhow::Result<()> {
    let p = path.display().to_string();
    let csv = super::classify::csv;
    match format {
        Format::Json => writeln!(out, "{}", Poses::to_json(&p, result))?,
        Format::Csv => match result {
            Ok(poses) => {
                for (i, pose) in poses.poses.iter().enumerate() {
                    for k in &pose.keypoints {
                        writeln!(
                            out,
                            "{},{i},{:.6},{},{:.1},{:.1},{:.6},",
                            csv(&p),
                            pose.score,
                            k.part,
                            k.x,
                            k.y,
                            k.score
                        )?;
                    }
                }
            }
            Err(e) => writeln!(out, "{},,,,,,,{}", csv(&p), csv(e))?,
        },
        Format::Table => match result {
            Ok(poses) => {
                let n = poses.people();
                let noun = if n == 1 { "person" } else { "people" };
                writeln!(out, "{p} ({}×{}): {n} {noun}", poses.width, poses.height)?;
                for (i, pose) in poses.poses.iter().enumerate() {
                    let parts: Vec<String> = pose
                        .keypoints
                        .iter()
                        .filter(|k| k.score >= 0.5)
                        .map(|k| format!("{} ({:.0}, {:.0})", k.part, k.x, k.y))
                        .collect();
                    writeln!(out, "  person {i}: {:>6.2}%  {}", pose.score * 100.0, parts.join(", "))?;
                }
            }
            Err(e) => writeln!(out, "{p}\n  error: {e}")?,
        },
    }
    Ok(())
}
