//! Load generator for `ferrovision serve` (scripts/bench_serve.sh runs it):
//!
//! ```sh
//! cargo run --release --example serve_load -- load URL CONCURRENCY SECONDS IMAGE...
//! cargo run --release --example serve_load -- synthetic resnet50 OUT.safetensors
//! ```
//!
//! `load`: CONCURRENCY clients, each with its own connection, POST the images to `URL` one per
//! request (in turn, starting at a different one each) for SECONDS, and print one JSON line:
//! requests, errors, images/s, p50 / p99 latency in ms. `synthetic`: a self-describing weights
//! file of made-up weights (`ferrovision::weights::write_synthetic`), for models without a real
//! checkpoint at hand.

use std::time::{Duration, Instant};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn load(url: &str, clients: usize, seconds: f64, images: &[Vec<u8>]) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let results: Vec<(Vec<f64>, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let client = reqwest::blocking::Client::builder()
                        .timeout(Duration::from_secs(120))
                        .build()
                        .unwrap();
                    let (mut latencies, mut errors) = (Vec::new(), 0);
                    let mut i = c;
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let ok = client
                            .post(url)
                            .body(images[i % images.len()].clone())
                            .send()
                            .and_then(|r| r.error_for_status()?.bytes())
                            .is_ok();
                        if ok {
                            latencies.push(t.elapsed().as_secs_f64() * 1e3);
                        } else {
                            errors += 1;
                        }
                        i += 1;
                    }
                    (latencies, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut all: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    all.sort_by(f64::total_cmp);
    let errors: usize = results.iter().map(|(_, e)| e).sum();
    println!(
        "{{\"concurrency\": {clients}, \"requests\": {}, \"errors\": {errors}, \"images_per_s\": {:.2}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}}}",
        all.len(),
        all.len() as f64 / elapsed,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("load") if args.len() >= 5 => {
            let images: Vec<Vec<u8>> = args[4..].iter().map(|p| std::fs::read(p).expect(p)).collect();
            load(&args[1], args[2].parse().unwrap(), args[3].parse().unwrap(), &images);
        }
        Some("synthetic") if args.len() == 3 => {
            ferrovision::weights::write_synthetic(&args[1], std::path::Path::new(&args[2])).unwrap();
        }
        _ => {
            eprintln!("usage: serve_load load URL CONCURRENCY SECONDS IMAGE... | serve_load synthetic ARCH OUT");
            std::process::exit(2);
        }
    }
}
