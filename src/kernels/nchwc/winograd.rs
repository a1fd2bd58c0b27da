//! 3×3 stride-1 convolution by Winograd's F(m×m, 3×3) ([`crate::kernels::winograd`], Lavin &
//! Gray 2016) on channel-blocked data. Both transforms work on whole pixel vectors (16
//! channels at once, no transposes), and the α² products `M[ξ] = U[ξ] V[ξ]` are the blocked
//! 1×1's tiles ([`super::pointwise`]) with the Winograd tiles as its pixels: `V[ξ]` is laid
//! out `[C/16][tiles][16]`, as a blocked map of `tiles` pixels.
//!
//! Tasks over (image, block of tiles): input transform, α² products, output transform (bias,
//! residual and activation fused) on one thread while V and M are in its cache. With fewer
//! blocks than threads (small maps at batch 1) each step is spread over the threads instead:
//! input blocks, (ξ, pair of output blocks), output blocks.

use std::cell::Cell;

use rayon::prelude::*;

use super::{blocks, Geometry, Pointwise, Target, BLOCK};
use crate::kernels::winograd::{at2, at4, bt2, bt4, transform_weights, Tile, Value};
use crate::kernels::SyncPtr;
use crate::layers::Activation;

/// A 3×3 layer's filters transformed for one tile size, `U[ξ]` packed as α² blocked 1×1
/// weights, and its bias.
#[derive(Debug, Clone)]
pub struct Winograd {
    c: usize,
    o: usize,
    tile: Tile,
    u: Vec<Pointwise>,
    bias: Vec<f32>,
}

impl Winograd {
    /// `weight`: O×C×3×3; `bias`: O values.
    pub fn new(weight: &[f32], bias: Option<&[f32]>, o: usize, c: usize, tile: Tile) -> Self {
        let u = transform_weights(weight, o, c, tile)
            .chunks_exact(o * c)
            .map(|u| Pointwise::new(u, None, o, c))
            .collect();
        let mut b = vec![0f32; blocks(o) * BLOCK];
        if let Some(bias) = bias {
            b[..o].copy_from_slice(bias);
        }
        Self { c, o, tile, u, bias: b }
    }
}

/// 16 channels of one pixel or transform point, one AVX-512 register. The operations are
/// inlined into the transforms (compiled for AVX-512), where the intrinsics then inline too.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V16(std::arch::x86_64::__m512);

#[cfg(target_arch = "x86_64")]
impl std::ops::Add for V16 {
    type Output = V16;
    #[inline(always)]
    fn add(self, o: V16) -> V16 {
        // SAFETY: only built in the AVX-512 transforms (see V16)
        V16(unsafe { std::arch::x86_64::_mm512_add_ps(self.0, o.0) })
    }
}

#[cfg(target_arch = "x86_64")]
impl std::ops::Sub for V16 {
    type Output = V16;
    #[inline(always)]
    fn sub(self, o: V16) -> V16 {
        // SAFETY: as in `add`
        V16(unsafe { std::arch::x86_64::_mm512_sub_ps(self.0, o.0) })
    }
}

#[cfg(target_arch = "x86_64")]
impl std::ops::Mul<f32> for V16 {
    type Output = V16;
    #[inline(always)]
    fn mul(self, k: f32) -> V16 {
        use std::arch::x86_64::*;
        // SAFETY: as in `add`
        V16(unsafe { _mm512_mul_ps(self.0, _mm512_set1_ps(k)) })
    }
}

#[cfg(target_arch = "x86_64")]
impl Value for V16 {}

#[cfg(target_arch = "x86_64")]
impl V16 {
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn zero() -> V16 {
        V16(std::arch::x86_64::_mm512_setzero_ps())
    }

    /// # Safety
    /// The CPU has AVX-512F; `p` points to 16 readable values.
    #[inline(always)]
    unsafe fn load(p: *const f32) -> V16 {
        V16(std::arch::x86_64::_mm512_loadu_ps(p))
    }

    /// # Safety
    /// The CPU has AVX-512F; `p` points to 16 writable values.
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        std::arch::x86_64::_mm512_storeu_ps(p, self.0)
    }
}

thread_local! {
    /// Per-thread scratch: V and M of a block of tiles.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y = act(conv3×3(x) + b (+ residual))`, stride 1, on blocked data (`x` N×⌈C/16⌉ blocks,
/// `residual` N×⌈O/16⌉ blocks of the output's size), written into `to`. `g.stride` must be 1.
pub fn winograd_into(
    x: &[f32],
    n: usize,
    g: &Geometry,
    p: &Winograd,
    act: Activation,
    residual: Option<&[f32]>,
    to: Target,
) {
    assert_eq!(g.stride, 1, "winograd: stride 1 only");
    let (cb, ob) = (blocks(p.c), blocks(p.o));
    let plane_out = g.out_h * g.out_w * BLOCK;
    assert_eq!(x.len(), n * cb * g.in_h * g.in_w * BLOCK, "winograd input size");
    if let Some(r) = residual {
        assert_eq!(r.len(), n * ob * plane_out, "winograd residual size");
    }
    assert!(to.first + ob <= to.blocks, "winograd target blocks");
    assert_eq!(to.y.len(), n * to.blocks * plane_out, "winograd target size");
    let m = p.tile.m();
    let tiles_w = g.out_w.div_ceil(m);
    let tiles = g.out_h.div_ceil(m) * tiles_w;
    let threads = rayon::current_num_threads();
    // blocks of at most 48 tiles (F(4×4): 1.7 MB of V at 256 channels), as many per image as
    // a multiple of the threads at batch 1
    let mut per_image = tiles.div_ceil(48);
    if n == 1 {
        per_image = per_image.next_multiple_of(threads);
    }
    let block = tiles.div_ceil(per_image);
    let per_image = tiles.div_ceil(block);
    let out = SyncPtr(to.y.as_mut_ptr().cast::<f32>());
    let run = |task: usize, wide: bool| {
        let (img, b) = (task / per_image, task % per_image);
        let t0 = b * block;
        let job = Job {
            x: &x[img * cb * g.in_h * g.in_w * BLOCK..][..cb * g.in_h * g.in_w * BLOCK],
            residual: residual.map(|r| &r[img * ob * plane_out..][..ob * plane_out]),
            p,
            g,
            act,
            tiles_w,
            t0,
            nt: block.min(tiles - t0),
            // SAFETY: image img's first target block, in bounds (checked above)
            y: unsafe { out.add((img * to.blocks + to.first) * plane_out) },
        };
        let mut scratch = SCRATCH.take();
        // SAFETY: this task alone writes tiles t0..t0 + nt of image img
        unsafe { job.run(&mut scratch, wide) };
        SCRATCH.set(scratch);
    };
    let tasks = n * per_image;
    if tasks >= threads {
        (0..tasks).into_par_iter().for_each(|t| run(t, false));
    } else {
        (0..tasks).for_each(|t| run(t, true));
    }
}

/// Tiles `t0..t0 + nt` (row-major over the ⌈Ho/m⌉×⌈Wo/m⌉ grid) of one image.
struct Job<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    p: &'a Winograd,
    g: &'a Geometry,
    act: Activation,
    tiles_w: usize,
    t0: usize,
    nt: usize,
    /// The image's output at the layer's first target block.
    y: SyncPtr,
}

impl Job<'_> {
    /// Input transform, products and output transform of the block; with `wide`, each step
    /// spread over the threads.
    ///
    /// # Safety
    /// The CPU has AVX-512F; no other task writes these tiles.
    unsafe fn run(&self, scratch: &mut Vec<f32>, wide: bool) {
        let (cb, ob) = (blocks(self.p.c), blocks(self.p.o));
        let aa = self.p.u.len();
        let (v_len, m_len) = (aa * cb * self.nt * BLOCK, aa * ob * self.nt * BLOCK);
        scratch.resize(v_len + m_len, 0.0);
        let (v, m) = scratch.split_at_mut(v_len);
        let (v, m) = (SyncPtr(v.as_mut_ptr()), SyncPtr(m.as_mut_ptr()));
        let pairs = ob.div_ceil(2);
        // SAFETY (all three steps): each call writes its own blocks of V, M or the output
        #[cfg(target_arch = "x86_64")]
        if wide {
            (0..cb).into_par_iter().for_each(|b| unsafe { self.input(b, v) });
            (0..aa * pairs)
                .into_par_iter()
                .for_each(|k| unsafe { self.product(k / pairs, k % pairs, v, m) });
            (0..ob).into_par_iter().for_each(|b| unsafe { self.output(b, m) });
        } else {
            (0..cb).for_each(|b| self.input(b, v));
            (0..aa * pairs).for_each(|k| self.product(k / pairs, k % pairs, v, m));
            (0..ob).for_each(|b| self.output(b, m));
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("blocked kernels run on AVX-512 only ({v_len}, {m_len}, {wide}, {pairs})");
    }

    /// `V[ξ][b][t] = (Bᵀ d B)[ξ]` for input block `b` and every tile of the block.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `v` holds V.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn input(&self, b: usize, v: SyncPtr) {
        match self.p.tile {
            Tile::F2x2 => self.input_t::<2, 4>(b, v, bt2),
            Tile::F4x4 => self.input_t::<4, 6>(b, v, bt4),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn input_t<const M: usize, const A: usize>(&self, b: usize, v: SyncPtr, bt: fn([V16; A]) -> [V16; A]) {
        let g = self.g;
        let cb = blocks(self.p.c);
        let plane = &self.x[b * g.in_h * g.in_w * BLOCK..][..g.in_h * g.in_w * BLOCK];
        for t in 0..self.nt {
            let (ty, tx) = ((self.t0 + t) / self.tiles_w, (self.t0 + t) % self.tiles_w);
            let top = (ty * M) as isize - g.pad_top as isize;
            let left = (tx * M) as isize - g.pad_left as isize;
            let inside = top >= 0 && left >= 0 && top as usize + A <= g.in_h && left as usize + A <= g.in_w;
            let d: [[V16; A]; A] = std::array::from_fn(|i| {
                std::array::from_fn(|j| {
                    let (iy, ix) = (top + i as isize, left + j as isize);
                    if inside || (0..g.in_h as isize).contains(&iy) && (0..g.in_w as isize).contains(&ix) {
                        V16::load(plane.as_ptr().add((iy as usize * g.in_w + ix as usize) * BLOCK))
                    } else {
                        V16::zero()
                    }
                })
            });
            // Bᵀ d: down each column; then (Bᵀ d) B: across each row
            let cols: [[V16; A]; A] = std::array::from_fn(|j| bt(std::array::from_fn(|i| d[i][j])));
            let rows: [[V16; A]; A] = std::array::from_fn(|i| std::array::from_fn(|j| cols[j][i]));
            for (i, row) in rows.into_iter().enumerate() {
                let row = bt(row);
                for (j, val) in row.into_iter().enumerate() {
                    val.store(v.add((((A * i + j) * cb + b) * self.nt + t) * BLOCK).0);
                }
            }
        }
    }

    /// `M[ξ]` for output blocks 2q, 2q + 1: the blocked 1×1's tiles over V[ξ]'s tiles.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `v` and `m` hold V and M.
    #[cfg(target_arch = "x86_64")]
    unsafe fn product(&self, xi: usize, q: usize, v: SyncPtr, m: SyncPtr) {
        let (cb, ob, nt) = (blocks(self.p.c), blocks(self.p.o), self.nt);
        let u = &self.p.u[xi];
        let x = std::slice::from_raw_parts(v.add(xi * cb * nt * BLOCK).0, cb * nt * BLOCK);
        let y = m.add((xi * ob + 2 * q) * nt * BLOCK).0;
        super::pair_tiles(x, u, q, nt, 0..nt, Activation::None, y, None);
    }

    /// The output tiles of block `b`: `Aᵀ M A + bias (+ residual)`, activated, the pixels
    /// inside the map.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `m` holds M; this call alone writes block `b` of these tiles.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn output(&self, b: usize, m: SyncPtr) {
        match self.p.tile {
            Tile::F2x2 => self.output_t::<2, 4>(b, m, at2),
            Tile::F4x4 => self.output_t::<4, 6>(b, m, at4),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn output_t<const M: usize, const A: usize>(&self, b: usize, m: SyncPtr, at: fn([V16; A]) -> [V16; M]) {
        use std::arch::x86_64::*;
        let g = self.g;
        let ob = blocks(self.p.o);
        let bias = V16::load(self.p.bias.as_ptr().add(b * BLOCK));
        let plane = g.out_h * g.out_w * BLOCK;
        let y = self.y.add(b * plane).0;
        let res = self.residual.map(|r| r[b * plane..][..plane].as_ptr());
        for t in 0..self.nt {
            let (ty, tx) = ((self.t0 + t) / self.tiles_w, (self.t0 + t) % self.tiles_w);
            let mv: [[V16; A]; A] = std::array::from_fn(|i| {
                std::array::from_fn(|j| V16::load(m.add((((A * i + j) * ob + b) * self.nt + t) * BLOCK).0))
            });
            // Aᵀ M: down each column; then (Aᵀ M) A: across each row
            let cols: [[V16; M]; A] = std::array::from_fn(|j| at(std::array::from_fn(|i| mv[i][j])));
            let rows: [[V16; A]; M] = std::array::from_fn(|i| std::array::from_fn(|j| cols[j][i]));
            for (i, row) in rows.into_iter().enumerate().take(g.out_h - ty * M) {
                let row = at(row);
                for (j, val) in row.into_iter().enumerate().take(g.out_w - tx * M) {
                    let at = ((ty * M + i) * g.out_w + tx * M + j) * BLOCK;
                    let mut val = val + bias;
                    if let Some(r) = res {
                        val = val + V16::load(r.add(at));
                    }
                    let val = match self.act {
                        Activation::None => val,
                        Activation::Relu => V16(_mm512_max_ps(val.0, _mm512_setzero_ps())),
                        Activation::Relu6 => V16(_mm512_min_ps(
                            _mm512_max_ps(val.0, _mm512_setzero_ps()),
                            _mm512_set1_ps(6.0),
                        )),
                    };
                    val.store(y.add(at));
                }
            }
        }
    }
}
