//! Memory stays flat over a long run: 2000 images generated on the fly (PNG-encoded, decoded,
//! preprocessed, classified in batches of 8) with one loaded model. Its own test binary, so the
//! process's peak RSS is this test's alone.

mod common;

use candle_core::Device;
use ferrovision::classify::ClassifyOptions;
use ferrovision::preprocess::decode_image;

/// Peak resident set size of this process in kB (Linux).
fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn png(i: usize) -> Vec<u8> {
    let (w, h) = (160 + (i % 7) as u32 * 16, 120 + (i % 5) as u32 * 16);
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            ((x + i as u32) % 256) as u8,
            ((y * 3 + i as u32 * 7) % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

#[test]
fn peak_memory_does_not_grow_with_the_number_of_images() {
    if !cfg!(target_os = "linux") {
        eprintln!("SKIPPED: peak RSS is read from /proc");
        return;
    }
    // the allocator set up as the `ferrovision` binary sets it: freed memory kept for reuse
    ferrovision::kernels::reuse_freed_memory();
    let dir = tempfile::tempdir().unwrap();
    let Some(w) = common::converted_tflite(dir.path(), "mobilenet_v1_0.5_160_quant", None) else {
        return;
    };
    let model = ferrovision::Model::load(&w, &Device::Cpu).unwrap();
    ferrovision::kernels::trim_freed_memory();
    let opts = ClassifyOptions::default();
    let mut seen = 0usize;
    let mut run = |n: usize| {
        for start in (0..n).step_by(8) {
            let imgs: Vec<_> = (start..(start + 8).min(n))
                .map(|i| decode_image(&png(seen + i), 1 << 24).unwrap())
                .collect();
            let out = model.classify_images(&imgs, &opts, None).unwrap();
            assert_eq!(out.len(), imgs.len());
        }
        seen += n;
    };
    run(200); // warm-up: allocator pools, thread pools, caches
    let after_200 = peak_rss_kb();
    run(1800);
    let after_2000 = peak_rss_kb();
    println!(
        "peak RSS after 200 images: {} MB, after 2000: {} MB",
        after_200 / 1024,
        after_2000 / 1024
    );
    assert!(
        after_2000 <= after_200 + 32 * 1024,
        "peak RSS grew from {after_200} kB to {after_2000} kB over 1800 more images"
    );
}
