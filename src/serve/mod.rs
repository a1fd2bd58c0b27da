//! `ferrovision serve`: the image-recognition HTTP API over loaded models, on axum + tokio.
//!
//! - [`router`]: the one routing file: Open Inference Protocol (KServe v2), PhotoPrism's Vision
//!   API, `POST /classify`, health and `/metrics`; limits and metrics as tower layers.
//! - [`batcher`]: the dynamic batcher, apart from HTTP: inference runs on its threads, never on
//!   tokio's.
//! - [`kserve`], [`photoprism`]: the two protocols' request and response shapes.

pub mod batcher;
pub mod fetch;
pub mod kserve;
pub mod metrics;
pub mod photoprism;
pub mod router;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::preprocess::Crops;
use crate::rules::Rules;
use crate::Model;
use batcher::{BatchOptions, Batcher};

/// A model as the server offers it.
pub struct ServedModel {
    /// The name clients call it by (`/v2/models/{name}`, `"model"` in PhotoPrism's request).
    pub name: String,
    pub model: Arc<Model>,
    /// Rules that turn its classes into labels (PhotoPrism's labels, `labels` of `/classify`).
    pub rules: Option<Arc<Rules>>,
    /// Views per image.
    pub crops: Crops,
}

/// The server's limits.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest wait for a batch to fill after its first request arrived.
    pub max_queue_delay: Duration,
    /// Most images waiting or running per model; more are answered 429.
    pub max_queue: usize,
    /// Largest request body in bytes; larger ones are answered 413.
    pub max_body_bytes: usize,
    /// Hosts (`host` or `host:port`) whose image URLs PhotoPrism's requests may name; none by default.
    pub allow_fetch: Vec<String>,
    /// Longest a client may take to send its request body (slow senders are answered 408).
    pub body_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_batch: 16,
            max_queue_delay: Duration::from_millis(5),
            max_queue: 256,
            max_body_bytes: 32 << 20,
            allow_fetch: Vec::new(),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// A served model and its batcher.
pub struct Entry {
    pub served: ServedModel,
    pub batcher: Batcher,
}

/// What every handler shares.
pub struct State {
    /// In the order given; the first is the default for requests that name none.
    pub models: Vec<Entry>,
    pub opts: ServeOptions,
    /// False from the shutdown signal on: `/v2/health/ready` answers 503.
    pub ready: AtomicBool,
    /// `rules=default` of `/classify`.
    pub default_rules: Arc<Rules>,
    /// Remote images of the hosts in [`ServeOptions::allow_fetch`].
    pub fetcher: fetch::Fetcher,
}

impl State {
    pub fn model(&self, name: &str) -> Option<&Entry> {
        self.models.iter().find(|e| e.served.name == name)
    }
}

/// The server: models loaded, batchers running, not yet listening.
pub struct Server {
    state: Arc<State>,
}

impl Server {
    /// Starts a batcher per model. Metrics are recorded from here on (see [`metrics::install`]).
    pub fn new(models: Vec<ServedModel>, opts: ServeOptions) -> Self {
        metrics::install();
        let models = models
            .into_iter()
            .map(|served| {
                let batcher = Batcher::start(
                    &served.name,
                    served.model.clone(),
                    BatchOptions {
                        max_batch: opts.max_batch.max(1),
                        max_delay: opts.max_queue_delay,
                        max_queue: opts.max_queue.max(1),
                        crops: served.crops,
                    },
                );
                Entry { served, batcher }
            })
            .collect();
        let fetcher = fetch::Fetcher::new(opts.allow_fetch.clone(), opts.max_body_bytes);
        Self {
            state: Arc::new(State {
                models,
                fetcher,
                opts,
                ready: AtomicBool::new(true),
                default_rules: Arc::new(Rules::default_imagenet1k()),
            }),
        }
    }

    pub fn router(&self) -> axum::Router {
        router::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` completes; then readiness turns 503, no new
    /// connections are taken, requests in flight finish, and the batchers stop.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let app = self.router().into_make_service();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                state.ready.store(false, Ordering::Release);
                tracing::info!("shutting down: finishing the requests in flight");
            })
            .await?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || state.models.iter().for_each(|e| e.batcher.shutdown()))
            .await
            .map_err(std::io::Error::other)?;
        Ok(())
    }
}
