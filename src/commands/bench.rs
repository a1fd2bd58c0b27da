//! `ferrovision bench`: our own inference speed on random (synthetic) weights.

use std::io::Write;
use std::time::Instant;

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
    /// Input size, N or HxW [default: 299 for inception_v3, 300 for ssd_mobilenet_v2, 257 for
    /// posenet_mobilenet_v1, 192 for movenet, else 224].
    #[arg(long, value_parser = super::parse_input_size)]
    pub input: Option<(usize, usize)>,
    /// Images per forward pass; several (`1,32,256`) are measured one after the other on the
    /// same model, one line each.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Threads [default: all cores] (set before any work starts).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Timed runs (the median is reported), after two warm-up runs.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// `json` for one machine-readable line.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Where the network runs: cpu, cuda, cuda:N, metal, metal:N (cuda / metal need a build with
    /// that feature).
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Weight storage: f32, f16 or bf16. Half storage halves memory; the CPU computes in f32
    /// either way, a GPU in this dtype.
    #[arg(long, value_enum, default_value_t = super::WeightsDtype::F32)]
    pub weights_dtype: super::WeightsDtype,
    /// Also print where the time goes: per layer type and the slowest layers (traced runs; on
    /// a GPU each layer is timed up to a device synchronisation, so launch gaps show too).
    #[arg(long)]
    pub profile: bool,
    /// How many of the slowest layers `--profile` prints.
    #[arg(long, default_value_t = 12)]
    pub top: usize,
}

/// Peak resident memory (`VmHWM`), or the current one (`VmRSS`), in MB (Linux).
fn rss_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<bool> {
    let arch = ArchName::parse(&args.model)?;
    let (h, w) = args
        .input
        .unwrap_or((arch.default_input_size(), arch.default_input_size()));
    let opts = ModelOptions {
        width: args.width,
        ..arch.default_options()
    };
    let device = args.device.device()?;
    let storage = args.weights_dtype.dtype();
    let compute = ferrovision::model::compute_dtype(&device, storage);
    let vb = VarBuilder::from_backend(Box::new(Synthetic::new("bench")), storage, device.clone());
    let net = ferrovision::model::build_arch(arch, &opts, vb)?;
    ferrovision::kernels::trim_freed_memory();
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // multiply-adds per image (the same at every batch size), from one traced pass of one
    // image (each layer reports its own)
    let one = synthetic::input("bench", &[1, 3, h, w], &device)?.to_dtype(compute)?;
    let (out, events) = ferrovision::trace::trace_timing(|| net.forward(&one));
    out?;
    let gmacs = events.iter().map(|e| e.macs).sum::<u64>() as f64 / 1e9;
    for &batch in &args.batch {
        let x = synthetic::input("bench", &[batch, 3, h, w], &device)?.to_dtype(compute)?;
        // a GPU runs asynchronously: a pass is timed up to the device's synchronisation
        let pass = || -> candle_core::Result<()> {
            net.forward(&x)?;
            device.synchronize()
        };
        for _ in 0..2 {
            pass()?;
        }
        let mut times: Vec<f64> = (0..args.runs.max(1))
            .map(|_| {
                let t = Instant::now();
                pass().map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<candle_core::Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let ms_per_image = median * 1e3 / batch as f64;
        let (rss, rss_now) = (rss_mb("VmHWM:"), rss_mb("VmRSS:"));
        let gflops = 2.0 * gmacs / (ms_per_image / 1e3);
        let profile = if args.profile {
            Some(profile(net.as_ref(), &x, args.runs.max(1))?)
        } else {
            None
        };
        let mut o = std::io::stdout().lock();
        if args.format == "json" {
            writeln!(
                o,
                "{}",
                json!({"model": args.model, "device": args.device.to_string(), "weights_dtype": storage.as_str(), "compute_dtype": compute.as_str(), "width": args.width, "input": if h == w { json!(h) } else { json!([h, w]) }, "batch": batch, "threads": threads,
                       "ms_per_image": ms_per_image, "images_per_s": 1e3 / ms_per_image, "peak_rss_mb": rss, "rss_mb": rss_now, "gmacs_per_image": gmacs, "gflop_per_s": gflops,
                       "runs": times.len(), "profile": profile.as_ref().map(|p| p.json(batch))})
            )?;
        } else {
            writeln!(
                o,
                "{} (α {}, {h}×{w}), batch {}, {} {}, {threads} threads: {ms_per_image:.2} ms/image (median of {}), {:.1} images/s, {gflops:.0} GFLOP/s ({gmacs:.2} GMAC/image), peak RSS {:.0} MB (now {:.0} MB)",
                args.model,
                args.width,
                batch,
                args.device,
                compute.as_str(),
                times.len(),
                1e3 / ms_per_image,
                rss.unwrap_or(f64::NAN),
                rss_now.unwrap_or(f64::NAN)
            )?;
            if let Some(p) = &profile {
                p.print(&mut o, batch, args.top)?;
            }
        }
    }
    Ok(true)
}

/// Time per layer type and per layer over traced forward passes: each layer's median, so that
/// a pass the machine stalled in does not count (these machines change speed from one run to
/// the next); a type's time is the sum of its layers'. Seconds are given as medians × runs.
struct Profile {
    runs: usize,
    /// (kind, layers of that kind, seconds, MACs per image), slowest first.
    kinds: Vec<(String, usize, f64, u64)>,
    /// (name, kind, seconds), slowest first.
    layers: Vec<(String, String, f64)>,
}

fn profile(net: &dyn ferrovision::Network, x: &candle_core::Tensor, runs: usize) -> anyhow::Result<Profile> {
    use std::collections::HashMap;
    // per layer, in the order of the first pass: (name, kind, MACs, seconds of each pass)
    let mut layers: Vec<(String, String, u64, Vec<f64>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for _ in 0..runs {
        x.device().synchronize()?; // nothing earlier counted in the first layer
        let (out, events) = ferrovision::trace::trace_timing(|| net.forward(x));
        out?;
        for e in events {
            let i = *index.entry(e.name.clone()).or_insert_with(|| {
                let kind = if e.detail.is_empty() {
                    e.kind.to_string()
                } else {
                    format!("{} {}", e.kind, e.detail)
                };
                layers.push((e.name.clone(), kind, e.macs, Vec::new()));
                layers.len() - 1
            });
            layers[i].3.push(e.elapsed.as_secs_f64());
        }
    }
    let mut kinds: HashMap<String, (usize, f64, u64)> = HashMap::new();
    let mut per_layer = Vec::with_capacity(layers.len());
    for (name, kind, macs, mut secs) in layers {
        secs.sort_by(f64::total_cmp);
        let total = secs[secs.len() / 2] * runs as f64;
        let k = kinds.entry(kind.clone()).or_default();
        *k = (k.0 + 1, k.1 + total, k.2 + macs);
        per_layer.push((name, kind, total));
    }
    let mut kinds: Vec<_> = kinds.into_iter().map(|(k, (n, s, m))| (k, n, s, m)).collect();
    kinds.sort_by(|a, b| b.2.total_cmp(&a.2));
    per_layer.sort_by(|a, b| b.2.total_cmp(&a.2));
    Ok(Profile {
        runs,
        kinds,
        layers: per_layer,
    })
}

impl Profile {
    fn ms_per_image(&self, secs: f64, batch: usize) -> f64 {
        secs * 1e3 / (self.runs * batch) as f64
    }

    fn gflops(&self, secs: f64, macs: u64, batch: usize) -> f64 {
        2.0 * macs as f64 * (self.runs * batch) as f64 / secs / 1e9
    }

    fn json(&self, batch: usize) -> serde_json::Value {
        let total: f64 = self.kinds.iter().map(|k| k.2).sum();
        serde_json::Value::Array(
            self.kinds
                .iter()
                .map(|(kind, n, s, macs)| {
                    json!({"kind": kind, "layers": n, "ms_per_image": self.ms_per_image(*s, batch),
                           "share": s / total, "gflop_per_s": self.gflops(*s, *macs, batch)})
                })
                .collect(),
        )
    }

    fn print(&self, o: &mut impl Write, batch: usize, top: usize) -> std::io::Result<()> {
        let total: f64 = self.kinds.iter().map(|k| k.2).sum();
        writeln!(
            o,
            "\nper layer type (traced, median of {} runs per layer; a block's row is its own work after its children):",
            self.runs
        )?;
        writeln!(
            o,
            "{:<28} {:>6} {:>12} {:>7} {:>9}",
            "kind", "layers", "ms/image", "share", "GFLOP/s"
        )?;
        for (kind, n, s, macs) in &self.kinds {
            let (n, s, macs) = (*n, *s, *macs);
            let rate = if macs > 0 {
                format!("{:.0}", self.gflops(s, macs, batch))
            } else {
                "-".into()
            };
            writeln!(
                o,
                "{kind:<28} {n:>6} {:>12.2} {:>6.1}% {rate:>9}",
                self.ms_per_image(s, batch),
                100.0 * s / total
            )?;
        }
        writeln!(o, "\nslowest layers:")?;
        for (name, kind, s) in self.layers.iter().take(top) {
            writeln!(
                o,
                "{name:<36} {kind:<28} {:>8.2} ms/image",
                self.ms_per_image(*s, batch)
            )?;
        }
        Ok(())
    }
}
