#!/usr/bin/env node
// ONNX Runtime (CPU) side of bench/compare.py: runs an exported model with
// the settings a deployer would pick for T cores, and either times it or
// writes its output.
//
//   node bench/ort/ort_bench.js MODEL.onnx --threads T --batch B
//        [--iterations K] [--warmup W]          -> one JSON line with the median
//   node bench/ort/ort_bench.js MODEL.onnx --threads T --batch B
//        --input X.f32 --output Y.f32           -> raw float32 logits of X
//
// The model's input is named "input", float32 B x 3 x H x W (H, W read from
// the model). Timing input is fixed pseudo-random data: speed does not
// depend on its values.
"use strict";
const fs = require("fs");
const path = require("path");

function usage(msg) {
  process.stderr.write("ort_bench.js: " + msg + "\n");
  process.exit(2);
}

function parse(argv) {
  const opts = { threads: 1, batch: 1, iterations: 10, warmup: 2 };
  const rest = [];
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (!a.startsWith("--")) { rest.push(a); continue; }
    const key = a.slice(2);
    if (i + 1 >= argv.length) usage(a + " needs a value");
    const value = argv[++i];
    if (["threads", "batch", "iterations", "warmup"].includes(key)) {
      const n = Number(value);
      if (!Number.isInteger(n) || n < (key === "warmup" ? 0 : 1)) usage(a + ": expected a positive integer, got '" + value + "'");
      opts[key] = n;
    } else if (key === "input" || key === "output") {
      opts[key] = value;
    } else {
      usage("unknown flag " + a);
    }
  }
  if (rest.length !== 1) usage("expected one MODEL.onnx argument");
  if ((opts.input === undefined) !== (opts.output === undefined)) usage("--input and --output go together");
  opts.model = rest[0];
  return opts;
}

async function main() {
  const opts = parse(process.argv.slice(2));
  let ort;
  try {
    ort = require(path.join(__dirname, "node_modules", "onnxruntime-node"));
  } catch (e) {
    usage("onnxruntime-node is not installed: cd bench/ort && npm install --ignore-scripts (" + e.message + ")");
  }
  if (!fs.existsSync(opts.model)) usage(opts.model + ": no such file");
  const session = await ort.InferenceSession.create(opts.model, {
    executionProviders: ["cpu"],
    intraOpNumThreads: opts.threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
  });
  const meta = session.inputMetadata ? session.inputMetadata[0] : null;
  const dims = meta && meta.shape ? meta.shape.slice(1).map(Number) : null;
  if (!dims || dims.length !== 3 || dims.some((d) => !Number.isInteger(d)))
    usage(opts.model + ": expected a static input of shape [B, C, H, W]");
  const shape = [opts.batch, ...dims];
  const size = shape.reduce((a, b) => a * b, 1);
  let data;
  if (opts.input !== undefined) {
    const bytes = fs.readFileSync(opts.input);
    if (bytes.length !== size * 4) usage(opts.input + ": " + bytes.length + " bytes, expected " + size * 4);
    data = new Float32Array(bytes.buffer, bytes.byteOffset, size);
  } else {
    data = new Float32Array(size);
    let s = 1;
    for (let i = 0; i < size; ++i) { s = (s * 1103515245 + 12345) % 2147483648; data[i] = s / 1073741824 - 1; }
  }
  const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, shape) };
  const out = session.outputNames[0];
  if (opts.input !== undefined) {
    const y = (await session.run(feeds))[out].data;
    fs.writeFileSync(opts.output, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
    return;
  }
  for (let i = 0; i < opts.warmup; ++i) await session.run(feeds);
  const ms = [];
  for (let i = 0; i < opts.iterations; ++i) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const h = ms.length >> 1;
  const median = ms.length % 2 ? ms[h] : 0.5 * (ms[h - 1] + ms[h]);
  process.stdout.write(JSON.stringify({
    onnxruntime: ort.env.versions.common, threads: opts.threads, batch: opts.batch, iterations: opts.iterations,
    median_ms: median, ms_per_image: median / opts.batch, min_ms: ms[0], max_ms: ms[ms.length - 1],
  }) + "\n");
}

main().catch((e) => { process.stderr.write("ort_bench.js: " + e.message + "\n"); process.exit(1); });
