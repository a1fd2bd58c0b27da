pub mod bench;
pub mod classify;
pub mod detect;
pub mod features;
pub mod pose;
pub mod serve;
pub mod study;

/// The folder pipeline of `classify` and `detect`: `files` in batches of `batch_size`, each
/// batch's files loaded in parallel by `load` one batch ahead of `handle`, which gets the batch
/// (its paths and what `load` made of each) on this thread; a progress bar when stderr is a
/// terminal. Returns the seconds it all took.
pub fn stream_batches<T: Send>(
    files: &[std::path::PathBuf],
    batch_size: usize,
    load: impl Fn(&std::path::Path) -> T + Sync,
    mut handle: impl FnMut(&[std::path::PathBuf], Vec<T>) -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    use rayon::prelude::*;
    use std::io::IsTerminal;
    let progress = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(files.len() as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = std::time::Instant::now();
    let chunks: Vec<&[std::path::PathBuf]> = files.chunks(batch_size.max(1)).collect();
    std::thread::scope(|s| -> anyhow::Result<()> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let load = &load;
        s.spawn(move || {
            for chunk in chunks {
                let loaded: Vec<T> = chunk.par_iter().map(|p| load(p)).collect();
                if tx.send((chunk, loaded)).is_err() {
                    break;
                }
            }
        });
        for (chunk, loaded) in rx {
            handle(chunk, loaded)?;
            progress.inc(chunk.len() as u64);
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    Ok(start.elapsed().as_secs_f64())
}

type Decoded = ferrovision::Result<image::DynamicImage>;

/// One model call (`infer`) over the decodable images of a batch of `paths`; a failing batch is
/// retried image by image so that one bad input cannot take the others' results with it. Each
/// decoded image is handed back with its result (for `--draw`), each undecodable one as its error.
pub fn run_batch<T>(
    paths: &[std::path::PathBuf],
    images: Vec<Decoded>,
    infer: impl Fn(&[image::DynamicImage]) -> ferrovision::Result<Vec<T>>,
) -> Vec<(std::path::PathBuf, anyhow::Result<(image::DynamicImage, T)>)> {
    let (mut ok, mut failed) = (Vec::new(), Vec::new()); // decoded images; per path, its error if any
    for decoded in images {
        match decoded {
            Ok(img) => {
                ok.push(img);
                failed.push(None);
            }
            Err(e) => failed.push(Some(e)),
        }
    }
    let found = match infer(&ok) {
        Ok(d) => d.into_iter().map(Ok).collect::<Vec<_>>(),
        Err(_) => ok
            .iter()
            .map(|img| infer(std::slice::from_ref(img)).map(|mut d| d.remove(0)))
            .collect(),
    };
    let mut batch = found.into_iter().zip(ok);
    paths
        .iter()
        .zip(failed)
        .map(|(p, error)| {
            let r = match error {
                Some(e) => Err(anyhow::Error::new(e)),
                None => {
                    let (d, img) = batch.next().expect("one result per decoded image");
                    d.map(|d| (img, d)).map_err(anyhow::Error::new)
                }
            };
            (p.clone(), r)
        })
        .collect()
}

/// `<file name>.png` (`cat.jpg` → `cat.jpg.png`), with `-2`, `-3`, … before `.png` for a
/// name already drawn in this run (the same file name in two folders).
pub fn drawn_name(path: &std::path::Path, used: &mut std::collections::HashSet<String>) -> String {
    let name = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut candidate = format!("{name}.png");
    let mut k = 1;
    while !used.insert(candidate.clone()) {
        k += 1;
        candidate = format!("{name}-{k}.png");
    }
    candidate
}

/// `--input`: `N` (N×N) or `HxW` (`481x641`: PoseNet's inputs are not square).
pub fn parse_input_size(s: &str) -> Result<(usize, usize), String> {
    let num = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("`{s}`: expected N or HxW with whole numbers ≥ 1"))
    };
    match s.split_once(['x', '×']) {
        Some((h, w)) => Ok((num(h)?, num(w)?)),
        None => num(s).map(|n| (n, n)),
    }
}

/// `--weights-dtype`: how the weights are stored (the CPU computes in f32 either way; half
/// storage halves the model's memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightsDtype {
    F32,
    F16,
    Bf16,
}

/// `--device`: where the network runs, as PyTorch writes it: `cpu`, `cuda`, `cuda:N`, `metal`,
/// `metal:N` (N the device's ordinal, 0 when left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceArg {
    Cpu,
    Cuda(usize),
    Metal(usize),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, ordinal) = match s.split_once(':') {
            Some((kind, n)) => match n.parse::<usize>() {
                Ok(n) => (kind, Some(n)),
                Err(_) => {
                    return Err(format!(
                        "`{s}`: the device number after `:` must be a whole number, as in cuda:1"
                    ))
                }
            },
            None => (s, None),
        };
        match (kind, ordinal) {
            ("cpu", None) => Ok(DeviceArg::Cpu),
            ("cuda", n) => Ok(DeviceArg::Cuda(n.unwrap_or(0))),
            ("metal", n) => Ok(DeviceArg::Metal(n.unwrap_or(0))),
            _ => Err(format!("`{s}`: expected cpu, cuda, cuda:N, metal or metal:N")),
        }
    }
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceArg::Cpu => write!(f, "cpu"),
            DeviceArg::Cuda(n) => write!(f, "cuda:{n}"),
            DeviceArg::Metal(n) => write!(f, "metal:{n}"),
        }
    }
}

impl DeviceArg {
    /// The device, or an error that says whether the build lacks the feature or the device failed.
    pub fn device(self) -> anyhow::Result<candle_core::Device> {
        use anyhow::Context;
        let (started, n, name, feature, built) = match self {
            DeviceArg::Cpu => return Ok(candle_core::Device::Cpu),
            DeviceArg::Cuda(n) => (
                ferrovision::kernels::gpu::cuda_device(n),
                n,
                "CUDA",
                "cuda",
                cfg!(feature = "cuda"),
            ),
            DeviceArg::Metal(n) => (
                candle_core::Device::new_metal(n),
                n,
                "Metal",
                "metal",
                cfg!(feature = "metal"),
            ),
        };
        started.with_context(|| {
            if built {
                format!("--device {self}: {name} device {n} could not be started")
            } else {
                format!("--device {self} needs a build with --features {feature}")
            }
        })
    }
}

impl WeightsDtype {
    pub fn dtype(self) -> candle_core::DType {
        match self {
            WeightsDtype::F32 => candle_core::DType::F32,
            WeightsDtype::F16 => candle_core::DType::F16,
            WeightsDtype::Bf16 => candle_core::DType::BF16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeviceArg;

    #[test]
    fn device_strings_as_pytorch_writes_them() {
        for (s, want) in [
            ("cpu", DeviceArg::Cpu),
            ("cuda", DeviceArg::Cuda(0)),
            ("cuda:1", DeviceArg::Cuda(1)),
            ("metal", DeviceArg::Metal(0)),
            ("metal:0", DeviceArg::Metal(0)),
        ] {
            assert_eq!(s.parse::<DeviceArg>(), Ok(want), "{s}");
        }
        assert_eq!(DeviceArg::Cuda(1).to_string(), "cuda:1");
        for bad in ["gpu", "cpu:0", "cuda:", "cuda:x", "cuda:-1", "CUDA", ""] {
            let e = bad.parse::<DeviceArg>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{bad}: {e}");
        }
    }
}
