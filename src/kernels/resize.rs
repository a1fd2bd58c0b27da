//! Bilinear ×2 upsampling with half-pixel centres: TensorFlow's `resize_bilinear` with
//! `half_pixel_centers` (Keras' `UpSampling2D(interpolation="bilinear")`) and PyTorch's
//! `interpolate(scale_factor=2, mode="bilinear", align_corners=False)`. At exactly twice the
//! size, output sample 2i sits at input position i − 1/4 and 2i + 1 at i + 1/4, so each is
//! 3/4 of its nearer input and 1/4 of the next one out, edges clamped: two fixed two-tap passes.

use rayon::prelude::*;

/// `planes` maps of `h`×`w` (contiguous, row-major) → `planes` maps of 2h×2w.
pub fn upsample2x_bilinear(x: &[f32], planes: usize, h: usize, w: usize) -> Vec<f32> {
    assert_eq!(x.len(), planes * h * w, "upsample2x_bilinear: input size");
    let (oh, ow) = (2 * h, 2 * w);
    let mut out = vec![0f32; planes * oh * ow];
    if h == 0 || w == 0 {
        return out;
    }
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(dst, src)| plane(src, h, w, dst));
    out
}

/// One plane: each input row widened to 2w (horizontal pass), then the two output rows
/// around it blended with its neighbour rows (vertical pass).
fn plane(src: &[f32], h: usize, w: usize, dst: &mut [f32]) {
    let ow = 2 * w;
    let wide: Vec<f32> = src.chunks_exact(w).flat_map(widen).collect();
    for i in 0..h {
        let (up, here, down) = (i.saturating_sub(1), i, (i + 1).min(h - 1));
        let (a, b, c) = (
            &wide[up * ow..][..ow],
            &wide[here * ow..][..ow],
            &wide[down * ow..][..ow],
        );
        let (top, bottom) = dst[2 * i * ow..(2 * i + 2) * ow].split_at_mut(ow);
        for x in 0..ow {
            top[x] = 0.75 * b[x] + 0.25 * a[x];
            bottom[x] = 0.75 * b[x] + 0.25 * c[x];
        }
    }
}

/// A row of w samples → 2w: 3/4 · nearer + 1/4 · next out, the ends clamped.
fn widen(row: &[f32]) -> impl Iterator<Item = f32> + '_ {
    let w = row.len();
    (0..w).flat_map(move |j| {
        let (l, c, r) = (row[j.saturating_sub(1)], row[j], row[(j + 1).min(w - 1)]);
        [0.75 * c + 0.25 * l, 0.75 * c + 0.25 * r]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition: output (y, x) samples input position ((y + ½) / 2 − ½, (x + ½) / 2 − ½)
    /// bilinearly, coordinates clamped to the map (TF's `half_pixel_centers` kernel).
    fn naive(src: &[f32], h: usize, w: usize) -> Vec<f32> {
        let at =
            |y: isize, x: isize| src[y.clamp(0, h as isize - 1) as usize * w + x.clamp(0, w as isize - 1) as usize];
        let mut out = Vec::with_capacity(4 * h * w);
        for y in 0..2 * h {
            let fy = ((y as f64 + 0.5) / 2.0 - 0.5).max(0.0);
            let (y0, ly) = (fy.floor() as isize, fy - fy.floor());
            for x in 0..2 * w {
                let fx = ((x as f64 + 0.5) / 2.0 - 0.5).max(0.0);
                let (x0, lx) = (fx.floor() as isize, fx - fx.floor());
                let top = at(y0, x0) as f64 * (1.0 - lx) + at(y0, x0 + 1) as f64 * lx;
                let bottom = at(y0 + 1, x0) as f64 * (1.0 - lx) + at(y0 + 1, x0 + 1) as f64 * lx;
                out.push((top * (1.0 - ly) + bottom * ly) as f32);
            }
        }
        out
    }

    proptest! {
        #[test]
        fn matches_the_definition(
            planes in 1usize..4, h in 1usize..9, w in 1usize..9,
            seed in prop::collection::vec(-100.0f32..100.0, 256),
        ) {
            let x: Vec<f32> = (0..planes * h * w).map(|i| seed[i % seed.len()] + i as f32 * 0.01).collect();
            let got = upsample2x_bilinear(&x, planes, h, w);
            for p in 0..planes {
                let want = naive(&x[p * h * w..][..h * w], h, w);
                let g = &got[p * 4 * h * w..][..4 * h * w];
                for (a, b) in g.iter().zip(&want) {
                    prop_assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b} ({h}×{w})");
                }
            }
        }
    }

    #[test]
    fn a_known_row() {
        // 1×2 → 2×4: [0, 4] → [0, 1, 3, 4] on both rows
        assert_eq!(
            upsample2x_bilinear(&[0.0, 4.0], 1, 1, 2),
            vec![0.0, 1.0, 3.0, 4.0, 0.0, 1.0, 3.0, 4.0]
        );
    }
}
