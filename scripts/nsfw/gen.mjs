// Reference NSFW probabilities from nsfwjs itself, on the pure-JavaScript @tensorflow/tfjs CPU
// backend. Called by scripts/gen_nsfw_fixtures.py (which decodes the photos with PIL):
//
//     node scripts/nsfw/gen.mjs TMPDIR OUT.json
//
// TMPDIR/images.json: {"models_dir": ".../models/tfjs/nsfwjs",
//                      "images": [{"name": "cat.jpg", "file": "cat.jpg.rgb", "shape": [H, W, 3]}, ...]}
// and each file is raw RGB uint8, H×W×3, row-major.
//
// Models are read from local files (no network): model.json + its shards, concatenated in manifest
// order, handed to tf.io.fromMemory. nsfwjs accepts an IOHandler in place of a URL: its load()
// passes any non-built-in-name argument unchanged to `new NSFWJS(modelUrlOrIOHandler, options)`,
// whose load() calls tf.loadLayersModel / tf.loadGraphModel (type: "graph") on it. So the whole
// nsfwjs path runs: load + warm-up, infer() (its preprocessing), classify() (its top-k).
// We import `nsfwjs/core` (the entry point nsfwjs documents for self-hosted models): same load()
// and NSFWJS class as `nsfwjs`, without the registry of models embedded as base64.
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs";
import * as nsfwjs from "nsfwjs/core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const NSFWJS_VERSION = JSON.parse(
  fs.readFileSync(path.join(HERE, "node_modules", "nsfwjs", "package.json"), "utf8")).version;
const CLASSES = ["Drawing", "Hentai", "Neutral", "Porn", "Sexy"]; // nsfwjs NSFW_CLASSES, index 0..4

// folder → nsfwjs.load options (as nsfwjs's own built-in definitions: MobileNetV2 {},
// MobileNetV2Mid {type: "graph"}, InceptionV3 {size: 299}; size defaults to 224).
const MODELS = {
  mobilenet_v2: { size: 224 },
  mobilenet_v2_mid: { size: 224, type: "graph" },
  inception_v3: { size: 299 },
};

// The preprocessing of NSFWJS.infer(), checked below against the installed source so that the
// strings cannot drift from the code that produced the numbers.
const SOURCE_LINES = [
  "this.normalizationOffset = tf.scalar(255);",
  ".div(_this.normalizationOffset);",
  "if (img.shape[0] !== size || img.shape[1] !== size) {",
  "var alignCorners = true;",
  "resized = tf.image.resizeBilinear(normalized, [size, size], alignCorners);",
  "var batched = resized.reshape([1, size, size, 3]);",
];

function preprocessing(size, extra) {
  return (
    `nsfwjs ${NSFWJS_VERSION} NSFWJS.infer(): img.toFloat().div(tf.scalar(255)) (RGB in [0, 1], ` +
    `no mean/std); if img.shape[0] !== ${size} || img.shape[1] !== ${size}: ` +
    `tf.image.resizeBilinear(normalized, [${size}, ${size}], alignCorners = true) ` +
    `(halfPixelCenters left false: src = dst * (in - 1) / (${size} - 1)); ` +
    `whole image, no crop, aspect ratio not kept; reshape([1, ${size}, ${size}, 3]) (NHWC); ` +
    `model.predict(batched) → 5 softmax probabilities. ${extra}`
  );
}

function die(msg) {
  console.error(`gen.mjs: ${msg}`);
  process.exit(1);
}

// tf.io.fromMemory artifacts from model.json + shards (concatenated in manifest order).
function loadArtifacts(dir) {
  const modelJson = JSON.parse(fs.readFileSync(path.join(dir, "model.json"), "utf8"));
  const weightSpecs = [];
  const parts = [];
  for (const group of modelJson.weightsManifest) {
    for (const p of group.paths) parts.push(fs.readFileSync(path.join(dir, p)));
    weightSpecs.push(...group.weights);
  }
  const all = Buffer.concat(parts);
  const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
  return tf.io.fromMemory({
    modelTopology: modelJson.modelTopology,
    format: modelJson.format,
    generatedBy: modelJson.generatedBy,
    convertedBy: modelJson.convertedBy,
    weightSpecs,
    weightData,
  });
}

// The graph model normalises inside itself (hub_input/Mul, hub_input/Sub on the [0, 1] input):
// read the two constants so that the fixture says what they are.
function hubInputAffine(model) {
  const w = model.model.weights; // GraphModel: node name → [tensor]
  const find = (suffix) => {
    const k = Object.keys(w).find((n) => n.endsWith(suffix));
    return k ? w[k][0].dataSync()[0] : null;
  };
  const mul = find("hub_input/Mul/y");
  const sub = find("hub_input/Sub/y");
  return mul == null || sub == null
    ? "Graph model: same input tensor as the layers models."
    : `Graph model: same [0, 1] input tensor; the graph itself then computes x * ${mul} - ${sub} ` +
        `(hub_input/Mul, hub_input/Sub) before MobileNetV2 α 1.4.`;
}

async function main() {
  const [tmpDir, outPath] = process.argv.slice(2);
  if (!tmpDir || !outPath) die("usage: node gen.mjs TMPDIR OUT.json");
  const manifest = JSON.parse(fs.readFileSync(path.join(tmpDir, "images.json"), "utf8"));

  // Check the preprocessing strings against the installed nsfwjs source.
  const coreSrc = fs.readFileSync(fileURLToPath(import.meta.resolve("nsfwjs/core")), "utf8");
  for (const line of SOURCE_LINES) {
    if (!coreSrc.includes(line)) die(`nsfwjs source changed, line not found: ${line}`);
  }

  await tf.setBackend("cpu");
  await tf.ready();
  if (tf.getBackend() !== "cpu") die(`backend is ${tf.getBackend()}, not cpu`);

  // Pixels as int32 [H, W, 3], the dtype tf.browser.fromPixels gives nsfwjs in a browser.
  const images = manifest.images.map(({ name, file, shape }) => {
    const bytes = fs.readFileSync(path.join(tmpDir, file));
    if (bytes.length !== shape[0] * shape[1] * shape[2]) die(`${file}: size does not match ${shape}`);
    return { name, shape, pixels: tf.tensor3d(Int32Array.from(bytes), shape, "int32") };
  });

  const out = {
    generator:
      "scripts/gen_nsfw_fixtures.py → scripts/nsfw/gen.mjs: PIL decode (exif_transpose, RGB) → " +
      "tf.tensor3d(int32 [H, W, 3]) → nsfwjs/core load(tf.io.fromMemory(model.json + shards), " +
      "{size, type}) → model.classify(img, 5), probabilities keyed by class name, rounded to 6 decimals",
    nsfwjs: NSFWJS_VERSION,
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    preprocessing: {},
    classes: CLASSES,
    images: Object.fromEntries(images.map((im) => [im.name, im.shape.slice(0, 2)])),
    models: {},
  };

  for (const [name, opts] of Object.entries(MODELS)) {
    const t0 = Date.now();
    const dir = path.join(manifest.models_dir, name);
    if (!fs.existsSync(path.join(dir, "model.json"))) die(`missing ${dir}/model.json`);
    const model = await nsfwjs.load(loadArtifacts(dir), { ...opts });
    const extra = opts.type === "graph" ? hubInputAffine(model)
      : "Layers model: no rescaling layer, its first layer takes the [0, 1] tensor.";
    out.preprocessing[name] = preprocessing(opts.size, extra);

    const rows = {};
    for (const im of images) {
      const preds = await model.classify(im.pixels, 5); // sorted by probability, highest first
      if (preds.length !== 5) die(`${name} ${im.name}: ${preds.length} predictions`);
      rows[im.name] = Object.fromEntries(CLASSES.map((c) => {
        const p = preds.find((q) => q.className === c);
        if (!p) die(`${name} ${im.name}: class ${c} missing`);
        return [c, Math.round(p.probability * 1e6) / 1e6];
      }));
    }
    out.models[name] = rows;
    model.dispose();
    console.error(`gen.mjs: ${name}: ${images.length} images in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }

  fs.mkdirSync(path.dirname(outPath), { recursive: true });
  fs.writeFileSync(outPath, JSON.stringify(out, null, 1) + "\n");
}

main().catch((e) => die(e.stack || e));
