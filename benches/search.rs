//! Exact visual search: one query against 100 000 MobileNet-v2-sized embeddings (1280-d).
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use ferrovision::features::{l2_normalize, Index, Pool};

fn search(c: &mut Criterion) {
    let dev = Device::Cpu;
    let (n, d) = (100_000, 1280);
    let embeddings = l2_normalize(&Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap()).unwrap();
    let index = Index {
        paths: (0..n).map(|i| format!("img{i}.jpg")).collect(),
        embeddings,
        pool: Pool::Avg,
        backbone_sha256: String::new(),
        backbone_variant: String::new(),
    };
    let q = l2_normalize(&Tensor::randn(0f32, 1.0, (1, d), &dev).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    c.bench_function("similar: 1 query × 100k × 1280-d, top 5", |b| {
        b.iter(|| index.search(&q, 5).unwrap())
    });
}

criterion_group!(benches, search);
criterion_main!(benches);
