//! Peak memory of ResNet-50 at batch 8 stays within its f32 weights + 300 MB (issue "CPU speed",
//! target 3). Its own test binary without the test harness, so the process's peak RSS is this
//! check's alone and, as in the `ferrovision` binary, the model runs on the main thread.

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use ferrovision::synthetic::{self, Synthetic};
use ferrovision::{build, ModelOptions};

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

/// Run as the process's main thread (`harness = false`), as the `ferrovision` binary runs.
fn main() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: peak RSS is read from /proc");
        return;
    }
    // counted before the model is built: a live allocation made between the model's and the
    // activations' would pin the heap (measured: 456 instead of 334 MB)
    let params = ferrovision::weights::count_parameters(
        ferrovision::ArchName::parse("resnet50").unwrap(),
        &ModelOptions::default(),
    )
    .unwrap();
    let weights_mb = 4.0 * params as f64 / (1024.0 * 1024.0);
    // as the binary runs: this thread in the pool, freed activations reused, load-time
    // garbage handed back
    ferrovision::kernels::init_thread_pool(None);
    ferrovision::kernels::reuse_freed_memory();
    let vb = VarBuilder::from_backend(Box::new(Synthetic::new("rss")), DType::F32, Device::Cpu);
    let net = build("resnet50", &ModelOptions::default(), vb).unwrap();
    ferrovision::kernels::trim_freed_memory();
    let x = synthetic::input("rss", &[8, 3, 224, 224], &Device::Cpu).unwrap();
    for _ in 0..3 {
        let y = net.forward(&x).unwrap();
        assert_eq!(y.dims(), [8, 1000]);
    }
    let peak = peak_rss_mb();
    println!("resnet50 batch 8: peak RSS {peak:.0} MB, f32 weights {weights_mb:.0} MB");
    assert!(
        peak <= weights_mb + 300.0,
        "peak RSS {peak:.0} MB > f32 weights {weights_mb:.0} MB + 300 MB"
    );
}
