//! The dynamic batcher: requests for one model from any number of clients are gathered into one
//! forward pass, up to `max_batch` images or `max_delay` after the first one arrived, whichever
//! comes first (Triton's dynamic batcher, `max_queue_delay_microseconds`). Apart from HTTP: jobs
//! go in with [`Batcher::submit`], answers come back on a oneshot channel.
//!
//! Two threads of ours per model, never tokio's: *gather* collects a batch and decodes and
//! preprocesses its images in parallel (rayon), *compute* runs the network on the previous batch
//! meanwhile, as `classify` pipelines a folder. Admission is bounded: a job that would take the
//! images waiting or running past `max_queue` is refused at once ([`Overloaded`]), and every
//! accepted job gets exactly one answer, an error if its batch failed (a panic included).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use candle_core::Tensor;
use rayon::prelude::*;
use tokio::sync::oneshot;

use crate::preprocess::{decode_image, Crops, DEFAULT_MAX_PIXELS};
use crate::Model;

/// One image of a job.
#[derive(Debug, Clone)]
pub enum Input {
    /// An encoded image file (JPEG, PNG, ...), decoded with `classify`'s pixel budget.
    Encoded(Vec<u8>),
    /// Already preprocessed views, V×3×H×W as [`Model::views`] makes them.
    Views(Tensor),
}

/// The answer for one image: its row of the model's output, or what went wrong.
pub type Outcome = Result<ImageScores, String>;

/// One image's row of the model's output. For a detector, `logits` holds its raw output (one
/// row of 4 + classes values per anchor, see [`Model::decode_raw`]), for a pose estimator its
/// keypoint maps (C×h×w, `dims`), and `probs` is empty.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageScores {
    pub probs: Vec<f32>,
    pub logits: Vec<f32>,
    /// The shape of `logits` for one image where it is not a flat row (a pose network's maps).
    pub dims: Vec<usize>,
    /// Width and height of the decoded image (EXIF orientation applied); `None` for
    /// preprocessed inputs.
    pub size: Option<(u32, u32)>,
}

/// What a job gets back: one outcome per input, in order.
#[derive(Debug)]
pub struct Answer {
    pub outcomes: Vec<Outcome>,
}

/// The queue is full: try again later (HTTP 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    pub queued: usize,
    pub capacity: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct BatchOptions {
    /// Most images in one forward pass.
    pub max_batch: usize,
    /// Longest wait for more requests after the first of a batch arrived.
    pub max_delay: Duration,
    /// Most images waiting or running; more are refused.
    pub max_queue: usize,
    /// Views per encoded image.
    pub crops: Crops,
}

struct Job {
    inputs: Vec<Input>,
    submitted: Instant,
    reply: oneshot::Sender<Answer>,
}

/// A gathered batch on its way from *gather* to *compute*.
struct Prepared {
    jobs: Vec<(Job, Vec<Result<View, String>>)>,
}

/// An image's preprocessed views and, when it came encoded, its decoded size.
type View = (Tensor, Option<(u32, u32)>);

pub struct Batcher {
    name: String,
    tx: Mutex<Option<Sender<Job>>>,
    pending: Arc<AtomicUsize>,
    capacity: usize,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Batcher {
    /// Starts the two threads of `model`'s batcher; `name` labels its metrics.
    pub fn start(name: &str, model: Arc<Model>, opts: BatchOptions) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<Prepared>(0); // handed over when compute is free
        let pending = Arc::new(AtomicUsize::new(0));
        let gather = {
            let model = model.clone();
            std::thread::Builder::new()
                .name(format!("gather-{name}"))
                .spawn(move || gather(&model, opts, rx, ready_tx))
                .expect("spawn the gather thread")
        };
        let compute = {
            let (pending, name) = (pending.clone(), name.to_string());
            std::thread::Builder::new()
                .name(format!("compute-{name}"))
                .spawn(move || compute(&name, &model, ready_rx, &pending))
                .expect("spawn the compute thread")
        };
        Self {
            name: name.to_string(),
            tx: Mutex::new(Some(tx)),
            pending,
            capacity: opts.max_queue,
            threads: Mutex::new(vec![gather, compute]),
        }
    }

    /// Queues a job of one or more images; refused when the queue cannot take all of them, or
    /// after [`Batcher::shutdown`].
    pub fn submit(&self, inputs: Vec<Input>) -> Result<oneshot::Receiver<Answer>, Overloaded> {
        let n = inputs.len();
        let overloaded = |queued| Overloaded {
            queued,
            capacity: self.capacity,
        };
        let admitted = self.pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            (q + n <= self.capacity).then_some(q + n)
        });
        if let Err(q) = admitted {
            metrics::counter!("ferrovision_rejected_total", "model" => self.name.clone()).increment(n as u64);
            return Err(overloaded(q));
        }
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            submitted: Instant::now(),
            reply,
        };
        let sent = self.tx.lock().unwrap().as_ref().map(|tx| tx.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.pending.fetch_sub(n, Ordering::AcqRel);
            return Err(overloaded(self.capacity));
        }
        metrics::gauge!("ferrovision_queue_size", "model" => self.name.clone()).set(self.queued() as f64);
        Ok(rx)
    }

    /// Images waiting or running.
    pub fn queued(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Takes no more jobs, lets the accepted ones finish, and joins the threads.
    pub fn shutdown(&self) {
        self.tx.lock().unwrap().take();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
    }
}

/// Collects jobs into batches of at most `max_batch` images (a job's images stay together; one
/// job larger than that is a batch of its own) until `max_delay` after the first one arrived. Images
/// are decoded as they come, not after the window closes: whatever arrived meanwhile is decoded
/// together, in one parallel loop, while the previous batch computes.
fn gather(model: &Model, opts: BatchOptions, rx: Receiver<Job>, ready: SyncSender<Prepared>) {
    let mut carry: Option<Job> = None;
    loop {
        let Some(first) = carry.take().or_else(|| rx.recv().ok()) else {
            return; // every sender gone: shutting down
        };
        let deadline = first.submitted + opts.max_delay;
        let mut n = first.inputs.len();
        let mut arrived = vec![first];
        let mut jobs = Vec::new();
        loop {
            // take what is waiting already, then decode all of it at once
            while n < opts.max_batch && carry.is_none() {
                match rx.try_recv() {
                    Ok(job) if n + job.inputs.len() > opts.max_batch => carry = Some(job),
                    Ok(job) => {
                        n += job.inputs.len();
                        arrived.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs.extend(prepare_all(model, std::mem::take(&mut arrived), opts.crops));
            // past the window, what is decoded goes now: jobs that came during the decoding wait
            // for the next batch, decoded while this one computes
            if n >= opts.max_batch || carry.is_some() || Instant::now() >= deadline {
                break;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(job) if n + job.inputs.len() > opts.max_batch => carry = Some(job),
                Ok(job) => {
                    n += job.inputs.len();
                    arrived.push(job);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        if ready.send(Prepared { jobs }).is_err() {
            return;
        }
    }
}

/// Every image of `jobs` decoded and preprocessed in one parallel loop, whichever job it belongs to.
fn prepare_all(model: &Model, jobs: Vec<Job>, crops: Crops) -> Vec<(Job, Vec<Result<View, String>>)> {
    let inputs: Vec<&Input> = jobs.iter().flat_map(|j| &j.inputs).collect();
    let mut views = inputs
        .par_iter()
        .map(|i| {
            // a decoder's panic is this image's error, not the end of the thread
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| prepare(model, i, crops)))
                .unwrap_or_else(|_| Err("the image decoder panicked".to_string()))
        })
        .collect::<Vec<_>>()
        .into_iter();
    jobs.into_iter()
        .map(|job| {
            let mine = views.by_ref().take(job.inputs.len()).collect();
            (job, mine)
        })
        .collect()
}

fn prepare(model: &Model, input: &Input, crops: Crops) -> Result<View, String> {
    match input {
        Input::Encoded(bytes) => {
            let img = decode_image(bytes, DEFAULT_MAX_PIXELS).map_err(|e| e.to_string())?;
            let views = model
                .views(std::slice::from_ref(&img), crops)
                .map(|mut v| v.remove(0))
                .map_err(|e| e.to_string())?;
            Ok((views, Some((img.width(), img.height()))))
        }
        Input::Views(t) => Ok((t.clone(), None)),
    }
}

/// The rows of a batch's images, in order: one forward pass per view count (encoded images
/// and preprocessed inputs of a model may differ in it), usually just one.
fn scores(model: &Model, views: &[Tensor]) -> crate::Result<Vec<ImageScores>> {
    if model.detector.is_some() || model.pose_decoder().is_ok() {
        // one view per image: the raw outputs (detector: N×A×(4+C); pose: N×C×h×w), decoded
        // per request (thresholds, image size)
        if views.is_empty() {
            return Ok(Vec::new());
        }
        let out = model.net.forward(&Tensor::cat(views, 0)?)?;
        let dims = if out.rank() == 4 {
            out.dims()[1..].to_vec()
        } else {
            Vec::new()
        };
        let rows = out.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        return Ok(rows
            .chunks_exact(rows.len() / views.len())
            .map(|raw| ImageScores {
                probs: Vec::new(),
                logits: raw.to_vec(),
                dims: dims.clone(),
                size: None,
            })
            .collect());
    }
    let mut rows: Vec<Option<ImageScores>> = vec![None; views.len()];
    let mut counts: Vec<usize> = views.iter().map(|v| v.dim(0)).collect::<candle_core::Result<_>>()?;
    counts.sort_unstable();
    counts.dedup();
    for count in counts {
        let (idx, group): (Vec<usize>, Vec<Tensor>) = views
            .iter()
            .enumerate()
            .filter(|(_, v)| v.dim(0).is_ok_and(|d| d == count))
            .map(|(i, v)| (i, v.clone()))
            .unzip();
        let s = model.scores(&group)?;
        for ((i, probs), logits) in idx.into_iter().zip(s.probs).zip(s.logits) {
            rows[i] = Some(ImageScores {
                dims: Vec::new(),
                probs,
                logits,
                size: None,
            });
        }
    }
    Ok(rows.into_iter().map(|r| r.expect("every view count was run")).collect())
}

/// Runs the network on each prepared batch and answers its jobs. The forward pass runs on a
/// thread of rayon's pool (`rayon::scope` from outside it), so that its parallel loops split
/// with `join` instead of waking the workers once per layer.
fn compute(name: &str, model: &Model, ready: Receiver<Prepared>, pending: &AtomicUsize) {
    let label = || vec![metrics::Label::new("model", name.to_string())];
    for Prepared { jobs } in ready {
        let started = Instant::now();
        let good: Vec<Tensor> = jobs
            .iter()
            .flat_map(|(_, views)| views.iter().filter_map(|v| v.as_ref().ok().map(|(t, _)| t.clone())))
            .collect();
        let scores = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rayon::scope(|_| scores(model, &good))))
            .map_err(|_| "the forward pass panicked".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        let computed = started.elapsed();
        let batch_size = good.len();
        if batch_size > 0 {
            metrics::counter!("ferrovision_inference_count", label()).increment(batch_size as u64);
            metrics::counter!("ferrovision_execution_count", label()).increment(1);
            metrics::histogram!("ferrovision_batch_size", label()).record(batch_size as f64);
            metrics::histogram!("ferrovision_compute_duration_seconds", label()).record(computed.as_secs_f64());
        }
        let mut rows = scores.as_ref().ok().map(|rows| rows.iter());
        for (job, views) in jobs {
            let queued = started.saturating_duration_since(job.submitted);
            metrics::histogram!("ferrovision_queue_duration_seconds", label()).record(queued.as_secs_f64());
            let outcomes = views
                .into_iter()
                .map(|v| {
                    let (_, size) = v?;
                    match (&mut rows, &scores) {
                        (Some(rows), _) => Ok(ImageScores {
                            size,
                            ..rows.next().expect("one row per good image").clone()
                        }),
                        (_, Err(e)) => Err(format!("inference failed: {e}")),
                        (None, Ok(_)) => unreachable!("rows exist when scores do"),
                    }
                })
                .collect::<Vec<_>>();
            pending.fetch_sub(outcomes.len(), Ordering::AcqRel);
            let _ = job.reply.send(Answer { outcomes }); // the client may have gone
        }
        metrics::gauge!("ferrovision_queue_size", label()).set(pending.load(Ordering::Acquire) as f64);
    }
}
