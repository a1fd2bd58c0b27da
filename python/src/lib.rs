//! Python bindings of ferrovision (PyO3): `ferrovision.Model` loads a weights file and
//! classifies, embeds, detects or estimates poses in images given as paths, encoded bytes or
//! uint8 numpy arrays. Results are the dicts `ferrovision <task> --format json` prints.
//!
//! Every call releases the GIL while it decodes and computes; the work runs on rayon's global
//! pool (process-wide: its size is set once, by the first `Model`), in chunks of `batch_size`
//! images so that memory stays bounded. Numpy arrays are copied one chunk at a time, with the
//! GIL held for the copy only.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use ferrovision::classify::{Classification, ClassifyOptions};
use ferrovision::detect::{DetectOptions, Detections};
use ferrovision::features::Pool;
use ferrovision::pose_task::{PoseOptions, Poses};
use ferrovision::preprocess::{decode_image, load_image, Crops, DEFAULT_MAX_PIXELS};
use ferrovision::rules::Rules;
use ferrovision::{Error, Task};
use image::{DynamicImage, RgbImage};
use numpy::{PyArray2, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyByteArray, PyBytes, PyDict, PyList, PyString};
use rayon::prelude::*;

/// Images per forward pass unless the `Model` says otherwise.
const DEFAULT_BATCH_SIZE: usize = 16;

/// The size of rayon's global pool once this module has built it.
static POOL_THREADS: OnceLock<usize> = OnceLock::new();

/// Builds rayon's global pool with `threads` workers, once per process, as the CLI's `--threads`
/// does (`RAYON_NUM_THREADS` set too, which candle reads), every worker the pool's own as for
/// `ferrovision serve` (the callers are Python threads outside it); a later, different `threads`
/// is refused, since the pool cannot be resized. Unlike the CLI and the server, the workers are
/// not kept spinning ([`ferrovision::kernels::spin_workers`]): idle, they cost a Python process
/// 7 % of a core, and here they made MobileNet v2 slower (184 against 205 images/s on 14-image
/// calls, 2 cores).
fn init_threads(threads: Option<usize>) -> PyResult<usize> {
    if threads == Some(0) {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    let n = *POOL_THREADS.get_or_init(|| {
        if let Some(n) = threads {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        }
        // Err only when the pool exists already: then its size is read below
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(threads.unwrap_or(0))
            .build_global();
        rayon::current_num_threads()
    });
    match threads {
        Some(t) if t != n => Err(PyValueError::new_err(format!(
            "threads={t}: this process's thread pool already has {n} threads; it is process-wide and set \
             once, by the first Model (pass threads=None or threads={n})"
        ))),
        _ => Ok(n),
    }
}

/// The Python exception for an engine error: `FileNotFoundError` for a file that is not
/// there, `ValueError` for a file or option that is wrong, `RuntimeError` for the rest.
fn py_err(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::File { path, .. } if !path.exists() => PyFileNotFoundError::new_err(msg),
        Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound => PyFileNotFoundError::new_err(msg),
        Error::File { .. } | Error::UnknownArch { .. } | Error::InvalidOption { .. } => PyValueError::new_err(msg),
        Error::Message(_) | Error::Candle(_) | Error::Io(_) => PyRuntimeError::new_err(msg),
    }
}

/// `cpu`, `cuda`, `cuda:N`, `metal`, `metal:N`, as the CLI's `--device`.
fn parse_device(s: &str) -> PyResult<Device> {
    let bad = || PyValueError::new_err(format!("device `{s}`: expected cpu, cuda, cuda:N, metal or metal:N"));
    let (kind, n) = match s.split_once(':') {
        Some((k, n)) => (k, n.parse::<usize>().map_err(|_| bad())?),
        None => (s, 0),
    };
    let (started, feature, built) = match kind {
        "cpu" if !s.contains(':') => return Ok(Device::Cpu),
        "cuda" => (
            ferrovision::kernels::gpu::cuda_device(n),
            "cuda",
            cfg!(feature = "cuda"),
        ),
        "metal" => (Device::new_metal(n), "metal", cfg!(feature = "metal")),
        _ => return Err(bad()),
    };
    started.map_err(|e| {
        if built {
            PyRuntimeError::new_err(format!("device `{s}` could not be started: {e}"))
        } else {
            PyValueError::new_err(format!(
                "device `{s}` needs a build with the `{feature}` feature (maturin build --features {feature})"
            ))
        }
    })
}

/// One input image as the caller gave it; arrays stay Python objects until their chunk is copied.
enum Item {
    Path(PathBuf),
    /// `bytes` or `bytearray` holding an encoded image.
    Bytes(Py<PyAny>),
    /// An H×W×3 uint8 array.
    Array(Py<PyAny>),
    /// Row `.0` of the N×H×W×3 uint8 batch array.
    Row(usize),
}

/// The images of one call: the items and, for an N×H×W×3 array, that array.
struct Inputs {
    items: Vec<Item>,
    batch: Option<Py<PyAny>>,
}

/// One image copied out of Python, ready to decode without the GIL.
enum Owned {
    Path(PathBuf),
    Bytes(Vec<u8>),
    Pixels(RgbImage),
}

/// Checks that `arr` is a uint8 H×W×3 (`ndim` 3) or N×H×W×3 (`ndim` 4) array; the ValueError names
/// `what` and the problem.
fn check_array(arr: &Bound<'_, PyUntypedArray>, what: &str, ndim: usize) -> PyResult<()> {
    let py = arr.py();
    let shape = arr.shape();
    let layout = if ndim == 4 { "N×H×W×3" } else { "H×W×3" };
    if !arr.dtype().is_equiv_to(&numpy::dtype::<u8>(py)) {
        return Err(PyValueError::new_err(format!(
            "{what}: the array's dtype is {}, not uint8 (RGB pixels 0-255, {layout})",
            arr.dtype()
        )));
    }
    if shape.len() != ndim || shape[ndim - 1] != 3 || shape[ndim - 3..ndim - 1].contains(&0) {
        return Err(PyValueError::new_err(format!(
            "{what}: the array's shape is {shape:?}, not {layout} (RGB, at least 1×1 pixels){}",
            if ndim == 4 && shape.len() == 3 {
                "; put a single H×W×3 image in a list"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

impl Inputs {
    /// Sorts `images` into items, checking every array's dtype and shape before any work.
    fn parse(images: &Bound<'_, PyAny>) -> PyResult<Self> {
        if let Ok(arr) = images.cast::<PyUntypedArray>() {
            check_array(arr, "images", 4)?;
            let n = arr.shape()[0];
            return Ok(Self {
                items: (0..n).map(Item::Row).collect(),
                batch: Some(images.clone().unbind()),
            });
        }
        if images.is_instance_of::<PyString>() || images.is_instance_of::<PyBytes>() {
            return Err(PyTypeError::new_err(
                "images must be a list of images (paths, bytes or H×W×3 uint8 arrays) or an N×H×W×3 uint8 \
                 array; put a single image in a list",
            ));
        }
        let mut items = Vec::new();
        for (i, item) in images
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err(format!(
                    "images must be a list or an N×H×W×3 uint8 array, not {}",
                    type_name(images)
                ))
            })?
            .enumerate()
        {
            let item = item?;
            items.push(
                if item.is_instance_of::<PyBytes>() || item.is_instance_of::<PyByteArray>() {
                    Item::Bytes(item.unbind())
                } else if let Ok(arr) = item.cast::<PyUntypedArray>() {
                    check_array(arr, &format!("images[{i}]"), 3)?;
                    Item::Array(item.unbind())
                } else if let Ok(p) = item.extract::<PathBuf>() {
                    Item::Path(p)
                } else {
                    return Err(PyTypeError::new_err(format!(
                        "images[{i}]: expected a path (str or os.PathLike), bytes or an H×W×3 uint8 array, not {}",
                        type_name(&item)
                    )));
                },
            );
        }
        Ok(Self { items, batch: None })
    }

    /// The name results use for item `i`: the path as given, `<bytes i>` or `<array i>`.
    fn name(&self, i: usize) -> String {
        match &self.items[i] {
            Item::Path(p) => p.display().to_string(),
            Item::Bytes(_) => format!("<bytes {i}>"),
            Item::Array(_) | Item::Row(_) => format!("<array {i}>"),
        }
    }

    /// Copies items `range` out of Python (with the GIL) for decoding without it.
    fn take(&self, range: std::ops::Range<usize>) -> PyResult<Vec<(String, Owned)>> {
        Python::attach(|py| {
            range
                .map(|i| {
                    let owned = match &self.items[i] {
                        Item::Path(p) => Owned::Path(p.clone()),
                        Item::Bytes(b) => {
                            let b = b.bind(py);
                            Owned::Bytes(match b.cast::<PyBytes>() {
                                Ok(b) => b.as_bytes().to_vec(),
                                Err(_) => b.cast::<PyByteArray>()?.to_vec(),
                            })
                        }
                        Item::Array(a) => Owned::Pixels(pixels(a.bind(py), None, i)?),
                        Item::Row(r) => {
                            let batch = self
                                .batch
                                .as_ref()
                                .ok_or_else(|| PyRuntimeError::new_err("internal: row without a batch array"))?;
                            Owned::Pixels(pixels(batch.bind(py), Some(*r), i)?)
                        }
                    };
                    Ok((self.name(i), owned))
                })
                .collect()
        })
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// The RGB image of an H×W×3 uint8 array, or of row `row` of an N×H×W×3 one (any strides).
fn pixels(obj: &Bound<'_, PyAny>, row: Option<usize>, i: usize) -> PyResult<RgbImage> {
    let arr = obj.cast::<PyArrayDyn<u8>>()?;
    let view = arr
        .try_readonly()
        .map_err(|e| PyValueError::new_err(format!("images[{i}]: cannot read the array: {e}")))?;
    let view = view.as_array();
    let view = match row {
        Some(r) => view.index_axis_move(numpy::ndarray::Axis(0), r),
        None => view,
    };
    let (h, w) = (view.shape()[0], view.shape()[1]);
    let data: Vec<u8> = match view.as_slice() {
        Some(s) => s.to_vec(),
        None => view.iter().copied().collect(),
    };
    let too_big = || PyValueError::new_err(format!("images[{i}]: {h}×{w} pixels is too large"));
    RgbImage::from_raw(
        u32::try_from(w).map_err(|_| too_big())?,
        u32::try_from(h).map_err(|_| too_big())?,
        data,
    )
    .ok_or_else(too_big)
}

/// Decodes one copied image (EXIF orientation applied for files and bytes); errors name it.
fn decode(name: &str, owned: Owned) -> ferrovision::Result<DynamicImage> {
    match owned {
        Owned::Path(p) => load_image(&p),
        Owned::Bytes(b) => decode_image(&b, DEFAULT_MAX_PIXELS).map_err(|e| Error::Message(format!("{name}: {e}"))),
        Owned::Pixels(img) => Ok(DynamicImage::ImageRgb8(img)),
    }
}

/// Runs `f` on a thread of rayon's pool (as the server does: its parallel loops then split with
/// `join` rather than waking the workers per layer); a panic becomes a RuntimeError.
fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> PyResult<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rayon::scope(|_| f())))
        .map_err(|_| PyRuntimeError::new_err("ferrovision panicked while computing (a bug: please report it)"))
}

/// A JSON value as Python objects (dict, list, str, int, float, bool, None).
fn to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    use serde_json::Value;
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => u.into_pyobject(py)?.into_any(),
            (None, Some(i)) => i.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(a) => PyList::new(py, a.iter().map(|x| to_py(py, x)).collect::<PyResult<Vec<_>>>()?)?.into_any(),
        Value::Object(o) => {
            let d = PyDict::new(py);
            for (k, x) in o {
                d.set_item(k, to_py(py, x)?)?;
            }
            d.into_any()
        }
    })
}

fn to_py_list<'py>(py: Python<'py>, rows: &[serde_json::Value]) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, rows.iter().map(|r| to_py(py, r)).collect::<PyResult<Vec<_>>>()?)
}

/// The built-in ImageNet-1k rules, parsed once.
fn default_rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(Rules::default_imagenet1k)
}

/// The CLI's error text for one image of `detect` / `pose` (`{e:#}` of its error chain).
fn chain(e: Error) -> String {
    format!("{:#}", anyhow::Error::new(e))
}

/// A loaded model: a classifier, detector or pose estimator, from a weights file written by
/// `scripts/convert_weights.py`.
///
/// `Model(path, device="cpu", threads=None, batch_size=16)`. `threads` sizes rayon's global
/// pool, which all models of the process share: it is set by the first `Model` (None: the
/// `RAYON_NUM_THREADS` variable, else one per core), and a later `Model` asking for another
/// count raises ValueError. `batch_size` images go through the network per forward pass.
///
/// Images (the `images` argument of every method) are a list whose items are each a path (str
/// or os.PathLike), an encoded image (`bytes` / `bytearray`: JPEG, PNG, BMP, GIF, WebP, TIFF;
/// EXIF orientation applied) or an H×W×3 uint8 RGB numpy array; or one N×H×W×3 uint8 array.
/// In results, an image's "path" is the path as given, `<bytes i>` or `<array i>` (i: its
/// index in `images`).
///
/// Methods may be called from several Python threads at once: each releases the GIL while it
/// decodes and computes.
#[pyclass(frozen, module = "ferrovision", name = "Model")]
struct PyModel {
    model: ferrovision::Model,
    batch_size: usize,
    threads: usize,
}

impl PyModel {
    /// Calls `f` on each chunk of `batch_size` images (names and copies), the GIL released
    /// (but for the copies), on rayon's pool.
    fn chunked<T: Send>(
        &self,
        py: Python<'_>,
        inputs: &Inputs,
        f: impl Fn(Vec<(String, Owned)>) -> PyResult<Vec<T>> + Sync,
    ) -> PyResult<Vec<T>> {
        let n = inputs.items.len();
        py.detach(|| {
            let mut out = Vec::with_capacity(n);
            for start in (0..n).step_by(self.batch_size) {
                let chunk = inputs.take(start..(start + self.batch_size).min(n))?;
                out.extend(on_pool(|| f(chunk))??);
            }
            Ok(out)
        })
    }

    /// Decodes a chunk in parallel.
    fn decode_all(chunk: Vec<(String, Owned)>) -> (Vec<String>, Vec<ferrovision::Result<DynamicImage>>) {
        chunk
            .into_par_iter()
            .map(|(name, owned)| {
                let img = decode(&name, owned);
                (name, img)
            })
            .unzip()
    }

    /// One network call over the images that decoded (`infer`), as the CLI's `detect` and
    /// `pose` do it: when the batch fails, each image is retried alone, so that one bad input
    /// cannot take the others' results with it. Each image's JSON line, from `to_json`.
    fn per_image<T>(
        chunk: Vec<(String, Owned)>,
        infer: impl Fn(&[DynamicImage]) -> ferrovision::Result<Vec<T>>,
        to_json: impl Fn(&str, &Result<T, String>) -> serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let (names, decoded) = Self::decode_all(chunk);
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for d in decoded {
            match d {
                Ok(img) => {
                    ok.push(img);
                    failed.push(None);
                }
                Err(e) => failed.push(Some(chain(e))),
            }
        }
        let found: Vec<Result<T, String>> = match infer(&ok) {
            Ok(d) => d.into_iter().map(Ok).collect(),
            Err(_) => ok
                .iter()
                .map(|img| {
                    infer(std::slice::from_ref(img))
                        .map_err(chain)
                        .and_then(|mut d| d.pop().ok_or_else(|| "no result".to_string()))
                })
                .collect(),
        };
        let mut found = found.into_iter();
        names
            .iter()
            .zip(failed)
            .map(|(name, error)| {
                let r = match error {
                    Some(e) => Err(e),
                    None => found.next().unwrap_or_else(|| Err("no result".into())),
                };
                to_json(name, &r)
            })
            .collect()
    }

    /// The ValueError of a classifier method called on a detector or pose estimator.
    fn require_classifier(&self, method: &str) -> PyResult<()> {
        let m = &self.model;
        let (what, instead) = match &m.meta.task {
            Task::Classification => return Ok(()),
            Task::Detection(_) => ("a detector", "Model.detect"),
            Task::Pose(_) => ("a pose estimator", "Model.pose"),
        };
        Err(PyValueError::new_err(format!(
            "{} holds {what} ({}): Model.{method} needs a classifier; use {instead}",
            m.path().display(),
            m.meta.architecture
        )))
    }
}

#[pymethods]
impl PyModel {
    #[new]
    #[pyo3(signature = (path, device = "cpu", threads = None, batch_size = DEFAULT_BATCH_SIZE))]
    fn new(py: Python<'_>, path: PathBuf, device: &str, threads: Option<usize>, batch_size: usize) -> PyResult<Self> {
        if batch_size == 0 {
            return Err(PyValueError::new_err("batch_size must be at least 1"));
        }
        let threads = init_threads(threads)?;
        let device = parse_device(device)?;
        let model = py.detach(|| {
            let m = ferrovision::Model::load(&path, &device);
            ferrovision::kernels::trim_freed_memory();
            m
        });
        Ok(Self {
            model: model.map_err(py_err)?,
            batch_size,
            threads,
        })
    }

    /// Top classes of each image: one dict per image, as `ferrovision classify --format json`
    /// prints it: {"path", "predictions": [{"class_id", "label", "score"}], "labels", "error"}.
    ///
    /// `threshold` reports every class whose probability reaches it instead of the top
    /// `top_k`. `rules`: None, "default" (the built-in ImageNet-1k rules) or the path of a rules
    /// YAML; its labels fill "labels". An image that cannot be read or decoded gets its dict
    /// with "error" set ("<path>: <problem>") and the others go on.
    #[pyo3(signature = (images, top_k = 5, threshold = None, rules = None))]
    fn classify<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        top_k: usize,
        threshold: Option<f32>,
        rules: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.require_classifier("classify")?;
        let model = &self.model;
        let loaded;
        let rules: Option<&Rules> = match rules {
            None => None,
            Some(r) => match r.extract::<String>() {
                Ok(s) if s == "default" => Some(default_rules()),
                _ => {
                    let path: PathBuf = r.extract().map_err(|_| {
                        PyTypeError::new_err("rules must be None, \"default\" or the path of a rules YAML")
                    })?;
                    loaded = py.detach(|| Rules::load(&path)).map_err(py_err)?;
                    Some(&loaded)
                }
            },
        };
        if let Some(r) = rules {
            r.check_labels(model.class_names())
                .map_err(|e| PyValueError::new_err(format!("rules: {e}")))?;
        }
        let inputs = Inputs::parse(images)?;
        let opts = ClassifyOptions {
            top_k,
            threshold,
            crops: Crops::Center,
            raw: false,
        };
        let rows = self.chunked(py, &inputs, |chunk| {
            let (names, decoded) = Self::decode_all(chunk);
            let views: Vec<ferrovision::Result<Tensor>> = decoded
                .into_par_iter()
                .map(|img| Ok(model.views(std::slice::from_ref(&img?), opts.crops)?.remove(0)))
                .collect();
            let paths: Vec<PathBuf> = names.into_iter().map(PathBuf::from).collect();
            Ok(model
                .finish(&paths, views, &opts, rules)
                .into_iter()
                .map(|(p, r)| Classification::to_json(&p.display().to_string(), &r.map_err(|e| e.to_string())))
                .collect())
        })?;
        to_py_list(py, &rows)
    }

    /// Pooled features before the classifier: a float32 numpy array N×D, one row per image
    /// (`ferrovision embed`'s "embedding"). `pool`: "avg" or "max"; `normalize`: L2-normalise
    /// each row. An image that cannot be read raises (FileNotFoundError for a missing file,
    /// ValueError for one that does not decode), naming it.
    #[pyo3(signature = (images, pool = "avg", normalize = false))]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        pool: &str,
        normalize: bool,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let pool =
            Pool::parse(pool).ok_or_else(|| PyValueError::new_err(format!("pool `{pool}`: expected avg or max")))?;
        let model = &self.model;
        let inputs = Inputs::parse(images)?;
        let rows: Vec<Vec<f32>> = self.chunked(py, &inputs, |chunk| {
            let missing: Vec<Option<PathBuf>> = chunk
                .iter()
                .map(|(_, o)| match o {
                    Owned::Path(p) if !p.exists() => Some(p.clone()),
                    _ => None,
                })
                .collect();
            let (_, decoded) = Self::decode_all(chunk);
            let views = decoded
                .into_par_iter()
                .map(|img| Ok(model.views(std::slice::from_ref(&img?), Crops::Center)?.remove(0)))
                .collect::<Vec<ferrovision::Result<Tensor>>>();
            let mut good = Vec::with_capacity(views.len());
            for (v, missing) in views.into_iter().zip(missing) {
                match v {
                    Ok(v) => good.push(v),
                    Err(e) if missing.is_some() => return Err(PyFileNotFoundError::new_err(e.to_string())),
                    Err(e @ Error::File { .. }) | Err(e @ Error::Message(_)) => {
                        return Err(PyValueError::new_err(e.to_string()))
                    }
                    Err(e) => return Err(py_err(e)),
                }
            }
            if good.is_empty() {
                return Ok(Vec::new());
            }
            let e = model.embed_views(&good, pool, normalize).map_err(py_err)?;
            e.to_vec2::<f32>().map_err(|e| py_err(e.into()))
        })?;
        let d = rows.first().map_or_else(|| model.net.num_features(), |r| r.len());
        let flat: Vec<f32> = rows.into_iter().flatten().collect();
        let n = flat.len() / d.max(1);
        let arr = numpy::ndarray::Array2::from_shape_vec((n, d), flat)
            .map_err(|e| PyRuntimeError::new_err(format!("embeddings: {e}")))?;
        Ok(PyArray2::from_owned_array(py, arr))
    }

    /// Objects in each image, for detector weights: one dict per image, as `ferrovision
    /// detect --format json` prints it: {"path", "width", "height", "detections": [{"class_id",
    /// "label", "score", "box": {"x0", "y0", "x1", "y1"}}], "error"} (boxes in the pixels of the
    /// image as displayed). `iou=None` keeps the weights file's NMS overlap. A bad image gets
    /// its dict with "error" set; the others go on.
    #[pyo3(signature = (images, score = 0.5, iou = None, max_detections = 100))]
    fn detect<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        score: f32,
        iou: Option<f32>,
        max_detections: usize,
    ) -> PyResult<Bound<'py, PyList>> {
        let model = &self.model;
        model.detector().map_err(|e| PyValueError::new_err(e.to_string()))?;
        let inputs = Inputs::parse(images)?;
        let opts = DetectOptions {
            score_threshold: Some(score),
            iou_threshold: iou,
            max_detections: Some(max_detections),
        };
        let rows = self.chunked(py, &inputs, |chunk| {
            Ok(Self::per_image(
                chunk,
                |ok| model.detect(ok, &opts),
                Detections::to_json,
            ))
        })?;
        to_py_list(py, &rows)
    }

    /// People's keypoints in each image, for pose weights (PoseNet, MoveNet): one dict per
    /// image, as `ferrovision pose --format json` prints it: {"path", "width", "height",
    /// "people", "poses": [{"score", "keypoints": [{"part", "x", "y", "score"}]}], "error"}.
    /// Poses scoring below `min_score` are left out. A bad image gets its dict with "error" set.
    #[pyo3(signature = (images, max_poses = 10, min_score = 0.25))]
    fn pose<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        max_poses: usize,
        min_score: f32,
    ) -> PyResult<Bound<'py, PyList>> {
        let model = &self.model;
        model.pose_decoder().map_err(|e| PyValueError::new_err(e.to_string()))?;
        let inputs = Inputs::parse(images)?;
        let opts = PoseOptions {
            max_poses: Some(max_poses),
            score_threshold: None,
            nms_radius: None,
            min_score,
        };
        let rows = self.chunked(py, &inputs, |chunk| {
            Ok(Self::per_image(chunk, |ok| model.pose(ok, &opts), Poses::to_json))
        })?;
        to_py_list(py, &rows)
    }

    /// The architecture, as the weights file names it (e.g. "mobilenet_v2").
    #[getter]
    fn architecture(&self) -> String {
        self.model.meta.architecture.clone()
    }

    /// One name per output class (class id = index).
    #[getter]
    fn labels(&self) -> Vec<String> {
        self.model.class_names().to_vec()
    }

    /// The network's input (height, width) in pixels.
    #[getter]
    fn input_size(&self) -> (usize, usize) {
        let [h, w] = self.model.meta.preprocessing.crop_size;
        (h, w)
    }

    /// "classification", "detection" or "pose".
    #[getter]
    fn task(&self) -> &'static str {
        match self.model.meta.task {
            Task::Classification => "classification",
            Task::Detection(_) => "detection",
            Task::Pose(_) => "pose",
        }
    }

    /// The weights file.
    #[getter]
    fn path(&self) -> PathBuf {
        self.model.path().to_path_buf()
    }

    /// Threads of the (process-wide) pool the model computes on.
    #[getter]
    fn threads(&self) -> usize {
        self.threads
    }

    /// Images per forward pass.
    #[getter]
    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn __repr__(&self) -> String {
        format!(
            "Model('{}', architecture='{}', task='{}')",
            self.model.path().display(),
            self.model.meta.architecture,
            self.task()
        )
    }
}

/// ferrovision: pure-Rust CNN inference (classification, embeddings, detection, pose).
#[pymodule(name = "ferrovision")]
fn ferrovision_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyModel>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
