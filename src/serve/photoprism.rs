//! PhotoPrism's Vision API, as its client sends and parses it (photoprism/photoprism
//! `internal/ai/vision/api_request.go`, `api_response.go`, `api_client.go`): PhotoPrism can use
//! ferrovision as its labelling service with `Service.Uri: http://HOST/api/v1/vision/labels` in
//! `vision.yml` and nothing else on its side.
//!
//! Request: `{"id", "model", "version", "images": ["data:image/jpeg;base64,..."], ...}` (the
//! prompt, options and other fields of its LLM engines are accepted and ignored). Response:
//! `{"id", "code", "model": {"type", "name", "version", "resolution"}, "result": {"labels":
//! [{"name", "source", "priority", "confidence", "topicality", "categories"}]}}`, errors
//! `{"id", "code", "error"}` as `NewApiError` writes them.

use serde::{Deserialize, Serialize};

use crate::rules::Label;

/// The fields of PhotoPrism's `ApiRequest` that a classifier uses.
#[derive(Debug, Deserialize)]
pub struct ApiRequest {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub images: Vec<String>,
}

/// `"model"` of a response (`vision.Model`'s JSON tags).
#[derive(Debug, Serialize)]
pub struct ModelInfo {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub name: String,
    pub version: String,
    pub resolution: usize,
}

/// `vision.LabelResult`: confidence and topicality are fractions (0..1); PhotoPrism stores
/// `uncertainty = round(100 − 100·confidence)`.
#[derive(Debug, Serialize, PartialEq)]
pub struct LabelResult {
    pub name: String,
    pub source: &'static str,
    pub priority: i32,
    pub confidence: f32,
    pub topicality: f32,
    pub categories: Vec<String>,
    /// `nsfw` / `nsfw_confidence` (`omitempty`): set when an NSFW model is served beside the
    /// labelling one and judged the request's images unsafe.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nsfw: bool,
    #[serde(skip_serializing_if = "is_zero")]
    pub nsfw_confidence: f32,
}

fn is_zero(x: &f32) -> bool {
    *x == 0.0
}

/// Marks every label with the request's NSFW verdict (PhotoPrism sends one image per request;
/// with several, any unsafe image marks them all, with the highest score).
pub fn mark_nsfw(labels: &mut [LabelResult], verdicts: &[crate::rules::Verdict]) {
    let score = verdicts.iter().map(|v| v.score).fold(0.0, f32::max);
    let nsfw = verdicts.iter().any(|v| v.nsfw);
    for l in labels {
        l.nsfw = nsfw;
        l.nsfw_confidence = score;
    }
}

/// `result`: labels for `/labels`, NSFW results for `/nsfw` (Go's `omitempty`).
#[derive(Debug, Default, Serialize)]
pub struct ApiResult {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<Vec<LabelResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nsfw: Option<Vec<NsfwResult>>,
}

/// PhotoPrism's `nsfw.Result` (`internal/ai/nsfw/nsfw.go`): `status` "safe" or "unsafe" (the
/// only field PhotoPrism acts on), the unsafe `score` and the `threshold` it was compared with,
/// and the five class probabilities under their capitalised names.
#[derive(Debug, Serialize, PartialEq)]
pub struct NsfwResult {
    pub status: &'static str,
    pub score: f32,
    pub threshold: f32,
    #[serde(rename = "Drawing")]
    pub drawing: f32,
    #[serde(rename = "Hentai")]
    pub hentai: f32,
    #[serde(rename = "Neutral")]
    pub neutral: f32,
    #[serde(rename = "Porn")]
    pub porn: f32,
    #[serde(rename = "Sexy")]
    pub sexy: f32,
}

impl NsfwResult {
    /// From a moderation verdict and the probabilities of classes named `labels` (a class the
    /// model lacks counts 0).
    pub fn new(verdict: &crate::rules::Verdict, threshold: f32, labels: &[String], probs: &[f32]) -> Self {
        let p = |name: &str| {
            labels
                .iter()
                .position(|l| l.eq_ignore_ascii_case(name))
                .and_then(|i| probs.get(i).copied())
                .unwrap_or(0.0)
        };
        Self {
            status: if verdict.nsfw { "unsafe" } else { "safe" },
            score: verdict.score,
            threshold,
            drawing: p("Drawing"),
            hentai: p("Hentai"),
            neutral: p("Neutral"),
            porn: p("Porn"),
            sexy: p("Sexy"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ApiResponse {
    pub id: String,
    pub code: u16,
    pub model: ModelInfo,
    pub result: ApiResult,
}

/// PhotoPrism's result for a request's images: each label once, with its highest score over the
/// images (the fraction of an image's probability its classes hold is both its confidence and
/// its topicality), by priority, then confidence.
pub fn labels(per_image: &[Vec<Label>]) -> Vec<LabelResult> {
    let mut out: Vec<LabelResult> = Vec::new();
    for l in per_image.iter().flatten() {
        match out.iter_mut().find(|r| r.name == l.label) {
            Some(r) if r.confidence >= l.score => {}
            Some(r) => (r.confidence, r.topicality) = (l.score, l.score),
            None => out.push(LabelResult {
                name: l.label.clone(),
                source: "image",
                priority: l.priority,
                confidence: l.score,
                topicality: l.score,
                categories: l.categories.clone(),
                nsfw: false,
                nsfw_confidence: 0.0,
            }),
        }
    }
    out.sort_by(|a, b| b.priority.cmp(&a.priority).then(b.confidence.total_cmp(&a.confidence)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(name: &str, score: f32, priority: i32) -> Label {
        Label {
            label: name.into(),
            score,
            priority,
            categories: vec!["x".into()],
        }
    }

    #[test]
    fn labels_of_several_images_keep_each_name_once_at_its_best() {
        let got = labels(&[
            vec![label("cat", 0.5, 5), label("box", 0.2, 0)],
            vec![label("cat", 0.9, 5), label("dog", 0.3, 5)],
        ]);
        let names: Vec<(&str, f32)> = got.iter().map(|l| (l.name.as_str(), l.confidence)).collect();
        assert_eq!(names, [("cat", 0.9), ("dog", 0.3), ("box", 0.2)]);
        assert_eq!(got[0].topicality, 0.9);
    }

    #[test]
    fn request_ignores_the_llm_fields() {
        let r: ApiRequest = serde_json::from_str(
            r#"{"id":"a","model":"m","version":"latest","prompt":"p","options":{"temperature":0.1},
                "stream":false,"images":["data:image/jpeg;base64,AAAA"]}"#,
        )
        .unwrap();
        assert_eq!((r.id.as_str(), r.images.len()), ("a", 1));
    }
}
