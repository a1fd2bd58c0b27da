//! `summary`, `inspect` and `cam`: studying an architecture layer by layer.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use ferrovision::model::ArchName;
use ferrovision::pretrained::Model;
use ferrovision::summary::{summarize, table};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Args)]
pub struct SummaryArgs {
    /// Architecture name (see `ferrovision archs`); not needed with --weights.
    #[arg(long, required_unless_present = "weights")]
    pub model: Option<String>,
    /// A weights file: architecture and options come from its metadata.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Width multiplier α (MobileNets).
    #[arg(long)]
    pub width: Option<f64>,
    /// Input size, N or HxW [default: the weights' own, else 299 for inception_v3, 300 for
    /// ssd_mobilenet_v2, 257 for posenet_mobilenet_v1, 192 for movenet, 224 for the rest].
    #[arg(long, value_parser = super::parse_input_size)]
    pub input: Option<(usize, usize)>,
    /// Output classes.
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Fold rows deeper than N module-path segments into their parents (1 = top-level blocks).
    #[arg(long)]
    pub depth: Option<usize>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn summary(args: &SummaryArgs) -> anyhow::Result<bool> {
    let (arch, mut opts, mut size) = match &args.weights {
        Some(w) => {
            let m = Model::load(w, &candle_core::Device::Cpu)?;
            (
                ArchName::parse(&m.meta.architecture)?,
                m.meta.options.clone(),
                (m.meta.preprocessing.crop_size[0], m.meta.preprocessing.crop_size[1]),
            )
        }
        None => {
            let arch = ArchName::parse(args.model.as_deref().expect("clap requires --model"))?;
            let s = arch.default_input_size();
            (arch, arch.default_options(), (s, s))
        }
    };
    if let Some(w) = args.width {
        opts.width = w;
    }
    if let Some(n) = args.num_classes {
        opts.num_classes = n;
    }
    if let Some(s) = args.input {
        size = s;
    }
    let s = summarize(arch, &opts, size.0, size.1, args.depth)?;
    let mut o = std::io::stdout().lock();
    match args.format {
        Format::Table => write!(o, "{}", table(&s))?,
        Format::Json => writeln!(o, "{}", serde_json::to_string(&s)?)?,
        Format::Csv => {
            writeln!(o, "name,type,output_shape,params,macs")?;
            for r in &s.layers {
                let shape = r.shape("x");
                writeln!(o, "{},{},{},{},{}", r.name, r.kind, shape, r.params, r.macs)?;
            }
            writeln!(o, "total,,,{},{}", s.total_params, s.total_macs)?;
        }
    }
    Ok(true)
}

#[derive(Args)]
pub struct InspectArgs {
    /// Weights file [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Layer or block to capture, by module path as in `summary` (repeatable).
    #[arg(long = "layer", required = true)]
    pub layers: Vec<String>,
    /// Output folder: activations.safetensors, LAYER.png (feature maps), LAYER.json (statistics).
    #[arg(long)]
    pub out: PathBuf,
    /// The image to run.
    pub image: PathBuf,
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<bool> {
    use ferrovision::inspect::{activations, channel_stats, feature_grid};
    let model = super::classify::load_model_from(args.weights.as_ref())?;
    let img = ferrovision::preprocess::load_image(&args.image)?;
    let acts = activations(&model, &img, &args.layers)?;
    std::fs::create_dir_all(&args.out)?;
    let map: std::collections::HashMap<String, candle_core::Tensor> = acts
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(&candle_core::Device::Cpu)?)))
        .collect::<anyhow::Result<_>>()?;
    candle_core::safetensors::save(&map, args.out.join("activations.safetensors"))?;
    for (name, t) in &acts {
        // a feature map gets a PNG grid; a detector's per-anchor output (N×A×k) statistics only,
        // its k values per anchor taken as the channels
        let spatial = t.rank() == 4;
        let maps = if spatial {
            t.clone()
        } else {
            t.transpose(1, 2)?.unsqueeze(3)?
        };
        if spatial {
            feature_grid(t)?.save(args.out.join(format!("{name}.png")))?;
        }
        let stats = channel_stats(&maps)?;
        let json = serde_json::json!({"layer": name, "shape": t.dims(), "channels": stats});
        std::fs::write(
            args.out.join(format!("{name}.json")),
            serde_json::to_string_pretty(&json)?,
        )?;
        let written = if spatial {
            format!("{name}.png")
        } else {
            format!("{name}.json")
        };
        eprintln!("{name}: {:?} → {}/{written}", t.dims(), args.out.display());
    }
    Ok(true)
}

#[derive(Args)]
pub struct CamArgs {
    /// Weights file [default: $FERROVISION_WEIGHTS, else weights/default.safetensors]
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Output index of the class to explain [default: the top-1 class].
    #[arg(long)]
    pub class: Option<usize>,
    /// Where to write the overlay PNG (same size as the photo).
    #[arg(long)]
    pub out: PathBuf,
    /// The photo.
    pub image: PathBuf,
}

pub fn cam(args: &CamArgs) -> anyhow::Result<bool> {
    use ferrovision::inspect::{class_activation_map, overlay};
    let model = super::classify::load_model_from(args.weights.as_ref())?;
    let img = ferrovision::preprocess::load_image(&args.image)?;
    let cam = class_activation_map(&model, &img, args.class)?;
    overlay(&img, &cam.heat).save(&args.out)?;
    eprintln!(
        "class {} ({}, p = {:.3}) → {}",
        cam.class,
        model.class_names()[cam.class],
        cam.probability,
        args.out.display()
    );
    Ok(true)
}
