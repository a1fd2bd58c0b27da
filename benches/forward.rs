//! Forward passes with deterministic synthetic weights, batch 1 and 8, on the CPU.
//! `cargo bench --bench forward -- resnet50` runs one architecture.
use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrovision::synthetic::{self, Synthetic};
use ferrovision::{build, ModelOptions};

fn forward(c: &mut Criterion) {
    // as the binary runs: this thread in the pool, freed memory reused
    ferrovision::kernels::init_thread_pool(None);
    ferrovision::kernels::reuse_freed_memory();
    let dev = Device::Cpu;
    let mut g = c.benchmark_group("forward");
    g.sample_size(10);
    for (arch, size) in [
        ("squeezenet1_1", 224),
        ("mobilenet_v2", 224),
        ("resnet18", 224),
        ("resnet50", 224),
        ("googlenet", 224),
        ("inception_v3", 299),
        ("vgg16", 224),
    ] {
        let vb = VarBuilder::from_backend(Box::new(Synthetic::new("bench")), DType::F32, dev.clone());
        let net = build(arch, &ModelOptions::default(), vb).unwrap();
        for batch in [1, 8] {
            let x = synthetic::input("bench", &[batch, 3, size, size], &dev).unwrap();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(arch, batch), &x, |b, x| {
                b.iter(|| net.forward(x).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
