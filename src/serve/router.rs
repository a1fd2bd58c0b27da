//! Every HTTP route of `ferrovision serve`, and the layers around them: the body limit (declared
//! and streamed), metrics, one log line per request, panics answered 500.
//!
//! | route | what |
//! |---|---|
//! | `GET /v2/health/live`, `/v2/health/ready` | KServe v2 health (ready turns 503 at shutdown) |
//! | `GET /v2`, `/v2/models/{name}`, `/v2/models/{name}/ready` | server and model metadata |
//! | `POST /v2/models/{name}[/versions/1]/infer` | KServe v2 inference (JSON or binary tensors) |
//! | `POST /api/v1/vision/labels` | PhotoPrism's Vision API |
//! | `POST /classify` | image bytes or multipart → `classify --format json`'s object |
//! | `POST /detect` | image bytes or multipart → `detect --format json`'s object |
//! | `POST /pose` | image bytes or multipart → `pose --format json`'s object (people, keypoints) |
//! | `GET /metrics` | Prometheus |

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use candle_core::Tensor;
use serde::Deserialize;
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutError};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tracing::Level;

use super::batcher::{Answer, ImageScores, Input};
use super::{kserve, photoprism, Entry};
use crate::classify::{Classification, ClassifyOptions};
use crate::rules::{Label, Rules};

type AppState = Arc<super::State>;

pub fn router(state: AppState) -> Router {
    let max_body = state.opts.max_body_bytes;
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(|| async { StatusCode::OK }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(infer))
        .route("/api/v1/vision/labels", post(vision_labels))
        .route("/api/v1/vision/nsfw", post(vision_nsfw))
        .route("/classify", post(classify))
        .route("/detect", post(detect))
        .route("/pose", post(pose))
        .route("/metrics", get(|| async { super::metrics::render() }))
        .fallback(|req: Request| async move {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no route {} {}", req.method(), req.uri().path()),
            )
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(RequestBodyTimeoutLayer::new(state.opts.body_timeout))
        .layer(middleware::from_fn_with_state(max_body, declared_length_limit))
        .layer(middleware::from_fn(super::metrics::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the handler panicked".into()).into_response()
        }))
        .with_state(state)
}

/// An error answer: `{"code", "error"}` (and the request's `"id"` where it had one), the status
/// as HTTP status too; 429 says when to retry.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    msg: String,
    id: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, msg: String) -> Self {
        Self { status, msg, id: None }
    }

    fn bad(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg.into())
    }

    fn with_id(mut self, id: &str) -> Self {
        self.id = Some(id.to_string());
        self
    }

    /// A body that could not be read: over the limit (413), too slow (408), or broken (400).
    fn body(rejection: BytesRejection) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
        while let Some(e) = cause {
            if e.is::<TimeoutError>() {
                return Self::new(StatusCode::REQUEST_TIMEOUT, "request body: not received in time".into());
            }
            cause = e.source();
        }
        Self::new(rejection.status(), format!("request body: {}", rejection.body_text()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.status.as_u16(), "error": self.msg});
        if let Some(id) = self.id {
            body["id"] = json!(id);
        }
        let mut res = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

/// 413 at once for a body whose declared length is over the limit (before reading any of it);
/// bodies without a length are cut at the limit by [`DefaultBodyLimit`].
async fn declared_length_limit(State(max): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(n) if n > max as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the limit of {max} bytes (--max-body-mb)"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}

/// The served model `name`, or a 404 listing the served ones.
fn model<'a>(state: &'a AppState, name: &str) -> Result<&'a Entry, ApiError> {
    state.model(name).ok_or_else(|| {
        let served: Vec<&str> = state.models.iter().map(|e| e.served.name.as_str()).collect();
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("unknown model `{name}`; served: {}", served.join(", ")),
        )
    })
}

/// The model of a `/v2/models/{name}[/versions/{version}]` path (version 1 only).
fn lookup<'a>(state: &'a AppState, params: &HashMap<String, String>) -> Result<&'a Entry, ApiError> {
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    let entry = model(state, name)?;
    match params.get("version").map(String::as_str) {
        None | Some("1") => Ok(entry),
        Some(v) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("model `{name}` has no version `{v}` (only 1)"),
        )),
    }
}

/// Queues `inputs` on the model's batcher and waits for its answer.
async fn run(state: &AppState, entry: &Entry, inputs: Vec<Input>) -> Result<Answer, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::bad("the request holds no image"));
    }
    let capacity = state.opts.max_queue;
    if inputs.len() > capacity {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} images in one request, more than the queue holds ({capacity})",
                inputs.len()
            ),
        ));
    }
    let rx = entry.batcher.submit(inputs).map_err(|o| {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "model `{}` is busy: {} of {} queue places taken; retry later",
                entry.served.name, o.queued, o.capacity
            ),
        )
    })?;
    rx.await
        .map_err(|_| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the model's worker stopped".into()))
}

/// Every image's scores, or a 400 naming the first image that failed.
fn all_scored(answer: Answer, what: impl Fn(usize) -> String) -> Result<Vec<ImageScores>, ApiError> {
    answer
        .outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| o.map_err(|e| ApiError::bad(format!("{}: {e}", what(i)))))
        .collect()
}

// ---- KServe v2 -------------------------------------------------------------------------------

async fn server_metadata() -> impl IntoResponse {
    axum::Json(json!({
        "name": "ferrovision",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "classification"],
    }))
}

async fn server_ready(State(state): State<AppState>) -> StatusCode {
    if state.ready.load(Ordering::Acquire) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_ready(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<StatusCode, ApiError> {
    lookup(&state, &params)?;
    Ok(server_ready(State(state)).await)
}

async fn model_metadata(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
) -> Result<impl IntoResponse, ApiError> {
    let entry = lookup(&state, &params)?;
    let model = &entry.served.model;
    Ok(axum::Json(kserve::model_metadata(
        &entry.served.name,
        model.meta.preprocessing.crop_size,
        model.class_names().len(),
        if model.detector.is_some() {
            kserve::ModelKind::Detector
        } else if model.pose_decoder().is_ok() {
            kserve::ModelKind::Pose
        } else {
            kserve::ModelKind::Classifier
        },
    )))
}

async fn infer(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let entry = lookup(&state, &params)?;
    let body = body.map_err(ApiError::body)?;
    if let Some(enc) = headers.get(header::CONTENT_ENCODING).filter(|e| *e != "identity") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding {enc:?} is not supported; send the body uncompressed"),
        ));
    }
    let header_len = match headers.get(kserve::HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ApiError::bad(format!("Inference-Header-Content-Length {v:?} is not a length")))?,
        ),
    };
    let (req, tensor) = kserve::parse(&body, header_len).map_err(ApiError::bad)?;
    let id = req.id.clone();
    let fail = |e: ApiError| match &id {
        Some(id) => e.with_id(id),
        None => e,
    };
    let model = &entry.served.model;
    if model.pose_decoder().is_ok() {
        return Err(fail(ApiError::bad(format!(
            "model `{}` estimates poses: POST /pose?model={0}",
            entry.served.name
        ))));
    }
    let outputs: &[&'static str] = if model.detector.is_some() {
        &kserve::DETECTION_OUTPUTS
    } else {
        &kserve::OUTPUTS
    };
    let wanted = kserve::wanted(&req, outputs).map_err(|e| fail(ApiError::bad(e)))?;
    let detect_opts = kserve::detect_options(&req).map_err(|e| fail(ApiError::bad(e)))?;
    let (inputs, what): (Vec<Input>, &str) = match tensor {
        kserve::Tensor::Images(files) => (files.into_iter().map(Input::Encoded).collect(), "image"),
        kserve::Tensor::Pixels { shape, values } => {
            let [h, w] = model.meta.preprocessing.crop_size;
            if shape[1..] != [3, h, w] {
                return Err(fail(ApiError::bad(format!(
                    "input `input`: model `{}` takes N×3×{h}×{w}, got {shape:?}",
                    entry.served.name
                ))));
            }
            let batch = Tensor::from_vec(values, &shape, model.device())
                .and_then(|t| t.to_dtype(model.compute_dtype()))
                .map_err(|e| fail(ApiError::bad(format!("input `input`: {e}"))))?;
            let views = (0..shape[0])
                .map(|i| batch.narrow(0, i, 1).map(Input::Views))
                .collect::<candle_core::Result<_>>()
                .map_err(|e| fail(ApiError::bad(format!("input `input`: {e}"))))?;
            (views, "input")
        }
    };
    let answer = run(&state, entry, inputs).await.map_err(fail)?;
    let rows = all_scored(answer, |i| format!("{what} {i}")).map_err(fail)?;
    let (head, binary) = if let Some(detector) = &model.detector {
        let width = model.meta.options.num_classes + 4;
        let dets = rows
            .iter()
            .map(|r| model.decode_raw(&r.logits, width, &detect_opts))
            .collect::<crate::Result<Vec<_>>>()
            .map_err(|e| fail(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())))?;
        let k = detect_opts.max_detections.unwrap_or(detector.config.nms.max_detections);
        kserve::detection_response(&entry.served.name, id.as_deref(), &wanted, &dets, k)
    } else {
        kserve::response(&entry.served.name, id.as_deref(), &wanted, &rows, model.class_names())
    };
    Ok(if binary.is_empty() {
        ([(header::CONTENT_TYPE, "application/json")], head).into_response()
    } else {
        let head_len = head.len().to_string();
        let body = [head, binary].concat();
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::HeaderName::from_static(kserve::HEADER_LENGTH), head_len),
            ],
            body,
        )
            .into_response()
    })
}

// ---- PhotoPrism ------------------------------------------------------------------------------

/// The rules that make a model's labels: its own, or for an ImageNet-1k classifier (1000
/// classes, or TF-slim's 1001) the default ones; `None` for other models, whose top classes are
/// their labels.
fn labelling_rules<'a>(state: &'a AppState, entry: &'a Entry) -> Option<&'a Rules> {
    let m = &entry.served.model;
    let imagenet = m.head.is_none() && m.class_names().len() - m.background_offset() == 1000;
    entry
        .served
        .rules
        .as_deref()
        .or_else(|| imagenet.then_some(&*state.default_rules))
}

/// A Vision API request's images (base64 data URLs, or URLs from allowed hosts), fetched.
async fn vision_inputs(state: &AppState, req: &photoprism::ApiRequest) -> Result<Vec<Input>, ApiError> {
    let sources = if req.images.is_empty() && !req.url.is_empty() {
        std::slice::from_ref(&req.url)
    } else {
        &req.images[..]
    };
    let mut inputs = Vec::with_capacity(sources.len());
    for (i, s) in sources.iter().enumerate() {
        let bytes = if s.starts_with("http://") || s.starts_with("https://") {
            state.fetcher.fetch(s).await
        } else {
            kserve::base64_image(s)
        };
        inputs.push(Input::Encoded(
            bytes.map_err(|e| ApiError::bad(format!("image {i}: {e}")))?,
        ));
    }
    Ok(inputs)
}

async fn vision_labels(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::body)?;
    let req: photoprism::ApiRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid Vision API request JSON: {e}")))?;
    let fail = |e: ApiError| e.with_id(&req.id);
    let entry = if req.model.is_empty() {
        &state.models[0]
    } else {
        model(&state, &req.model).map_err(fail)?
    };
    classifier(entry).map_err(fail)?;
    let inputs = vision_inputs(&state, &req).await.map_err(fail)?;
    // an NSFW model served beside this one marks the labels (PhotoPrism's LabelResult.nsfw)
    let moderator = state
        .models
        .iter()
        .find(|e| !std::ptr::eq(*e, entry) && e.served.rules.as_ref().is_some_and(|r| r.moderation.is_some()));
    let (answer, judged) = match moderator {
        None => (run(&state, entry, inputs).await, None),
        Some(m) => {
            let (a, j) = tokio::join!(run(&state, entry, inputs.clone()), run(&state, m, inputs));
            (a, Some((m, j)))
        }
    };
    let rows = all_scored(answer.map_err(fail)?, |i| format!("image {i}")).map_err(fail)?;
    // the labels stand without the NSFW marks when the NSFW model could not judge (busy, say)
    let verdicts = judged.and_then(|(m, j)| {
        let moderation = m.served.rules.as_ref().and_then(|r| r.moderation.as_ref())?;
        let labels = m.served.model.class_names();
        let judged = all_scored(j.ok()?, |i| format!("image {i}")).ok()?;
        let verdicts: Option<Vec<_>> = judged.iter().map(|s| moderation.judge(labels, &s.probs).ok()).collect();
        if verdicts.is_none() {
            tracing::warn!(model = %m.served.name, "NSFW model could not judge; labels without NSFW marks");
        }
        verdicts
    });
    let model = &entry.served.model;
    let rules = labelling_rules(&state, entry);
    let opts = ClassifyOptions::default();
    let per_image: Vec<Vec<Label>> = rows
        .iter()
        .map(|s| {
            let c = model.classification(&s.probs, &s.logits, &opts, rules);
            match rules {
                Some(_) => c.labels,
                None => c
                    .predictions
                    .into_iter()
                    .filter(|p| p.score >= 0.1)
                    .map(|p| Label {
                        label: p.label,
                        score: p.score,
                        priority: 0,
                        categories: Vec::new(),
                    })
                    .collect(),
            }
        })
        .collect();
    let mut labels = photoprism::labels(&per_image);
    if let Some(v) = &verdicts {
        photoprism::mark_nsfw(&mut labels, v);
    }
    let response = photoprism::ApiResponse {
        id: req.id.clone(),
        code: 200,
        model: photoprism::ModelInfo {
            kind: "labels",
            name: entry.served.name.clone(),
            version: "1".into(),
            resolution: model.meta.preprocessing.crop_size[0],
        },
        result: photoprism::ApiResult {
            labels: Some(labels),
            ..Default::default()
        },
    };
    Ok(axum::Json(response).into_response())
}

/// PhotoPrism's NSFW check: `result.nsfw`, one `nsfw.Result` per image, from a classifier
/// served with a moderation rule (`rules: nsfw.yaml` in models.yaml): the first such model
/// unless the request names one.
async fn vision_nsfw(State(state): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body.map_err(ApiError::body)?;
    let req: photoprism::ApiRequest =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("invalid Vision API request JSON: {e}")))?;
    let fail = |e: ApiError| e.with_id(&req.id);
    let moderates = |e: &Entry| e.served.rules.as_ref().is_some_and(|r| r.moderation.is_some());
    let entry = if req.model.is_empty() {
        state.models.iter().find(|e| moderates(e)).ok_or_else(|| {
            fail(ApiError::new(
                StatusCode::NOT_FOUND,
                "no NSFW model is served (a classifier with moderation rules, such as rules/nsfw.yaml)".into(),
            ))
        })?
    } else {
        model(&state, &req.model).map_err(fail)?
    };
    if !moderates(entry) {
        return Err(fail(ApiError::bad(format!(
            "model `{}` has no moderation rules (serve it with `rules: nsfw.yaml`)",
            entry.served.name
        ))));
    }
    classifier(entry).map_err(fail)?;
    let moderation = entry
        .served
        .rules
        .as_ref()
        .and_then(|r| r.moderation.as_ref())
        .expect("checked");
    let inputs = vision_inputs(&state, &req).await.map_err(fail)?;
    let answer = run(&state, entry, inputs).await.map_err(fail)?;
    let rows = all_scored(answer, |i| format!("image {i}")).map_err(fail)?;
    let model = &entry.served.model;
    let labels = model.class_names();
    let results = rows
        .iter()
        .map(|s| {
            let verdict = moderation.judge(labels, &s.probs).map_err(ApiError::bad)?;
            Ok(photoprism::NsfwResult::new(
                &verdict,
                moderation.threshold,
                labels,
                &s.probs,
            ))
        })
        .collect::<Result<Vec<_>, ApiError>>()
        .map_err(fail)?;
    let response = photoprism::ApiResponse {
        id: req.id.clone(),
        code: 200,
        model: photoprism::ModelInfo {
            kind: "nsfw",
            name: entry.served.name.clone(),
            version: "1".into(),
            resolution: model.meta.preprocessing.crop_size[0],
        },
        result: photoprism::ApiResult {
            nsfw: Some(results),
            ..Default::default()
        },
    };
    Ok(axum::Json(response).into_response())
}

// ---- POST /classify --------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClassifyQuery {
    model: Option<String>,
    top_k: Option<usize>,
    threshold: Option<f32>,
    /// `default` (the built-in ImageNet-1k rules) or `none`; the model's own when left out.
    rules: Option<String>,
    raw: Option<bool>,
    /// The `path` to report (multipart: the file's name).
    name: Option<String>,
}

async fn classify(
    State(state): State<AppState>,
    query: Result<Query<ClassifyQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))?;
    let entry = match &q.model {
        None => &state.models[0],
        Some(name) => model(&state, name)?,
    };
    classifier(entry)?;
    let rules: Option<&Rules> = match q.rules.as_deref() {
        None => entry.served.rules.as_deref(),
        Some("none") => None,
        Some("default") => Some(&state.default_rules),
        Some(other) => {
            return Err(ApiError::bad(format!(
                "rules={other}: expected `default` or `none` (the model's own rules apply when left out)"
            )))
        }
    };
    let opts = ClassifyOptions {
        top_k: q.top_k.unwrap_or(5),
        threshold: q.threshold,
        raw: q.raw.unwrap_or(false),
        ..ClassifyOptions::default()
    };
    let (name, outcome) = run_upload(&state, entry, req, q.name).await?;
    let result = outcome.map(|s| entry.served.model.classification(&s.probs, &s.logits, &opts, rules));
    Ok(single_answer(Classification::to_json(&name, &result), result.is_ok()))
}

/// The one image of a `/classify` or `/detect` request run on `entry`: the name to report
/// (`name=`, else a multipart file's name) and its outcome, an error naming the image.
async fn run_upload(
    state: &AppState,
    entry: &Entry,
    req: Request,
    name: Option<String>,
) -> Result<(String, Result<ImageScores, String>), ApiError> {
    let (file_name, bytes) = upload(state, req).await?;
    let name = name.or(file_name).unwrap_or_default();
    let answer = run(state, entry, vec![Input::Encoded(bytes.to_vec())]).await?;
    let outcome = answer.outcomes.into_iter().next().expect("one outcome per input");
    let outcome = outcome.map_err(|e| match name.as_str() {
        "" => format!("request body: {e}"),
        name => format!("{name}: {e}"),
    });
    Ok((name, outcome))
}

/// A single-image endpoint's JSON answer: 200, or 400 with `"code": 400` added when it failed.
fn single_answer(mut body: serde_json::Value, ok: bool) -> Response {
    if ok {
        return (StatusCode::OK, axum::Json(body)).into_response();
    }
    body["code"] = json!(400);
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// A 400 for a detector or pose estimator where a classifier's answer is asked for.
fn classifier(entry: &Entry) -> Result<(), ApiError> {
    let m = &entry.served.model;
    if m.detector.is_some() {
        return Err(ApiError::bad(format!(
            "model `{}` is a detector: POST /detect?model={0} or /v2/models/{0}/infer",
            entry.served.name
        )));
    }
    if m.pose_decoder().is_ok() {
        return Err(ApiError::bad(format!(
            "model `{}` estimates poses: POST /pose?model={0}",
            entry.served.name
        )));
    }
    Ok(())
}

// ---- POST /detect ----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DetectQuery {
    model: Option<String>,
    score: Option<f32>,
    iou: Option<f32>,
    max: Option<usize>,
    /// The `path` to report (multipart: the file's name).
    name: Option<String>,
}

/// One image (the body, or a multipart form's file) → `detect --format json`'s object: boxes
/// in the image's pixels. The first detector served unless `model=` names one.
async fn detect(
    State(state): State<AppState>,
    query: Result<Query<DetectQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))?;
    let entry = match &q.model {
        Some(name) => model(&state, name)?,
        None => state
            .models
            .iter()
            .find(|e| e.served.model.detector.is_some())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no detection model is served".into()))?,
    };
    let m = &entry.served.model;
    if m.detector.is_none() {
        return Err(ApiError::bad(format!(
            "model `{}` is not a detector: POST /classify?model={0} or /pose?model={0}",
            entry.served.name
        )));
    }
    for (k, v) in [("score", q.score), ("iou", q.iou)] {
        if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
            return Err(ApiError::bad(format!(
                "{k}={}: expected a number from 0 to 1",
                v.unwrap_or(0.0)
            )));
        }
    }
    let opts = crate::detect::DetectOptions {
        score_threshold: Some(q.score.unwrap_or(0.5)),
        iou_threshold: q.iou,
        max_detections: Some(q.max.unwrap_or(100).max(1)),
    };
    let (name, outcome) = run_upload(&state, entry, req, q.name).await?;
    let result = outcome.and_then(|s| {
        let (w, h) = s.size.expect("an encoded image has its size");
        m.decode_raw(&s.logits, m.meta.options.num_classes + 4, &opts)
            .map(|found| m.to_pixels(w, h, &found))
            .map_err(|e| format!("{}: {e}", if name.is_empty() { "request body" } else { &name }))
    });
    Ok(single_answer(
        crate::detect::Detections::to_json(&name, &result),
        result.is_ok(),
    ))
}

// ---- POST /pose ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoseQuery {
    model: Option<String>,
    /// At most this many people (PoseNet).
    max_poses: Option<usize>,
    /// Report people whose pose score reaches this [default 0.25].
    min_score: Option<f32>,
    /// The `path` to report (multipart: the file's name).
    name: Option<String>,
}

/// One image (the body, or a multipart form's file) → `pose --format json`'s object: people
/// and their keypoints in the image's pixels. The first pose model served unless `model=`
/// names one.
async fn pose(
    State(state): State<AppState>,
    query: Result<Query<PoseQuery>, axum::extract::rejection::QueryRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad(format!("query: {}", e.body_text())))?;
    let entry = match &q.model {
        Some(name) => model(&state, name)?,
        None => state
            .models
            .iter()
            .find(|e| e.served.model.pose_decoder().is_ok())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no pose model is served".into()))?,
    };
    let m = &entry.served.model;
    if m.pose_decoder().is_err() {
        return Err(ApiError::bad(format!(
            "model `{}` does not estimate poses: POST /classify?model={0} or /detect?model={0}",
            entry.served.name
        )));
    }
    if q.min_score.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
        return Err(ApiError::bad(format!(
            "min_score={}: expected a number from 0 to 1",
            q.min_score.unwrap_or(0.0)
        )));
    }
    let opts = crate::pose_task::PoseOptions {
        max_poses: Some(q.max_poses.unwrap_or(10).max(1)),
        min_score: q.min_score.unwrap_or(0.25),
        ..Default::default()
    };
    let (name, outcome) = run_upload(&state, entry, req, q.name).await?;
    let result = outcome.and_then(|s| {
        let (w, h) = s.size.expect("an encoded image has its size");
        let [c, gh, gw] = s.dims[..] else {
            return Err("the pose network's output is not C×h×w".to_string());
        };
        m.decode_poses(&s.logits, c, (gh, gw), &opts)
            .map(|poses| m.poses_to_pixels(w, h, poses, opts.min_score))
            .map_err(|e| format!("{}: {e}", if name.is_empty() { "request body" } else { &name }))
    });
    Ok(single_answer(
        crate::pose_task::Poses::to_json(&name, &result),
        result.is_ok(),
    ))
}

/// The image of a `/classify` request: the body itself, or the first file of a multipart form
/// (with its file name).
async fn upload(state: &AppState, req: Request) -> Result<(Option<String>, Bytes), ApiError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if !multipart {
        let bytes = Bytes::from_request(req, state).await.map_err(ApiError::body)?;
        return Ok((None, bytes));
    }
    let mut form = Multipart::from_request(req, state)
        .await
        .map_err(|e| ApiError::new(e.status(), format!("multipart body: {}", e.body_text())))?;
    loop {
        let field = form
            .next_field()
            .await
            .map_err(|e| ApiError::new(e.status(), format!("multipart body: {}", e.body_text())))?;
        let Some(field) = field else {
            return Err(ApiError::bad("multipart body has no file field"));
        };
        if field.file_name().is_some() || matches!(field.name(), Some("image" | "file")) {
            let name = field.file_name().map(str::to_string);
            let bytes = field
                .bytes()
                .await
                .map_err(|e| ApiError::new(e.status(), format!("multipart body: {}", e.body_text())))?;
            return Ok((name, bytes));
        }
    }
}
