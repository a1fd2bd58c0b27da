//! Pose estimation with a loaded [`Model`]: the network's keypoint maps, the decoder its weights
//! file names ([`PoseDecoder`], metadata `pose`), and the keypoints mapped back to the photo.

use candle_core::DType;
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::pose::{decode_movenet, decode_multi_pose, Maps, MultiPoseOptions, Pose};
use crate::Model;

/// How a pose network's outputs become poses, as recorded by the converter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decoder", rename_all = "snake_case")]
pub enum PoseDecoder {
    /// PoseNet's multi-person decoding (PersonLab §3.2), with the options of Coral's
    /// `PosenetDecoderOp` in the file: at most `max_poses`, root keypoints scoring at least
    /// `score_threshold`, a pose rejected when one of its keypoints lies within `nms_radius`
    /// input pixels of the same keypoint of a pose already found.
    Posenet {
        output_stride: usize,
        max_poses: usize,
        score_threshold: f32,
        nms_radius: f32,
    },
    /// MoveNet's single-person decoding: the person centre nearest the frame centre, each
    /// keypoint the heatmap peak weighted by 1 / (distance to its regressed position +
    /// `center_weight_offset`) (the file's constant 1.8).
    Movenet { center_weight_offset: f32 },
}

/// Per-request settings; `None` keeps the file's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoseOptions {
    pub max_poses: Option<usize>,
    pub score_threshold: Option<f32>,
    pub nms_radius: Option<f32>,
    /// Poses scoring below this are dropped (and not counted as people).
    pub min_score: f32,
}

/// The poses found in one image, in its pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Poses {
    pub width: u32,
    pub height: u32,
    pub poses: Vec<Pose>,
}

impl Poses {
    /// People in the image: one per pose reported.
    pub fn people(&self) -> usize {
        self.poses.len()
    }

    /// The JSON line of `ferrovision pose --format json` and of `POST /pose`.
    pub fn to_json(path: &str, result: &std::result::Result<Poses, String>) -> serde_json::Value {
        match result {
            Ok(p) => serde_json::json!({
                "path": path,
                "width": p.width,
                "height": p.height,
                "people": p.people(),
                "poses": p.poses,
                "error": null,
            }),
            Err(e) => serde_json::json!({"path": path, "poses": [], "error": e}),
        }
    }
}

impl Model {
    /// The pose decoder of this model, or an error naming the file when it estimates no poses.
    pub fn pose_decoder(&self) -> Result<&PoseDecoder> {
        match &self.meta.task {
            crate::Task::Pose(d) => Ok(d),
            _ => Err(Error::File {
                path: self.path().to_path_buf(),
                msg: format!("{} is not a pose estimator", self.meta.architecture),
            }),
        }
    }

    /// Poses in decoded images (EXIF orientation applied), one list per image.
    pub fn pose(&self, images: &[DynamicImage], opts: &PoseOptions) -> Result<Vec<Poses>> {
        self.pose_decoder()?;
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.net.forward(&self.batch(images)?)?.to_dtype(DType::F32)?; // N×C×h×w
        let (_, c, h, w) = out.dims4()?;
        let data = out.flatten_all()?.to_vec1::<f32>()?;
        data.chunks_exact(c * h * w)
            .zip(images)
            .map(|(maps, img)| {
                let poses = self.decode_poses(maps, c, (h, w), opts)?;
                Ok(self.poses_to_pixels(img.width(), img.height(), poses, opts.min_score))
            })
            .collect()
    }

    /// One image's network output (C×h×w, channels as the architecture documents) → poses in
    /// the network input's pixels.
    pub fn decode_poses(
        &self,
        maps: &[f32],
        c: usize,
        (h, w): (usize, usize),
        opts: &PoseOptions,
    ) -> Result<Vec<Pose>> {
        let k = self.meta.options.num_classes;
        let bad = |msg: String| Error::File {
            path: self.path().to_path_buf(),
            msg,
        };
        let map = |from: usize, n: usize| {
            Maps::new(&maps[from * h * w..(from + n) * h * w], n, h, w).map_err(|e| bad(e.to_string()))
        };
        match self.pose_decoder()? {
            PoseDecoder::Posenet {
                output_stride,
                max_poses,
                score_threshold,
                nms_radius,
            } => {
                if c != k + 2 * k + 4 * (k - 1) {
                    return Err(bad(format!(
                        "{c} output channels do not fit PoseNet with {k} keypoints"
                    )));
                }
                let o = MultiPoseOptions {
                    max_poses: opts.max_poses.unwrap_or(*max_poses),
                    score_threshold: opts.score_threshold.unwrap_or(*score_threshold),
                    nms_radius: opts.nms_radius.unwrap_or(*nms_radius),
                    ..MultiPoseOptions::default()
                };
                Ok(decode_multi_pose(
                    map(0, k)?,
                    map(k, 2 * k)?,
                    map(3 * k, 4 * (k - 1))?,
                    *output_stride as f32,
                    &o,
                ))
            }
            PoseDecoder::Movenet { center_weight_offset } => {
                if c != 1 + 5 * k {
                    return Err(bad(format!(
                        "{c} output channels do not fit MoveNet with {k} keypoints"
                    )));
                }
                // the centre and keypoint heatmaps are logits: their sigmoid, as the graph applies
                let probs: Vec<f32> = maps[..(1 + k) * h * w]
                    .iter()
                    .map(|&v| 1.0 / (1.0 + (-v).exp()))
                    .collect();
                let center = Maps::new(&probs[..h * w], 1, h, w).map_err(|e| bad(e.to_string()))?;
                let heat = Maps::new(&probs[h * w..], k, h, w).map_err(|e| bad(e.to_string()))?;
                let [ih, iw] = self.meta.preprocessing.crop_size;
                let pose = decode_movenet(
                    center,
                    heat,
                    map(1 + 3 * k, 2 * k)?,
                    map(1 + k, 2 * k)?,
                    *center_weight_offset,
                    (ih, iw),
                );
                Ok(vec![pose])
            }
        }
    }

    /// Keypoints from the network input's pixels to those of a `w`×`h` photo (undoing the
    /// preprocessing's resize and padding); poses under `min_score` dropped.
    pub fn poses_to_pixels(&self, w: u32, h: u32, poses: Vec<Pose>, min_score: f32) -> Poses {
        let p = &self.meta.preprocessing;
        let (top, left, vh, vw) = p.view_region(w as usize, h as usize);
        let [ch, cw] = p.crop_size;
        let (sy, sx) = ((vh / ch as f64) as f32, (vw / cw as f64) as f32);
        let poses = poses
            .into_iter()
            .filter(|pose| pose.score >= min_score)
            .map(|mut pose| {
                for kp in &mut pose.keypoints {
                    kp.x = left as f32 + kp.x * sx;
                    kp.y = top as f32 + kp.y * sy;
                }
                pose
            })
            .collect();
        Poses {
            width: w,
            height: h,
            poses,
        }
    }

    /// Decodes (EXIF orientation applied) and estimates the poses of one file.
    pub fn pose_file(&self, path: &std::path::Path, opts: &PoseOptions) -> Result<Poses> {
        let img = crate::preprocess::load_image(path)?;
        Ok(self.pose(&[img], opts)?.remove(0))
    }
}
