//! The Open Inference Protocol (KServe v2, what Triton speaks) for classification models: the JSON
//! shapes of `kserve/docs/predict-api/v2/required_api.md`, Triton's binary tensor data extension
//! (`extension_binary_data.md`: a JSON header of `Inference-Header-Content-Length` bytes, then the
//! raw tensors in order; BYTES elements each behind a 4-byte little-endian length) and its
//! classification extension (`extension_classification.md`: `"classification": k` on an output
//! gives its top k as `"score:index:label"` BYTES strings).
//!
//! A model has two inputs, one per request: `image`, BYTES, the encoded image files (in JSON each
//! element is a base64 string, as KServe's examples send images); and `input`, FP32 N×3×H×W already
//! normalised as the weights' metadata says. A classifier's outputs are `probabilities` (softmax)
//! and `logits`, FP32 N×classes; a detector's those of TF Object Detection API exports (as TF
//! Serving and Triton serve them): `detection_boxes` N×K×4 (normalised ymin, xmin, ymax, xmax),
//! `detection_classes` and `detection_scores` N×K, `num_detections` N, K the most detections
//! (rows past an image's count are zeros). Request parameters `score_threshold`,
//! `iou_threshold` and `max_detections` (K) override the weights file's.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{alphabet, Engine};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::batcher::ImageScores;

/// Standard base64, padded or not (browsers and Go pad, some clients do not).
pub const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub const IMAGE_INPUT: &str = "image";
pub const PIXELS_INPUT: &str = "input";
pub const OUTPUTS: [&str; 2] = ["probabilities", "logits"];
pub const DETECTION_OUTPUTS: [&str; 4] = [
    "detection_boxes",
    "detection_classes",
    "detection_scores",
    "num_detections",
];
/// The header naming the JSON part's length when binary tensors follow it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

#[derive(Debug, Deserialize)]
pub struct InferRequest {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    pub inputs: Vec<RequestInput>,
    #[serde(default)]
    pub outputs: Option<Vec<RequestOutput>>,
}

#[derive(Debug, Deserialize)]
pub struct RequestInput {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub data: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct RequestOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

/// The decoded input of a request.
#[derive(Debug)]
pub enum Tensor {
    /// `image`: one encoded file per element.
    Images(Vec<Vec<u8>>),
    /// `input`: N×3×H×W values, row-major.
    Pixels { shape: [usize; 4], values: Vec<f32> },
}

/// Metadata of a tensor in the model's description.
#[derive(Debug, Serialize)]
pub struct TensorMeta {
    pub name: &'static str,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// What a served model answers over v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Classifier,
    Detector,
    /// Pose estimators answer at `POST /pose` only: no v2 outputs.
    Pose,
}

/// `GET /v2/models/{name}`.
pub fn model_metadata(name: &str, input_hw: [usize; 2], classes: usize, kind: ModelKind) -> Value {
    let [h, w] = input_hw.map(|x| x as i64);
    let outputs: Vec<TensorMeta> = if kind == ModelKind::Pose {
        Vec::new()
    } else if kind == ModelKind::Detector {
        let meta = |name, shape| TensorMeta {
            name,
            datatype: "FP32",
            shape,
        };
        vec![
            meta("detection_boxes", vec![-1, -1, 4]),
            meta("detection_classes", vec![-1, -1]),
            meta("detection_scores", vec![-1, -1]),
            meta("num_detections", vec![-1]),
        ]
    } else {
        OUTPUTS
            .iter()
            .map(|&name| TensorMeta {
                name,
                datatype: "FP32",
                shape: vec![-1, classes as i64],
            })
            .collect()
    };
    json!({
        "name": name,
        "versions": ["1"],
        "platform": "ferrovision",
        "inputs": [
            TensorMeta { name: IMAGE_INPUT, datatype: "BYTES", shape: vec![-1] },
            TensorMeta { name: PIXELS_INPUT, datatype: "FP32", shape: vec![-1, 3, h, w] },
        ],
        "outputs": outputs,
    })
}

/// Splits a body into its JSON header and binary part (`header_len` from
/// `Inference-Header-Content-Length`) and decodes the request's single input.
pub fn parse(body: &[u8], header_len: Option<usize>) -> Result<(InferRequest, Tensor), String> {
    let (head, binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(format!(
                "Inference-Header-Content-Length is {n}, but the body has only {} bytes",
                body.len()
            ))
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    let req: InferRequest = serde_json::from_slice(head).map_err(|e| format!("invalid inference request JSON: {e}"))?;
    let [input] = req.inputs.as_slice() else {
        return Err(format!(
            "expected exactly one input (`{IMAGE_INPUT}` or `{PIXELS_INPUT}`), got {}",
            req.inputs.len()
        ));
    };
    let raw = match input.parameters.get("binary_data_size") {
        Some(size) => {
            let n = size
                .as_u64()
                .ok_or_else(|| format!("input `{}`: binary_data_size must be a whole number", input.name))?
                as usize;
            if n > binary.len() {
                return Err(format!(
                    "input `{}`: binary_data_size {n} is more than the {} bytes after the JSON header",
                    input.name,
                    binary.len()
                ));
            }
            Some(&binary[..n])
        }
        None => None,
    };
    let count = element_count(&input.shape)
        .ok_or_else(|| format!("input `{}`: invalid shape {:?}", input.name, input.shape))?;
    let tensor = match (input.name.as_str(), input.datatype.as_str()) {
        (IMAGE_INPUT, "BYTES") => {
            let images = match (raw, &input.data) {
                (Some(raw), _) => split_bytes(raw)?,
                (None, Some(Value::Array(_))) => {
                    let mut strings = Vec::new();
                    flatten(input.data.as_ref().unwrap(), &mut strings);
                    strings
                        .iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let s = v
                                .as_str()
                                .ok_or_else(|| format!("input `image`: element {i} is not a string"))?;
                            base64_image(s).map_err(|e| format!("input `image`: element {i}: {e}"))
                        })
                        .collect::<Result<_, _>>()?
                }
                _ => return Err("input `image`: no data (give `data` or binary_data_size)".into()),
            };
            if images.len() != count {
                return Err(format!(
                    "input `image`: shape {:?} has {count} elements but {} were sent",
                    input.shape,
                    images.len()
                ));
            }
            Tensor::Images(images)
        }
        (PIXELS_INPUT, "FP32") => {
            let shape: [usize; 4] = match input.shape.as_slice() {
                &[n, c, h, w] if n >= 0 && c >= 0 && h >= 0 && w >= 0 => [n, c, h, w].map(|x| x as usize),
                s => return Err(format!("input `input`: expected shape [N, 3, H, W], got {s:?}")),
            };
            let values: Vec<f32> = match (raw, &input.data) {
                (Some(raw), _) => {
                    if raw.len() != count * 4 {
                        return Err(format!(
                            "input `input`: {} bytes of binary data for {count} FP32 values",
                            raw.len()
                        ));
                    }
                    raw.chunks_exact(4)
                        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                        .collect()
                }
                (None, Some(data)) => {
                    let mut flat = Vec::with_capacity(count);
                    flatten(data, &mut flat);
                    flat.iter()
                        .map(|v| v.as_f64().map(|x| x as f32))
                        .collect::<Option<_>>()
                        .ok_or("input `input`: data holds a value that is not a number")?
                }
                (None, None) => return Err("input `input`: no data (give `data` or binary_data_size)".into()),
            };
            if values.len() != count {
                return Err(format!(
                    "input `input`: shape {:?} needs {count} values, got {}",
                    input.shape,
                    values.len()
                ));
            }
            Tensor::Pixels { shape, values }
        }
        (name @ (IMAGE_INPUT | PIXELS_INPUT), dt) => {
            let want = if name == IMAGE_INPUT { "BYTES" } else { "FP32" };
            return Err(format!("input `{name}` has datatype {want}, not {dt}"));
        }
        (name, _) => {
            return Err(format!(
                "unknown input `{name}`; this model takes `{IMAGE_INPUT}` (BYTES) or `{PIXELS_INPUT}` (FP32)"
            ))
        }
    };
    Ok((req, tensor))
}

fn element_count(shape: &[i64]) -> Option<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Array(a) => a.iter().for_each(|x| flatten(x, out)),
        x => out.push(x),
    }
}

/// BYTES elements of the binary extension: each a 4-byte little-endian length, then the bytes.
pub fn split_bytes(mut raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err("BYTES tensor: truncated 4-byte length".into());
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(format!(
                "BYTES tensor: element {} claims {len} bytes, {} remain",
                out.len(),
                rest.len()
            ));
        }
        out.push(rest[..len].to_vec());
        raw = &rest[len..];
    }
    Ok(out)
}

/// The bytes of a base64 string, or of a `data:...;base64,` URL.
pub fn base64_image(s: &str) -> Result<Vec<u8>, String> {
    let payload = match s.strip_prefix("data:") {
        Some(url) => url
            .split_once(";base64,")
            .map(|(_, b64)| b64)
            .ok_or("a data URL must be base64 (`data:image/jpeg;base64,...`)")?,
        None => s,
    };
    let clean: String = payload.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64.decode(clean).map_err(|e| format!("not base64: {e}"))
}

/// Which outputs a request asked for: name, binary or JSON, classification count.
pub struct Wanted {
    pub name: &'static str,
    pub binary: bool,
    pub classification: Option<usize>,
}

/// The outputs to return, from the request's `outputs` (all of them when absent) and its
/// `binary_data_output` default.
pub fn wanted(req: &InferRequest, all: &[&'static str]) -> Result<Vec<Wanted>, String> {
    let default_binary = req
        .parameters
        .get("binary_data_output")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let Some(outputs) = &req.outputs else {
        return Ok(all
            .iter()
            .map(|&name| Wanted {
                name,
                binary: default_binary,
                classification: None,
            })
            .collect());
    };
    outputs
        .iter()
        .map(|o| {
            let name = all
                .iter()
                .find(|&&n| n == o.name)
                .ok_or_else(|| format!("unknown output `{}`; this model has {}", o.name, all.join(", ")))?;
            let classification = match o.parameters.get("classification") {
                None => None,
                Some(k) => match k.as_u64() {
                    Some(k) if k > 0 => Some(k as usize),
                    Some(_) => None,
                    None => return Err(format!("output `{name}`: classification must be a whole number")),
                },
            };
            Ok(Wanted {
                name,
                binary: o
                    .parameters
                    .get("binary_data")
                    .and_then(Value::as_bool)
                    .unwrap_or(default_binary),
                classification,
            })
        })
        .collect()
}

/// One output tensor of a response, before it is placed in the JSON part or the binary one.
struct OutputTensor {
    datatype: &'static str,
    shape: Vec<usize>,
    /// The values as JSON `data`.
    data: Value,
    /// The same values as the binary extension lays them out.
    bytes: Vec<u8>,
}

impl OutputTensor {
    fn fp32(shape: Vec<usize>, values: Vec<f32>) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self {
            datatype: "FP32",
            shape,
            data: json!(values),
            bytes,
        }
    }
}

/// The response's JSON part and binary part (empty when every output is JSON), from each wanted
/// output's tensor: binary ones get `binary_data_size` and their bytes appended in order.
fn assemble(
    model: &str,
    id: Option<&str>,
    wanted: &[Wanted],
    tensor: impl Fn(&Wanted) -> OutputTensor,
) -> (Vec<u8>, Vec<u8>) {
    let mut binary = Vec::new();
    let outputs: Vec<Value> = wanted
        .iter()
        .map(|w| {
            let t = tensor(w);
            let mut out = json!({"name": w.name, "datatype": t.datatype, "shape": t.shape});
            if w.binary {
                out["parameters"] = json!({"binary_data_size": t.bytes.len()});
                binary.extend(t.bytes);
            } else {
                out["data"] = t.data;
            }
            out
        })
        .collect();
    let mut head = json!({"model_name": model, "model_version": "1", "outputs": outputs});
    if let Some(id) = id {
        head["id"] = json!(id);
    }
    (serde_json::to_vec(&head).expect("JSON of plain values"), binary)
}

/// The response of a classifier: its JSON part, and the binary part.
pub fn response(
    model: &str,
    id: Option<&str>,
    wanted: &[Wanted],
    rows: &[ImageScores],
    labels: &[String],
) -> (Vec<u8>, Vec<u8>) {
    let classes = rows.first().map_or(labels.len(), |s| s.probs.len());
    assemble(model, id, wanted, |w| {
        let row = |s: &ImageScores| -> Vec<f32> {
            if w.name == "logits" {
                s.logits.clone()
            } else {
                s.probs.clone()
            }
        };
        match w.classification {
            Some(k) => {
                let k = k.min(classes);
                let strings: Vec<String> = rows.iter().flat_map(|s| classify_strings(&row(s), k, labels)).collect();
                let mut bytes = Vec::new();
                for s in &strings {
                    bytes.extend((s.len() as u32).to_le_bytes());
                    bytes.extend(s.as_bytes());
                }
                OutputTensor {
                    datatype: "BYTES",
                    shape: vec![rows.len(), k],
                    data: json!(strings),
                    bytes,
                }
            }
            None => OutputTensor::fp32(vec![rows.len(), classes], rows.iter().flat_map(row).collect()),
        }
    })
}

/// The response of a detector: its JSON part and binary part. `dets` holds each image's
/// detections, `k` the padded count per image.
pub fn detection_response(
    model: &str,
    id: Option<&str>,
    wanted: &[Wanted],
    dets: &[Vec<crate::detect::RawDetection>],
    k: usize,
) -> (Vec<u8>, Vec<u8>) {
    let n = dets.len();
    let padded = |f: &dyn Fn(&crate::detect::RawDetection) -> Vec<f32>, width: usize| -> Vec<f32> {
        dets.iter()
            .flat_map(|d| {
                let mut v: Vec<f32> = d.iter().take(k).flat_map(f).collect();
                v.resize(k * width, 0.0);
                v
            })
            .collect()
    };
    assemble(model, id, wanted, |w| match w.name {
        "detection_boxes" => OutputTensor::fp32(
            vec![n, k, 4],
            padded(&|d| vec![d.bbox.ymin, d.bbox.xmin, d.bbox.ymax, d.bbox.xmax], 4),
        ),
        "detection_classes" => OutputTensor::fp32(vec![n, k], padded(&|d| vec![d.class as f32], 1)),
        "detection_scores" => OutputTensor::fp32(vec![n, k], padded(&|d| vec![d.score], 1)),
        _ => OutputTensor::fp32(vec![n], dets.iter().map(|d| d.len().min(k) as f32).collect()),
    })
}

/// The detection settings a request's `parameters` override: `score_threshold`,
/// `iou_threshold` (numbers in [0, 1]), `max_detections` (a whole number ≥ 1).
pub fn detect_options(req: &InferRequest) -> Result<crate::detect::DetectOptions, String> {
    let unit = |k: &str| -> Result<Option<f32>, String> {
        match req.parameters.get(k) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (0.0..=1.0).contains(&x) => Ok(Some(x as f32)),
                _ => Err(format!("parameter `{k}` must be a number from 0 to 1, got {v}")),
            },
        }
    };
    let max = match req.parameters.get("max_detections") {
        None => None,
        Some(v) => match v.as_u64() {
            Some(m) if m >= 1 => Some(m as usize),
            _ => {
                return Err(format!(
                    "parameter `max_detections` must be a whole number ≥ 1, got {v}"
                ))
            }
        },
    };
    Ok(crate::detect::DetectOptions {
        score_threshold: unit("score_threshold")?,
        iou_threshold: unit("iou_threshold")?,
        max_detections: max,
    })
}

/// The classification extension's strings for one row: its `k` largest values, largest first,
/// as `"value:index:label"`.
pub fn classify_strings(row: &[f32], k: usize, labels: &[String]) -> Vec<String> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.into_iter()
        .take(k)
        .map(|i| match labels.get(i) {
            Some(l) => format!("{}:{i}:{l}", row[i]),
            None => format!("{}:{i}", row[i]),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_tensor(items: &[&[u8]]) -> Vec<u8> {
        items
            .iter()
            .flat_map(|b| (b.len() as u32).to_le_bytes().into_iter().chain(b.iter().copied()))
            .collect()
    }

    #[test]
    fn binary_bytes_input_is_split_by_its_length_prefixes() {
        let raw = bytes_tensor(&[b"abc", b"", b"\x00\xff"]);
        let head = format!(
            r#"{{"inputs":[{{"name":"image","shape":[3],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
            raw.len()
        );
        let body = [head.as_bytes(), &raw].concat();
        let (_, t) = parse(&body, Some(head.len())).unwrap();
        let Tensor::Images(items) = t else { panic!() };
        assert_eq!(items, vec![b"abc".to_vec(), vec![], vec![0, 255]]);
        // a length that runs past the end, and a shape that disagrees with the count
        assert!(split_bytes(&[5, 0, 0, 0, 1]).unwrap_err().contains("claims 5 bytes"));
        let bad = head.replace("[3]", "[2]");
        let body = [bad.as_bytes(), &raw].concat();
        assert!(parse(&body, Some(bad.len())).unwrap_err().contains("2 elements but 3"));
        assert!(parse(&body, Some(body.len() + 1))
            .unwrap_err()
            .contains("Inference-Header-Content-Length"));
    }

    #[test]
    fn json_inputs_nested_or_flat() {
        let (_, t) = parse(
            br#"{"inputs":[{"name":"input","shape":[1,3,1,2],"datatype":"FP32","data":[[1,2],[3,4],[5,6.5]]}]}"#,
            None,
        )
        .unwrap();
        let Tensor::Pixels { shape, values } = t else { panic!() };
        assert_eq!((shape, values), ([1, 3, 1, 2], vec![1., 2., 3., 4., 5., 6.5]));
        let (_, t) = parse(
            br#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["aGk="]}]}"#,
            None,
        )
        .unwrap();
        assert!(matches!(t, Tensor::Images(v) if v == vec![b"hi".to_vec()]));
        for (body, want) in [
            (r#"{"inputs":[]}"#, "exactly one input"),
            (
                r#"{"inputs":[{"name":"x","shape":[1],"datatype":"BYTES","data":["a"]}]}"#,
                "unknown input `x`",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#,
                "[N, 3, H, W]",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3,1,1],"datatype":"INT8","data":[1,2,3]}]}"#,
                "FP32, not INT8",
            ),
            (
                r#"{"inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["%%%"]}]}"#,
                "not base64",
            ),
            (r#"{"inputs": 7}"#, "invalid inference request JSON"),
        ] {
            let e = parse(body.as_bytes(), None).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn classification_strings_are_the_top_k_in_order() {
        let labels: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(classify_strings(&[0.2, 0.5, 0.3], 2, &labels), ["0.5:1:b", "0.3:2:c"]);
    }

    #[test]
    fn binary_outputs_follow_the_json_in_order() {
        let req: InferRequest = serde_json::from_str(
            r#"{"inputs":[],"outputs":[{"name":"logits","parameters":{"binary_data":true}},
                {"name":"probabilities","parameters":{"classification":1}}]}"#,
        )
        .unwrap();
        let w = wanted(&req, &OUTPUTS).unwrap();
        let rows = [ImageScores {
            dims: Vec::new(),
            probs: vec![0.25, 0.75],
            logits: vec![-1.0, 2.0],
            size: None,
        }];
        let (head, bin) = response("m", Some("7"), &w, &rows, &["x".into(), "y".into()]);
        let v: Value = serde_json::from_slice(&head).unwrap();
        assert_eq!(v["id"], "7");
        assert_eq!(v["outputs"][0]["parameters"]["binary_data_size"], 8);
        assert_eq!(v["outputs"][1]["data"], json!(["0.75:1:y"]));
        assert_eq!(bin, [(-1.0f32).to_le_bytes(), 2.0f32.to_le_bytes()].concat());
    }
}
