//! 3×3 stride-1 convolution by Winograd's minimal filtering F(m×m, 3×3) (Lavin & Gray 2016,
//! "Fast Algorithms for Convolutional Neural Networks", §4), for output tiles of m = 2 or 4:
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A` per tile, α = m + 2 points per side, so a tile costs α²
//! multiplies per input/output channel pair instead of 9m²: 2.25× fewer for F(2×2), 4× fewer
//! for F(4×4).
//!
//! - F(2×2, 3×3) (their eq. 7-8): coefficients 0, ±1, ±½, exact up to a plain sum's rounding.
//! - F(4×4, 3×3) (their eq. 9-10, points 0, ±1, ±2, ∞): coefficients up to 8 and 1/24, so
//!   f32 results differ from the direct sum by a few 1e-6 of the output scale (the layer tests
//!   allow 3e-5 for it; model parity holds at 1e-4). [`Tile::for_output`] picks it for maps
//!   from 12×12, where its 4× fewer tiles still fill the GEMM.
//!
//! - The filter transform `U = G g Gᵀ` runs once per tile size ([`Filters::new`]): α² matrices
//!   O×C, packed for our GEMM.
//! - Per task (one image, a block of tiles): the input transform writes α² matrices C×tiles,
//!   α² GEMMs give α² matrices O×tiles, the output transform adds bias (and residual), applies
//!   the activation and writes the m×m tiles. Both transforms run over whole tile rows with
//!   unit-stride loops: rows first (element-wise over a padded input row), then columns on the
//!   row split into its m column phases.

use std::cell::Cell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::conv::ConvGeometry;
use super::sgemm::{self, PanelsA};
use super::{gemm_f32, Dest, Mat, SyncPtr};
use crate::layers::Activation;

/// The output tile of a Winograd convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tile {
    /// F(2×2, 3×3): 4×4 input tiles, 16 GEMMs.
    F2x2,
    /// F(4×4, 3×3): 6×6 input tiles, 36 GEMMs (Lavin & Gray's points 0, ±1, ±2).
    F4x4,
}

impl Tile {
    /// Output tile side m.
    pub const fn m(self) -> usize {
        match self {
            Tile::F2x2 => 2,
            Tile::F4x4 => 4,
        }
    }

    /// Input tile side α = m + 2.
    pub const fn alpha(self) -> usize {
        self.m() + 2
    }

    /// F(4×4) where the output map is at least 12×12. Measured one layer at a time against
    /// F(2×2) (2 threads, AVX2, batch 1 and 8, alternating calls, median time): 1.2–1.45×
    /// faster on 12×12 to 56×56 maps and 1.2–1.7× on VGG's, but 2× slower on 7×7 and 8×8
    /// maps, where its 4 tiles per image leave the GEMMs mostly empty columns.
    pub fn for_output(out_h: usize, out_w: usize) -> Tile {
        if out_h >= 12 && out_w >= 12 {
            Tile::F4x4
        } else {
            Tile::F2x2
        }
    }
}

/// The transformed filters `U[ξ]` (ξ = α·i + j) of one tile size, α² matrices O×C.
#[derive(Debug, Clone)]
pub struct Filters {
    tile: Tile,
    mats: Mats,
}

#[derive(Debug, Clone)]
enum Mats {
    /// Row-major, one after another, for the `gemm` crate.
    Plain(Vec<f32>),
    /// Packed once for our own GEMM ([`sgemm`]), where it runs on this CPU.
    Panels(Vec<PanelsA>),
}

impl Filters {
    /// Transforms 3×3 filters `weight` (O×C×3×3) for `tile` and packs them for the GEMM this
    /// CPU runs.
    pub fn new(weight: &[f32], out_channels: usize, in_channels: usize, tile: Tile) -> Self {
        let u = transform_weights(weight, out_channels, in_channels, tile);
        let mats = if sgemm::available() {
            let oc = out_channels * in_channels;
            Mats::Panels(
                u.chunks_exact(oc)
                    .map(|u| PanelsA::pack(u, out_channels, in_channels))
                    .collect(),
            )
        } else {
            Mats::Plain(u)
        };
        Self { tile, mats }
    }
}

/// A layer's Winograd filters, transformed for a tile size the first time a map that wants it
/// comes through ([`Tile::for_output`]; the map size is known only at run time), then kept.
#[derive(Debug, Clone)]
pub struct LazyFilters {
    out_channels: usize,
    in_channels: usize,
    f2x2: OnceLock<Filters>,
    f4x4: OnceLock<Filters>,
}

impl LazyFilters {
    pub fn new(out_channels: usize, in_channels: usize) -> Self {
        Self {
            out_channels,
            in_channels,
            f2x2: OnceLock::new(),
            f4x4: OnceLock::new(),
        }
    }

    fn slot(&self, tile: Tile) -> &OnceLock<Filters> {
        match tile {
            Tile::F2x2 => &self.f2x2,
            Tile::F4x4 => &self.f4x4,
        }
    }

    /// The filters for `tile`, transformed from `weight()` (O×C×3×3) on first use.
    pub fn get_or_init(&self, tile: Tile, weight: impl FnOnce() -> Vec<f32>) -> &Filters {
        self.slot(tile)
            .get_or_init(|| Filters::new(&weight(), self.out_channels, self.in_channels, tile))
    }

    /// The filters for `tile`, if transformed already.
    pub fn get(&self, tile: Tile) -> Option<&Filters> {
        self.slot(tile).get()
    }
}

/// `G g` for one column `g` of a 3×3 filter: α values (the rows of Lavin & Gray's G).
#[inline(always)]
fn g_rows(tile: Tile, g: [f32; 3]) -> [f32; 6] {
    let [g0, g1, g2] = g;
    match tile {
        Tile::F2x2 => [g0, 0.5 * (g0 + g1 + g2), 0.5 * (g0 - g1 + g2), g2, 0.0, 0.0],
        Tile::F4x4 => [
            g0 / 4.0,
            -(g0 + g1 + g2) / 6.0,
            -(g0 - g1 + g2) / 6.0,
            g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
            g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
            g2,
        ],
    }
}

/// `U[ξ][o][c]` (ξ = α·i + j) from 3×3 filters `weight` (O×C×3×3).
pub fn transform_weights(weight: &[f32], out_channels: usize, in_channels: usize, tile: Tile) -> Vec<f32> {
    let (oc, a) = (out_channels * in_channels, tile.alpha());
    assert_eq!(weight.len(), oc * 9, "winograd weight size");
    let mut u = vec![0f32; a * a * oc];
    for (k, g) in weight.chunks_exact(9).enumerate() {
        // G g: α×3, column by column
        let mut t = [[0f32; 3]; 6];
        for j in 0..3 {
            for (i, v) in g_rows(tile, [g[j], g[3 + j], g[6 + j]]).into_iter().enumerate() {
                t[i][j] = v;
            }
        }
        // (G g) Gᵀ: α×α
        for (i, row) in t.iter().take(a).enumerate() {
            for (j, v) in g_rows(tile, *row).into_iter().take(a).enumerate() {
                u[(a * i + j) * oc + k] = v;
            }
        }
    }
    u
}

/// The values the transforms below run on: one f32, or a vector of channels
/// ([`super::nchwc::winograd`]).
pub(crate) trait Value:
    Copy + std::ops::Add<Output = Self> + std::ops::Sub<Output = Self> + std::ops::Mul<f32, Output = Self>
{
}

impl Value for f32 {}

/// `Bᵀ d` for F(2×2): d0 − d2, d1 + d2, d2 − d1, d1 − d3.
#[inline(always)]
pub(crate) fn bt2<T: Value>([d0, d1, d2, d3]: [T; 4]) -> [T; 4] {
    [d0 - d2, d1 + d2, d2 - d1, d1 - d3]
}

/// `Bᵀ d` for F(4×4) (Lavin & Gray eq. 10).
#[inline(always)]
pub(crate) fn bt4<T: Value>([d0, d1, d2, d3, d4, d5]: [T; 6]) -> [T; 6] {
    let (p, q) = (d4 - d2 * 4.0, d3 - d1 * 4.0);
    let (r, s) = (d4 - d2, (d3 - d1) * 2.0);
    [
        d0 * 4.0 - d2 * 5.0 + d4,
        p + q,
        p - q,
        r + s,
        r - s,
        d1 * 4.0 - d3 * 5.0 + d5,
    ]
}

/// `Aᵀ m` for F(2×2): m0 + m1 + m2, m1 − m2 − m3.
#[inline(always)]
pub(crate) fn at2<T: Value>([m0, m1, m2, m3]: [T; 4]) -> [T; 2] {
    [m0 + m1 + m2, m1 - m2 - m3]
}

/// `Aᵀ m` for F(4×4) (Lavin & Gray eq. 10).
#[inline(always)]
pub(crate) fn at4<T: Value>([m0, m1, m2, m3, m4, m5]: [T; 6]) -> [T; 4] {
    let (s12, d12, s34, d34) = (m1 + m2, m1 - m2, m3 + m4, m3 - m4);
    [m0 + s12 + s34, d12 + d34 * 2.0, s12 + s34 * 4.0, d12 + d34 * 8.0 + m5]
}

thread_local! {
    /// Per-thread scratch: transformed inputs, GEMM outputs.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// `y = act(conv3×3(x, w) + b [+ residual])`, stride 1, dilation 1, one group, with the tile
/// size `u` was transformed for. Same contract as [`super::conv::conv2d_f32`].
pub fn winograd_f32(
    x: &[f32],
    u: &Filters,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
) -> Vec<f32> {
    let image = g.out_channels * g.out_h * g.out_w;
    // SAFETY: the call writes every value of the N×O×Ho×Wo output it is given.
    unsafe {
        super::new_output(g.batch, image, |dest| {
            winograd_f32_into(x, u, bias, act, residual, g, dest)
        })
    }
}

/// [`winograd_f32`] into `dest`, every value of it.
///
/// # Safety
/// As [`super::conv::conv2d_f32_into`].
pub(crate) unsafe fn winograd_f32_into(
    x: &[f32],
    u: &Filters,
    bias: Option<&[f32]>,
    act: Activation,
    residual: Option<&[f32]>,
    g: &ConvGeometry,
    dest: Dest,
) {
    assert!(
        g.kernel == (3, 3) && g.stride == 1 && g.dilation == 1 && g.groups == 1,
        "winograd: 3×3 stride 1 only"
    );
    let (c, o) = (g.in_channels, g.out_channels);
    let (m, a) = (u.tile.m(), u.tile.alpha());
    assert_eq!(x.len(), g.batch * c * g.in_h * g.in_w, "winograd input size");
    match &u.mats {
        Mats::Plain(u) => assert_eq!(u.len(), a * a * o * c, "winograd weight size"),
        Mats::Panels(u) => assert!(u.len() == a * a && u.iter().all(|u| u.rows() == o && u.depth() == c)),
    }
    let plane_out = g.out_h * g.out_w;
    if let Some(r) = residual {
        assert_eq!(r.len(), g.batch * o * plane_out, "residual size");
    }
    let tiles_w = g.out_w.div_ceil(m);
    let tiles = g.out_h.div_ceil(m) * tiles_w;
    let threads = rayon::current_num_threads();
    let per_image = (4 * threads).div_ceil(g.batch);
    // tiles per block: F(2×2) 32 to 192 (128 to 768 output pixels), F(4×4) 48 to 96 (768 to
    // 1536 pixels; blocks of 16 or 32 F(4×4) tiles ran 1.1–1.3× slower, one layer at a time)
    let (min_block, max_block) = match u.tile {
        Tile::F2x2 => (32, 192),
        Tile::F4x4 => (48, 96),
    };
    let block = tiles.div_ceil(per_image).clamp(min_block, max_block).min(tiles);
    // then the tiles spread evenly over the blocks, for one image as many blocks as a
    // multiple of the threads (49 tiles: 25 + 24, not 48 + 1)
    let mut blocks = tiles.div_ceil(block);
    if g.batch == 1 && blocks > 1 {
        blocks = blocks.next_multiple_of(threads);
    }
    let block = tiles.div_ceil(blocks);
    let blocks = tiles.div_ceil(block);
    // block b starts at b·tiles/blocks rounded down to whole 8-tile vectors: a block of 33
    // tiles pays the GEMM a whole extra 8-column tail for its last tile (5 × 32 + 36, not 6 ×
    // 33, for ResNet's and SqueezeNet's 56² and 55² maps at batch 1)
    let round = if tiles / blocks >= 8 { 8 } else { 1 }; // (no empty blocks)
    let start = |b: usize| {
        if b == blocks {
            tiles
        } else {
            b * tiles / blocks / round * round
        }
    };
    let run = |task: usize, wide: bool| {
        let (n, b) = (task / blocks, task % blocks);
        let t0 = start(b);
        let task = Task {
            x: &x[n * c * g.in_h * g.in_w..][..c * g.in_h * g.in_w],
            residual: residual.map(|r| &r[n * o * plane_out..][..o * plane_out]),
            bias,
            act,
            g,
            tile: u.tile,
            tiles_w,
            t0,
            nt: start(b + 1) - t0,
            packed_v: matches!(u.mats, Mats::Panels(_)),
        };
        let mut scratch = SCRATCH.take();
        // SAFETY: tasks write the disjoint output tiles t0..t0+nt of image n.
        unsafe { task.run(&u.mats, &mut scratch, SyncPtr(dest.at(n, 0, plane_out)), wide) };
        SCRATCH.set(scratch);
    };
    // blocks in parallel when they are many or fill the threads evenly; else each block in turn
    // with every thread on it (`wide`)
    let tasks = g.batch * blocks;
    if tasks >= 2 * threads || tasks.is_multiple_of(threads) {
        (0..tasks).into_par_iter().for_each(|t| run(t, false));
    } else {
        (0..tasks).for_each(|t| run(t, true));
    }
    // the tasks cover every output tile, and each wrote every pixel of its own
}

/// Tiles `t0..t0 + nt` (row-major over the ⌈Ho/m⌉×⌈Wo/m⌉ tile grid) of one image.
struct Task<'a> {
    x: &'a [f32],
    residual: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    act: Activation,
    g: &'a ConvGeometry,
    tile: Tile,
    tiles_w: usize,
    t0: usize,
    nt: usize,
    /// V laid out as our GEMM's packed B (strips of NR tiles per K block of channels), written
    /// so by the input transform; else row-major C×nt per ξ.
    packed_v: bool,
}

impl Task<'_> {
    /// The tile rows this block touches, as (tile row, first tile column, tiles, offset in block).
    fn segments(&self) -> impl Iterator<Item = (usize, usize, usize, usize)> + '_ {
        let mut t = self.t0;
        std::iter::from_fn(move || {
            (t < self.t0 + self.nt).then(|| {
                let (ty, tx) = (t / self.tiles_w, t % self.tiles_w);
                let len = (self.tiles_w - tx).min(self.t0 + self.nt - t);
                let seg = (ty, tx, len, t - self.t0);
                t += len;
                seg
            })
        })
    }

    /// Temporaries of the transforms: for the input, 2α padded input rows (m·tiles_w + 2
    /// values) and m column phases; for the output, α·m + m² rows of the block's tiles and
    /// one output row (m·tiles_w).
    fn temporaries(&self) -> Vec<f32> {
        let (m, a, tw) = (self.tile.m(), self.tile.alpha(), self.tiles_w);
        vec![0f32; (2 * a * (m * tw + 2) + m * (tw + 1)).max((a * m + m * m) * self.m_cols() + m * tw)]
    }

    /// Runs the block on this thread, or (`wide`) with each step split over all threads:
    /// input channels, the α² GEMMs, output channels (few tiles, e.g. 7×7 maps at batch 1).
    ///
    /// # Safety
    /// `y` points to this image's O×Ho×Wo output; no other task writes these tiles.
    unsafe fn run(&self, u: &Mats, scratch: &mut Vec<f32>, y: SyncPtr, wide: bool) {
        let g = self.g;
        let (c, o, nt, ntp) = (g.in_channels, g.out_channels, self.nt, self.m_cols());
        let aa = self.tile.alpha() * self.tile.alpha();
        // V: α²×C×nt (tiles rounded up to whole strips when packed), M: α²×O×ntp
        let (v_len, m_len) = (aa * c * self.v_cols(), aa * o * ntp);
        scratch.resize(v_len + m_len, 0.0);
        let (v, m) = scratch.split_at_mut(v_len);
        let (v, m) = (SyncPtr(v.as_mut_ptr()), SyncPtr(m.as_mut_ptr()));
        let gemm = |xi: usize| match u {
            // SAFETY: M[ξ] is O×nt (rows ntp apart), U[ξ] is O×C, V[ξ] is C×nt, all
            // row-major and in bounds; each ξ writes its own M[ξ].
            Mats::Plain(u) => gemm_f32(
                o,
                nt,
                c,
                m.add(xi * o * ntp).0,
                ntp,
                false,
                Mat::rows(u[xi * o * c..].as_ptr(), c),
                Mat::rows(v.add(xi * c * nt).0, nt),
            ),
            Mats::Panels(u) => {
                // V[ξ] is already packed, K block after K block
                let vc = self.v_cols();
                let vx = std::slice::from_raw_parts(v.add(xi * c * vc).0, c * vc);
                for k0 in (0..c).step_by(sgemm::KC) {
                    let kc = sgemm::KC.min(c - k0);
                    let ep = sgemm::Epilogue {
                        bias: None,
                        residual: None,
                        act: Activation::None,
                        first: k0 == 0,
                        last: k0 + kc == c,
                    };
                    let b = &vx[k0 * vc..][..kc * vc];
                    sgemm::gemm_block(kc, o, nt, &u[xi], k0, 0, b, m.add(xi * o * ntp).0, ntp, ep);
                }
            }
        };
        if wide {
            let chunks = |len: usize| len.div_ceil(4 * rayon::current_num_threads()).max(1);
            let (cc, oc) = (chunks(c), chunks(o));
            (0..c.div_ceil(cc)).into_par_iter().for_each(|k| {
                let mut tmp = self.temporaries();
                self.input_transform_on(k * cc..c.min((k + 1) * cc), v, &mut tmp);
            });
            (0..aa).into_par_iter().for_each(gemm);
            (0..o.div_ceil(oc)).into_par_iter().for_each(|k| {
                let mut tmp = self.temporaries();
                self.output_transform_on(k * oc..o.min((k + 1) * oc), m, &mut tmp, y);
            });
        } else {
            let mut tmp = self.temporaries();
            self.input_transform_on(0..c, v, &mut tmp);
            (0..aa).for_each(gemm);
            self.output_transform_on(0..o, m, &mut tmp, y);
        }
    }

    /// Columns of one M[ξ] row as stored: nt rounded up to whole 8-lane vectors, so the output
    /// transform's loops over the tiles have no scalar tail (their values past nt are never
    /// written out; with 33 tiles the tail iterations took a fifth of the transform's time).
    fn m_cols(&self) -> usize {
        self.nt.next_multiple_of(8)
    }

    /// Columns of one V[ξ] row as stored: nt, or nt rounded up to whole strips when packed.
    fn v_cols(&self) -> usize {
        if self.packed_v {
            self.nt.next_multiple_of(sgemm::NR)
        } else {
            self.nt
        }
    }

    /// Where tiles `off..off + len` of row `ch` of each V[ξ] are stored, relative to V[ξ]'s
    /// start, as (first tile − off, tiles, offset): one run when row-major, else one piece per
    /// strip of NR tiles (`strip[k·NR + t % NR]` within the K block holding `ch`, as
    /// [`sgemm::pack_b_row`] lays it out).
    fn v_pieces(&self, ch: usize, off: usize, len: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        use sgemm::{KC, NR};
        let (c, ntp) = (self.g.in_channels, self.v_cols());
        let (k0, packed) = (ch / KC * KC, self.packed_v);
        let kc = KC.min(c - k0);
        let mut done = 0;
        std::iter::from_fn(move || {
            (done < len).then(|| {
                let t = off + done;
                let piece = if packed { (NR - t % NR).min(len - done) } else { len };
                let at = if packed {
                    k0 * ntp + t / NR * kc * NR + (ch - k0) * NR + t % NR
                } else {
                    ch * ntp + t
                };
                let item = (done, piece, at);
                done += piece;
                item
            })
        })
    }

    with_avx2_copy! {
        /// [`Task::input_transform`], in the copy compiled for AVX2 + FMA where the CPU has them.
        fn input_transform_on(
            &self: Task<'_>,
            chs: std::ops::Range<usize>,
            v: SyncPtr,
            tmp: &mut [f32],
        ) => input_transform
    }

    with_avx2_copy! {
        /// [`Task::output_transform`], in the copy compiled for AVX2 + FMA where the CPU has them.
        fn output_transform_on(
            &self: Task<'_>,
            ocs: std::ops::Range<usize>,
            m: SyncPtr,
            tmp: &mut [f32],
            y: SyncPtr,
        ) => output_transform
    }

    #[inline(always)]
    fn input_transform(&self, chs: std::ops::Range<usize>, v: SyncPtr, tmp: &mut [f32]) {
        match self.tile {
            Tile::F2x2 => self.input_transform_t::<2, 4>(chs, v, tmp, bt2),
            Tile::F4x4 => self.input_transform_t::<4, 6>(chs, v, tmp, bt4),
        }
    }

    #[inline(always)]
    fn output_transform(&self, ocs: std::ops::Range<usize>, m: SyncPtr, tmp: &mut [f32], y: SyncPtr) {
        match self.tile {
            Tile::F2x2 => self.output_transform_t::<2, 4>(ocs, m, tmp, y, at2),
            Tile::F4x4 => self.output_transform_t::<4, 6>(ocs, m, tmp, y, at4),
        }
    }

    /// `V[ξ][c][t] = (Bᵀ d B)[ξ]` for channels `chs` and every tile of the block; `v` points
    /// to V (α²×C×nt), of which this call writes rows `chs` only. Per tile row: the α input
    /// rows (zero-padded) → `Bᵀ` down the rows → each result row split into its M column
    /// phases → `Bᵀ` across (`d B`), α values per tile.
    #[inline(always)]
    fn input_transform_t<const M: usize, const A: usize>(
        &self,
        chs: std::ops::Range<usize>,
        v: SyncPtr,
        tmp: &mut [f32],
        bt: impl Fn([f32; A]) -> [f32; A],
    ) {
        let g = self.g;
        let tw = self.tiles_w;
        let row_cap = M * tw + 2;
        let plane = g.in_h * g.in_w;
        let (rows, rest) = tmp.split_at_mut(A * row_cap);
        let (cols, rest) = rest.split_at_mut(A * row_cap);
        let phases = &mut rest[..M * (tw + 1)];
        for ch in chs {
            let xin = &self.x[ch * plane..][..plane];
            for (ty, tx, len, off) in self.segments() {
                // input rows M·ty − pt + i, columns from M·tx − pl on, zero outside the image
                let width = M * len + 2;
                let col0 = (M * tx) as isize - g.pad_left as isize;
                let (lo, hi) = (
                    (-col0).clamp(0, width as isize) as usize,
                    (g.in_w as isize - col0).clamp(0, width as isize) as usize,
                );
                // an input row wholly inside the image is read in place, others are padded
                let mut inside = [false; A];
                for (i, row) in rows.chunks_exact_mut(row_cap).enumerate() {
                    let row = &mut row[..width];
                    let iy = (M * ty + i) as isize - g.pad_top as isize;
                    if iy < 0 || iy >= g.in_h as isize || lo >= hi {
                        row.fill(0.0);
                        continue;
                    }
                    inside[i] = lo == 0 && hi == width;
                    if !inside[i] {
                        let start = iy as usize * g.in_w + (col0 + lo as isize) as usize;
                        row[..lo].fill(0.0);
                        super::copy_short(&mut row[lo..hi], &xin[start..start + hi - lo]);
                        row[hi..].fill(0.0);
                    }
                }
                // Bᵀ down the rows: cols[r][x] = Σ_i Bᵀ[r][i] rows[i][x]
                {
                    let src: [&[f32]; A] = array_init(|i| {
                        if inside[i] {
                            let iy = M * ty + i - g.pad_top;
                            &xin[iy * g.in_w + col0 as usize..][..width]
                        } else {
                            &rows[i * row_cap..][..width]
                        }
                    });
                    let mut dst: [&mut [f32]; A] = split_rows(cols, row_cap, width);
                    for x in 0..width {
                        let d = bt(array_init(|i| src[i][x]));
                        for (r, dst) in dst.iter_mut().enumerate() {
                            dst[x] = d[r];
                        }
                    }
                }
                for r in 0..A {
                    // phase p holds columns M·k + p, k = 0..=len
                    let row = &cols[r * row_cap..][..width];
                    let mut ph: [&mut [f32]; M] = split_rows(phases, tw + 1, len + 1);
                    deinterleave(&row[..M * len], &mut ph);
                    for (p, ph) in ph.iter_mut().enumerate().take(2) {
                        ph[len] = row[M * len + p];
                    }
                    // Bᵀ across: tile k's α values are phases[j % M][k + j / M], into V[α·r + j]
                    let ph: [&[f32]; M] = array_init(|p| &phases[p * (tw + 1)..][..len + 1]);
                    let v_len = self.g.in_channels * self.v_cols();
                    for (k0, n, at) in self.v_pieces(ch, off, len) {
                        // SAFETY: row ch of each V[ξ] belongs to this call; the pieces lie in V.
                        let mut dst: [&mut [f32]; A] = array_init(|j| unsafe {
                            std::slice::from_raw_parts_mut(v.add((A * r + j) * v_len + at).0, n)
                        });
                        for k in 0..n {
                            let d = bt(array_init(|j| ph[j % M][k0 + k + j / M]));
                            for (j, dst) in dst.iter_mut().enumerate() {
                                dst[k] = d[j];
                            }
                        }
                    }
                }
            }
        }
    }

    /// `Y = Aᵀ M A` per tile, plus bias and residual, activation, written into the output:
    /// `Aᵀ` down the α rows of each column j, then across each of the M output rows.
    #[inline(always)]
    fn output_transform_t<const M: usize, const A: usize>(
        &self,
        ocs: std::ops::Range<usize>,
        m: SyncPtr,
        tmp: &mut [f32],
        y: SyncPtr,
        at: impl Fn([f32; A]) -> [f32; M],
    ) {
        let g = self.g;
        let (nt, tw) = (self.m_cols(), self.tiles_w);
        let plane = g.out_h * g.out_w;
        // SAFETY: the GEMMs that wrote M are done; M is α²×O×nt (nt: the padded row length,
        // the columns past the block's tiles uninitialised but allocated).
        let m = unsafe { std::slice::from_raw_parts(m.0, A * A * g.out_channels * nt) };
        let (rows, rest) = tmp.split_at_mut(M * A * nt);
        let (ys, line) = rest.split_at_mut(M * M * nt);
        let line = &mut line[..M * tw];
        for oc in ocs {
            let bias = self.bias.map_or(0.0, |b| b[oc]);
            // the bias goes into the loop below, and the activation too unless it must wait for
            // the residual, added on the way out
            let ys_act = match self.residual {
                None => self.act,
                Some(_) => Activation::None,
            };
            // rows[a][j][t] = Σ_i Aᵀ[a][i] M[α·i + j][t], all tiles of the block at once
            for j in 0..A {
                let src: [&[f32]; A] = array_init(|i| &m[((A * i + j) * g.out_channels + oc) * nt..][..nt]);
                let mut dst: [&mut [f32]; M] = split_rows(&mut rows[j * nt..], A * nt, nt);
                for t in 0..nt {
                    let r = at(array_init(|i| src[i][t]));
                    for (a, dst) in dst.iter_mut().enumerate() {
                        dst[t] = r[a];
                    }
                }
            }
            // ys[a][b][t] = Σ_j Aᵀ[b][j] rows[a][j][t]: output pixel (a, b) of every tile, one
            // long loop over the block's tiles (per segment, 4 to 14 tiles long, it ran mostly
            // in scalar tails)
            let ys_pass = |act: fn(f32) -> f32, ys: &mut [f32]| {
                for a in 0..M {
                    let src: [&[f32]; A] = array_init(|j| &rows[(a * A + j) * nt..][..nt]);
                    let mut dst: [&mut [f32]; M] = split_rows(&mut ys[a * M * nt..], nt, nt);
                    for t in 0..nt {
                        let y = at(array_init(|j| src[j][t]));
                        for (b, dst) in dst.iter_mut().enumerate() {
                            dst[t] = act(y[b] + bias);
                        }
                    }
                }
            };
            match ys_act {
                Activation::None => ys_pass(|v| v, ys),
                Activation::Relu => ys_pass(|v| v.max(0.0), ys),
                Activation::Relu6 => ys_pass(|v| v.clamp(0.0, 6.0), ys),
            }
            for (ty, tx, len, off) in self.segments() {
                for a in 0..M {
                    let oy = M * ty + a;
                    if oy >= g.out_h {
                        break;
                    }
                    // output row oy, columns M·tx + M·k + b: ys[a][b][off + k], interleaved
                    let cols: [&[f32]; M] = array_init(|b| &ys[(a * M + b) * nt + off..][..len]);
                    // this task owns output row oy's columns c0..c1
                    let (c0, c1) = (M * tx, (M * (tx + len)).min(g.out_w));
                    let row_off = oc * plane + oy * g.out_w + c0;
                    // SAFETY: no other task writes these columns; they lie inside the output.
                    let yrow = unsafe { std::slice::from_raw_parts_mut(y.0.add(row_off), c1 - c0) };
                    match self.residual {
                        // done: whole tiles straight into the output row, then the columns of
                        // a last tile that hangs past the row's end
                        None => {
                            let full = (c1 - c0) / M;
                            interleave(cols.map(|c| &c[..full]), &mut yrow[..M * full]);
                            for (y, col) in yrow[M * full..].iter_mut().zip(cols) {
                                *y = col[full];
                            }
                        }
                        Some(r) => {
                            interleave(cols, &mut line[..M * len]);
                            let res = &r[row_off..][..c1 - c0];
                            for ((y, v), r) in yrow.iter_mut().zip(&line[..c1 - c0]).zip(res) {
                                *y = self.act.of(v + r);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `dst[M·k + b] = src[b][k]`: M rows of equal length interleaved (4×4 transposes in SSE
/// registers for M = 4, unpacks for M = 2).
#[inline(always)]
fn interleave<const M: usize>(src: [&[f32]; M], dst: &mut [f32]) {
    let n = src[0].len();
    assert!(src.iter().all(|s| s.len() == n) && dst.len() == M * n);
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: k + 4 ≤ n, so the loads read src[b][k..k + 4] and the stores write
    // dst[M·k..M·(k + 4)], all in bounds (lengths checked above).
    unsafe {
        use std::arch::x86_64::*;
        while k + 4 <= n {
            let ld = |b: usize| _mm_loadu_ps(src[b].as_ptr().add(k));
            let out = dst.as_mut_ptr().add(M * k);
            if M == 4 {
                let [c0, c1, c2, c3] = transpose4([ld(0), ld(1), ld(2), ld(3)]);
                _mm_storeu_ps(out, c0);
                _mm_storeu_ps(out.add(4), c1);
                _mm_storeu_ps(out.add(8), c2);
                _mm_storeu_ps(out.add(12), c3);
            } else if M == 2 {
                let (a, b) = (ld(0), ld(1));
                _mm_storeu_ps(out, _mm_unpacklo_ps(a, b));
                _mm_storeu_ps(out.add(4), _mm_unpackhi_ps(a, b));
            } else {
                break;
            }
            k += 4;
        }
    }
    for k in k..n {
        for (b, s) in src.iter().enumerate() {
            dst[M * k + b] = s[k];
        }
    }
}

/// `dst[p][k] = src[M·k + p]`: the M column phases of a row (the inverse of [`interleave`]).
#[inline(always)]
fn deinterleave<const M: usize>(src: &[f32], dst: &mut [&mut [f32]; M]) {
    let n = src.len() / M;
    assert!(src.len() == M * n && dst.iter().all(|d| d.len() >= n));
    let mut k = 0;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: k + 4 ≤ n, so the loads read src[M·k..M·(k + 4)] and the stores write
    // dst[p][k..k + 4], all in bounds (lengths checked above).
    unsafe {
        use std::arch::x86_64::*;
        while k + 4 <= n {
            let ld = |i: usize| _mm_loadu_ps(src.as_ptr().add(M * k + 4 * i));
            if M == 4 {
                let c = transpose4([ld(0), ld(1), ld(2), ld(3)]);
                for (d, c) in dst.iter_mut().zip(c) {
                    _mm_storeu_ps(d.as_mut_ptr().add(k), c);
                }
            } else if M == 2 {
                let (a, b) = (ld(0), ld(1));
                _mm_storeu_ps(dst[0].as_mut_ptr().add(k), _mm_shuffle_ps::<0b10_00_10_00>(a, b));
                _mm_storeu_ps(dst[1].as_mut_ptr().add(k), _mm_shuffle_ps::<0b11_01_11_01>(a, b));
            } else {
                break;
            }
            k += 4;
        }
    }
    for k in k..n {
        for (p, d) in dst.iter_mut().enumerate() {
            d[k] = src[M * k + p];
        }
    }
}

/// Transposes the 4×4 matrix whose rows are `r`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn transpose4(r: [std::arch::x86_64::__m128; 4]) -> [std::arch::x86_64::__m128; 4] {
    use std::arch::x86_64::*;
    // SAFETY: SSE is part of x86-64.
    unsafe {
        let (t0, t1) = (_mm_unpacklo_ps(r[0], r[1]), _mm_unpacklo_ps(r[2], r[3]));
        let (t2, t3) = (_mm_unpackhi_ps(r[0], r[1]), _mm_unpackhi_ps(r[2], r[3]));
        [
            _mm_movelh_ps(t0, t1),
            _mm_movehl_ps(t1, t0),
            _mm_movelh_ps(t2, t3),
            _mm_movehl_ps(t3, t2),
        ]
    }
}

/// `[f(0), .., f(N − 1)]` as `std::array::from_fn`, which is not always inlined (perf showed
/// its calls in the transforms' loops).
#[inline(always)]
fn array_init<T, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [const { std::mem::MaybeUninit::<T>::uninit() }; N];
    for (i, o) in out.iter_mut().enumerate() {
        o.write(f(i));
    }
    // SAFETY: every element was written; [MaybeUninit<T>; N] has the layout of [T; N].
    unsafe { (&out as *const [std::mem::MaybeUninit<T>; N]).cast::<[T; N]>().read() }
}

/// The first `len` values of `N` consecutive rows `stride` apart in `buf`, as separate slices.
#[inline(always)]
fn split_rows<const N: usize>(buf: &mut [f32], stride: usize, len: usize) -> [&mut [f32]; N] {
    let mut rest = buf;
    array_init(|_| {
        let at = stride.min(rest.len());
        let (row, tail) = std::mem::take(&mut rest).split_at_mut(at);
        rest = tail;
        &mut row[..len]
    })
}
