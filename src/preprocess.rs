//! From an image file to the normalised N×3×H×W tensor a model's weights expect.
//!
//! The resampler is PIL's (`ImagingResample`): separable, triangle ("bilinear") filter on pixel
//! centres, widened by the scale factor when shrinking with antialias (torchvision's default),
//! plain bilinear with half-pixel centres without it (TensorFlow 2's `tf.image.resize`).

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{DynamicImage, ImageDecoder, ImageReader};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the photo is brought to the network's input size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "resize", rename_all = "snake_case")]
pub enum Resize {
    /// torchvision: resize the shorter side to `resize_size`, then centre-crop `crop_size`.
    ShorterSide { resize_size: usize },
    /// TF-slim / Inception: centrally crop `crop_fraction` of each side, resize to `crop_size`.
    CropFraction { crop_fraction: f64 },
    /// Resize straight to `crop_size`, ignoring the aspect ratio.
    Exact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChannelOrder {
    RGB,
    BGR,
}

/// The preprocessing recorded in a weights file's metadata.
/// Each value is `(pixel · scale − mean[c]) / std[c]`, pixels in 0..=255, in `channel_order`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    #[serde(flatten)]
    pub resize: Resize,
    /// Output height and width.
    pub crop_size: [usize; 2],
    /// "bilinear" (triangle filter) or "nearest" (Keras' `load_img` default).
    pub interpolation: String,
    /// Widen the filter when shrinking (PIL / torchvision `antialias=True`).
    pub antialias: bool,
    pub scale: f64,
    pub mean: [f64; 3],
    pub std: [f64; 3],
    pub channel_order: ChannelOrder,
}

impl Preprocessing {
    /// torchvision's ImageNet eval transform: resize 256, crop 224, ImageNet mean / std.
    pub fn torchvision(resize: usize, crop: usize) -> Self {
        Self {
            resize: Resize::ShorterSide { resize_size: resize },
            crop_size: [crop, crop],
            interpolation: "bilinear".into(),
            antialias: true,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::RGB,
        }
    }

    /// One image → 3×H×W f32 tensor.
    pub fn apply(&self, img: &DynamicImage, device: &Device) -> Result<Tensor> {
        let filter = match self.interpolation.as_str() {
            "bilinear" => Filter::Triangle {
                antialias: self.antialias,
            },
            "nearest" => Filter::Nearest,
            other => {
                return Err(Error::InvalidOption {
                    arch: "preprocessing".into(),
                    msg: format!("interpolation `{other}` is not supported (bilinear, nearest)"),
                })
            }
        };
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let px: Vec<f32> = rgb.into_raw().into_iter().map(f32::from).collect();
        let [ch, cw] = self.crop_size;
        let out = match self.resize {
            Resize::ShorterSide { resize_size } => {
                // torchvision: the shorter side becomes `resize_size`, the longer int(size·long/short).
                let (rh, rw) = if h <= w {
                    (resize_size, (resize_size as f64 * w as f64 / h as f64) as usize)
                } else {
                    ((resize_size as f64 * h as f64 / w as f64) as usize, resize_size)
                };
                let resized = resize(&px, (h, w), (0, 0, h, w), (rh, rw), filter);
                // torchvision's center_crop: top = int(round((rh − ch) / 2)).
                let top = ((rh as f64 - ch as f64) / 2.0).round().max(0.0) as usize;
                let left = ((rw as f64 - cw as f64) / 2.0).round().max(0.0) as usize;
                let (oh, ow) = (ch.min(rh), cw.min(rw));
                (crop(&resized, rw, top, left, oh, ow), oh, ow)
            }
            Resize::CropFraction { crop_fraction } => {
                // tf.image.central_crop: start = int((len − len·f) / 2), size = len − 2·start.
                let top = ((h as f64 - h as f64 * crop_fraction) / 2.0) as usize;
                let left = ((w as f64 - w as f64 * crop_fraction) / 2.0) as usize;
                let window = (top, left, h - 2 * top, w - 2 * left);
                (resize(&px, (h, w), window, (ch, cw), filter), ch, cw)
            }
            Resize::Exact => (resize(&px, (h, w), (0, 0, h, w), (ch, cw), filter), ch, cw),
        };
        let (out, oh, ow) = out;
        let order = match self.channel_order {
            ChannelOrder::RGB => [0, 1, 2],
            ChannelOrder::BGR => [2, 1, 0],
        };
        let mut chw = vec![0f32; 3 * oh * ow];
        for (c, &src_c) in order.iter().enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            for i in 0..oh * ow {
                chw[c * oh * ow + i] = ((out[i * 3 + src_c] as f64 * self.scale - m) / s) as f32;
            }
        }
        Ok(Tensor::from_vec(chw, (3, oh, ow), device)?)
    }
}

/// Crops an interleaved RGB image of width `w`.
fn crop(px: &[f32], w: usize, top: usize, left: usize, h: usize, cw: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(h * cw * 3);
    for y in top..top + h {
        out.extend_from_slice(&px[(y * w + left) * 3..(y * w + left + cw) * 3]);
    }
    out
}

/// The resampling filter.
#[derive(Debug, Clone, Copy)]
enum Filter {
    /// PIL's BILINEAR: triangle filter, widened by the scale factor when shrinking with antialias.
    Triangle { antialias: bool },
    /// PIL's NEAREST: the input pixel under the output pixel's centre.
    Nearest,
}

/// PIL's filter taps for one axis: for each output index, (first input index, weights).
fn taps(in_start: usize, in_len: usize, full_len: usize, out_len: usize, filter: Filter) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f64 / out_len as f64;
    let antialias = match filter {
        Filter::Nearest => {
            return (0..out_len)
                .map(|o| {
                    let src = in_start as f64 + (o as f64 + 0.5) * scale;
                    ((src.floor() as usize).min(full_len - 1), vec![1.0])
                })
                .collect()
        }
        Filter::Triangle { antialias } => antialias,
    };
    let support_scale = if antialias { scale.max(1.0) } else { 1.0 };
    let support = support_scale; // triangle filter support 1.0
    (0..out_len)
        .map(|o| {
            let center = in_start as f64 + (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(full_len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 + 0.5 - center) / support_scale).abs()).max(0.0))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum > 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w.into_iter().map(|v| v as f32).collect())
        })
        .collect()
}

/// Resamples the window (top, left, height, width) of an RGB image of `full` (h, w) to `out`.
fn resize(
    px: &[f32],
    full: (usize, usize),
    window: (usize, usize, usize, usize),
    out: (usize, usize),
    filter: Filter,
) -> Vec<f32> {
    let (fh, fw) = full;
    let (top, left, wh, ww) = window;
    let (oh, ow) = out;
    let tx = taps(left, ww, fw, ow, filter);
    let ty = taps(top, wh, fh, oh, filter);
    // horizontal pass over every row, then vertical
    let mut mid = vec![0f32; fh * ow * 3];
    for y in 0..fh {
        for (x, (lo, w)) in tx.iter().enumerate() {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    acc += wk * px[(y * fw + lo + k) * 3 + c];
                }
                mid[(y * ow + x) * 3 + c] = acc;
            }
        }
    }
    let mut res = vec![0f32; oh * ow * 3];
    for (y, (lo, w)) in ty.iter().enumerate() {
        for x in 0..ow {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    acc += wk * mid[((lo + k) * ow + x) * 3 + c];
                }
                res[(y * ow + x) * 3 + c] = acc;
            }
        }
    }
    res
}

/// Decodes an image file (format guessed from its bytes) and applies its EXIF orientation.
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| err(format!("not a supported image: {e}")))?;
    let orientation = decoder.orientation().map_err(|e| err(format!("bad EXIF data: {e}")))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| err(format!("cannot decode: {e}")))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err(err("image has no pixels".into()));
    }
    Ok(img)
}
