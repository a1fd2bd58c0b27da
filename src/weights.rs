//! Loading weights: safetensors files through candle's VarBuilder, with a check that every
//! tensor in the file was used, and the list of parameters an architecture asks for.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use crate::error::Error;
use crate::model::{build_arch, ArchName, ModelOptions, Network};

/// (name, shape) of each tensor, in the order a model reads them.
pub type ParamList = Vec<(String, Vec<usize>)>;

/// Wraps a backend and records the names of the tensors the model builder asked for.
/// With `check_finite`, rejects tensors holding NaN or ±Inf.
struct Tracking<B> {
    inner: B,
    used: Mutex<ParamList>,
    check_finite: bool,
}

fn all_finite(t: &Tensor) -> Result<bool> {
    if !t.dtype().is_float() {
        return Ok(true);
    }
    let v: Vec<f32> = t
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    Ok(v.iter().all(|x| x.is_finite()))
}

impl<B: SimpleBackend> SimpleBackend for Tracking<B> {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.used
            .lock()
            .expect("not poisoned")
            .push((name.to_string(), s.dims().to_vec()));
        let t = self.inner.get(s, name, h, dtype, dev)?;
        if self.check_finite && !all_finite(&t)? {
            candle_core::bail!("tensor `{name}` holds NaN or infinite values")
        }
        Ok(t)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.inner.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Returns zero-strided zeros of any requested shape: builds a model without weights.
struct Shapes;

impl SimpleBackend for Shapes {
    fn get(&self, s: Shape, _: &str, _: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("no shape for `{name}`")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

/// Entries of a torchvision checkpoint that inference never reads.
fn ignorable(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
        || name.starts_with("AuxLogits.") // inception_v3 auxiliary classifier (training only)
        || name.starts_with("aux1.") // googlenet auxiliary classifiers
        || name.starts_with("aux2.")
        || name == "anchors" // SSD's stored anchors: read by the box decoder (`pretrained`), not the network
}

/// The (name, shape) of every tensor `arch` with `opts` reads, in the order it reads them
/// (torchvision's `state_dict` order, BatchNorm buffers included).
pub fn parameter_list(arch: ArchName, opts: &ModelOptions) -> crate::Result<ParamList> {
    let tracking = Tracking {
        inner: Shapes,
        used: Mutex::new(Vec::new()),
        check_finite: false,
    };
    let (net, used) = build_tracked(arch, opts, tracking, &Device::Cpu, DType::F32)?;
    drop(net);
    Ok(used)
}

/// Learnable parameters (as `sum(p.numel() for p in model.parameters())`: BatchNorm running
/// statistics are buffers, not parameters).
pub fn count_parameters(arch: ArchName, opts: &ModelOptions) -> crate::Result<usize> {
    Ok(parameter_list(arch, opts)?
        .iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .map(|(_, s)| s.iter().product::<usize>())
        .sum())
}

fn build_tracked<B: SimpleBackend + 'static>(
    arch: ArchName,
    opts: &ModelOptions,
    backend: Tracking<B>,
    device: &Device,
    storage: DType,
) -> crate::Result<(Box<dyn Network>, ParamList)> {
    let backend = std::sync::Arc::new(backend);
    let vb = VarBuilder::from_backend(Box::new(ArcBackend(backend.clone())), storage, device.clone());
    let net = build_arch(arch, opts, vb)?;
    let used = std::mem::take(&mut *backend.used.lock().expect("not poisoned"));
    Ok((net, used))
}

struct ArcBackend<B>(std::sync::Arc<B>);

impl<B: SimpleBackend> SimpleBackend for ArcBackend<B> {
    fn get(&self, s: Shape, name: &str, h: candle_nn::Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.get(s, name, h, dtype, dev)
    }
    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.0.get_unchecked(name, dtype, dev)
    }
    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_tensor(name)
    }
}

/// Loads a torchvision-style state_dict saved as safetensors into `arch` with `opts`.
/// Fails, naming the file, on a missing tensor, a shape mismatch, or tensors the architecture
/// does not use (apart from BatchNorm's `num_batches_tracked` and auxiliary heads).
pub fn load_state_dict(
    path: &Path,
    arch: ArchName,
    opts: &ModelOptions,
    device: &Device,
) -> crate::Result<Box<dyn Network>> {
    load_state_dict_as(path, arch, opts, device, DType::F32)
}

/// As [`load_state_dict`], with the convolution and linear weights stored as `storage` (f32,
/// f16 or bf16; on the CPU the kernels compute in f32 either way, see
/// [`crate::kernels::storage`]). Biases and BatchNorm folding stay f32.
pub fn load_state_dict_as(
    path: &Path,
    arch: ArchName,
    opts: &ModelOptions,
    device: &Device,
    storage: DType,
) -> crate::Result<Box<dyn Network>> {
    let file_err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    check_safetensors_file(path)?;
    // SAFETY: the file is mapped read-only; as with any mmap, it must not be modified while loaded.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
        .map_err(|e| file_err(format!("not a readable safetensors file: {e}")))?;
    let in_file: BTreeSet<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    let tracking = Tracking {
        inner: st,
        used: Mutex::new(Vec::new()),
        check_finite: true,
    };
    let (net, used) = build_tracked(arch, opts, tracking, device, storage)
        .map_err(|e| file_err(format!("cannot build {} from it: {e}", arch.name())))?;
    let used: BTreeSet<String> = used.into_iter().map(|(n, _)| n).collect();
    let extra: Vec<&String> = in_file.iter().filter(|n| !used.contains(*n) && !ignorable(n)).collect();
    if !extra.is_empty() {
        let shown: Vec<&str> = extra.iter().take(8).map(|s| s.as_str()).collect();
        return Err(file_err(format!(
            "{} tensor(s) that {} does not use: {}{} (wrong architecture or options?)",
            extra.len(),
            arch.name(),
            shown.join(", "),
            if extra.len() > 8 { ", …" } else { "" }
        )));
    }
    Ok(net)
}

/// The largest safetensors header we read (the format's own limit).
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor entry of a safetensors header.
#[derive(Debug, Clone, serde::Deserialize)]
struct Entry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// A JSON object visitor that keeps duplicated keys, so that they can be refused.
struct Entries(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some((k, val)) = m.next_entry::<String, serde_json::Value>()? {
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E4M3" | "F8_E5M2" => 1,
        "U16" | "I16" | "F16" | "BF16" => 2,
        "U32" | "I32" | "F32" => 4,
        "U64" | "I64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads a safetensors file's header after checking its length (≤ 100 MB, within the file);
/// returns the header bytes and the length of the data that follows.
pub fn read_header(path: &Path) -> crate::Result<(Vec<u8>, u64)> {
    use std::io::Read;
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let mut f = std::fs::File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let file_len = f.metadata().map_err(|e| err(format!("cannot read: {e}")))?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| err(format!("not a safetensors file: only {file_len} bytes")))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(err(format!(
            "not a safetensors file: header of {n} bytes (more than {MAX_HEADER_BYTES})"
        )));
    }
    if n + 8 > file_len {
        return Err(err(format!(
            "truncated or corrupt: the header claims {n} bytes, the file has {}",
            file_len - 8
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .map_err(|e| err(format!("cannot read the header: {e}")))?;
    Ok((header, file_len - 8 - n))
}

/// Checks a safetensors file's header against the file before anything is mapped: header size
/// (≤ 100 MB, within the file), JSON, no duplicated names, known dtypes, every tensor's byte
/// range inside the data, matching its shape, and no two ranges overlapping.
pub fn check_safetensors_file(path: &Path) -> crate::Result<()> {
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let (header, data_len) = read_header(path)?;
    let entries: Entries =
        serde_json::from_slice(&header).map_err(|e| err(format!("corrupt safetensors header: {e}")))?;
    let mut seen = BTreeSet::new();
    let mut ranges = Vec::new();
    for (name, value) in entries.0 {
        if !seen.insert(name.clone()) {
            return Err(err(format!("tensor `{name}` appears twice in the header")));
        }
        if name == "__metadata__" {
            continue;
        }
        let e: Entry =
            serde_json::from_value(value).map_err(|e| err(format!("tensor `{name}`: bad header entry: {e}")))?;
        let size = dtype_size(&e.dtype).ok_or_else(|| err(format!("tensor `{name}`: unknown dtype {}", e.dtype)))?;
        let (start, end) = e.data_offsets;
        if start > end || end > data_len {
            return Err(err(format!(
                "tensor `{name}`: bytes {start}..{end} lie outside the {data_len} bytes of data"
            )));
        }
        let numel = e.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        if numel.and_then(|n| n.checked_mul(size)) != Some(end - start) {
            return Err(err(format!(
                "tensor `{name}`: shape {:?} of {} does not fill bytes {start}..{end}",
                e.shape, e.dtype
            )));
        }
        ranges.push((start, end, name));
    }
    ranges.sort();
    for w in ranges.windows(2) {
        if w[1].0 < w[0].1 {
            return Err(err(format!(
                "tensors `{}` and `{}` overlap in the file",
                w[0].2, w[1].2
            )));
        }
    }
    Ok(())
}

/// Writes f32 tensors and a `__metadata__` map as one safetensors file.
pub fn save_with_metadata(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    meta: HashMap<String, String>,
) -> crate::Result<()> {
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(n, t)| {
            let v: Vec<f32> = t.flatten_all()?.to_vec1()?;
            Ok((
                n.to_string(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                t.dims().to_vec(),
            ))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(&str, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, b, s)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).expect("sizes agree");
            (n.as_str(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, Some(meta), path).map_err(|e| Error::File {
        path: path.to_path_buf(),
        msg: format!("cannot write: {e}"),
    })
}

/// Writes a self-describing weights file of `arch` with deterministic made-up weights
/// ([`crate::synthetic`]), torchvision's preprocessing and numbered labels: for measuring whole
/// programs (the server) where no real checkpoint is at hand; speed does not depend on the
/// values. `Model::load` reads it as any converted file.
pub fn write_synthetic(arch: &str, path: &Path) -> crate::Result<()> {
    let name = ArchName::parse(arch)?;
    if name.is_detector() {
        return Err(crate::Error::InvalidOption {
            arch: arch.into(),
            msg: "no synthetic detector files (anchors and decoding settings come from a real one): convert one with scripts/convert_weights.py".into(),
        });
    }
    let opts = ModelOptions::default();
    let size = if name == ArchName::InceptionV3 { 299 } else { 224 };
    let tensors = crate::synthetic::params("synthetic", &parameter_list(name, &opts)?, &Device::Cpu)?;
    let mut list: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    list.sort_by_key(|(n, _)| *n);
    let preprocessing = crate::preprocess::Preprocessing::torchvision(if size == 299 { 342 } else { 256 }, size);
    let labels: Vec<String> = (0..opts.num_classes).map(|i| i.to_string()).collect();
    let meta = [
        ("format", crate::pretrained::FORMAT.to_string()),
        ("architecture", arch.to_string()),
        ("variant", format!("{arch} (synthetic weights)")),
        ("width_multiplier", "1.0".into()),
        ("input_size", size.to_string()),
        ("num_classes", opts.num_classes.to_string()),
        ("padding", "torch".into()),
        ("bn_folded", "false".into()),
        (
            "preprocessing",
            serde_json::to_string(&preprocessing).expect("plain data"),
        ),
        ("labels", serde_json::to_string(&labels).expect("plain data")),
        ("source", r#"{"framework": "synthetic"}"#.into()),
    ];
    save_with_metadata(path, &list, meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}
