//! Hand-written CPU kernels, apart from the model code: convolution (im2col + GEMM, Winograd,
//! depthwise), our own packed f32 GEMM (`sgemm`), pooling, half-precision weight storage and
//! the linear layer. Each one has a plain reference in the tests (`tests/layers_reference.rs`
//! checks every path of `Conv2d`, the pools and `Linear` against naive loops over random
//! shapes, strides, paddings, dilations, groups, storage types and batch sizes).
//!
//! The fast paths are x86-64 code (AVX2 / AVX-512 micro-kernels, the channel-blocked kernels of
//! [`nchwc`]); on other CPUs (Apple Silicon under `--features metal`, say) they are never chosen,
//! and what only they use is dead code there, hence the lint allowance below.
#![cfg_attr(
    not(target_arch = "x86_64"),
    allow(dead_code, unused_variables, unused_imports, unused_mut, clippy::never_loop)
)]

/// `fn $name(args) => $plain`: defines `$name`, which runs the `#[inline(always)]` function
/// `$plain` in a copy compiled for AVX2 + FMA where the CPU has them ([`has_avx2_fma`]), else
/// in the baseline build. `fn $name(&self: Type, args) => $plain` does the same for a method.
/// (A closure handed to a runtime dispatcher is compiled apart from the dispatcher's target
/// features, so the copy is a plain function into which the kernel inlines.)
macro_rules! with_avx2_copy {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $plain:ident) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) {
                $plain($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { avx2($($arg),*) };
            }
            $plain($($arg),*)
        }
    };
    ($(#[$m:meta])* fn $name:ident(&self: $self_ty:ty, $($arg:ident: $ty:ty),* $(,)?) => $plain:ident) => {
        $(#[$m])*
        fn $name(&self, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2(this: &$self_ty, $($arg: $ty),*) {
                this.$plain($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::kernels::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA.
                return unsafe { avx2(self, $($arg),*) };
            }
            self.$plain($($arg),*)
        }
    };
}

use rayon::prelude::*;

pub mod conv;
pub mod depthwise;
pub mod gpu;
pub mod linear;
pub mod nchwc;
pub mod pool;
pub mod resize;
pub mod sgemm;
pub mod storage;
pub mod winograd;

/// Whether this CPU has AVX2 and FMA (checked once). The element-wise kernels (pooling,
/// depthwise taps, Winograd transforms, im2col packing) have a copy compiled for them
/// ([`with_avx2_copy`]); without it they run the baseline x86-64 (SSE2) build.
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A raw pointer into one output buffer, handed to rayon tasks that each write their own
/// disjoint part of it.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: only used by tasks writing disjoint parts of a buffer that outlives them.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

impl SyncPtr {
    /// # Safety
    /// As `pointer::add`.
    pub(crate) unsafe fn add(self, n: usize) -> SyncPtr {
        SyncPtr(self.0.add(n))
    }
}

/// Where a convolution writes its N×O×Ho×Wo output: image `n`'s O planes from
/// `ptr + n·image_stride` — `O·Ho·Wo` apart for an array of its own, `C·Ho·Wo` when the output
/// is channels `c0..c0 + O` of an N×C×Ho×Wo array (a concatenation's, written in place).
#[derive(Clone, Copy)]
pub(crate) struct Dest {
    pub(crate) ptr: SyncPtr,
    pub(crate) image_stride: usize,
}

impl Dest {
    /// The first value of image `n`'s output channel `o` (`plane` values per channel).
    ///
    /// # Safety
    /// As `pointer::add`.
    pub(crate) unsafe fn at(self, n: usize, o: usize, plane: usize) -> *mut f32 {
        self.ptr.0.add(n * self.image_stride + o * plane)
    }
}

/// An output buffer of `n` values, left uninitialised: the kernels write every element
/// (NaN-filled after [`poison_outputs`]).
pub(crate) fn uninit_output(n: usize) -> Vec<std::mem::MaybeUninit<f32>> {
    if POISON.load(std::sync::atomic::Ordering::Relaxed) {
        return vec![std::mem::MaybeUninit::new(f32::NAN); n];
    }
    let mut v = Vec::with_capacity(n);
    // SAFETY: MaybeUninit needs no initialisation.
    unsafe { v.set_len(n) };
    v
}

static POISON: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// For tests: every kernel output buffer starts as NaN, so a value a kernel fails to write
/// shows (left uninitialised, it often holds the right value from an earlier identical call
/// whose freed buffer the allocator hands back).
pub fn poison_outputs() {
    POISON.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// A new output of `batch` images of `image` values each, filled by `write` through the
/// [`Dest`] that describes it.
///
/// # Safety
/// `write` must write every value of its `Dest`.
pub(crate) unsafe fn new_output(batch: usize, image: usize, write: impl FnOnce(Dest)) -> Vec<f32> {
    let mut y = uninit_output(batch * image);
    write(Dest {
        ptr: SyncPtr(y.as_mut_ptr().cast()),
        image_stride: image,
    });
    assume_init(y)
}

/// # Safety
/// Every element of `v` must have been written.
pub(crate) unsafe fn assume_init(v: Vec<std::mem::MaybeUninit<f32>>) -> Vec<f32> {
    let mut v = std::mem::ManuallyDrop::new(v);
    Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity())
}

/// Copies `src`, N×C×plane, into `dest` (N images of C·plane values), one rayon task per image.
///
/// # Safety
/// `dest` must describe N images of `src.len() / N` values that nothing else reads or writes
/// meanwhile.
pub(crate) unsafe fn copy_into(src: &[f32], batch: usize, dest: Dest) {
    let per_image = src.len() / batch;
    src.par_chunks(per_image.max(1)).enumerate().for_each(|(n, s)| {
        // SAFETY: image n's block of `dest`, per_image values, written by this task only.
        let d = unsafe { std::slice::from_raw_parts_mut(dest.at(n, 0, 0), per_image) };
        d.copy_from_slice(s);
    });
}

/// `dst.copy_from_slice(src)` for the short runs of im2col (an output row: 7 to 112 values), in
/// 8-value moves: a copy of run-time length is otherwise a `memmove` call, which cost 7% of a
/// 1×7 convolution's time at 17×17 (im2col; also strip tails and depthwise scratch rows).
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    let (d8, d) = dst.as_chunks_mut::<8>();
    let (s8, s) = src.as_chunks::<8>();
    for (d, s) in d8.iter_mut().zip(s8) {
        *d = *s;
    }
    for (d, s) in d.iter_mut().zip(s) {
        *d = *s;
    }
}

/// `dst.fill(0.0)` for short runs, as [`copy_short`].
#[inline(always)]
pub(crate) fn fill_zero(dst: &mut [f32]) {
    fill_short(dst, 0.0)
}

/// `dst.fill(v)` in 8-value moves, as [`copy_short`] (a fill with zeros is otherwise a
/// `memset` call, which on these machines is a `rep stosb` for a few KB).
#[inline(always)]
pub(crate) fn fill_short(dst: &mut [f32], v: f32) {
    let (d8, d) = dst.as_chunks_mut::<8>();
    for d in d8 {
        *d = [v; 8];
    }
    for d in d {
        *d = v;
    }
}

/// Planes per rayon task for the kernels that work plane by plane (depthwise, pooling): about
/// 8 tasks per thread, each reusing one scratch for its run of planes. A task per plane cost
/// more than a 7×7 plane's few hundred cycles of work (MobileNetV2's 960-channel 7×7
/// depthwise layer 54.8 → 25.3 µs, batch 1, 2 threads).
pub(crate) fn planes_per_task(planes: usize) -> usize {
    const TASKS_PER_THREAD: usize = 8;
    planes.div_ceil(TASKS_PER_THREAD * rayon::current_num_threads()).max(1)
}

/// A strided f32 matrix for [`gemm_f32`]: element (i, j) at `ptr + i·row_stride + j·col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Mat {
    /// A row-major matrix whose rows are `row_stride` apart.
    pub(crate) fn rows(ptr: *const f32, row_stride: usize) -> Self {
        Self {
            ptr,
            row_stride,
            col_stride: 1,
        }
    }
}

/// `dst = lhs · rhs`, or `dst += lhs · rhs` with `accumulate`: m×n from m×k and k×n, `dst`
/// row-major with rows `dst_row_stride` apart. Single-threaded: the callers split the work
/// into tiles over the threads. The product is the `gemm` crate's.
///
/// # Safety
/// `dst`, `lhs` and `rhs` must cover m×n, m×k and k×n elements at their strides.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_row_stride as isize,
        accumulate,
        lhs.ptr,
        lhs.col_stride as isize,
        lhs.row_stride as isize,
        rhs.ptr,
        rhs.col_stride as isize,
        rhs.row_stride as isize,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    )
}

/// Builds rayon's global pool (our kernels, candle's and the image decoding all use it) with
/// `threads` threads (`None`: `RAYON_NUM_THREADS`, else one per core), the calling thread one
/// of them. Call it first, from the thread that will run the models. A parallel loop started
/// from a thread outside the pool is queued for the workers while the caller sleeps on a lock,
/// a wake-up per layer; from a pool thread it is split with `join` and the caller works on its
/// own share (SqueezeNet 1.15×, GoogLeNet 1.06× at batch 1 on 2 threads). Does nothing if the
/// global pool already exists.
pub fn init_thread_pool(threads: Option<usize>) {
    build_pool(threads, true);
}

/// As [`init_thread_pool`], with every worker a thread of the pool's own: for servers, whose
/// main thread waits on the network. Work from other threads then runs on the pool by
/// injection (`rayon::scope`), and [`spin_workers`] is called from inside it.
pub fn init_detached_thread_pool(threads: Option<usize>) {
    build_pool(threads, false);
    rayon::scope(|_| spin_workers());
}

fn build_pool(threads: Option<usize>, use_current_thread: bool) {
    if let Some(n) = threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    }
    let mut builder = rayon::ThreadPoolBuilder::new().num_threads(threads.unwrap_or(0));
    if use_current_thread {
        builder = builder.use_current_thread();
    }
    let _ = builder.build_global();
}

/// Keeps rayon's other workers polling for work instead of sleeping, for programs that run
/// models back to back on their own pool (the `ferrovision` binary calls it once, after
/// [`init_thread_pool`], from the thread that built the pool). A sleeping worker takes 20-130 µs
/// to wake, which the next parallel loop waits for: a 3×3/2 stem layer (180 µs) measured
/// 200-315 µs when the caller had been busy alone for 20 µs to 1 ms before it, as the first
/// layer of every forward pass is. ONNX Runtime's threads spin the same way.
///
/// Each other worker runs one loop for the rest of the process: it takes pending work
/// (`rayon::yield_now`), spins while a forward pass is running ([`HotWorkers`]) or ran within
/// the last [`SPIN_GRACE`], and otherwise naps [`NAP`] between polls. The loop starts once, on
/// idle workers, and never returns, so it never sits on top of a job that waits for work (a
/// polling job started per pass could be picked up by a worker waiting inside a join, and hang
/// it). Does nothing outside a pool or when called again.
pub fn spin_workers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STARTED: AtomicBool = AtomicBool::new(false);
    let Some(me) = rayon::current_thread_index() else {
        return;
    };
    if rayon::current_num_threads() < 2 || STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    // one copy per thread (a plain spawn could be taken by the caller); the caller's returns
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() != me {
            poll_forever()
        }
    });
}

/// How long a worker of [`spin_workers`] keeps spinning after the last forward pass or job.
pub const SPIN_GRACE: std::time::Duration = std::time::Duration::from_millis(2);
/// How long it naps between polls after that.
pub const NAP: std::time::Duration = std::time::Duration::from_micros(200);

fn poll_forever() {
    use std::sync::atomic::Ordering;
    let mut busy = std::time::Instant::now();
    loop {
        if rayon::yield_now() == Some(rayon::Yield::Executed) || HOT.load(Ordering::Acquire) > 0 {
            busy = std::time::Instant::now();
        } else if busy.elapsed() > SPIN_GRACE {
            std::thread::sleep(NAP);
            continue;
        }
        std::hint::spin_loop();
    }
}

/// Forward passes running now (see [`hot_workers`]).
static HOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Marks a forward pass as running until dropped: the workers of [`spin_workers`] spin rather
/// than nap meanwhile. [`crate::model::Network::forward`] holds one. Without
/// [`spin_workers`], it only counts.
pub struct HotWorkers(());

/// See [`HotWorkers`].
pub fn hot_workers() -> HotWorkers {
    HOT.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    HotWorkers(())
}

impl Drop for HotWorkers {
    fn drop(&mut self) {
        HOT.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Asks the C allocator to keep freed memory for reuse instead of handing it back to the OS
/// (glibc: no `mmap` for large blocks, no trimming of the heap top). Each layer's output then
/// lands in pages an earlier layer freed, with no page faults in steady state; without it
/// every large activation is a fresh `mmap` whose pages fault in one by one (MobileNetV2 at
/// batch 8 ran 10.2 → 6.7 ms/image with it, VGG-16 85 → 73). Process-wide, so the
/// `ferrovision` binary calls it at startup and an embedding application decides for itself.
/// The price: the heap only shrinks from its top, so a long-lived allocation made after large
/// short-lived ones pins them (`tests/rss_budget.rs` saw ResNet-50 at batch 8 peak at 456
/// instead of 334 MB that way); call [`trim_freed_memory`] after loading a model.
/// A no-op where the C library is not glibc.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Hands memory freed so far back to the OS (glibc's `malloc_trim`): call it once after
/// loading a model, whose conversions leave large freed blocks that [`reuse_freed_memory`]
/// would otherwise keep resident. A no-op where the C library is not glibc.
pub fn trim_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `even[i] = x[2i]`, `odd[i] = x[2i + 1]`: one row's two column phases for stride 2.
#[inline(always)]
pub(crate) fn deinterleave(x: &[f32], even: &mut [f32], odd: &mut [f32]) {
    assert!(even.len() == odd.len() && x.len() == 2 * even.len());
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the CPU has AVX2; the lengths were checked above.
        done = unsafe { deinterleave_avx2(x, even, odd) };
    }
    for ((pair, e), o) in x[2 * done..]
        .chunks_exact(2)
        .zip(&mut even[done..])
        .zip(&mut odd[done..])
    {
        *e = pair[0];
        *o = pair[1];
    }
}

/// `(even, odd)` lanes of the 16 values `a, b`: `[a0 a2 a4 a6 b0 b2 b4 b6]`, `[a1 a3 … b7]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn split_pairs(
    a: std::arch::x86_64::__m256,
    b: std::arch::x86_64::__m256,
) -> (std::arch::x86_64::__m256, std::arch::x86_64::__m256) {
    use std::arch::x86_64::*;
    // per 128-bit lane: [a0 a2 b0 b2 | a4 a6 b4 b6], then 64-bit lanes into order
    let e = _mm256_shuffle_ps::<0b10_00_10_00>(a, b);
    let o = _mm256_shuffle_ps::<0b11_01_11_01>(a, b);
    let order = |v: __m256| _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
    (order(e), order(o))
}

/// [`deinterleave`] 8 pairs at a time (two loads, two shuffles, two lane permutes, two
/// stores), the last < 8 pairs from masked loads; returns how many pairs it wrote
/// (all of them).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn deinterleave_avx2(x: &[f32], even: &mut [f32], odd: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let split = |a, b| split_pairs(a, b);
    let pairs = even.len();
    let n = pairs / 8 * 8;
    for i in (0..n).step_by(8) {
        let a = _mm256_loadu_ps(x.as_ptr().add(2 * i)); // x0..x7
        let b = _mm256_loadu_ps(x.as_ptr().add(2 * i + 8)); // x8..x15
        let (e, o) = split(a, b);
        _mm256_storeu_ps(even.as_mut_ptr().add(i), e);
        _mm256_storeu_ps(odd.as_mut_ptr().add(i), o);
    }
    let r = pairs - n;
    if r > 0 {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let first = |count: usize| _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lane);
        let a = _mm256_maskload_ps(x.as_ptr().add(2 * n), first((2 * r).min(8)));
        let b = _mm256_maskload_ps(x.as_ptr().add(2 * n + 8), first((2 * r).saturating_sub(8)));
        // through the stack, not masked stores (microcoded, slow, on several AMD cores)
        let (mut e, mut o) = ([0f32; 8], [0f32; 8]);
        let (ev, ov) = split(a, b);
        _mm256_storeu_ps(e.as_mut_ptr(), ev);
        _mm256_storeu_ps(o.as_mut_ptr(), ov);
        copy_short(&mut even[n..], &e[..r]);
        copy_short(&mut odd[n..], &o[..r]);
    }
    pairs
}
