//! Prometheus metrics (`GET /metrics`): the `metrics` facade with
//! `metrics-exporter-prometheus`'s recorder, installed once per process. Names follow
//! Triton's (`nv_inference_count`, `nv_inference_exec_count`, ...) in our own prefix:
//!
//! - `ferrovision_requests_total{endpoint,status}`, `ferrovision_request_duration_seconds{endpoint}`
//!   (the [`track`] layer);
//! - per model: `ferrovision_inference_count` (images), `ferrovision_execution_count` (forward
//!   passes), `ferrovision_batch_size`, `ferrovision_queue_duration_seconds`,
//!   `ferrovision_compute_duration_seconds`, `ferrovision_queue_size`,
//!   `ferrovision_rejected_total` (see [`super::batcher`]).

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Histogram buckets of the `*_seconds` metrics: 1 ms to 30 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// Installs the process's recorder (once; later calls reuse it). Where another recorder was
/// installed first, ours only renders its own (empty) registry.
pub fn install() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full("ferrovision_batch_size".into()), BATCH_SIZES))
            .expect("non-empty bucket lists");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let _ = ::metrics::set_global_recorder(recorder);
        handle
    })
}

/// The text exposition of every metric.
pub fn render() -> String {
    install().render()
}

/// Counts each request by its route (the pattern, not the path: model names stay out of the
/// label) and status, and times it.
pub async fn track(req: Request, next: Next) -> Response {
    let endpoint = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    ::metrics::counter!("ferrovision_requests_total", "endpoint" => endpoint.clone(), "status" => status).increment(1);
    ::metrics::histogram!("ferrovision_request_duration_seconds", "endpoint" => endpoint)
        .record(start.elapsed().as_secs_f64());
    response
}
