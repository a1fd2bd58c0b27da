//! `ferrovision serve`: load the models (one `--weights` file, or several from `models.yaml`),
//! then serve them over HTTP until SIGTERM or Ctrl-C (see `ferrovision::serve`, docs/serving.md).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ferrovision::serve::{ServeOptions, ServedModel, Server};
use serde::Deserialize;

use super::classify::{default_weights, load_model_as, load_rules, CropsArg};
use super::{DeviceArg, WeightsDtype};

#[derive(Args)]
pub struct ServeArgs {
    /// Models to serve, by name (YAML; see docs/serving.md) [default: the one --weights file]
    #[arg(long, conflicts_with_all = ["weights", "rules"])]
    pub config: Option<PathBuf>,
    /// One weights file, served under its file stem [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Label rules of the --weights model (FILE or `default`); ImageNet-1k models use the default ones for PhotoPrism's labels when none are given.
    #[arg(long, value_name = "FILE|default")]
    pub rules: Option<String>,
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Most images in one forward pass.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Longest wait, after a batch's first request, for more requests to join it.
    #[arg(long, default_value_t = 5)]
    pub max_queue_delay_ms: u64,
    /// Most images waiting or running per model; beyond it requests are answered 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Largest request body, in MiB; larger ones are answered 413.
    #[arg(long, default_value_t = 32)]
    pub max_body_mb: usize,
    /// Hosts (HOST or HOST:PORT, comma-separated) whose image URLs PhotoPrism's requests may name;
    /// without it remote URLs are refused and images must come inline.
    #[arg(long, value_name = "HOST,...", value_delimiter = ',')]
    pub allow_fetch: Vec<String>,
    /// Longest a client may take to send its request body, in seconds (slower: 408).
    #[arg(long, default_value_t = 30)]
    pub body_timeout_s: u64,
    /// Inference threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Where the --weights model runs: cpu, cuda, cuda:N, metal, metal:N.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceArg,
    /// Weight storage of the --weights model: f32, f16 or bf16.
    #[arg(long, value_enum, default_value_t = WeightsDtype::F32)]
    pub weights_dtype: WeightsDtype,
}

/// `models.yaml`: models by name, in order (the first answers requests that name no model).
///
/// ```yaml
/// models:
///   mobilenet_v2:
///     weights: weights/default.safetensors   # relative to this file
///     task: classify                          # or detect, pose
///     rules: default                          # or a rules file
///     device: cpu
///     dtype: f32
/// ```
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelsFile {
    models: serde_norway::Mapping,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelEntry {
    weights: PathBuf,
    #[serde(default = "classify_task")]
    task: String,
    #[serde(default)]
    rules: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    crops: Option<String>,
    /// A head trained with `train-head` on these weights.
    #[serde(default)]
    head: Option<PathBuf>,
}

fn classify_task() -> String {
    "classify".into()
}

fn crops(arg: CropsArg) -> ferrovision::preprocess::Crops {
    use ferrovision::preprocess::Crops;
    match arg {
        CropsArg::Center => Crops::Center,
        CropsArg::Three => Crops::Three,
        CropsArg::Ten => Crops::Ten,
    }
}

/// The models of `--config`, each loaded once.
fn load_config(path: &Path) -> anyhow::Result<Vec<ServedModel>> {
    use clap::ValueEnum;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: ModelsFile = serde_norway::from_str(&text).with_context(|| format!("{}", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (name, entry) in file.models {
        let name = name
            .as_str()
            .with_context(|| format!("{}: model names must be strings, got {name:?}", path.display()))?
            .to_string();
        let ctx = |what: &str| format!("{}: model `{name}`: {what}", path.display());
        let e: ModelEntry = serde_norway::from_value(entry).with_context(|| ctx("invalid entry"))?;
        if !matches!(e.task.as_str(), "classify" | "detect" | "pose") {
            anyhow::bail!(
                "{}",
                ctx(&format!("task `{}` is not served (classify, detect, pose)", e.task))
            );
        }
        let device: DeviceArg = e
            .device
            .as_deref()
            .unwrap_or("cpu")
            .parse()
            .map_err(|msg: String| anyhow::anyhow!(ctx(&msg)))?;
        let dtype = WeightsDtype::from_str(e.dtype.as_deref().unwrap_or("f32"), true)
            .map_err(|_| anyhow::anyhow!(ctx("dtype must be f32, f16 or bf16")))?;
        let crop = CropsArg::from_str(e.crops.as_deref().unwrap_or("center"), true)
            .map_err(|_| anyhow::anyhow!(ctx("crops must be center, 3 or 10")))?;
        let weights = dir.join(&e.weights);
        let mut model =
            load_model_as(Some(&weights), device.device()?, dtype.dtype()).with_context(|| ctx("loading"))?;
        let detector = model.detector.is_some();
        let pose = model.pose_decoder().is_ok();
        let holds = match (detector, pose) {
            (true, _) => "detect",
            (_, true) => "pose",
            _ => "classify",
        };
        if holds != e.task {
            let is = match holds {
                "detect" => "a detector",
                "pose" => "a pose estimator",
                _ => "a classifier",
            };
            anyhow::bail!(
                "{}",
                ctx(&format!("task `{}`, but {} holds {is}", e.task, weights.display()))
            );
        }
        if (detector || pose) && (e.head.is_some() || e.rules.is_some() || !matches!(crop, CropsArg::Center)) {
            anyhow::bail!("{}", ctx("head, rules and crops apply to classifiers only"));
        }
        super::features::attach_head(&mut model, e.head.map(|h| dir.join(h)).as_deref())?;
        let rules = match e.rules.as_deref() {
            Some(r) if r != "default" => load_rules(Some(&dir.join(r).to_string_lossy()))?,
            r => load_rules(r)?,
        };
        if let Some(r) = &rules {
            r.check_labels(model.class_names())
                .map_err(|e| anyhow::anyhow!(ctx(&format!("rules: {e}"))))?;
        }
        out.push(ServedModel {
            name,
            model: Arc::new(model),
            rules: rules.map(Arc::new),
            crops: crops(crop),
        });
    }
    anyhow::ensure!(!out.is_empty(), "{}: no models", path.display());
    Ok(out)
}

/// The one model of `--weights` (or the default weights), named by its file stem.
fn load_single(args: &ServeArgs) -> anyhow::Result<Vec<ServedModel>> {
    let path = args.weights.clone().unwrap_or_else(default_weights);
    let model = load_model_as(Some(&path), args.device.device()?, args.weights_dtype.dtype())?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string();
    let rules = load_rules(args.rules.as_deref())?;
    if let Some(r) = &rules {
        r.check_labels(model.class_names())
            .map_err(|e| anyhow::anyhow!("--rules: {e}"))?;
    }
    Ok(vec![ServedModel {
        name,
        model: Arc::new(model),
        rules: rules.map(Arc::new),
        crops: ferrovision::preprocess::Crops::Center,
    }])
}

/// Loads the models; exit status 2 when that fails (as `classify`).
pub fn load(args: &ServeArgs) -> anyhow::Result<Vec<ServedModel>> {
    match &args.config {
        Some(c) => load_config(c),
        None => load_single(args),
    }
}

/// Serves until SIGTERM / Ctrl-C, then drains the requests in flight.
pub fn run(args: &ServeArgs, models: Vec<ServedModel>) -> anyhow::Result<bool> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let opts = ServeOptions {
        max_batch: args.max_batch,
        max_queue_delay: Duration::from_millis(args.max_queue_delay_ms),
        max_queue: args.max_queue,
        max_body_bytes: args.max_body_mb.saturating_mul(1 << 20),
        allow_fetch: args.allow_fetch.clone(),
        body_timeout: Duration::from_secs(args.body_timeout_s),
    };
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    // HTTP only: inference runs on the batchers' threads and rayon's pool
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&args.addr)
            .await
            .with_context(|| format!("cannot listen on {}", args.addr))?;
        let server = Server::new(models, opts);
        eprintln!("serving {} on http://{}", names.join(", "), listener.local_addr()?);
        server.serve(listener, shutdown_signal()).await?;
        eprintln!("stopped: every request in flight was answered");
        Ok(true)
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
