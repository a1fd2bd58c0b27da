//! `ferrovision serve` end to end on 127.0.0.1 (nothing leaves loopback): the real binary with the
//! real MobileNet v2 of ../shared, called with a real HTTP client (reqwest) and NVIDIA's own KServe
//! v2 client (tritonclient), every answer checked against `ferrovision classify` on the same
//! photos; concurrency, overload, hostile requests and graceful shutdown.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The converted model, the photos, and `classify`'s JSON line for each (by file name).
struct Fixture {
    weights: PathBuf,
    photos: Vec<PathBuf>,
    cli: HashMap<String, Value>,
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap().keep();
            let weights = common::converted_tflite(&dir, "mobilenet_v2_1.0_224_quant", None)?;
            let images = common::shared_dir()?.join("data/images");
            let mut photos: Vec<PathBuf> = std::fs::read_dir(&images)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "jpg" || x == "bmp"))
                .collect();
            photos.sort();
            let out = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
                .args([
                    "classify",
                    "--format",
                    "json",
                    "--rules",
                    "default",
                    "--raw",
                    "--weights",
                ])
                .arg(&weights)
                .args(&photos)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let cli = String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: Value = serde_json::from_str(l).unwrap();
                    (file_name(v["path"].as_str().unwrap()), v)
                })
                .collect();
            Some(Fixture { weights, photos, cli })
        })
        .as_ref()
}

fn file_name(p: impl AsRef<Path>) -> String {
    p.as_ref().file_name().unwrap().to_str().unwrap().to_string()
}

/// A running `ferrovision serve`, killed when dropped.
struct Server {
    child: Child,
    addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(weights: &Path, args: &[&str]) -> Server {
        let mut all = vec!["--weights", weights.to_str().unwrap()];
        all.extend(args);
        Server::launch(&all)
    }

    /// `ferrovision serve --addr 127.0.0.1:0 ARGS`, once it listens.
    fn launch(args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .split(" on http://")
                    .nth(1)
                    .filter(|_| line.starts_with("serving "))
                {
                    let _ = tx.send(addr.to_string());
                }
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the server did not start:\n{}", log.lock().unwrap()));
        Server { child, addr, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn metrics(&self) -> String {
        client().get(self.url("/metrics")).send().unwrap().text().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// POST /classify with an image's bytes: (status, JSON).
fn classify(server: &Server, bytes: Vec<u8>, query: &str) -> (u16, Value) {
    let res = client()
        .post(server.url(&format!("/classify?{query}")))
        .body(bytes)
        .send()
        .unwrap();
    (res.status().as_u16(), res.json().unwrap())
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Same classes in the same order, scores within 1e-5 (batches of other sizes may round
/// differently), same labels.
fn assert_same_classification(got: &Value, want: &Value, what: &str) {
    let ids = |v: &Value| -> Vec<u64> {
        v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["class_id"].as_u64().unwrap())
            .collect()
    };
    let scores = |v: &Value| -> Vec<f32> {
        v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["score"].as_f64().unwrap() as f32)
            .collect()
    };
    assert_eq!(ids(got), ids(want), "{what}: {got} vs {want}");
    assert!(max_diff(&scores(got), &scores(want)) <= 1e-5, "{what}: {got} vs {want}");
    let labels = |v: &Value| -> Vec<String> {
        v["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["label"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(labels(got), labels(want), "{what}");
}

#[test]
fn every_endpoint_answers_as_classify_does() {
    let Some(fx) = fixture() else { return };
    let server = Server::start(&fx.weights, &[]);
    let c = client();
    let get = |p: &str| c.get(server.url(p)).send().unwrap();
    assert_eq!(get("/v2/health/live").status(), 200);
    assert_eq!(get("/v2/health/ready").status(), 200);
    let meta: Value = get("/v2").json().unwrap();
    assert_eq!(meta["extensions"], json!(["binary_tensor_data", "classification"]));
    let name = "mobilenet_v2_1.0_224_quant"; // the file's stem
    let model: Value = get(&format!("/v2/models/{name}")).json().unwrap();
    assert_eq!(
        model["inputs"][0],
        json!({"name": "image", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(model["inputs"][1]["shape"], json!([-1, 3, 224, 224]));
    assert_eq!(model["outputs"][0]["shape"], json!([-1, 1001]));
    assert_eq!(get(&format!("/v2/models/{name}/ready")).status(), 200);
    assert_eq!(get(&format!("/v2/models/{name}/versions/1/ready")).status(), 200);
    let missing = get("/v2/models/resnet9/ready");
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().unwrap();
    assert!(
        err["error"].as_str().unwrap().contains("unknown model `resnet9`"),
        "{err}"
    );

    // POST /classify: each photo as classify printed it, logits included
    for p in &fx.photos {
        let want = &fx.cli[&file_name(p)];
        let (status, got) = classify(
            &server,
            read(p),
            &format!("rules=default&raw=true&name={}", file_name(p)),
        );
        assert_eq!(status, 200, "{got}");
        assert_same_classification(&got, want, &file_name(p));
        assert_eq!(got["path"], file_name(p));
        assert!(max_diff(&floats(&got["logits"]), &floats(&want["logits"])) <= 1e-4);
    }
    // multipart, and the query's options
    let cat = fx.photos.iter().find(|p| file_name(p) == "cat.jpg").unwrap();
    let form = reqwest::blocking::multipart::Form::new().part(
        "image",
        reqwest::blocking::multipart::Part::bytes(read(cat)).file_name("cat.jpg"),
    );
    let got: Value = c
        .post(server.url("/classify?top_k=2&rules=default"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(got["path"], "cat.jpg");
    assert_eq!(got["predictions"].as_array().unwrap().len(), 2);
    assert_eq!(got["labels"][0]["label"], "cat");
    let (_, none) = classify(&server, read(cat), "threshold=0.2&rules=none");
    assert_eq!(none["predictions"].as_array().unwrap().len(), 2, "{none}"); // 0.56 and 0.23
    assert_eq!(none["labels"], json!([]));

    // KServe v2, JSON: every photo in one request, images as base64
    let infer = server.url(&format!("/v2/models/{name}/infer"));
    let images: Vec<String> = fx.photos.iter().map(|p| B64.encode(read(p))).collect();
    let body = json!({"id": "all", "inputs": [{"name": "image", "shape": [images.len()], "datatype": "BYTES", "data": images}],
                      "outputs": [{"name": "probabilities"}]});
    let res: Value = c.post(&infer).json(&body).send().unwrap().json().unwrap();
    assert_eq!(res["id"], "all");
    assert_eq!(res["outputs"][0]["shape"], json!([fx.photos.len(), 1001]));
    let probs = floats(&res["outputs"][0]["data"]);
    for (row, p) in probs.chunks(1001).zip(&fx.photos) {
        let top = &fx.cli[&file_name(p)]["predictions"][0];
        let (arg, max) = row
            .iter()
            .enumerate()
            .fold((0, 0f32), |a, (i, &x)| if x > a.1 { (i, x) } else { a });
        assert_eq!(arg as u64, top["class_id"].as_u64().unwrap(), "{}", file_name(p));
        assert!((max - top["score"].as_f64().unwrap() as f32).abs() <= 1e-5);
    }

    // KServe v2, binary tensors both ways, and the classification extension
    let mut raw = Vec::new();
    for p in &fx.photos {
        let b = read(p);
        raw.extend((b.len() as u32).to_le_bytes());
        raw.extend(b);
    }
    let head = json!({"inputs": [{"name": "image", "shape": [fx.photos.len()], "datatype": "BYTES",
                                  "parameters": {"binary_data_size": raw.len()}}],
                      "outputs": [{"name": "logits", "parameters": {"binary_data": true}},
                                  {"name": "probabilities", "parameters": {"classification": 2}}]})
    .to_string();
    let res = c
        .post(&infer)
        .header("Inference-Header-Content-Length", head.len())
        .body([head.as_bytes(), &raw].concat())
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let json_len: usize = res.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = res.bytes().unwrap();
    let head: Value = serde_json::from_slice(&body[..json_len]).unwrap();
    let logits: Vec<f32> = body[json_len..]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"],
        json!(logits.len() * 4)
    );
    assert_eq!(head["outputs"][1]["datatype"], "BYTES");
    for (i, p) in fx.photos.iter().enumerate() {
        let want = &fx.cli[&file_name(p)];
        assert!(max_diff(&logits[i * 1001..(i + 1) * 1001], &floats(&want["logits"])) <= 1e-4);
        let top2 = &head["outputs"][1]["data"].as_array().unwrap()[i * 2..i * 2 + 2];
        for (s, pred) in top2.iter().zip(want["predictions"].as_array().unwrap()) {
            let parts: Vec<&str> = s.as_str().unwrap().splitn(3, ':').collect();
            assert_eq!(parts[1], pred["class_id"].to_string(), "{s}");
            assert_eq!(parts[2], pred["label"].as_str().unwrap());
            assert!((parts[0].parse::<f32>().unwrap() - pred["score"].as_f64().unwrap() as f32).abs() <= 1e-5);
        }
    }

    // KServe v2, FP32 input preprocessed by the client (here: our library, as classify does)
    let model = ferrovision::Model::load(&fx.weights, &candle_core::Device::Cpu).unwrap();
    let img = ferrovision::preprocess::load_image(cat).unwrap();
    let pixels = model
        .views(&[img], ferrovision::preprocess::Crops::Center)
        .unwrap()
        .remove(0);
    let values: Vec<f32> = pixels.flatten_all().unwrap().to_vec1().unwrap();
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let head = json!({"inputs": [{"name": "input", "shape": [1, 3, 224, 224], "datatype": "FP32",
                                  "parameters": {"binary_data_size": raw.len()}}],
                      "outputs": [{"name": "logits"}]})
    .to_string();
    let res: Value = c
        .post(&infer)
        .header("Inference-Header-Content-Length", head.len())
        .body([head.as_bytes(), &raw].concat())
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        max_diff(
            &floats(&res["outputs"][0]["data"]),
            &floats(&fx.cli["cat.jpg"]["logits"])
        ) <= 1e-4
    );

    // PhotoPrism's Vision API: data URLs in, the rules' labels out
    for p in &fx.photos {
        let want = &fx.cli[&file_name(p)];
        let url = format!("data:image/jpeg;base64,{}", B64.encode(read(p)));
        let req = json!({"id": file_name(p), "model": "", "version": "latest", "prompt": "ignored", "images": [url]});
        let res: Value = c
            .post(server.url("/api/v1/vision/labels"))
            .json(&req)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            (res["code"].as_u64(), res["id"].as_str()),
            (Some(200), Some(file_name(p).as_str()))
        );
        assert_eq!(
            res["model"],
            json!({"type": "labels", "name": name, "version": "1", "resolution": 224})
        );
        let got = res["result"]["labels"].as_array().unwrap();
        let want = want["labels"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{}: {res}", file_name(p));
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g["name"], &g["priority"], &g["categories"]),
                (&w["label"], &w["priority"], &w["categories"])
            );
            assert_eq!(g["source"], "image");
            assert!((g["confidence"].as_f64().unwrap() - w["score"].as_f64().unwrap()).abs() <= 1e-5);
        }
    }

    // every request above was counted, and the batch sizes recorded
    let metrics = server.metrics();
    for line in [
        "ferrovision_requests_total{endpoint=\"/classify\",status=\"200\"}",
        "ferrovision_requests_total{endpoint=\"/api/v1/vision/labels\",status=\"200\"}",
        "ferrovision_requests_total{endpoint=\"/v2/models/{name}/infer\",status=\"200\"}",
        &format!("ferrovision_batch_size_bucket{{model=\"{name}\",le=\"16\"}}"),
        &format!("ferrovision_queue_duration_seconds_count{{model=\"{name}\"}}"),
        &format!("ferrovision_compute_duration_seconds_count{{model=\"{name}\"}}"),
        "ferrovision_request_duration_seconds_count{endpoint=\"/classify\"}",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
    // /classify n + 2, v2 JSON n, v2 binary n, v2 FP32 1, PhotoPrism n
    let images = 4 * fx.photos.len() + 3;
    assert!(
        metrics.contains(&format!("ferrovision_inference_count{{model=\"{name}\"}} {images}\n")),
        "{metrics}"
    );
}

#[test]
fn nvidia_v2_client_reads_our_answers() {
    let Some(fx) = fixture() else { return };
    let py = std::env::var("FERROVISION_PYTHON").unwrap_or_else(|_| "python3".into());
    let has_client = Command::new(&py)
        .args(["-c", "import tritonclient.http"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_client {
        assert!(
            !common::in_ci(),
            "CI=true but `{py}` lacks tritonclient (scripts/requirements-serve.txt)"
        );
        eprintln!("SKIPPED: `{py}` cannot import tritonclient.http (pip install -r scripts/requirements-serve.txt)");
        return;
    }
    let server = Server::start(&fx.weights, &[]);
    let out = Command::new(&py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/v2_client_check.py"))
        .arg(&server.addr)
        .arg("mobilenet_v2_1.0_224_quant")
        .args(&fx.photos)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", &stderr[stderr.len().saturating_sub(3000)..]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["live"], &v["ready"], &v["model_ready"]),
        (&json!(true), &json!(true), &json!(true))
    );
    assert_eq!(v["metadata"]["name"], "mobilenet_v2_1.0_224_quant");
    assert_eq!(v["unknown_model"]["status"], "404");
    for mode in ["binary", "json"] {
        let r = &v[mode];
        assert_eq!(r["id"], if mode == "binary" { "req-1" } else { "req-0" });
        for (i, p) in fx.photos.iter().enumerate() {
            let want = &fx.cli[&file_name(p)];
            let probs = floats(&r["probabilities"][i]);
            let top = &want["predictions"][0];
            let k = top["class_id"].as_u64().unwrap() as usize;
            assert!(
                (probs[k] - top["score"].as_f64().unwrap() as f32).abs() <= 1e-5,
                "{mode} {}",
                file_name(p)
            );
            let logits = floats(&want["logits"]);
            let mut order: Vec<usize> = (0..logits.len()).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            for (s, &j) in r["top3"][i].as_array().unwrap().iter().zip(&order) {
                let parts: Vec<&str> = s.as_str().unwrap().splitn(3, ':').collect();
                assert_eq!(parts[1].parse::<usize>().unwrap(), j, "{mode} {s}");
                assert!(
                    (parts[0].parse::<f32>().unwrap() - logits[j]).abs() <= 1e-4,
                    "{mode} {s}"
                );
            }
        }
    }
}

#[test]
fn concurrent_clients_get_their_single_answers() {
    let Some(fx) = fixture() else { return };
    let server = Server::start(&fx.weights, &["--max-batch", "16"]);
    let single: Vec<Value> = fx
        .photos
        .iter()
        .map(|p| classify(&server, read(p), "rules=default").1)
        .collect();
    let (clients, each) = (32, 20);
    let server = &server;
    let single = &single;
    std::thread::scope(|s| {
        for t in 0..clients {
            s.spawn(move || {
                let c = client();
                for i in 0..each {
                    let k = (t * each + i) % fx.photos.len();
                    let res = c
                        .post(server.url("/classify?rules=default"))
                        .body(read(&fx.photos[k]))
                        .send()
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    let got: Value = res.json().unwrap();
                    assert_same_classification(&got, &single[k], &format!("client {t} request {i}"));
                }
            });
        }
    });
    // batching happened: fewer forward passes than images
    let metrics = server.metrics();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    let images = value("ferrovision_inference_count");
    let batches = value("ferrovision_execution_count");
    assert_eq!(images as usize, fx.photos.len() + clients * each);
    assert!(
        images / batches > 2.0,
        "mean batch {images}/{batches}: requests were not batched"
    );
}

#[test]
fn a_full_queue_answers_429_and_every_accepted_request_completes() {
    let Some(fx) = fixture() else { return };
    let server = Server::start(&fx.weights, &["--max-queue", "3", "--max-batch", "1"]);
    let cat = read(
        &fx.photos
            .iter()
            .find(|p| file_name(p) == "cat_720p.jpg")
            .unwrap()
            .clone(),
    );
    let results: Vec<(u16, Option<String>, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let (server, cat) = (&server, cat.clone());
                s.spawn(move || {
                    let res = client().post(server.url("/classify")).body(cat).send().unwrap();
                    let retry = res
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    (res.status().as_u16(), retry, res.json::<Value>().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let busy: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(ok + busy.len(), 24, "{results:?}");
    assert!(ok >= 3 && !busy.is_empty(), "{ok} answered, {} refused", busy.len());
    for (_, retry, body) in &busy {
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body["error"].as_str().unwrap().contains("busy"), "{body}");
    }
    let want = fx.cli["cat_720p.jpg"]["predictions"][0]["class_id"].clone();
    for (_, _, body) in results.iter().filter(|r| r.0 == 200) {
        assert_eq!(body["predictions"][0]["class_id"], want, "{body}");
    }
    assert!(server.metrics().contains("ferrovision_rejected_total"));
}

#[test]
fn hostile_requests_get_their_status_and_error() {
    let Some(fx) = fixture() else { return };
    let server = Server::start(&fx.weights, &["--max-body-mb", "1", "--body-timeout-s", "1"]);
    let c = client();
    let cat = read(&fx.photos.iter().find(|p| file_name(p) == "cat.jpg").unwrap().clone());
    let expect = |res: reqwest::blocking::Response, status: u16, needle: &str| {
        assert_eq!(res.status().as_u16(), status, "{needle}");
        let body: Value = res.json().unwrap();
        assert_eq!(body["code"], status, "{body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{needle}: {body}");
    };
    let post = |path: &str, body: Vec<u8>| c.post(server.url(path)).body(body).send().unwrap();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(64, 64, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    expect(
        post("/classify?name=half.png", png[..png.len() / 2].to_vec()),
        400,
        "half.png",
    );
    let mut corrupt = cat.clone();
    for b in corrupt.iter_mut().skip(600).step_by(7) {
        *b = 0xFF; // markers everywhere in the entropy-coded data
    }
    expect(post("/classify", corrupt), 400, "request body: ");
    expect(
        post("/classify", b"hello, not an image".to_vec()),
        400,
        "not a supported image",
    );
    expect(
        post("/classify", common::huge_png(100_000, 100_000, true)),
        400,
        "unexpected end of file",
    );
    expect(
        post("/classify", common::huge_png(100_000, 100_000, false)),
        400,
        "more than the limit",
    );
    expect(post("/classify?top_k=many", cat.clone()), 400, "query");
    expect(
        post("/classify?rules=/etc/passwd", cat.clone()),
        400,
        "rules=/etc/passwd",
    );
    // raw HTTP/1.1: the status line of the answer to `request`
    let status_line = |request: &[u8]| {
        let mut tcp = std::net::TcpStream::connect(&server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        tcp.write_all(request).unwrap();
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).unwrap();
        String::from_utf8_lossy(&head).to_string()
    };
    // a declared length of 100 GB: refused before any of it is read
    let huge = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000000\r\n\r\nabc";
    assert_eq!(status_line(huge), "HTTP/1.1 413");
    let over = format!(
        "POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        (1 << 20) + 1
    );
    assert_eq!(status_line(over.as_bytes()), "HTTP/1.1 413");
    // over the limit without a declared length: chunked, cut at the limit
    let mut chunked = b"POST /classify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..9 {
        chunked.extend(format!("{:x}\r\n", 128 << 10).as_bytes());
        chunked.extend(vec![7u8; 128 << 10]);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    assert_eq!(status_line(&chunked), "HTTP/1.1 413");
    // a body that never comes: 408 after --body-timeout-s
    let slow = b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nonly this";
    let start = Instant::now();
    assert_eq!(status_line(slow), "HTTP/1.1 408");
    assert!(start.elapsed() < Duration::from_secs(20));

    let infer = "/v2/models/mobilenet_v2_1.0_224_quant/infer";
    expect(
        post(infer, b"{not json".to_vec()),
        400,
        "invalid inference request JSON",
    );
    let two = json!({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]});
    expect(post(infer, two.to_string().into_bytes()), 400, "2 elements but 1");
    let junk = json!({"id": "j", "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="]}]});
    expect(
        post(infer, junk.to_string().into_bytes()),
        400,
        "image 0: not a supported image",
    );
    let res = c
        .post(server.url(infer))
        .header("Inference-Header-Content-Length", "99999")
        .body("{}")
        .send()
        .unwrap();
    expect(res, 400, "Inference-Header-Content-Length");
    expect(
        post("/v2/models/nope/infer", b"{}".to_vec()),
        404,
        "unknown model `nope`",
    );

    let labels = "/api/v1/vision/labels";
    expect(post(labels, b"[1, 2".to_vec()), 400, "invalid Vision API request JSON");
    let remote = json!({"id": "r", "images": ["http://169.254.169.254/latest/meta-data"]});
    expect(
        post(labels, remote.to_string().into_bytes()),
        400,
        "remote URLs are not fetched",
    );
    let garbage = json!({"id": "g", "images": ["data:image/jpeg;base64,@@@"]});
    let res = post(labels, garbage.to_string().into_bytes());
    assert_eq!(res.status(), 400);
    let body: Value = res.json().unwrap();
    assert_eq!(body["id"], "g");
    assert!(
        body["error"].as_str().unwrap().contains("image 0: not base64"),
        "{body}"
    );
    expect(
        post(labels, json!({"images": []}).to_string().into_bytes()),
        400,
        "no image",
    );
    expect(post("/nowhere", vec![]), 404, "no route POST /nowhere");

    // nothing was lost: the server still answers as classify does
    let (status, got) = classify(&server, cat, "rules=default");
    assert_eq!(status, 200);
    assert_same_classification(&got, &fx.cli["cat.jpg"], "cat.jpg after the hostile requests");
}

/// SIGTERM while 12 requests are in flight: every one is answered correctly, readiness is
/// never 200 meanwhile (503, or no new connection), the server exits 0 and stops listening.
#[test]
fn sigterm_drains_in_flight_requests() {
    let Some(fx) = fixture() else { return };
    let mut server = Server::start(&fx.weights, &["--max-batch", "1"]);
    let photo = fx.photos.iter().find(|p| file_name(p) == "cat_720p.jpg").unwrap();
    let want = fx.cli["cat_720p.jpg"]["predictions"][0]["class_id"].clone();
    let n = 12;
    let barrier = std::sync::Barrier::new(n + 1);
    let url = server.url("/classify");
    let (done, status) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let (url, barrier) = (&url, &barrier);
                s.spawn(move || {
                    let c = client();
                    barrier.wait();
                    let res = c.post(url).body(read(photo)).send().unwrap();
                    assert_eq!(res.status(), 200);
                    let body: Value = res.json().unwrap();
                    (Instant::now(), body["predictions"][0]["class_id"].clone())
                })
            })
            .collect();
        barrier.wait();
        std::thread::sleep(Duration::from_millis(250));
        let signalled = Instant::now();
        unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
        // while it drains, readiness is never 200: 503, or no new connection at all
        std::thread::sleep(Duration::from_millis(30));
        let ready_url = server.url("/v2/health/ready");
        let probes: Vec<Option<u16>> = (0..5)
            .map(|_| {
                let probe = client().get(&ready_url).send().ok().map(|r| r.status().as_u16());
                std::thread::sleep(Duration::from_millis(20));
                probe
            })
            .collect();
        println!("readiness probes while draining (None: connection refused): {probes:?}");
        assert!(
            probes.iter().all(|p| *p != Some(200)),
            "ready while draining: {probes:?}"
        );
        let status = server.child.wait().unwrap();
        let done: Vec<(Instant, Value)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        (
            done.into_iter().map(|(t, v)| (t > signalled, v)).collect::<Vec<_>>(),
            status,
        )
    });
    assert!(status.success(), "exit {status:?}\n{}", server.log.lock().unwrap());
    assert!(done.iter().all(|(_, v)| *v == want), "{done:?}");
    assert!(
        done.iter().any(|(after, _)| *after),
        "no request was still in flight at SIGTERM"
    );
    assert!(server
        .log
        .lock()
        .unwrap()
        .contains("stopped: every request in flight was answered"));
    assert!(
        std::net::TcpStream::connect(&server.addr).is_err(),
        "still listening after shutdown"
    );
}

#[test]
fn remote_images_come_only_from_allowed_hosts() {
    let Some(fx) = fixture() else { return };
    let cat = read(fx.photos.iter().find(|p| file_name(p) == "cat.jpg").unwrap());
    // a photo host on loopback that counts its requests
    let host = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = host.local_addr().unwrap().port();
    let hits = Arc::new(Mutex::new(0));
    {
        let (hits, cat) = (hits.clone(), cat.clone());
        std::thread::spawn(move || {
            for mut conn in host.incoming().map_while(Result::ok) {
                *hits.lock().unwrap() += 1;
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = conn.write_all(
                    &[
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            cat.len()
                        )
                        .as_bytes(),
                        &cat,
                    ]
                    .concat(),
                );
            }
        });
    }
    let server = Server::start(
        &fx.weights,
        &["--allow-fetch", &format!("example.invalid,127.0.0.1:{port}")],
    );
    let labels = server.url("/api/v1/vision/labels");
    let req = json!({"id": "u", "images": [format!("http://127.0.0.1:{port}/cat.jpg")]});
    let res: Value = client().post(&labels).json(&req).send().unwrap().json().unwrap();
    assert_eq!(res["result"]["labels"][0]["name"], "cat", "{res}");
    assert_eq!(*hits.lock().unwrap(), 1);
    // the same host under another name, and the "url" field: refused without a request
    let req = json!({"id": "v", "url": format!("http://localhost:{port}/cat.jpg")});
    let res = client().post(&labels).json(&req).send().unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().unwrap();
    assert!(body["error"].as_str().unwrap().contains("`localhost` is not"), "{body}");
    assert_eq!(*hits.lock().unwrap(), 1);
}

#[test]
fn models_yaml_serves_several_models_and_bad_entries_stop_the_start() {
    let Some(fx) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&fx.weights, dir.path().join("m.safetensors")).unwrap();
    std::fs::write(
        dir.path().join("cats.yaml"),
        "rules:\n  281: {label: kitty, priority: 3}\n  282: {see: 281}\n",
    )
    .unwrap();
    let config = dir.path().join("models.yaml");
    std::fs::write(
        &config,
        "models:\n  plain:\n    weights: m.safetensors\n  cats:\n    weights: m.safetensors\n    rules: cats.yaml\n    crops: '3'\n",
    )
    .unwrap();
    let server = Server::launch(&["--config", config.to_str().unwrap()]);
    let c = client();
    assert_eq!(
        c.get(server.url("/v2/models/plain/ready")).send().unwrap().status(),
        200
    );
    assert_eq!(c.get(server.url("/v2/models/cats/ready")).send().unwrap().status(), 200);
    let cat = read(fx.photos.iter().find(|p| file_name(p) == "cat.jpg").unwrap());
    // the first model answers requests that name none; its labels: the default ImageNet rules
    let url = format!("data:image/jpeg;base64,{}", B64.encode(&cat));
    let res: Value = c
        .post(server.url("/api/v1/vision/labels"))
        .json(&json!({"images": [url]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&res["model"]["name"], &res["result"]["labels"][0]["name"]),
        (&json!("plain"), &json!("cat"))
    );
    assert_eq!(
        classify(&server, cat.clone(), "").1["predictions"],
        fx.cli["cat.jpg"]["predictions"].clone()
    );
    // the second, by name: its own rules and its three views
    let (_, got) = classify(&server, cat, "model=cats");
    assert_eq!(got["labels"][0]["label"], "kitty", "{got}");
    assert_ne!(
        got["predictions"][0]["score"],
        fx.cli["cat.jpg"]["predictions"][0]["score"]
    );

    for (yaml, needle) in [
        (
            "models:\n  x:\n    weights: missing.safetensors\n",
            "model `x`: loading",
        ),
        (
            "models:\n  x:\n    weights: m.safetensors\n    task: detect\n",
            "task `detect`, but",
        ),
        (
            "models:\n  x:\n    weights: m.safetensors\n    task: pose\n",
            "task `pose`, but",
        ),
        (
            "models:\n  x:\n    weights: m.safetensors\n    task: segment\n",
            "task `segment` is not served (classify, detect, pose)",
        ),
        (
            "models:\n  x:\n    weights: m.safetensors\n    dtype: f8\n",
            "dtype must be f32, f16 or bf16",
        ),
        ("models:\n  x:\n    wieghts: m.safetensors\n", "unknown field `wieghts`"),
        ("models: {}\n", "no models"),
    ] {
        std::fs::write(&config, yaml).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
            .args(["serve", "--addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains("models.yaml") && err.contains(needle), "{yaml}: {err}");
    }
}

/// A detector beside a classifier: `POST /detect` answers as `ferrovision detect --format json`
/// does on the same photos (batched with other requests or not), the v2 infer endpoint gives
/// TF Object Detection API's outputs with the same boxes, normalised; each kind of model
/// refuses the other's endpoints with a 400 that says where to go.
#[test]
fn a_detector_is_served_beside_a_classifier() {
    let Some(fx) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(detector) = common::converted_tflite(
        dir.path(),
        "ssd_mobilenet_v2_coco_quant_postprocess",
        Some("coco_labels.txt"),
    ) else {
        return;
    };
    std::fs::copy(&fx.weights, dir.path().join("m.safetensors")).unwrap();
    let config = dir.path().join("models.yaml");
    std::fs::write(
        &config,
        format!(
            "models:\n  labels:\n    weights: m.safetensors\n  objects:\n    weights: {}\n    task: detect\n",
            detector.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(["detect", "--format", "json", "--weights"])
        .arg(&detector)
        .args(&fx.photos)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: HashMap<String, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (file_name(v["path"].as_str().unwrap()), v)
        })
        .collect();
    let server = Server::launch(&["--config", config.to_str().unwrap(), "--max-queue-delay-ms", "20"]);
    // all photos at once, so that they share forward passes
    let answers: Vec<(String, Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = fx
            .photos
            .iter()
            .map(|p| {
                let server = &server;
                s.spawn(move || {
                    let res = client()
                        .post(server.url(&format!("/detect?name={}", file_name(p))))
                        .body(read(p))
                        .send()
                        .unwrap();
                    assert_eq!(res.status(), 200);
                    (file_name(p), res.json::<Value>().unwrap())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut boxes = 0;
    for (name, got) in &answers {
        let want = &cli[name];
        assert_eq!(
            (&got["width"], &got["height"]),
            (&want["width"], &want["height"]),
            "{name}"
        );
        let (g, w) = (
            got["detections"].as_array().unwrap(),
            want["detections"].as_array().unwrap(),
        );
        assert_eq!(g.len(), w.len(), "{name}: {got} vs {want}");
        for (a, b) in g.iter().zip(w) {
            assert_eq!((&a["class_id"], &a["label"]), (&b["class_id"], &b["label"]), "{name}");
            assert!(
                (a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4,
                "{name}"
            );
            for k in ["x0", "y0", "x1", "y1"] {
                assert!(
                    (a["box"][k].as_f64().unwrap() - b["box"][k].as_f64().unwrap()).abs() < 0.05,
                    "{name} {k}"
                );
            }
            boxes += 1;
        }
    }
    assert!(boxes >= 15, "{boxes} boxes");

    // v2 infer: TF Object Detection API outputs, K = max_detections padded
    let pets = fx.photos.iter().find(|p| file_name(p) == "pets.jpg").unwrap();
    let body = json!({"id": "p", "parameters": {"score_threshold": 0.5, "max_detections": 5},
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [B64.encode(read(pets))]}]});
    let res: Value = client()
        .post(server.url("/v2/models/objects/infer"))
        .json(&body)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let out = |n: &str| {
        res["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(out("detection_boxes")["shape"], json!([1, 5, 4]));
    let want = cli["pets.jpg"]["detections"].as_array().unwrap();
    assert_eq!(out("num_detections")["data"], json!([want.len() as f64]));
    let (w, h) = (
        cli["pets.jpg"]["width"].as_f64().unwrap(),
        cli["pets.jpg"]["height"].as_f64().unwrap(),
    );
    let got_boxes = floats(&out("detection_boxes")["data"]);
    for (i, d) in want.iter().enumerate() {
        assert_eq!(
            floats(&out("detection_classes")["data"])[i],
            d["class_id"].as_f64().unwrap() as f32
        );
        let y0 = d["box"]["y0"].as_f64().unwrap() / h;
        let x1 = d["box"]["x1"].as_f64().unwrap() / w;
        assert!((got_boxes[i * 4] as f64 - y0).abs() < 1e-3 && (got_boxes[i * 4 + 3] as f64 - x1).abs() < 1e-3);
    }
    assert!(
        got_boxes[want.len() * 4..].iter().all(|&v| v == 0.0),
        "padding rows are zeros"
    );
    let meta: Value = client()
        .get(server.url("/v2/models/objects"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["outputs"][0]["name"], "detection_boxes");

    // each model kind refuses the other's endpoints, saying where to go
    let res = client()
        .post(server.url("/classify?model=objects"))
        .body(read(pets))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("/detect?model=objects"));
    let res = client()
        .post(server.url("/detect?model=labels"))
        .body(read(pets))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res
        .text()
        .unwrap()
        .contains("is not a detector: POST /classify?model=labels"));
    let res = client()
        .post(server.url("/detect?score=2"))
        .body(read(pets))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client()
        .post(server.url("/detect"))
        .body(b"not an image".to_vec())
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().unwrap();
    assert!(v["error"].as_str().unwrap().contains("request body"), "{v}");
}

/// PhotoPrism's NSFW check, `POST /api/v1/vision/nsfw`, from nsfwjs' MobileNetV2 served with a
/// moderation rule: one `nsfw.Result` per image (`status`, `score`, `threshold`, the five class
/// probabilities), equal to `classify --rules` on the same photos; a model without moderation
/// rules is refused.
#[test]
fn photoprism_nsfw_results_equal_classify() {
    let Some(fx) = fixture() else { return };
    let (Some(shared), Some(py)) = (common::shared_dir(), common::converter_python()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let nsfw = dir.path().join("nsfw.safetensors");
    let src = shared.join("models/tfjs/nsfwjs/mobilenet_v2/model.json");
    let res = common::convert(&py, &["tfjs", src.to_str().unwrap(), "--out", nsfw.to_str().unwrap()]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    // the squat photo, which nsfwjs' MobileNetV2 calls "Porn" at 0.57, is unsafe at 0.5
    let rules = dir.path().join("nsfw.yaml");
    let yaml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/nsfw.yaml")).unwrap();
    std::fs::write(&rules, yaml.replace("threshold: 0.98", "threshold: 0.5")).unwrap();
    std::fs::copy(&fx.weights, dir.path().join("m.safetensors")).unwrap();
    let config = dir.path().join("models.yaml");
    std::fs::write(
        &config,
        "models:\n  labels:\n    weights: m.safetensors\n  nsfw:\n    weights: nsfw.safetensors\n    rules: nsfw.yaml\n",
    )
    .unwrap();
    let photos: Vec<&PathBuf> = fx
        .photos
        .iter()
        .filter(|p| ["pets.jpg", "squat.bmp", "cat.jpg"].contains(&file_name(p).as_str()))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(["classify", "--format", "json", "--weights"])
        .arg(&nsfw)
        .arg("--rules")
        .arg(&rules)
        .args(&photos)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let server = Server::launch(&["--config", config.to_str().unwrap()]);
    let images: Vec<String> = photos
        .iter()
        .map(|p| format!("data:image/jpeg;base64,{}", B64.encode(read(p))))
        .collect();
    let res: Value = client()
        .post(server.url("/api/v1/vision/nsfw"))
        .json(&json!({"id": "n1", "images": images}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&res["id"], &res["code"], &res["model"]["type"], &res["model"]["name"]),
        (&json!("n1"), &json!(200), &json!("nsfw"), &json!("nsfw"))
    );
    assert!(res["result"].get("labels").is_none(), "{res}");
    let results = res["result"]["nsfw"].as_array().unwrap();
    assert_eq!(results.len(), cli.len());
    let mut unsafe_seen = 0;
    for (r, c) in results.iter().zip(&cli) {
        let unsafe_ = c["nsfw"].as_bool().unwrap();
        assert_eq!(r["status"], if unsafe_ { "unsafe" } else { "safe" }, "{r} vs {c}");
        assert!((r["score"].as_f64().unwrap() - c["nsfw_score"].as_f64().unwrap()).abs() < 1e-5);
        assert_eq!(r["threshold"].as_f64().unwrap(), 0.5);
        for p in c["predictions"].as_array().unwrap() {
            let class = p["label"].as_str().unwrap();
            assert!(
                (r[class].as_f64().unwrap() - p["score"].as_f64().unwrap()).abs() < 1e-5,
                "{class}: {r} vs {c}"
            );
        }
        unsafe_seen += usize::from(unsafe_);
    }
    assert_eq!(unsafe_seen, 1, "only the squat photo: {res}");
    // with both models served, PhotoPrism's labels carry the NSFW model's verdict
    for (photo, c) in photos.iter().zip(&cli) {
        let url = format!("data:image/jpeg;base64,{}", B64.encode(read(photo)));
        let res: Value = client()
            .post(server.url("/api/v1/vision/labels"))
            .json(&json!({"images": [url]}))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let labels = res["result"]["labels"].as_array().unwrap();
        assert!(!labels.is_empty(), "{res}");
        for l in labels {
            if c["nsfw"].as_bool().unwrap() {
                assert_eq!(l["nsfw"], true, "{}: {l}", file_name(photo));
                assert!((l["nsfw_confidence"].as_f64().unwrap() - c["nsfw_score"].as_f64().unwrap()).abs() < 1e-5);
            } else {
                assert!(l.get("nsfw").is_none(), "{}: {l}", file_name(photo));
            }
        }
    }
    // the ImageNet model has no moderation rules
    let res = client()
        .post(server.url("/api/v1/vision/nsfw"))
        .json(&json!({"id": "n2", "model": "labels", "images": [images[0]]}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().unwrap();
    assert!(
        v["error"].as_str().unwrap().contains("no moderation rules") && v["id"] == "n2",
        "{v}"
    );
}

/// A pose model beside a classifier: `POST /pose` answers as `ferrovision pose --format json`
/// does on the same photos (PoseNet: two people on Coral's test image), as raw bytes and as a
/// multipart upload; the classifier's endpoints refuse it with a 400 that says where to go, v2
/// metadata lists no outputs for it, and a bad image is a 400 naming it.
#[test]
fn a_pose_model_is_served_beside_a_classifier() {
    let Some(fx) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(posenet) = common::converted_tflite(dir.path(), "posenet_mobilenet_v1_075_481_641_16_quant_decoder", None)
    else {
        return;
    };
    let shared = common::shared_dir().unwrap();
    let photos = [
        shared.join("data/pose/test_image.bmp"),
        shared.join("data/images/squat.bmp"),
    ];
    std::fs::copy(&fx.weights, dir.path().join("m.safetensors")).unwrap();
    let config = dir.path().join("models.yaml");
    std::fs::write(
        &config,
        format!(
            "models:\n  labels:\n    weights: m.safetensors\n  people:\n    weights: {}\n    task: pose\n",
            posenet.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovision"))
        .args(["pose", "--format", "json", "--weights"])
        .arg(&posenet)
        .args(&photos)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let cli: HashMap<String, Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (file_name(v["path"].as_str().unwrap()), v)
        })
        .collect();
    assert_eq!(cli["test_image.bmp"]["people"], 2, "{}", cli["test_image.bmp"]);
    let server = Server::launch(&["--config", config.to_str().unwrap()]);
    for p in &photos {
        let name = file_name(p);
        let res = client()
            .post(server.url(&format!("/pose?name={name}")))
            .body(read(p))
            .send()
            .unwrap();
        assert_eq!(res.status(), 200);
        let got: Value = res.json().unwrap();
        let want = &cli[&name];
        assert_eq!(
            (&got["people"], &got["width"]),
            (&want["people"], &want["width"]),
            "{name}"
        );
        for (a, b) in got["poses"]
            .as_array()
            .unwrap()
            .iter()
            .zip(want["poses"].as_array().unwrap())
        {
            assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4);
            for (ka, kb) in a["keypoints"]
                .as_array()
                .unwrap()
                .iter()
                .zip(b["keypoints"].as_array().unwrap())
            {
                assert_eq!(ka["part"], kb["part"]);
                for c in ["x", "y", "score"] {
                    assert!(
                        (ka[c].as_f64().unwrap() - kb[c].as_f64().unwrap()).abs() < 1e-3,
                        "{name} {c}"
                    );
                }
            }
        }
    }
    // multipart, the file's name reported
    let form = reqwest::blocking::multipart::Form::new().part(
        "image",
        reqwest::blocking::multipart::Part::bytes(read(&photos[0])).file_name("two.bmp"),
    );
    let got: Value = client()
        .post(server.url("/pose"))
        .multipart(form)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!((got["path"].as_str(), &got["people"]), (Some("two.bmp"), &json!(2)));
    // each kind of model refuses the other's endpoints, saying where to go
    let res = client()
        .post(server.url("/classify?model=people"))
        .body(read(&photos[0]))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.text().unwrap().contains("/pose?model=people"));
    let res = client()
        .post(server.url("/pose?model=labels"))
        .body(read(&photos[0]))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let meta: Value = client()
        .get(server.url("/v2/models/people"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(meta["outputs"], json!([]));
    let res = client()
        .post(server.url("/v2/models/people/infer"))
        .json(&json!({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["x"]}]}))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let res = client()
        .post(server.url("/pose?name=bad.jpg"))
        .body(b"not an image".to_vec())
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
    let v: Value = res.json().unwrap();
    assert!(v["error"].as_str().unwrap().starts_with("bad.jpg: "), "{v}");
    let res = client()
        .post(server.url("/pose?min_score=3"))
        .body(read(&photos[0]))
        .send()
        .unwrap();
    assert_eq!(res.status(), 400);
}
