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
    /// TensorFlow's `tf.image.resize_with_pad` (MoveNet's model card): resize keeping the
    /// aspect ratio until the image fits `crop_size`, centred on a black (0) canvas.
    Pad,
}

/// `tf.image.resize_with_pad`'s geometry (`resize_image_with_pad_common`, in f32 as TF
/// computes it) for an `h`×`w` image into `th`×`tw`: (resized height, width, top, left).
pub fn resize_with_pad_geometry(h: usize, w: usize, th: usize, tw: usize) -> (usize, usize, usize, usize) {
    let (fh, fw, fth, ftw) = (h as f32, w as f32, th as f32, tw as f32);
    let ratio = (fw / ftw).max(fh / fth);
    let (rh, rw) = (fh / ratio, fw / ratio);
    let top = ((fth - rh) / 2.0).floor().max(0.0) as usize;
    let left = ((ftw - rw) / 2.0).floor().max(0.0) as usize;
    (
        (rh.floor() as usize).clamp(1, th),
        (rw.floor() as usize).clamp(1, tw),
        top,
        left,
    )
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
    /// "bilinear" (triangle filter), "bilinear_align_corners" (TF.js `resizeBilinear` with
    /// `alignCorners`, as nsfwjs resizes) or "nearest" (Keras' `load_img` default).
    pub interpolation: String,
    /// Widen the filter when shrinking (PIL / torchvision `antialias=True`).
    pub antialias: bool,
    /// The resized image is 8-bit, as PIL's resize of an RGB image makes it (each pass rounded
    /// and clipped to 0..=255) and as an app feeding a uint8-input model (a quantized TFLite
    /// detector) holds it; otherwise resized pixels stay fractional (torchvision on tensors).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub round_to_uint8: bool,
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
            round_to_uint8: false,
            scale: 1.0 / 255.0,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            channel_order: ChannelOrder::RGB,
        }
    }

    fn filter(&self) -> Result<Filter> {
        match self.interpolation.as_str() {
            "bilinear" => Ok(Filter::Triangle {
                antialias: self.antialias,
                round: self.round_to_uint8,
            }),
            "nearest" => Ok(Filter::Nearest),
            "bilinear_align_corners" => Ok(Filter::AlignCorners),
            other => Err(Error::InvalidOption {
                arch: "preprocessing".into(),
                msg: format!("interpolation `{other}` is not supported (bilinear, bilinear_align_corners, nearest)"),
            }),
        }
    }

    /// One image → 3×H×W f32 tensor (the single central view).
    pub fn apply(&self, img: &DynamicImage, device: &Device) -> Result<Tensor> {
        let view = self.central_view(&Rgb::from_image(img), self.filter()?);
        self.normalize(&view, device)
    }

    /// Several views of one image, each 3×H×W, whose predictions are meant to be averaged.
    pub fn apply_crops(&self, img: &DynamicImage, crops: Crops, device: &Device) -> Result<Vec<Tensor>> {
        let (rgb, filter) = (Rgb::from_image(img), self.filter()?);
        let views = match crops {
            Crops::Center => vec![self.central_view(&rgb, filter)],
            Crops::Three => rgb
                .square_windows()
                .into_iter()
                .map(|(top, left, side)| self.central_view(&rgb.crop(top, left, side, side), filter))
                .collect(),
            Crops::Ten => self.ten_views(&rgb, filter),
        };
        views.iter().map(|v| self.normalize(v, device)).collect()
    }

    /// The part of a `w`×`h` photo that the central view shows: (top, left, height, width) in
    /// photo pixels (fractional where a resize came first).
    pub fn view_region(&self, w: usize, h: usize) -> (f64, f64, f64, f64) {
        let [ch, cw] = self.crop_size;
        let (hf, wf) = (h as f64, w as f64);
        match self.resize {
            Resize::ShorterSide { resize_size } => {
                let (rh, rw) = if h <= w {
                    (resize_size as f64, (resize_size as f64 * wf / hf).floor())
                } else {
                    ((resize_size as f64 * hf / wf).floor(), resize_size as f64)
                };
                let top = ((rh - ch as f64) / 2.0).round_ties_even().max(0.0);
                let left = ((rw - cw as f64) / 2.0).round_ties_even().max(0.0);
                let (sy, sx) = (hf / rh, wf / rw);
                (top * sy, left * sx, (ch as f64).min(rh) * sy, (cw as f64).min(rw) * sx)
            }
            Resize::CropFraction { crop_fraction } => {
                let top = ((hf - hf * crop_fraction) / 2.0).floor();
                let left = ((wf - wf * crop_fraction) / 2.0).floor();
                (top, left, hf - 2.0 * top, wf - 2.0 * left)
            }
            Resize::Exact => (0.0, 0.0, hf, wf),
            Resize::Pad => {
                let (rh, rw, top, left) = resize_with_pad_geometry(h, w, ch, cw);
                let (sy, sx) = (hf / rh as f64, wf / rw as f64);
                (-(top as f64) * sy, -(left as f64) * sx, ch as f64 * sy, cw as f64 * sx)
            }
        }
    }

    /// The preprocessing of the weights' framework, as one view of `crop_size`.
    fn central_view(&self, rgb: &Rgb, filter: Filter) -> Rgb {
        let [ch, cw] = self.crop_size;
        let (h, w) = (rgb.h, rgb.w);
        match self.resize {
            Resize::ShorterSide { resize_size } => {
                let (rh, rw) = rgb.shorter_side_size(resize_size);
                // torchvision's center_crop: top = int(round((rh − ch) / 2)), Python's round: ties to even.
                let top = ((rh as f64 - ch as f64) / 2.0).round_ties_even().max(0.0) as usize;
                let left = ((rw as f64 - cw as f64) / 2.0).round_ties_even().max(0.0) as usize;
                rgb.resize_crop((0, 0, h, w), (rh, rw), (top, left, ch.min(rh), cw.min(rw)), filter)
            }
            Resize::CropFraction { crop_fraction } => {
                // tf.image.central_crop: start = int((len − len·f) / 2), size = len − 2·start.
                let top = ((h as f64 - h as f64 * crop_fraction) / 2.0) as usize;
                let left = ((w as f64 - w as f64 * crop_fraction) / 2.0) as usize;
                rgb.resize((top, left, h - 2 * top, w - 2 * left), (ch, cw), filter)
            }
            Resize::Exact => rgb.resize((0, 0, h, w), (ch, cw), filter),
            Resize::Pad => {
                let (rh, rw, top, left) = resize_with_pad_geometry(h, w, ch, cw);
                rgb.resize((0, 0, h, w), (rh, rw), filter).pad_to(ch, cw, top, left)
            }
        }
    }

    /// The classic ten-crop (Krizhevsky et al. 2012): the four corners and the centre of the
    /// image resized as for evaluation, and their mirror images.
    fn ten_views(&self, rgb: &Rgb, filter: Filter) -> Vec<Rgb> {
        let [ch, cw] = self.crop_size;
        let shorter = match self.resize {
            Resize::ShorterSide { resize_size } => resize_size,
            Resize::CropFraction { crop_fraction } => (ch.min(cw) as f64 / crop_fraction).round() as usize,
            Resize::Exact | Resize::Pad => (ch.min(cw) as f64 / 0.875).round() as usize,
        };
        let (rh, rw) = rgb.shorter_side_size(shorter.max(ch).max(cw));
        let (bottom, right) = (rh - ch, rw - cw);
        let five = [
            (0, 0),
            (0, right),
            (bottom, 0),
            (bottom, right),
            (bottom / 2, right / 2),
        ];
        let whole = (0, 0, rgb.h, rgb.w);
        let crops: Vec<Rgb> = five
            .iter()
            .map(|&(t, l)| rgb.resize_crop(whole, (rh, rw), (t, l, ch, cw), filter))
            .collect();
        let flipped: Vec<Rgb> = crops.iter().map(Rgb::flip_horizontal).collect();
        crops.into_iter().chain(flipped).collect()
    }

    /// `(pixel · scale − mean) / std` per channel, in the weights' channel order, as 3×H×W.
    fn normalize(&self, v: &Rgb, device: &Device) -> Result<Tensor> {
        let order = match self.channel_order {
            ChannelOrder::RGB => [0, 1, 2],
            ChannelOrder::BGR => [2, 1, 0],
        };
        let n = v.h * v.w;
        let mut chw = vec![0f32; 3 * n];
        for (c, &src_c) in order.iter().enumerate() {
            let (m, s) = (self.mean[c], self.std[c]);
            for i in 0..n {
                chw[c * n + i] = ((v.px[i * 3 + src_c] as f64 * self.scale - m) / s) as f32;
            }
        }
        Ok(Tensor::from_vec(chw, (3, v.h, v.w), device)?)
    }
}

/// How many views of each image to classify (probabilities are averaged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Crops {
    /// The framework's own single view.
    #[default]
    Center,
    /// PhotoPrism's scheme for non-square photos: the largest squares at the start, centre and
    /// end of the long side (one view for a square image), each preprocessed as usual.
    Three,
    /// Four corners + centre and their mirror images.
    Ten,
}

/// An interleaved RGB image with f32 samples in 0..=255.
#[derive(Debug, Clone)]
struct Rgb {
    h: usize,
    w: usize,
    px: Vec<f32>,
}

impl Rgb {
    fn from_image(img: &DynamicImage) -> Self {
        let rgb = img.to_rgb8();
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        Self {
            h,
            w,
            px: rgb.into_raw().into_iter().map(f32::from).collect(),
        }
    }

    fn crop(&self, top: usize, left: usize, h: usize, w: usize) -> Rgb {
        let mut px = Vec::with_capacity(h * w * 3);
        for y in top..top + h {
            px.extend_from_slice(&self.px[(y * self.w + left) * 3..(y * self.w + left + w) * 3]);
        }
        Rgb { h, w, px }
    }

    /// This image at (`top`, `left`) of an `h`×`w` black canvas (`tf.image.pad_to_bounding_box`).
    fn pad_to(&self, h: usize, w: usize, top: usize, left: usize) -> Rgb {
        let mut px = vec![0f32; h * w * 3];
        for y in 0..self.h.min(h.saturating_sub(top)) {
            let n = self.w.min(w.saturating_sub(left)) * 3;
            let dst = ((top + y) * w + left) * 3;
            px[dst..dst + n].copy_from_slice(&self.px[y * self.w * 3..y * self.w * 3 + n]);
        }
        Rgb { h, w, px }
    }

    fn flip_horizontal(&self) -> Rgb {
        let mut px = Vec::with_capacity(self.px.len());
        for y in 0..self.h {
            for x in (0..self.w).rev() {
                px.extend_from_slice(&self.px[(y * self.w + x) * 3..(y * self.w + x) * 3 + 3]);
            }
        }
        Rgb {
            h: self.h,
            w: self.w,
            px,
        }
    }

    /// torchvision's `Resize(size)` size: the shorter side becomes `size`, the longer int(size·long/short).
    fn shorter_side_size(&self, size: usize) -> (usize, usize) {
        let (h, w) = (self.h as f64, self.w as f64);
        if self.h <= self.w {
            (size, (size as f64 * w / h) as usize)
        } else {
            ((size as f64 * h / w) as usize, size)
        }
    }

    /// (top, left, side) of the largest squares at the start, middle and end of the long side.
    fn square_windows(&self) -> Vec<(usize, usize, usize)> {
        let side = self.h.min(self.w);
        if self.h == self.w {
            return vec![(0, 0, side)];
        }
        let (slack, vertical) = (self.h.max(self.w) - side, self.h > self.w);
        [0, slack / 2, slack]
            .iter()
            .map(|&o| if vertical { (o, 0, side) } else { (0, o, side) })
            .collect()
    }

    fn resize(&self, window: (usize, usize, usize, usize), out: (usize, usize), filter: Filter) -> Rgb {
        self.resize_crop(window, out, (0, 0, out.0, out.1), filter)
    }

    /// The `crop` (top, left, h, w) of this image's `window` resized to `out`.
    fn resize_crop(
        &self,
        window: (usize, usize, usize, usize),
        out: (usize, usize),
        crop: (usize, usize, usize, usize),
        filter: Filter,
    ) -> Rgb {
        Rgb {
            h: crop.2,
            w: crop.3,
            px: resize(&self.px, (self.h, self.w), window, out, crop, filter),
        }
    }
}

/// The resampling filter.
#[derive(Debug, Clone, Copy)]
enum Filter {
    /// PIL's BILINEAR: triangle filter, widened by the scale factor when shrinking with
    /// antialias; with `round`, each pass's output rounded to 0..=255 as PIL's 8-bit resampler.
    Triangle { antialias: bool, round: bool },
    /// PIL's NEAREST: the input pixel under the output pixel's centre.
    Nearest,
    /// TF 1's and TF.js' `resizeBilinear(alignCorners = true)`: corner pixels map onto corner
    /// pixels (output o samples input o · (in − 1) / (out − 1)), two taps, no antialias.
    AlignCorners,
}

/// PIL's filter taps for one axis of a resize of `in_len` input samples (from `in_start`) to
/// `out_total`: for the outputs `out_first..out_first + count`, (first input index, weights).
fn taps(
    in_start: usize,
    in_len: usize,
    full_len: usize,
    out_total: usize,
    out_first: usize,
    count: usize,
    filter: Filter,
) -> Vec<(usize, Vec<f32>)> {
    let scale = in_len as f64 / out_total as f64;
    let outputs = out_first..out_first + count;
    let antialias = match filter {
        Filter::Nearest => {
            return outputs
                .map(|o| {
                    let src = in_start as f64 + (o as f64 + 0.5) * scale;
                    ((src.floor() as usize).min(full_len - 1), vec![1.0])
                })
                .collect()
        }
        Filter::AlignCorners => {
            // tfjs `resizeBilinear`: ratio (in − 1) / (out − 1), top = floor, bottom = min(ceil, in − 1)
            let ratio = if out_total > 1 {
                (in_len as f64 - 1.0) / (out_total as f64 - 1.0)
            } else {
                0.0
            };
            return outputs
                .map(|o| {
                    let src = in_start as f64 + o as f64 * ratio;
                    let lo = (src.floor() as usize).min(full_len - 1);
                    let frac = (src - lo as f64) as f32;
                    if frac > 0.0 && lo + 1 < full_len {
                        (lo, vec![1.0 - frac, frac])
                    } else {
                        (lo, vec![1.0])
                    }
                })
                .collect();
        }
        Filter::Triangle { antialias, .. } => antialias,
    };
    let support_scale = if antialias { scale.max(1.0) } else { 1.0 };
    let support = support_scale; // triangle filter support 1.0
    outputs
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

/// Resamples the window (top, left, height, width) of an RGB image of `full` (h, w) to
/// `out` = (h, w), computing only the part `crop` = (top, left, h, w) of that output: a resize
/// followed by a crop, without the full-size intermediate (a 1×100 000 panorama stays cheap).
fn resize(
    px: &[f32],
    full: (usize, usize),
    window: (usize, usize, usize, usize),
    out: (usize, usize),
    crop: (usize, usize, usize, usize),
    filter: Filter,
) -> Vec<f32> {
    let (fh, fw) = full;
    let (top, left, wh, ww) = window;
    let (ct, cl, ch, cw) = crop;
    let to_u8 = |v: f32| {
        if matches!(filter, Filter::Triangle { round: true, .. }) {
            v.round().clamp(0.0, 255.0)
        } else {
            v
        }
    };
    let tx = taps(left, ww, fw, out.1, cl, cw, filter);
    let ty = taps(top, wh, fh, out.0, ct, ch, filter);
    // horizontal pass over the input rows the vertical taps read, then the vertical pass
    let rows_lo = ty.iter().map(|(lo, _)| *lo).min().unwrap_or(0);
    let rows_hi = ty.iter().map(|(lo, w)| lo + w.len()).max().unwrap_or(0);
    let mut mid = vec![0f32; (rows_hi - rows_lo) * cw * 3];
    for y in rows_lo..rows_hi {
        for (x, (lo, w)) in tx.iter().enumerate() {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    acc += wk * px[(y * fw + lo + k) * 3 + c];
                }
                mid[((y - rows_lo) * cw + x) * 3 + c] = to_u8(acc);
            }
        }
    }
    let mut res = vec![0f32; ch * cw * 3];
    for (y, (lo, w)) in ty.iter().enumerate() {
        for x in 0..cw {
            for c in 0..3 {
                let mut acc = 0f32;
                for (k, wk) in w.iter().enumerate() {
                    acc += wk * mid[((lo + k - rows_lo) * cw + x) * 3 + c];
                }
                res[(y * cw + x) * 3 + c] = to_u8(acc);
            }
        }
    }
    res
}

/// Images with more pixels than this are refused before any pixel memory is allocated.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Decodes an image file (format guessed from its bytes) and applies its EXIF orientation;
/// refuses images above [`DEFAULT_MAX_PIXELS`].
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    load_image_with_limit(path, DEFAULT_MAX_PIXELS)
}

/// As [`load_image`] with a pixel budget of `max_pixels`, checked from the header.
pub fn load_image_with_limit(path: &Path, max_pixels: u64) -> Result<DynamicImage> {
    let err = |msg: String| Error::File {
        path: path.to_path_buf(),
        msg,
    };
    let reader = ImageReader::open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    decode(reader, max_pixels).map_err(err)
}

/// Decodes an image held in memory (format guessed from its bytes), as [`load_image_with_limit`].
pub fn decode_image(bytes: &[u8], max_pixels: u64) -> Result<DynamicImage> {
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::Message(format!("cannot read image: {e}")))?;
    decode(reader, max_pixels).map_err(Error::Message)
}

fn decode<R: std::io::BufRead + std::io::Seek>(
    mut reader: ImageReader<R>,
    max_pixels: u64,
) -> std::result::Result<DynamicImage, String> {
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(16).max(64 << 20)); // room for 16-bit RGBA
    reader.limits(limits);
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("not a supported image: {e}"))?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("image has no pixels ({w}×{h})"));
    }
    if w as u64 * h as u64 > max_pixels {
        return Err(format!("image is {w}×{h}, more than the limit of {max_pixels} pixels"));
    }
    let orientation = decoder.orientation().map_err(|e| format!("bad EXIF data: {e}"))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
    img.apply_orientation(orientation);
    Ok(img)
}
