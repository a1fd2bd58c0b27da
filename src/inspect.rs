//! Looking inside a network: activations of named layers as feature-map grids with per-channel
//! statistics, and class activation maps (Zhou et al. 2016, "Learning Deep Features for
//! Discriminative Localization").

use std::collections::HashSet;

use candle_core::{DType, Tensor};
use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::pretrained::Model;

/// The outputs of the named layers (module paths as in `summary`) for one image, 1×C×h×w each.
pub fn activations(model: &Model, img: &DynamicImage, layers: &[String]) -> Result<Vec<(String, Tensor)>> {
    let x = model.meta.preprocessing.apply(img, model.device())?.unsqueeze(0)?;
    let wanted: HashSet<String> = layers.iter().cloned().collect();
    let (out, events) = crate::trace::trace(move |n| wanted.contains(n), || model.net.forward(&x));
    out?;
    layers
        .iter()
        .map(|l| match events.iter().find(|e| &e.name == l) {
            Some(e) => Ok((l.clone(), e.tensor.clone().expect("kept"))),
            None => {
                let known: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
                Err(Error::Message(format!(
                    "{} has no layer `{l}`; layers: {}",
                    model.meta.variant,
                    known.join(", ")
                )))
            }
        })
        .collect()
}

/// Mean, standard deviation and sparsity (fraction of exact zeros) of one channel.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelStats {
    pub channel: usize,
    pub mean: f32,
    pub std: f32,
    pub sparsity: f32,
}

/// Per-channel statistics of a 1×C×h×w activation.
pub fn channel_stats(t: &Tensor) -> Result<Vec<ChannelStats>> {
    let v: Vec<Vec<f32>> = t.squeeze(0)?.flatten_from(1)?.to_dtype(DType::F32)?.to_vec2()?;
    Ok(v.iter()
        .enumerate()
        .map(|(channel, c)| {
            let n = c.len() as f64;
            let mean = c.iter().map(|&x| x as f64).sum::<f64>() / n;
            let var = c.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
            let zeros = c.iter().filter(|&&x| x == 0.0).count() as f64;
            ChannelStats {
                channel,
                mean: mean as f32,
                std: var.sqrt() as f32,
                sparsity: (zeros / n) as f32,
            }
        })
        .collect())
}

/// 3×5 pixel digits for tile labels.
const DIGITS: [[u8; 5]; 10] = [
    [0b111, 0b101, 0b101, 0b101, 0b111],
    [0b010, 0b110, 0b010, 0b010, 0b111],
    [0b111, 0b001, 0b111, 0b100, 0b111],
    [0b111, 0b001, 0b111, 0b001, 0b111],
    [0b101, 0b101, 0b111, 0b001, 0b001],
    [0b111, 0b100, 0b111, 0b001, 0b111],
    [0b111, 0b100, 0b111, 0b101, 0b111],
    [0b111, 0b001, 0b010, 0b010, 0b010],
    [0b111, 0b101, 0b111, 0b101, 0b111],
    [0b111, 0b101, 0b111, 0b001, 0b111],
];

fn draw_number(img: &mut RgbImage, x0: u32, y0: u32, n: usize) {
    for (i, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits >> (2 - col) & 1 == 1 {
                    let (x, y) = (x0 + i as u32 * 4 + col, y0 + row as u32);
                    if x < img.width() && y < img.height() {
                        img.put_pixel(x, y, Rgb([255, 255, 0]));
                    }
                }
            }
        }
    }
}

/// Tile geometry of a feature-map grid: (columns, rows, tile size in pixels, magnification).
pub fn grid_layout(channels: usize, h: usize, w: usize) -> (usize, usize, (usize, usize), usize) {
    let cols = (channels as f64).sqrt().ceil() as usize;
    let rows = channels.div_ceil(cols);
    let scale = (32 / h.min(w)).max(1);
    (cols, rows, (h * scale + 1, w * scale + 1), scale)
}

/// A grid of the C feature maps of a 1×C×h×w activation, each normalised to its own min–max,
/// magnified to at least 32 pixels, with its channel index in the corner.
pub fn feature_grid(t: &Tensor) -> Result<RgbImage> {
    let t = t.squeeze(0)?.to_dtype(DType::F32)?;
    let (c, h, w) = t.dims3()?;
    let maps: Vec<Vec<f32>> = t.flatten_from(1)?.to_vec2()?;
    let (cols, rows, (th, tw), scale) = grid_layout(c, h, w);
    let mut img = RgbImage::from_pixel((cols * tw) as u32, (rows * th) as u32, Rgb([40, 40, 40]));
    for (k, m) in maps.iter().enumerate() {
        let (lo, hi) = m
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
        let range = if hi > lo { hi - lo } else { 1.0 };
        let (x0, y0) = ((k % cols) * tw, (k / cols) * th);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let v = ((m[(y / scale) * w + x / scale] - lo) / range * 255.0) as u8;
                img.put_pixel((x0 + x) as u32, (y0 + y) as u32, Rgb([v, v, v]));
            }
        }
        draw_number(&mut img, x0 as u32 + 1, y0 as u32 + 1, k);
    }
    Ok(img)
}

/// A class activation map laid over the photo it came from.
pub struct Cam {
    /// Output index of the class shown.
    pub class: usize,
    pub probability: f32,
    /// Heat in [0, 1] at every photo pixel (0 outside the part of the photo the network saw).
    pub heat: ImageBuffer<Luma<f32>, Vec<f32>>,
}

/// The class activation map of `class` (default: the top-1 class) for a photo.
pub fn class_activation_map(model: &Model, img: &DynamicImage, class: Option<usize>) -> Result<Cam> {
    let x = model.meta.preprocessing.apply(img, model.device())?.unsqueeze(0)?;
    let f = model.net.forward_features(&x)?;
    let Some(maps) = model.net.class_activation_maps(&f)? else {
        return Err(Error::Message(format!(
            "{}: class activation maps need a classifier right after global average pooling (ResNet, MobileNet, \
             SqueezeNet, Inception); this architecture has none",
            model.meta.variant
        )));
    };
    let probs: Vec<f32> = candle_nn::ops::softmax_last_dim(&model.net.forward_head(&f, false)?)?
        .squeeze(0)?
        .to_vec1()?;
    let class = match class {
        Some(c) if c < probs.len() => c,
        Some(c) => {
            return Err(Error::Message(format!(
                "class {c} is out of range (the model has {} outputs)",
                probs.len()
            )))
        }
        None => probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| i)
            .unwrap_or(0),
    };
    let m = maps.squeeze(0)?.get(class)?.to_dtype(DType::F32)?; // h×w
    let (mh, mw) = m.dims2()?;
    let v: Vec<f32> = m.flatten_all()?.to_vec1()?;
    let (lo, hi) = v
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
    let norm: Vec<f32> = v
        .iter()
        .map(|&x| if hi > lo { (x - lo) / (hi - lo) } else { 0.0 })
        .collect();
    let small = ImageBuffer::<Luma<f32>, Vec<f32>>::from_raw(mw as u32, mh as u32, norm).expect("sizes agree");
    let (pw, ph) = (img.width(), img.height());
    let (top, left, rh, rw) = model.meta.preprocessing.view_region(pw as usize, ph as usize);
    let region = image::imageops::resize(
        &small,
        rw.round().max(1.0) as u32,
        rh.round().max(1.0) as u32,
        image::imageops::FilterType::Triangle,
    );
    let mut heat = ImageBuffer::<Luma<f32>, Vec<f32>>::new(pw, ph);
    image::imageops::overlay(&mut heat, &region, left.round() as i64, top.round() as i64);
    Ok(Cam {
        class,
        probability: probs[class],
        heat,
    })
}

/// The "jet" colour map: blue (0) → cyan → yellow → red (1).
fn jet(v: f32) -> [u8; 3] {
    let c = |x: f32| (x.clamp(0.0, 1.0) * 255.0) as u8;
    [
        c(1.5 - (4.0 * v - 3.0).abs()),
        c(1.5 - (4.0 * v - 2.0).abs()),
        c(1.5 - (4.0 * v - 1.0).abs()),
    ]
}

/// The photo with the heat map blended over it (half and half), same size as the photo.
pub fn overlay(img: &DynamicImage, heat: &ImageBuffer<Luma<f32>, Vec<f32>>) -> RgbImage {
    let photo = img.to_rgb8();
    RgbImage::from_fn(photo.width(), photo.height(), |x, y| {
        let p = photo.get_pixel(x, y).0;
        let j = jet(heat.get_pixel(x, y).0[0]);
        Rgb([0, 1, 2].map(|i| ((p[i] as u16 + j[i] as u16) / 2) as u8))
    })
}
