//! Drawing results onto an image: for detections a rectangle per box in its class's colour and a
//! "label score%" tag in an 8×8 bitmap font (`font8x8`, public-domain glyphs), scaled with the
//! image; for poses each person's skeleton in its own colour.

use image::{DynamicImage, Rgb, RgbImage};

use crate::detect::Detections;

/// A class's colour: a fixed, well-separated palette (Tableau 10) by class id.
pub fn class_colour(class_id: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 10] = [
        [31, 119, 180],
        [255, 127, 14],
        [44, 160, 44],
        [214, 39, 40],
        [148, 103, 189],
        [140, 86, 75],
        [227, 119, 194],
        [127, 127, 127],
        [188, 189, 34],
        [23, 190, 207],
    ];
    Rgb(PALETTE[class_id % PALETTE.len()])
}

/// Line width and font scale for an image: 2 px and 2× up to 600 px on the short side, more above.
pub fn line_width(img_w: u32, img_h: u32) -> u32 {
    (img_w.min(img_h) / 300).max(2)
}

fn fill(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

/// `text` at (x, y) (its top-left), glyphs scaled by `scale`, on a filled background.
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, scale: i64, fg: Rgb<u8>, bg: Rgb<u8>) {
    use font8x8::UnicodeFonts;
    let n = s.chars().count() as i64;
    fill(img, x, y, x + n * 8 * scale + 2 * scale, y + 8 * scale + 2 * scale, bg);
    for (i, ch) in s.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?'));
        let Some(rows) = glyph else { continue };
        for (gy, bits) in rows.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 1 {
                    let px = x + scale + (i as i64 * 8 + gx) * scale;
                    let py = y + scale + gy as i64 * scale;
                    fill(img, px, py, px + scale, py + scale, fg);
                }
            }
        }
    }
}

/// The image with every detection's box and tag drawn (best scores last, so on top).
pub fn draw_detections(img: &DynamicImage, dets: &Detections) -> RgbImage {
    let mut out = img.to_rgb8();
    let t = line_width(out.width(), out.height()) as i64;
    let mut order: Vec<_> = dets.detections.iter().collect();
    order.sort_by(|a, b| a.score.total_cmp(&b.score));
    for d in order {
        let c = class_colour(d.class_id);
        let b = d.bbox;
        let (x0, y0, x1, y1) = (
            b.x0.round() as i64,
            b.y0.round() as i64,
            b.x1.round() as i64,
            b.y1.round() as i64,
        );
        fill(&mut out, x0, y0, x1, y0 + t, c); // top
        fill(&mut out, x0, y1 - t, x1, y1, c); // bottom
        fill(&mut out, x0, y0, x0 + t, y1, c); // left
        fill(&mut out, x1 - t, y0, x1, y1, c); // right
        let tag = format!("{} {:.0}%", d.label, d.score * 100.0);
        let tag_h = 10 * t;
        let ty = if y0 >= tag_h { y0 - tag_h } else { y0 + t }; // above the box, inside at the top edge
        text(&mut out, x0, ty, &tag, t, Rgb([255, 255, 255]), c);
    }
    out
}

/// A line `t` pixels thick from (x0, y0) to (x1, y1): t×t squares stamped along it.
fn line(img: &mut RgbImage, (x0, y0): (f32, f32), (x1, y1): (f32, f32), t: i64, c: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as i64;
    for i in 0..=steps {
        let f = i as f32 / steps as f32;
        let (x, y) = ((x0 + (x1 - x0) * f).round() as i64, (y0 + (y1 - y0) * f).round() as i64);
        fill(img, x - t / 2, y - t / 2, x - t / 2 + t, y - t / 2 + t, c);
    }
}

/// The image with every pose's skeleton drawn (COCO limbs, [`crate::pose::SKELETON`]) between
/// keypoints scoring at least `min_keypoint_score`, a dot on each such keypoint, one colour
/// per person and its score as a tag by the nose or highest keypoint.
pub fn draw_poses(img: &DynamicImage, poses: &crate::pose_task::Poses, min_keypoint_score: f32) -> RgbImage {
    let mut out = img.to_rgb8();
    let t = line_width(out.width(), out.height()) as i64;
    for (i, pose) in poses.poses.iter().enumerate() {
        let c = class_colour(i);
        let kp = &pose.keypoints;
        let seen = |k: usize| {
            kp.get(k)
                .filter(|p| p.score >= min_keypoint_score && p.x.is_finite() && p.y.is_finite())
        };
        for &(a, b) in crate::pose::SKELETON.iter() {
            if let (Some(p), Some(q)) = (seen(a), seen(b)) {
                line(&mut out, (p.x, p.y), (q.x, q.y), t, c);
            }
        }
        for p in kp
            .iter()
            .filter(|p| p.score >= min_keypoint_score && p.x.is_finite() && p.y.is_finite())
        {
            let (x, y, r) = (p.x.round() as i64, p.y.round() as i64, 2 * t);
            fill(&mut out, x - r, y - r, x + r, y + r, Rgb([255, 255, 255]));
            fill(&mut out, x - r + t / 2, y - r + t / 2, x + r - t / 2, y + r - t / 2, c);
        }
        if let Some(top) = kp
            .iter()
            .filter(|p| p.score >= min_keypoint_score && p.x.is_finite() && p.y.is_finite())
            .min_by(|a, b| a.y.total_cmp(&b.y))
        {
            let tag = format!("{:.0}%", pose.score * 100.0);
            let ty = (top.y.round() as i64 - 12 * t).max(0);
            text(&mut out, top.x.round() as i64, ty, &tag, t, Rgb([255, 255, 255]), c);
        }
    }
    out
}
