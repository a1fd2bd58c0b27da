//! The `ferrovision` command line.

mod commands;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ferrovision::model::{ArchName, ModelOptions};

#[derive(Parser)]
#[command(name = "ferrovision", version, about = "Pure-Rust CNN image recognition")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Classify image files and directories.
    Classify(commands::classify::ClassifyArgs),
    /// Detect objects (boxes, classes, scores) in image files and directories.
    Detect(commands::detect::DetectArgs),
    /// Estimate people's poses (17 keypoints each; PoseNet or MoveNet) in image files and directories.
    Pose(commands::pose::PoseArgs),
    /// Pooled features before the classifier, for search or your own models.
    Embed(commands::features::EmbedArgs),
    /// Train a new linear head on a backbone's features (one sub-folder per class).
    TrainHead(commands::features::TrainHeadArgs),
    /// Build a visual-search index of images.
    Index(commands::features::IndexArgs),
    /// Find the indexed images most similar to query images (cosine similarity).
    Similar(commands::features::SimilarArgs),
    /// Layer-by-layer table: output shapes, parameters and MACs.
    Summary(commands::study::SummaryArgs),
    /// Capture named layers' activations: safetensors, feature-map grids (PNG), statistics (JSON).
    Inspect(commands::study::InspectArgs),
    /// Class activation map of a photo, overlaid on it (GAP architectures).
    Cam(commands::study::CamArgs),
    /// Serve models over HTTP: KServe v2, PhotoPrism's Vision API, /classify, /metrics.
    Serve(commands::serve::ServeArgs),
    /// Inference speed on synthetic weights: median ms/image, images/s, peak RSS.
    Bench(commands::bench::BenchArgs),
    /// List the architectures with their parameter counts.
    Archs {
        /// Width multiplier α (MobileNets).
        #[arg(long, default_value_t = 1.0)]
        width: f64,
        /// Number of output classes.
        #[arg(long, default_value_t = 1000)]
        num_classes: usize,
    },
}

fn archs(width: f64, num_classes: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<16} {:>14}", "architecture", "parameters")?;
    for name in ArchName::ALL {
        let arch = ArchName::parse(name)?;
        let w = if matches!(
            arch,
            ArchName::MobileNetV1 | ArchName::MobileNetV2 | ArchName::SsdMobileNetV2
        ) {
            width
        } else {
            1.0
        };
        let opts = ModelOptions {
            width: w,
            // a detector's classes include the background: its usual 91 (COCO)
            num_classes: if arch.is_detector() { 91 } else { num_classes },
            ..arch.default_options()
        };
        let n = ferrovision::weights::count_parameters(arch, &opts)?;
        writeln!(out, "{name:<16} {n:>14}")?;
    }
    Ok(())
}

fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on usage errors
    ferrovision::kernels::reuse_freed_memory();
    if let Command::Serve(a) = &cli.command {
        // the main thread waits on the network: every inference thread is the pool's own
        ferrovision::kernels::init_detached_thread_pool(a.threads);
    } else {
        ferrovision::kernels::init_thread_pool(match &cli.command {
            Command::Classify(a) => a.threads,
            Command::Detect(a) => a.threads,
            Command::Pose(a) => a.threads,
            Command::Bench(a) => a.threads,
            _ => None,
        });
        ferrovision::kernels::spin_workers();
    }
    let result = match cli.command {
        Command::Classify(args) => {
            let setup = commands::classify::load_model(&args).and_then(|m| {
                let rules = commands::classify::load_rules(args.rules.as_deref())?;
                if let Some(r) = &rules {
                    r.check_labels(m.class_names())
                        .map_err(|e| anyhow::anyhow!("--rules: {e}"))?;
                }
                Ok((m, rules))
            });
            match setup {
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
                Ok((model, rules)) => commands::classify::run(&args, &model, rules.as_ref()).map(|failed| failed == 0),
            }
        }
        Command::Detect(args) => match commands::detect::load(&args) {
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            Ok(model) => commands::detect::run(&args, &model).map(|failed| failed == 0),
        },
        Command::Pose(args) => match commands::pose::load(&args) {
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            Ok(model) => commands::pose::run(&args, &model).map(|failed| failed == 0),
        },
        Command::Serve(args) => match commands::serve::load(&args) {
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
            Ok(models) => commands::serve::run(&args, models),
        },
        Command::Embed(a) => commands::features::embed(&a),
        Command::TrainHead(a) => commands::features::train(&a),
        Command::Index(a) => commands::features::index(&a),
        Command::Similar(a) => commands::features::similar(&a),
        Command::Summary(a) => commands::study::summary(&a),
        Command::Bench(a) => commands::bench::bench(&a),
        Command::Inspect(a) => commands::study::inspect(&a),
        Command::Cam(a) => commands::study::cam(&a),
        Command::Archs { width, num_classes } => archs(width, num_classes).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) if broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
