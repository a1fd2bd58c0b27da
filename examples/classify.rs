//! Embedding ferrovision in an app: load a model once, classify images or files, use the typed results.
//!
//!     scripts/quickstart.sh            # makes weights/default.safetensors once
//!     cargo run --release --example classify -- weights/default.safetensors ../shared/data/images/cat.jpg

use std::path::PathBuf;

use candle_core::Device;
use ferrovision::classify::ClassifyOptions;
use ferrovision::preprocess::{load_image, Crops};
use ferrovision::rules::Rules;
use ferrovision::Model;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let weights = PathBuf::from(args.next().unwrap_or_else(|| "weights/default.safetensors".into()));
    let images: Vec<PathBuf> = args.map(PathBuf::from).collect();

    // Load once: architecture, preprocessing and labels come from the file's metadata.
    let model = Model::load(&weights, &Device::Cpu)?;
    let rules = Rules::default_imagenet1k();
    println!("{} ({} classes)", model.meta.variant, model.meta.labels.len());

    // Files: decoded in parallel, one result (or error) per file.
    let opts = ClassifyOptions {
        top_k: 3,
        crops: Crops::Three,
        ..ClassifyOptions::default()
    };
    for (path, result) in model.classify_paths(&images, &opts, Some(&rules)) {
        match result {
            Ok(c) => {
                let best = &c.predictions[0];
                println!("{}: {} ({:.1}%)", path.display(), best.label, best.score * 100.0);
                for label in &c.labels {
                    println!("    label {} {:.2} {:?}", label.label, label.score, label.categories);
                }
            }
            Err(e) => println!("{}: {e}", path.display()),
        }
    }

    // Already-decoded images (image::DynamicImage) work the same way.
    if let Some(first) = images.first() {
        let img = load_image(first)?;
        let top = model.classify_images(&[img], &ClassifyOptions::default(), None)?;
        println!(
            "top-5 of {}: {:?}",
            first.display(),
            top[0].predictions.iter().map(|p| p.class_id).collect::<Vec<_>>()
        );
    }
    Ok(())
}
