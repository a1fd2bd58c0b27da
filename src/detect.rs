//! Object detection: from an SSD's raw outputs (box encodings, class logits, anchors) to boxes,
//! as TFLite's `TFLite_Detection_PostProcess` op does it (`tensorflow/lite/kernels/
//! detection_postprocess.cc`): the centre-size box decoder, sigmoid scores, then either its fast
//! class-agnostic NMS or per-class ("regular") NMS.

use std::path::Path;

use candle_core::{DType, Tensor};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::archs::ssd::{AnchorGenerator, SsdMobileNetV2};
use crate::error::{Error, Result};
use crate::pretrained::Model;

/// TF's `FasterRcnnBoxCoder` scale factors (`y_scale`, `x_scale`, `h_scale`, `w_scale`;
/// 10, 10, 5, 5 in every SSD config and TFLite file we know).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxCoder {
    pub y_scale: f32,
    pub x_scale: f32,
    pub h_scale: f32,
    pub w_scale: f32,
}

/// A box in normalised image coordinates, TF's order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormBox {
    pub ymin: f32,
    pub xmin: f32,
    pub ymax: f32,
    pub xmax: f32,
}

impl BoxCoder {
    /// Decodes (ty, tx, th, tw) against an anchor (y_center, x_center, h, w):
    /// y = ty / y_scale · h_a + y_a, h = exp(th / h_scale) · h_a (the same for x, w).
    pub fn decode(&self, t: [f32; 4], anchor: [f32; 4]) -> NormBox {
        let [ya, xa, ha, wa] = anchor;
        let yc = t[0] / self.y_scale * ha + ya;
        let xc = t[1] / self.x_scale * wa + xa;
        let half_h = 0.5 * (t[2] / self.h_scale).exp() * ha;
        let half_w = 0.5 * (t[3] / self.w_scale).exp() * wa;
        NormBox {
            ymin: yc - half_h,
            xmin: xc - half_w,
            ymax: yc + half_h,
            xmax: xc + half_w,
        }
    }
}

/// Intersection over union, 0 when either box is empty (TFLite's `ComputeIntersectionOverUnion`).
pub fn iou(a: &NormBox, b: &NormBox) -> f32 {
    let area = |r: &NormBox| (r.ymax - r.ymin) * (r.xmax - r.xmin);
    let (area_a, area_b) = (area(a), area(b));
    if area_a <= 0.0 || area_b <= 0.0 {
        return 0.0;
    }
    let h = (a.ymax.min(b.ymax) - a.ymin.max(b.ymin)).max(0.0);
    let w = (a.xmax.min(b.xmax) - a.xmin.max(b.xmin)).max(0.0);
    let inter = h * w;
    inter / (area_a + area_b - inter)
}

/// Non-maximum suppression settings (`TFLite_Detection_PostProcess` options).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NmsOptions {
    /// Candidates need a score ≥ this.
    pub score_threshold: f32,
    /// A box is suppressed by a better one overlapping it with IoU > this.
    pub iou_threshold: f32,
    /// At most this many detections per image.
    pub max_detections: usize,
    /// Classes reported per box in fast mode (TFLite files use 1).
    pub max_classes_per_detection: usize,
    /// Per-class cap in regular mode.
    pub detections_per_class: usize,
    /// Per-class NMS (TF's `batch_non_max_suppression`) instead of the fast class-agnostic one.
    pub use_regular_nms: bool,
}

/// How a weights file's detector turns raw outputs into boxes (metadata `detection`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionConfig {
    pub box_coder: BoxCoder,
    pub nms: NmsOptions,
    /// Class-score column of class id 0: 1 when column 0 is the background.
    pub label_offset: usize,
    /// "sigmoid": each class scored independently (SSD's sigmoid focal / weighted sigmoid loss).
    pub score_converter: String,
    /// "stored" (a tensor `anchors` in the file) or the generator's settings.
    pub anchors: AnchorSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AnchorSpec {
    /// The string "stored".
    Stored(String),
    Generated(AnchorGenerator),
}

/// One detection, in normalised coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    /// Class id (score column − label offset).
    pub class: usize,
    pub score: f32,
    pub bbox: NormBox,
}

/// Greedy NMS of one score list (TFLite's `NonMaxSuppressionSingleClassHelper`): candidates
/// with score ≥ threshold, best first (ties by index), each kept one suppressing the later ones
/// with IoU > `iou_threshold`; at most `max` kept. Returns indices into `boxes`.
pub fn nms_single_class(
    boxes: &[NormBox],
    scores: &[f32],
    score_threshold: f32,
    iou_threshold: f32,
    max: usize,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).filter(|&i| scores[i] >= score_threshold).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut active = vec![true; order.len()];
    let mut kept = Vec::new();
    for i in 0..order.len() {
        if kept.len() >= max {
            break;
        }
        if !active[i] {
            continue;
        }
        kept.push(order[i]);
        for j in i + 1..order.len() {
            if active[j] && iou(&boxes[order[i]], &boxes[order[j]]) > iou_threshold {
                active[j] = false;
            }
        }
    }
    kept
}

/// Decodes and suppresses one image's raw outputs. `encodings` A×4, `scores` A×columns
/// (already through the score converter), `anchors` A×4.
pub fn postprocess(
    encodings: &[[f32; 4]],
    scores: &[f32],
    columns: usize,
    anchors: &[[f32; 4]],
    cfg: &DetectionConfig,
    nms: &NmsOptions,
) -> Vec<RawDetection> {
    let boxes: Vec<NormBox> = encodings
        .iter()
        .zip(anchors)
        .map(|(t, a)| cfg.box_coder.decode(*t, *a))
        .collect();
    let off = cfg.label_offset;
    let classes = columns - off;
    let class_score = |a: usize, c: usize| scores[a * columns + off + c];
    let mut out = Vec::new();
    if nms.use_regular_nms {
        for c in 0..classes {
            let s: Vec<f32> = (0..boxes.len()).map(|a| class_score(a, c)).collect();
            let kept = nms_single_class(
                &boxes,
                &s,
                nms.score_threshold,
                nms.iou_threshold,
                nms.detections_per_class,
            );
            out.extend(kept.into_iter().map(|a| RawDetection {
                class: c,
                score: s[a],
                bbox: boxes[a],
            }));
        }
        out.sort_by(|a, b| b.score.total_cmp(&a.score));
        out.truncate(nms.max_detections);
        return out;
    }
    // fast mode: each anchor competes once, with its best class
    let per_box = nms.max_classes_per_detection.clamp(1, classes);
    let ranked: Vec<Vec<usize>> = (0..boxes.len())
        .map(|a| {
            let mut cs: Vec<usize> = (0..classes).collect();
            cs.sort_by(|&x, &y| class_score(a, y).total_cmp(&class_score(a, x)).then(x.cmp(&y)));
            cs.truncate(per_box);
            cs
        })
        .collect();
    let best: Vec<f32> = ranked.iter().enumerate().map(|(a, cs)| class_score(a, cs[0])).collect();
    for a in nms_single_class(
        &boxes,
        &best,
        nms.score_threshold,
        nms.iou_threshold,
        nms.max_detections,
    ) {
        for &c in &ranked[a] {
            out.push(RawDetection {
                class: c,
                score: class_score(a, c),
                bbox: boxes[a],
            });
        }
    }
    out.truncate(nms.max_detections);
    out
}

/// A detection in the image's pixels (after EXIF orientation).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub class_id: usize,
    pub label: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: PixelBox,
}

/// Corners in pixels, clipped to the image: x0 ≤ x1 from the left, y0 ≤ y1 from the top.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PixelBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

/// The detections of one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detections {
    pub width: u32,
    pub height: u32,
    pub detections: Vec<Detection>,
}

impl Detections {
    /// The JSON object `detect --format json` writes: `{"path", "width", "height",
    /// "detections": [{"class_id", "label", "score", "box": {"x0","y0","x1","y1"}}], "error"}`.
    pub fn to_json(path: &str, result: &std::result::Result<Detections, String>) -> serde_json::Value {
        use serde_json::json;
        match result {
            Ok(d) => json!({"path": path, "width": d.width, "height": d.height,
                            "detections": d.detections, "error": null}),
            Err(e) => json!({"path": path, "width": null, "height": null, "detections": [], "error": e}),
        }
    }
}

/// Thresholds of one `detect` call; `None` keeps the weights file's own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DetectOptions {
    pub score_threshold: Option<f32>,
    pub iou_threshold: Option<f32>,
    pub max_detections: Option<usize>,
}

/// What a detector model needs beyond its network: decoding settings and anchors.
#[derive(Debug, Clone)]
pub struct Detector {
    pub config: DetectionConfig,
    /// A×4 (y_center, x_center, h, w), for the input size in the file's preprocessing.
    pub anchors: Vec<[f32; 4]>,
}

impl Detector {
    /// The anchors stored in `path` or generated for `input` (square) from the config.
    pub fn load(path: &Path, config: DetectionConfig, input: [usize; 2]) -> Result<Self> {
        let err = |msg: String| Error::File {
            path: path.to_path_buf(),
            msg,
        };
        let anchors = match &config.anchors {
            AnchorSpec::Stored(s) if s == "stored" => {
                // only the anchors are read (the network's weights are loaded apart)
                // SAFETY: mapped read-only, as the weights are; the file must not change meanwhile.
                let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }
                    .map_err(|e| err(format!("cannot read its tensors: {e}")))?;
                if !st.tensors().iter().any(|(n, _)| n == "anchors") {
                    return Err(err(
                        "metadata says the anchors are stored, but there is no `anchors` tensor".into(),
                    ));
                }
                let t = st
                    .load("anchors", &candle_core::Device::Cpu)
                    .map_err(|e| err(format!("cannot read `anchors`: {e}")))?;
                let rows: Vec<Vec<f32>> = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_vec2())
                    .map_err(|e| err(format!("`anchors` must be A×4: {e}")))?;
                rows.into_iter()
                    .map(|r| <[f32; 4]>::try_from(r.as_slice()).map_err(|_| err("`anchors` must be A×4".into())))
                    .collect::<Result<Vec<_>>>()?
            }
            AnchorSpec::Stored(s) => return Err(err(format!("metadata `detection.anchors` `{s}` is not \"stored\""))),
            AnchorSpec::Generated(g) => {
                let grids = SsdMobileNetV2::grids(input[0], input[1]);
                g.generate(&grids).map_err(|e| err(e.to_string()))?
            }
        };
        if config.score_converter != "sigmoid" {
            return Err(err(format!(
                "detection score converter `{}` is not supported (sigmoid)",
                config.score_converter
            )));
        }
        Ok(Self { config, anchors })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Model {
    /// The detector part of this model, or an error naming the file when it is a classifier.
    pub fn detector(&self) -> Result<&Detector> {
        self.detector.as_ref().ok_or_else(|| Error::File {
            path: self.path().to_path_buf(),
            msg: format!("{} is a classifier, not a detector", self.meta.architecture),
        })
    }

    /// Detections of decoded images (EXIF orientation already applied), one list per image.
    pub fn detect(&self, images: &[DynamicImage], opts: &DetectOptions) -> Result<Vec<Detections>> {
        self.detector()?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.net.forward(&self.batch(images)?)?.to_dtype(DType::F32)?; // N×A×(4+C)
        let width = out.dim(2)?;
        let rows = out.flatten_all()?.to_vec1::<f32>()?;
        rows.chunks_exact(rows.len() / images.len())
            .zip(images)
            .map(|(raw, img)| {
                let found = self.decode_raw(raw, width, opts)?;
                Ok(self.to_pixels(img.width(), img.height(), &found))
            })
            .collect()
    }

    /// One image's raw network output (A rows of `width` = 4 + classes values: box encoding,
    /// class logits) → its detections: sigmoid scores, boxes decoded against the anchors, NMS
    /// with the file's settings less what `opts` overrides.
    pub fn decode_raw(&self, raw: &[f32], width: usize, opts: &DetectOptions) -> Result<Vec<RawDetection>> {
        let det = self.detector()?;
        let a = raw.len() / width.max(1);
        if width < 5 || a * width != raw.len() || a != det.anchors.len() {
            return Err(Error::File {
                path: self.path().to_path_buf(),
                msg: format!(
                    "the network's output ({} values of rows of {width}) does not fit the decoder's {} anchors",
                    raw.len(),
                    det.anchors.len()
                ),
            });
        }
        let mut nms = det.config.nms;
        nms.score_threshold = opts.score_threshold.unwrap_or(nms.score_threshold);
        nms.iou_threshold = opts.iou_threshold.unwrap_or(nms.iou_threshold);
        nms.max_detections = opts.max_detections.unwrap_or(nms.max_detections);
        let out = RawOutput::from_row(raw, width);
        Ok(postprocess(
            &out.box_encodings,
            &out.scores,
            width - 4,
            &det.anchors,
            &det.config,
            &nms,
        ))
    }

    /// Boxes in pixels of a `w`×`h` image (the input is the whole image, resized), clipped.
    pub fn to_pixels(&self, w: u32, h: u32, raw: &[RawDetection]) -> Detections {
        let off = self.detector.as_ref().map_or(1, |d| d.config.label_offset);
        let (wf, hf) = (w as f32, h as f32);
        let detections = raw
            .iter()
            .map(|d| Detection {
                class_id: d.class,
                label: self
                    .meta
                    .labels
                    .get(d.class + off)
                    .cloned()
                    .unwrap_or_else(|| d.class.to_string()),
                score: d.score,
                bbox: PixelBox {
                    x0: (d.bbox.xmin * wf).clamp(0.0, wf),
                    y0: (d.bbox.ymin * hf).clamp(0.0, hf),
                    x1: (d.bbox.xmax * wf).clamp(0.0, wf),
                    y1: (d.bbox.ymax * hf).clamp(0.0, hf),
                },
            })
            .collect();
        Detections {
            width: w,
            height: h,
            detections,
        }
    }

    /// Decodes (EXIF orientation applied) and detects one file.
    pub fn detect_file(&self, path: &Path, opts: &DetectOptions) -> Result<Detections> {
        let img = crate::preprocess::load_image(path)?;
        Ok(self.detect(&[img], opts)?.remove(0))
    }
}

/// One image's raw detector output, split: box encodings and per-class sigmoid scores.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutput {
    /// A × (ty, tx, th, tw).
    pub box_encodings: Vec<[f32; 4]>,
    /// A × classes (background column included), row-major.
    pub scores: Vec<f32>,
}

impl RawOutput {
    /// From one image's A rows of `width` = 4 + classes values (box encoding, class logits).
    pub fn from_row(raw: &[f32], width: usize) -> Self {
        Self {
            box_encodings: raw.chunks_exact(width).map(|r| [r[0], r[1], r[2], r[3]]).collect(),
            scores: raw
                .chunks_exact(width)
                .flat_map(|r| r[4..].iter().map(|&x| sigmoid(x)))
                .collect(),
        }
    }
}

/// A detector's raw output N×A×(4+C) (its `forward`) → one [`RawOutput`] per image.
pub fn split_raw(out: &Tensor) -> Result<Vec<RawOutput>> {
    let (n, _, width) = out.dims3()?;
    let rows = out.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    Ok(rows
        .chunks_exact(rows.len() / n)
        .map(|r| RawOutput::from_row(r, width))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The naive reference: O(n²) by definition. A box is kept iff no kept box with a higher
    /// score (or equal score and lower index) overlaps it by more than the threshold.
    fn naive_nms(boxes: &[NormBox], scores: &[f32], thr: f32, iou_thr: f32, max: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..boxes.len()).filter(|&i| scores[i] >= thr).collect();
        idx.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap().then(a.cmp(&b)));
        let mut kept: Vec<usize> = Vec::new();
        for i in idx {
            if kept.iter().all(|&k| naive_iou(&boxes[k], &boxes[i]) <= iou_thr) {
                kept.push(i);
            }
        }
        kept.truncate(max);
        kept
    }

    fn naive_iou(a: &NormBox, b: &NormBox) -> f32 {
        // areas by counting: the overlap rectangle from the definition, in f64
        let (ay, ax, by, bx) = (
            (a.ymax - a.ymin) as f64,
            (a.xmax - a.xmin) as f64,
            (b.ymax - b.ymin) as f64,
            (b.xmax - b.xmin) as f64,
        );
        if ay <= 0.0 || ax <= 0.0 || by <= 0.0 || bx <= 0.0 {
            return 0.0;
        }
        let ih = (a.ymax.min(b.ymax) as f64 - a.ymin.max(b.ymin) as f64).max(0.0);
        let iw = (a.xmax.min(b.xmax) as f64 - a.xmin.max(b.xmin) as f64).max(0.0);
        let inter = ih * iw;
        (inter / (ay * ax + by * bx - inter)) as f32
    }

    fn arb_box() -> impl Strategy<Value = NormBox> {
        (0.0f32..0.9, 0.0f32..0.9, 0.01f32..0.5, 0.01f32..0.5).prop_map(|(y, x, h, w)| NormBox {
            ymin: y,
            xmin: x,
            ymax: y + h,
            xmax: x + w,
        })
    }

    proptest! {
        #[test]
        fn nms_matches_naive(
            boxes in prop::collection::vec(arb_box(), 1..60),
            seed in prop::collection::vec(0u8..20, 60),
            iou_thr in 0.1f32..0.9,
            max in 1usize..30,
        ) {
            // scores on a coarse grid, so ties happen
            let scores: Vec<f32> = (0..boxes.len()).map(|i| seed[i] as f32 / 20.0).collect();
            prop_assert_eq!(
                nms_single_class(&boxes, &scores, 0.1, iou_thr, max),
                naive_nms(&boxes, &scores, 0.1, iou_thr, max)
            );
        }

        #[test]
        fn iou_matches_naive(a in arb_box(), b in arb_box()) {
            prop_assert!((iou(&a, &b) - naive_iou(&a, &b)).abs() < 1e-5);
        }

        #[test]
        fn decode_inverts_the_encoder(
            yc in 0.1f32..0.9, xc in 0.1f32..0.9, h in 0.05f32..0.8, w in 0.05f32..0.8,
            anchor in (0.1f32..0.9, 0.1f32..0.9, 0.05f32..0.9, 0.05f32..0.9),
        ) {
            // TF's FasterRcnnBoxCoder._encode, written out: the decoder must invert it
            let coder = BoxCoder { y_scale: 10.0, x_scale: 10.0, h_scale: 5.0, w_scale: 5.0 };
            let (ya, xa, ha, wa) = anchor;
            let t = [
                (yc - ya) / ha * 10.0,
                (xc - xa) / wa * 10.0,
                (h / ha).ln() * 5.0,
                (w / wa).ln() * 5.0,
            ];
            let b = coder.decode(t, [ya, xa, ha, wa]);
            prop_assert!((b.ymin - (yc - h / 2.0)).abs() < 1e-4);
            prop_assert!((b.xmax - (xc + w / 2.0)).abs() < 1e-4);
            prop_assert!((b.ymax - b.ymin - h).abs() < 1e-4);
        }

        #[test]
        fn regular_nms_is_per_class_naive(
            boxes in prop::collection::vec(arb_box(), 1..30),
            seed in prop::collection::vec(0u8..20, 90),
        ) {
            let columns = 4; // background + 3 classes
            let scores: Vec<f32> = (0..boxes.len() * columns).map(|i| seed[i % 90] as f32 / 20.0).collect();
            let anchors: Vec<[f32; 4]> = boxes.iter()
                .map(|b| [(b.ymin + b.ymax) / 2.0, (b.xmin + b.xmax) / 2.0, b.ymax - b.ymin, b.xmax - b.xmin])
                .collect();
            let cfg = DetectionConfig {
                box_coder: BoxCoder { y_scale: 10.0, x_scale: 10.0, h_scale: 5.0, w_scale: 5.0 },
                nms: NmsOptions { score_threshold: 0.3, iou_threshold: 0.5, max_detections: 10,
                                  max_classes_per_detection: 1, detections_per_class: 5, use_regular_nms: true },
                label_offset: 1,
                score_converter: "sigmoid".into(),
                anchors: AnchorSpec::Stored("stored".into()),
            };
            let zero = vec![[0.0f32; 4]; boxes.len()];
            let got = postprocess(&zero, &scores, columns, &anchors, &cfg, &cfg.nms);
            // reference: naive NMS per class, all merged, best 10
            let mut want: Vec<(usize, f32)> = Vec::new();
            for c in 0..3 {
                let s: Vec<f32> = (0..boxes.len()).map(|a| scores[a * columns + 1 + c]).collect();
                want.extend(naive_nms(&boxes, &s, 0.3, 0.5, 5).into_iter().map(|a| (c, s[a])));
            }
            want.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            want.truncate(10);
            let got_scores: Vec<f32> = got.iter().map(|d| d.score).collect();
            let want_scores: Vec<f32> = want.iter().map(|w| w.1).collect();
            prop_assert_eq!(got_scores, want_scores);
        }
    }

    #[test]
    fn fast_nms_keeps_each_box_once_with_its_best_class() {
        let b = |y: f32| NormBox {
            ymin: y,
            xmin: 0.1,
            ymax: y + 0.2,
            xmax: 0.3,
        };
        let boxes = [b(0.1), b(0.11), b(0.6)]; // 0 and 1 overlap (IoU ≈ 0.9), 2 apart
        let anchors: Vec<[f32; 4]> = boxes.iter().map(|b| [b.ymin + 0.1, 0.2, 0.2, 0.2]).collect();
        // columns: background, cat, dog
        let scores = [0.9, 0.2, 0.8, /**/ 0.0, 0.7, 0.1, /**/ 0.0, 0.3, 0.6];
        let cfg = DetectionConfig {
            box_coder: BoxCoder {
                y_scale: 10.0,
                x_scale: 10.0,
                h_scale: 5.0,
                w_scale: 5.0,
            },
            nms: NmsOptions {
                score_threshold: 0.5,
                iou_threshold: 0.6,
                max_detections: 10,
                max_classes_per_detection: 1,
                detections_per_class: 100,
                use_regular_nms: false,
            },
            label_offset: 1,
            score_converter: "sigmoid".into(),
            anchors: AnchorSpec::Stored("stored".into()),
        };
        let got = postprocess(&[[0.0; 4]; 3], &scores, 3, &anchors, &cfg, &cfg.nms);
        let summary: Vec<(usize, f32)> = got.iter().map(|d| (d.class, d.score)).collect();
        // box 0 (dog 0.8) suppresses box 1 (cat 0.7, class-agnostic); box 2 keeps dog 0.6;
        // the background's 0.9 never counts
        assert_eq!(summary, vec![(1, 0.8), (1, 0.6)]);
    }
}
