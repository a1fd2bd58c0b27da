//! Our own f32 GEMM for convolutions, `C (M×N) = A (M×K) · B (K×N)` with the weights as `A`,
//! in the GotoBLAS/BLIS scheme (Goto & van de Geijn 2008; Van Zee & van de Geijn 2015):
//!
//! - `A` is packed **once at load** ([`PanelsA`]): K in blocks of [`KC`], each block in panels of
//!   [`MR`] rows stored k-major, so the micro-kernel reads it with one broadcast per row and k.
//!   (The `gemm` crate packs both operands on every call; for the many small GEMMs of a CNN,
//!   1×1 convolutions on 14×14 maps, that packing is a large share of the work.)
//! - `B` (the activations) is packed per tile into strips of [`NR`] columns by the caller, from
//!   wherever its rows live: [`pack_b_row`] takes one row at a time, so im2col builds one row
//!   and packs it (no im2col matrix in between); [`pack_b_strided`] takes rows in place.
//! - The MR×NR micro-kernel keeps its 12 accumulators in registers over a K block, and its
//!   store does the epilogue ([`Epilogue`]): add the previous K blocks' partial sums, then on
//!   the last block the bias, the residual and the activation, one pass while the tile is in
//!   registers.
//!
//! Two micro-kernels share the packed layouts: AVX2 + FMA (6×16: 12 ymm accumulators, as
//! BLIS's Haswell kernel) and AVX-512 (6×32 over two strips: 12 zmm accumulators, masked
//! tails; it also reads B in place, [`gemm_block_rows`]). [`kernel_isa`] picks one per CPU;
//! [`available`] says whether either runs here; where neither does, the convolution keeps the
//! `gemm` crate path. `sgemm_matches_naive` in `tests/layers_reference.rs` checks each kernel
//! the CPU supports against a triple loop.

use crate::layers::Activation;

/// Rows of `A` per micro-panel (and of `C` per micro-tile).
pub const MR: usize = 6;
/// Columns of `B` per packed strip (and of `C` per micro-tile): two 8-lane vectors.
pub const NR: usize = 16;
/// Depth of one K block: a 6×256 A micro-panel (6 KB) stays in L1 while a 256×NR B strip
/// (16 KB) streams from L2.
pub const KC: usize = 256;

/// True when this CPU runs one of the micro-kernels (AVX2 + FMA at least) and
/// `FERROVISION_NO_SGEMM` is unset; where it is false the convolutions take the `gemm` crate path.
pub fn available() -> bool {
    kernel_isa().is_some()
}

/// Which micro-kernel runs here: AVX-512 where the CPU has AVX-512F and VL (unless
/// `FERROVISION_SGEMM_AVX2` is set, which tests and benches use to check the AVX2 kernel on
/// such a CPU), else AVX2 + FMA; `None` without them or with `FERROVISION_NO_SGEMM` set.
pub fn kernel_isa() -> Option<Isa> {
    use std::sync::OnceLock;
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        let env = |name| std::env::var_os(name).is_some();
        if env("FERROVISION_NO_SGEMM") {
            return None;
        }
        // the widest the CPU supports, or the AVX2 one when asked for
        let isas = Isa::supported();
        if env("FERROVISION_SGEMM_AVX2") {
            isas.first().copied()
        } else {
            isas.last().copied()
        }
    })
}

/// True where the AVX-512 kernels run: the GEMM's, and the other kernels' AVX-512 paths (so
/// that `FERROVISION_SGEMM_AVX2` takes every kernel to its AVX2 path).
pub(crate) fn avx512() -> bool {
    kernel_isa() == Some(Isa::Avx512)
}

/// The instruction set of the micro-kernel ([`kernel_isa`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// MR×NR tiles in 12 ymm accumulators (BLIS's Haswell shape).
    Avx2,
    /// MR×2·NR tiles (two strips at once) in 12 zmm accumulators, tails by masked loads and
    /// stores.
    Avx512,
}

impl Isa {
    /// Every micro-kernel this CPU can run, narrowest first, whichever [`kernel_isa`] picked
    /// (tests check each).
    pub fn supported() -> Vec<Isa> {
        let mut isas = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                isas.push(Isa::Avx2);
                if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl") {
                    isas.push(Isa::Avx512);
                }
            }
        }
        isas
    }
}

/// `A` (M×K, row-major) packed once: K blocks of [`KC`], each holding ⌈M/MR⌉ micro-panels of
/// `MR × kc` values stored k-major (`panel[k·MR + r] = A[p·MR + r][k0 + k]`), rows past M zero.
#[derive(Debug, Clone)]
pub struct PanelsA {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl PanelsA {
    /// Packs row-major `a` (M×K).
    pub fn pack(a: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(a.len(), m * k, "A size");
        let mp = m.next_multiple_of(MR);
        let mut data = vec![0f32; mp * k];
        for k0 in (0..k).step_by(KC) {
            let kc = KC.min(k - k0);
            for p in 0..mp / MR {
                let panel = &mut data[k0 * mp + p * MR * kc..][..MR * kc];
                for r in 0..MR.min(m - p * MR) {
                    let row = &a[(p * MR + r) * k + k0..][..kc];
                    for (kk, &v) in row.iter().enumerate() {
                        panel[kk * MR + r] = v;
                    }
                }
            }
        }
        Self { m, k, data }
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn depth(&self) -> usize {
        self.k
    }

    /// The micro-panel of rows `p·MR..` for the K block starting at `k0` (`MR × kc`).
    fn panel(&self, k0: usize, p: usize) -> &[f32] {
        let kc = KC.min(self.k - k0);
        &self.data[k0 * self.m.next_multiple_of(MR) + p * MR * kc..][..MR * kc]
    }
}

/// Packs row `k` of a K block of `kc` rows of B (`row`: its `cols` columns) into `out`
/// (⌈cols/NR⌉·kc·NR long), which holds the block as strips of `kc × NR`
/// (`strip[k·NR + j] = B[k][s·NR + j]`); the lanes past `cols` keep whatever they held (the
/// micro-kernel computes them and drops them). im2col builds each row in a buffer first.
#[inline(always)]
pub fn pack_b_row(kc: usize, k: usize, row: &[f32], out: &mut [f32]) {
    debug_assert_eq!(out.len(), row.len().div_ceil(NR) * kc * NR, "packed B size");
    for (s, chunk) in row.chunks(NR).enumerate() {
        copy_strip_row(&mut out[s * kc * NR + k * NR..][..chunk.len()], chunk);
    }
}

/// [`pack_b_row`] for all `kc` rows of a block, which lie in memory `ld` apart (a 1×1
/// convolution's input planes): strip by strip, so the writes run sequentially (measured 5-40%
/// faster than row by row, whose writes jump between strips).
#[inline(always)]
pub fn pack_b_strided(kc: usize, cols: usize, out: &mut [f32], src: &[f32], ld: usize) {
    assert_eq!(out.len(), cols.div_ceil(NR) * kc * NR, "packed B size");
    assert!(kc == 0 || src.len() >= (kc - 1) * ld + cols, "B rows");
    for (s, strip) in out.chunks_exact_mut(kc * NR).enumerate() {
        let w = NR.min(cols - s * NR);
        for (k, dst) in strip.chunks_exact_mut(NR).enumerate() {
            copy_strip_row(&mut dst[..w], &src[k * ld + s * NR..][..w]);
        }
    }
}

/// One row of a strip: a fixed-size copy when the strip is full (two vector moves; a copy of
/// run-time length is a `memmove` call, 10% of a 1×1 convolution's time on one thread).
#[inline(always)]
fn copy_strip_row(dst: &mut [f32], src: &[f32]) {
    match (<&mut [f32; NR]>::try_from(&mut *dst), <&[f32; NR]>::try_from(src)) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => super::copy_short(dst, src),
    }
}

/// What the micro-kernel's store does with an `MR × NR` tile of sums `acc`:
/// `C = acc (+ C if not first block)`, and on the last K block
/// `C = act(C + bias[row] (+ residual))`.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    /// One value per row of C (from the tile's first row).
    pub bias: Option<&'a [f32]>,
    /// Added on the last block: same layout as C (`ldc` apart), from the tile's origin.
    pub residual: Option<*const f32>,
    pub act: Activation,
    /// First K block: C is not read.
    pub first: bool,
    /// Last K block: bias, residual and activation are applied.
    pub last: bool,
}

/// Runs the micro-kernel over an A panel block and a packed B block:
/// C[rows × cols] (row stride `ldc`) from `a_panels` (⌈rows/MR⌉ consecutive micro-panels of
/// `MR × kc`) and `b` (⌈cols/NR⌉ strips of `kc × NR`).
///
/// # Safety
/// `c` (and the epilogue's residual) must cover `rows` rows of `cols` values, `ldc` apart;
/// [`available`] must be true.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_block(
    kc: usize,
    rows: usize,
    cols: usize,
    a: &PanelsA,
    k0: usize,
    p0: usize,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    ep: Epilogue,
) {
    let isa = kernel_isa().expect("sgemm::available()");
    gemm_block_on(isa, kc, rows, cols, a, k0, p0, b, c, ldc, ep)
}

/// [`gemm_block`] on the micro-kernel `isa` (one of [`Isa::supported`]).
///
/// # Safety
/// As [`gemm_block`], and this CPU must support `isa`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_block_on(
    isa: Isa,
    kc: usize,
    rows: usize,
    cols: usize,
    a: &PanelsA,
    k0: usize,
    p0: usize,
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    ep: Epilogue,
) {
    debug_assert!(b.len() >= cols.div_ceil(NR) * kc * NR);
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        return avx512::gemm_block(kc, rows, cols, a, k0, p0, avx512::B::Packed(b), c, ldc, ep);
    }
    for p in 0..rows.div_ceil(MR) {
        let ap = a.panel(k0, p0 + p);
        let r = MR.min(rows - p * MR);
        let ep_p = Epilogue {
            bias: ep.bias.map(|bias| &bias[p * MR..]),
            residual: ep.residual.map(|res| res.add(p * MR * ldc)),
            ..ep
        };
        for s in 0..cols.div_ceil(NR) {
            let n = NR.min(cols - s * NR);
            let ep_s = Epilogue {
                residual: ep_p.residual.map(|res| res.add(s * NR)),
                ..ep_p
            };
            // a tail strip of at most 8 columns computes one vector per row, not two
            #[cfg(target_arch = "x86_64")]
            let kernel = if n <= 8 { avx2::kernel::<1> } else { avx2::kernel::<2> };
            #[cfg(target_arch = "x86_64")]
            kernel(
                kc,
                ap.as_ptr(),
                b[s * kc * NR..].as_ptr(),
                c.add(p * MR * ldc + s * NR),
                ldc,
                r,
                n,
                &ep_s,
            );
            #[cfg(not(target_arch = "x86_64"))]
            {
                let _ = (ap, r, n, ep_s);
                unreachable!("sgemm::available() is false off x86-64")
            }
        }
    }
}

/// [`gemm_block`] with B read in place rather than packed: row `k` of the K block at
/// `b + k·ldb`, its `cols` columns contiguous (a 1×1 convolution's input planes). Only the
/// AVX-512 kernel reads B this way (masked loads keep it inside each row's `cols`).
///
/// # Safety
/// As [`gemm_block`]; `b` must cover `kc` rows of `cols` values, `ldb` apart; the CPU must
/// support [`Isa::Avx512`].
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_block_rows(
    kc: usize,
    rows: usize,
    cols: usize,
    a: &PanelsA,
    k0: usize,
    p0: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    ep: Epilogue,
) {
    avx512::gemm_block(kc, rows, cols, a, k0, p0, avx512::B::Rows(b, ldb), c, ldc, ep)
}

/// The scalar epilogue for one value: `v` is the block's sum.
#[inline(always)]
fn finish(v: f32, c: *mut f32, res: Option<*const f32>, bias: f32, ep: &Epilogue) {
    // SAFETY: the caller passes in-bounds pointers.
    unsafe {
        let mut v = if ep.first { v } else { v + *c };
        if ep.last {
            v += bias;
            if let Some(r) = res {
                v += *r;
            }
            v = ep.act.of(v);
        }
        *c = v;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{finish, Epilogue, MR, NR};
    use crate::layers::Activation;
    use std::arch::x86_64::*;

    /// One MR×(8·NV) tile: `acc = Σ_k a[k·MR + i] · b[k·NR + j]` for the first 8·NV columns
    /// of the strip (NV = 2: all NR), then the epilogue into `c` (`rows ≤ MR`,
    /// `cols ≤ 8·NV` of it valid).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel<const NV: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        ep: &Epilogue,
    ) {
        let mut acc = [[_mm256_setzero_ps(); NV]; MR];
        for k in 0..kc {
            let mut bv = [_mm256_setzero_ps(); NV];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm256_loadu_ps(b.add(k * NR + 8 * v));
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(k * MR + i));
                for (r, bv) in row.iter_mut().zip(bv) {
                    *r = _mm256_fmadd_ps(ai, bv, *r);
                }
            }
        }
        if rows == MR && cols == 8 * NV {
            let (zero, six) = (_mm256_setzero_ps(), _mm256_set1_ps(6.0));
            for (i, row) in acc.iter().enumerate() {
                let ci = c.add(i * ldc);
                let mut v = *row;
                if !ep.first {
                    for (j, v) in v.iter_mut().enumerate() {
                        *v = _mm256_add_ps(*v, _mm256_loadu_ps(ci.add(8 * j)));
                    }
                }
                if ep.last {
                    if let Some(bias) = ep.bias {
                        let bi = _mm256_set1_ps(bias[i]);
                        for v in v.iter_mut() {
                            *v = _mm256_add_ps(*v, bi);
                        }
                    }
                    if let Some(r) = ep.residual {
                        let ri = r.add(i * ldc);
                        for (j, v) in v.iter_mut().enumerate() {
                            *v = _mm256_add_ps(*v, _mm256_loadu_ps(ri.add(8 * j)));
                        }
                    }
                    for v in v.iter_mut() {
                        *v = match ep.act {
                            Activation::None => *v,
                            Activation::Relu => _mm256_max_ps(*v, zero),
                            Activation::Relu6 => _mm256_min_ps(_mm256_max_ps(*v, zero), six),
                        };
                    }
                }
                for (j, v) in v.iter().enumerate() {
                    _mm256_storeu_ps(ci.add(8 * j), *v);
                }
            }
        } else {
            let mut tile = [[0f32; NR]; MR];
            for (t, a) in tile.iter_mut().zip(acc.iter()) {
                for (j, a) in a.iter().enumerate() {
                    _mm256_storeu_ps(t.as_mut_ptr().add(8 * j), *a);
                }
            }
            for (i, t) in tile.iter().enumerate().take(rows) {
                let bias = if ep.last { ep.bias.map_or(0.0, |b| b[i]) } else { 0.0 };
                for (j, &v) in t.iter().enumerate().take(cols) {
                    let res = ep.residual.map(|r| r.add(i * ldc + j));
                    finish(v, c.add(i * ldc + j), res, bias, ep);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Epilogue, PanelsA, MR, NR};
    use crate::layers::Activation;
    use std::arch::x86_64::*;

    /// Where the kernel reads B: packed strips, or rows in place (`ptr`, `ld`).
    #[derive(Clone, Copy)]
    pub(super) enum B<'a> {
        Packed(&'a [f32]),
        Rows(*const f32, usize),
    }

    /// [`super::gemm_block`] with the AVX-512 kernel, from either kind of B: two strips (32
    /// columns) per call; from packed B a tail of 9 to 24 columns takes one strip (16) at a
    /// time, and one of at most 8 the AVX2 kernel's one-vector tile, so a 7×7 map's 49 columns
    /// cost 32 + 16 + 8 lanes, not 64.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn gemm_block(
        kc: usize,
        rows: usize,
        cols: usize,
        a: &PanelsA,
        k0: usize,
        p0: usize,
        b: B,
        c: *mut f32,
        ldc: usize,
        ep: Epilogue,
    ) {
        for p in 0..rows.div_ceil(MR) {
            let ap = a.panel(k0, p0 + p).as_ptr();
            let r = MR.min(rows - p * MR);
            let bias = ep.bias.map(|bias| &bias[p * MR..]);
            let mut j = 0; // first column of the next strip
            while j < cols {
                let cp = c.add(p * MR * ldc + j);
                let res = ep.residual.map(|res| res.add(p * MR * ldc + j));
                let left = cols - j;
                if let B::Rows(bp, ld) = b {
                    // in place: B's strip s of row k at bp + k·ld + s·NR, loads masked; the
                    // tails as from packed B (a 7×7 map's 49 columns: 32 + 16 + 8 lanes, not 64)
                    let bp = bp.add(j);
                    if left > NR + NR / 2 {
                        kernel::<2, true>(kc, ap, bp, ld, NR, cp, ldc, r, left.min(2 * NR), bias, res, &ep);
                        j += 2 * NR;
                    } else if left > NR / 2 {
                        kernel::<1, true>(kc, ap, bp, ld, NR, cp, ldc, r, left.min(NR), bias, res, &ep);
                        j += NR;
                    } else {
                        kernel8_rows(kc, ap, bp, ld, cp, ldc, r, left, bias, res, &ep);
                        j += NR;
                    }
                    continue;
                }
                let B::Packed(b) = b else { unreachable!() };
                let bp = b[j * kc..].as_ptr();
                if left > NR + NR / 2 {
                    kernel::<2, false>(kc, ap, bp, NR, kc * NR, cp, ldc, r, left.min(2 * NR), bias, res, &ep);
                    j += 2 * NR;
                } else if left > NR / 2 {
                    kernel::<1, false>(kc, ap, bp, NR, kc * NR, cp, ldc, r, left.min(NR), bias, res, &ep);
                    j += NR;
                } else {
                    let ep = Epilogue {
                        bias,
                        residual: res,
                        ..ep
                    };
                    super::avx2::kernel::<1>(kc, ap, bp, cp, ldc, r, left, &ep);
                    j += NR;
                }
            }
        }
    }

    /// An MR×8 tile from B read in place (row `k` at `b + k·ld`, its first `cols` ≤ 8 values):
    /// the tail of a row of in-place strips, in one 8-lane vector per row (a masked 16-lane
    /// strip would cost twice the multiply-adds for it).
    #[target_feature(enable = "avx512f,avx512vl")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel8_rows(
        kc: usize,
        a: *const f32,
        b: *const f32,
        ld: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        bias: Option<&[f32]>,
        residual: Option<*const f32>,
        ep: &Epilogue,
    ) {
        debug_assert!(cols <= 8);
        let m = ((1u32 << cols) - 1) as __mmask8;
        let mut acc = [_mm256_setzero_ps(); MR];
        for k in 0..kc {
            let bv = _mm256_maskz_loadu_ps(m, b.add(k * ld));
            for (i, acc) in acc.iter_mut().enumerate() {
                *acc = _mm256_fmadd_ps(_mm256_set1_ps(*a.add(k * MR + i)), bv, *acc);
            }
        }
        // the epilogue on the sums widened to 16 lanes, the mask keeping it to `cols`
        for (i, &v) in acc.iter().enumerate().take(rows) {
            let res = residual.map(|r| r.add(i * ldc));
            store_row(
                _mm512_zextps256_ps512(v),
                m.into(),
                c.add(i * ldc),
                res,
                bias.map(|b| b[i]),
                ep,
            );
        }
    }

    /// The epilogue of one row of a tile, `cs`'s lanes under `m`: `cs = v (+ cs if not the
    /// first K block)`, and on the last `act(cs + bias (+ res))`.
    #[inline(always)]
    unsafe fn store_row(
        mut v: __m512,
        m: __mmask16,
        cs: *mut f32,
        res: Option<*const f32>,
        bias: Option<f32>,
        ep: &Epilogue,
    ) {
        let zero = _mm512_setzero_ps();
        if !ep.first {
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, cs));
        }
        if ep.last {
            if let Some(b) = bias {
                v = _mm512_add_ps(v, _mm512_set1_ps(b));
            }
            if let Some(r) = res {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, r));
            }
            v = match ep.act {
                Activation::None => v,
                Activation::Relu => _mm512_max_ps(v, zero),
                Activation::Relu6 => _mm512_min_ps(_mm512_max_ps(v, zero), _mm512_set1_ps(6.0)),
            };
        }
        _mm512_mask_storeu_ps(cs, m, v);
    }

    /// One MR×(NR·NS) tile from NS strips of B, row `k` of strip `s` at `b + k·bk + s·bs`:
    /// `acc = Σ_k a[k·MR + i] · strip_s[k][j]`, then the epilogue into the first `rows` rows
    /// and `cols` columns of `c` (masked, so tails need no scalar path). `MASK_B`: B's loads
    /// are masked to the `cols` columns too (B read in place, where the lanes past them may
    /// lie outside the matrix).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const NS: usize, const MASK_B: bool>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        bk: usize,
        bs: usize,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        bias: Option<&[f32]>,
        residual: Option<*const f32>,
        ep: &Epilogue,
    ) {
        let masks: [__mmask16; NS] =
            std::array::from_fn(|s| (((1u32 << (cols - (s * NR).min(cols)).min(NR)) - 1) & 0xFFFF) as __mmask16);
        let mut acc = [[_mm512_setzero_ps(); NS]; MR];
        for k in 0..kc {
            let mut bv = [_mm512_setzero_ps(); NS];
            for (s, bv) in bv.iter_mut().enumerate() {
                let at = b.add(k * bk + s * bs);
                *bv = if MASK_B {
                    _mm512_maskz_loadu_ps(masks[s], at)
                } else {
                    _mm512_loadu_ps(at)
                };
            }
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(k * MR + i));
                for (r, bv) in row.iter_mut().zip(bv) {
                    *r = _mm512_fmadd_ps(ai, bv, *r);
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(rows) {
            for (s, &v) in row.iter().enumerate() {
                let res = residual.map(|r| r.add(i * ldc + s * NR));
                store_row(v, masks[s], c.add(i * ldc + s * NR), res, bias.map(|b| b[i]), ep);
            }
        }
    }
}
