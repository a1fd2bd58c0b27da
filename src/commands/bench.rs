//! `ferrovision bench`: our own inference speed on random (synthetic) weights.

use std::io::Write;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use clap::Args;
use ferrovision::model::{ArchName, ModelOptions};
use ferrovision::synthetic::{self, Synthetic};
use serde_json::json;

#[derive(Args)]
pub struct BenchArgs {
    /// Architecture (see `ferrovision archs`).
    #[arg(long)]
    pub model: String,
    /// Width multiplier α (MobileNets).
    #[arg(long, default_value_t = 1.0)]
    pub width: f64,
    /// Input height and width [default: 299 for inception_v3, else 224].
    #[arg(long)]
    pub input: Option<usize>,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Threads [default: all cores] (set before any work starts).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs (the median is reported), after two warm-up runs.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// `json` for one machine-readable line.
    #[arg(long, default_value = "table")]
    pub format: String,
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<bool> {
    let arch = ArchName::parse(&args.model)?;
    let size = args
        .input
        .unwrap_or(if arch == ArchName::InceptionV3 { 299 } else { 224 });
    let opts = ModelOptions {
        width: args.width,
        ..ModelOptions::default()
    };
    let vb = VarBuilder::from_backend(Box::new(Synthetic::new("bench")), DType::F32, Device::Cpu);
    let net = ferrovision::model::build_arch(arch, &opts, vb)?;
    let x = synthetic::input("bench", &[args.batch, 3, size, size], &Device::Cpu)?;
    for _ in 0..2 {
        net.forward(&x)?;
    }
    let mut times: Vec<f64> = (0..args.runs.max(1))
        .map(|_| {
            let t = Instant::now();
            net.forward(&x).map(|_| t.elapsed().as_secs_f64())
        })
        .collect::<candle_core::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let ms_per_image = median * 1e3 / args.batch as f64;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rss = peak_rss_mb();
    let mut o = std::io::stdout().lock();
    if args.format == "json" {
        writeln!(
            o,
            "{}",
            json!({"model": args.model, "width": args.width, "input": size, "batch": args.batch, "threads": threads,
                   "ms_per_image": ms_per_image, "images_per_s": 1e3 / ms_per_image, "peak_rss_mb": rss,
                   "runs": times.len()})
        )?;
    } else {
        writeln!(
            o,
            "{} (α {}, {size}×{size}), batch {}, {threads} threads: {ms_per_image:.2} ms/image (median of {}), {:.1} images/s, peak RSS {:.0} MB",
            args.model,
            args.width,
            args.batch,
            times.len(),
            1e3 / ms_per_image,
            rss.unwrap_or(f64::NAN)
        )?;
    }
    Ok(true)
}
