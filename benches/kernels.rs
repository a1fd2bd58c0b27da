//! Kernels alone: the f32 GEMM peak on this machine, our GEMM against the `gemm` crate, and the
//! hot convolution layers of ResNet-50, VGG-16 and MobileNetV2, each at its real shape, and
//! Winograd's two tile sizes side by side (what [`Tile::for_output`] chooses between).
//! Throughput is in FLOP (2 per multiply-add), so criterion's "elem/s" reads as FLOP/s.
//! `cargo bench --bench kernels -- gemm` runs the GEMMs only.
use candle_core::DType;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrovision::kernels::conv::{conv2d_f32, ConvGeometry, PackedConv};
use ferrovision::kernels::depthwise::depthwise_f32;
use ferrovision::kernels::winograd::{winograd_f32, Filters, Tile};
use ferrovision::layers::Activation;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// A k×k convolution over `hw`×`hw` maps, "same" padding k/2, dilation 1.
fn square_geometry(batch: usize, ci: usize, co: usize, groups: usize, hw: usize, k: usize, s: usize) -> ConvGeometry {
    let (pad, out) = (k / 2, (hw + 2 * (k / 2) - k) / s + 1);
    ConvGeometry {
        batch,
        in_channels: ci,
        out_channels: co,
        groups,
        in_h: hw,
        in_w: hw,
        kernel: (k, k),
        stride: s,
        dilation: 1,
        pad_top: pad,
        pad_left: pad,
        out_h: out,
        out_w: out,
    }
}

/// `dst (m×n) = a (m×k) · b (k×n)`, all row-major, by the `gemm` crate.
fn gemm_crate(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], dst: &mut [f32], par: gemm::Parallelism) {
    assert!(a.len() >= m * k && b.len() >= k * n && dst.len() >= m * n);
    // SAFETY: the three matrices are in bounds (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

fn gemm_peak(c: &mut Criterion) {
    // as the binary runs: this thread in the pool, freed memory reused
    ferrovision::kernels::init_thread_pool(None);
    ferrovision::kernels::reuse_freed_memory();
    let mut g = c.benchmark_group("gemm");
    g.sample_size(10);
    let threads = rayon::current_num_threads();
    for (m, n, k) in [(1024, 1024, 1024), (256, 3136, 2304), (512, 196, 4608)] {
        let (a, b) = (random(m * k, 1), random(k * n, 2));
        let mut dst = vec![0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(BenchmarkId::from_parameter(format!("{m}x{n}x{k}")), |bench| {
            bench.iter(|| gemm_crate(m, n, k, &a, &b, &mut dst, gemm::Parallelism::Rayon(threads)))
        });
    }
    g.finish();
}

/// One thread, `C (M×N) = A (M×K) · B (K×N)` with A packed beforehand (the weights): our
/// `sgemm` (B packed per K block, as the convolution does) against the `gemm` crate (which packs
/// both operands per call), at 1×1-convolution shapes. Skipped where `sgemm` does not run.
fn sgemm_vs_gemm_crate(c: &mut Criterion) {
    use ferrovision::kernels::sgemm::{self, Epilogue, PanelsA, KC, NR};
    if !sgemm::available() {
        eprintln!("sgemm bench skipped: this CPU runs the gemm crate path (no AVX2+FMA, or FERROVISION_NO_SGEMM)");
        return;
    }
    let mut g = c.benchmark_group("sgemm");
    g.sample_size(20);
    // (M, K, N): ResNet-50 layer1 1×1 (one 128-column chunk), layer3 1×1 (a 14×14 map),
    // MobileNetV2 expand, GoogLeNet 3a 1×1 (one chunk)
    for (m, k, n) in [(64, 256, 128), (256, 1024, 196), (144, 24, 128), (64, 192, 128)] {
        let (a, b) = (random(m * k, 1), random(k * n, 2));
        let panels = PanelsA::pack(&a, m, k);
        let mut dst = vec![0f32; m * n];
        let mut packed = Vec::new();
        g.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        g.bench_function(BenchmarkId::new("ours", format!("{m}x{k}x{n}")), |bench| {
            bench.iter(|| {
                for k0 in (0..k).step_by(KC) {
                    let kc = KC.min(k - k0);
                    packed.resize(kc * n.next_multiple_of(NR), 0.0);
                    sgemm::pack_b_strided(kc, n, &mut packed, &b[k0 * n..], n);
                    let ep = Epilogue {
                        bias: None,
                        residual: None,
                        act: Activation::None,
                        first: k0 == 0,
                        last: k0 + kc == k,
                    };
                    // SAFETY: dst is m×n; available() checked above.
                    unsafe { sgemm::gemm_block(kc, m, n, &panels, k0, 0, &packed, dst.as_mut_ptr(), n, ep) };
                }
            })
        });
        g.bench_function(BenchmarkId::new("gemm_crate", format!("{m}x{k}x{n}")), |bench| {
            bench.iter(|| gemm_crate(m, n, k, &a, &b, &mut dst, gemm::Parallelism::None))
        });
    }
    g.finish();
}

/// (name, in channels, out channels, input size, kernel, stride)
#[rustfmt::skip]
const LAYERS: &[(&str, usize, usize, usize, usize, usize)] = &[
    ("resnet50.layer1.conv1x1", 256, 64, 56, 1, 1),
    ("resnet50.layer1.conv3x3", 64, 64, 56, 3, 1),
    ("resnet50.layer3.conv3x3", 256, 256, 14, 3, 1),
    ("vgg16.features.10",       128, 256, 56, 3, 1),
    ("vgg16.features.24",       512, 512, 14, 3, 1),
    ("mobilenet_v2.expand",     24, 144, 56, 1, 1),
    ("inception_v3.mixed_6.1x1", 768, 192, 17, 1, 1),
    ("googlenet.inception3a.1x1", 192, 64, 28, 1, 1),
];

fn conv_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv");
    g.sample_size(10);
    for &(name, ci, co, hw, k, s) in LAYERS {
        for batch in [1, 8] {
            let geom = square_geometry(batch, ci, co, 1, hw, k, s);
            let out = geom.out_h;
            // as the model packs it: Winograd F(m×m, 3×3) for 3×3 stride 1, else im2col + GEMM
            let (w, b) = (random(co * ci * k * k, 3), Some(random(co, 4)));
            let packed = if k == 3 && s == 1 {
                let packed = PackedConv::winograd(co, ci, b);
                packed.prepare(&geom, || Ok::<_, ()>(w)).unwrap();
                packed
            } else if PackedConv::wants_panels(DType::F32) {
                let packed = PackedConv::panels(co, 1, b);
                packed.prepare(&geom, || Ok::<_, ()>(w)).unwrap();
                packed
            } else {
                PackedConv::im2col(w, b, DType::F32)
            };
            let x = random(batch * ci * hw * hw, 5);
            g.throughput(Throughput::Elements(2 * (batch * co * out * out * ci * k * k) as u64));
            g.bench_function(BenchmarkId::new(name, batch), |b| {
                b.iter(|| conv2d_f32(&x, &packed, Activation::Relu, None, &geom))
            });
        }
    }
    g.finish();
}

/// (name, channels, input size, stride): MobileNetV2's depthwise layers.
#[rustfmt::skip]
const DEPTHWISE: &[(&str, usize, usize, usize)] = &[
    ("mobilenet_v2.features.2", 96, 112, 2),
    ("mobilenet_v2.features.3", 144, 56, 1),
    ("mobilenet_v2.features.14", 576, 14, 2),
];

fn depthwise_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("depthwise");
    g.sample_size(10);
    for &(name, ch, hw, s) in DEPTHWISE {
        for batch in [1, 8] {
            let geom = square_geometry(batch, ch, ch, ch, hw, 3, s);
            let out = geom.out_h;
            let (w, b, x) = (random(ch * 9, 6), random(ch, 7), random(batch * ch * hw * hw, 8));
            g.throughput(Throughput::Elements(2 * (batch * ch * out * out * 9) as u64));
            g.bench_function(BenchmarkId::new(name, batch), |bench| {
                bench.iter(|| depthwise_f32(&x, &w, Some(&b), Activation::Relu6, &geom))
            });
        }
    }
    g.finish();
}

/// (name, channels in, channels out, map size): 3×3 stride-1 layers around the map size where
/// F(4×4) stops paying (7×7, 8×8) and where it starts (12×12 and up).
#[rustfmt::skip]
const WINOGRAD: &[(&str, usize, usize, usize)] = &[
    ("resnet18.layer4", 512, 512, 7),
    ("inception_v3.mixed_7", 448, 384, 8),
    ("squeezenet1_1.fire9", 64, 256, 13),
    ("resnet50.layer3", 256, 256, 14),
    ("resnet18.layer2", 128, 128, 28),
    ("vgg16.features.12", 256, 256, 56),
];

/// Each layer by F(2×2, 3×3) and by F(4×4, 3×3), batch 1 and 8. `Tile::for_output` picks
/// F(4×4) from 12×12 on these measurements.
fn winograd_tiles(c: &mut Criterion) {
    let mut g = c.benchmark_group("winograd");
    g.sample_size(10);
    for &(name, ci, co, hw) in WINOGRAD {
        let (w, b) = (random(co * ci * 9, 9), random(co, 10));
        for batch in [1, 8] {
            let geom = square_geometry(batch, ci, co, 1, hw, 3, 1);
            let x = random(batch * ci * hw * hw, 11);
            g.throughput(Throughput::Elements(2 * (batch * co * hw * hw * ci * 9) as u64));
            for (label, tile) in [("f2x2", Tile::F2x2), ("f4x4", Tile::F4x4)] {
                let u = Filters::new(&w, co, ci, tile);
                g.bench_function(BenchmarkId::new(format!("{name}/{label}"), batch), |bench| {
                    bench.iter(|| winograd_f32(&x, &u, Some(&b), Activation::Relu, None, &geom))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    gemm_peak,
    sgemm_vs_gemm_crate,
    conv_layers,
    depthwise_layers,
    winograd_tiles
);
criterion_main!(benches);
