// The demo's web worker: all WebAssembly work happens here, so drawing never stutters.
//
// Protocol (main → worker):
//   {type: 'load', model, url, backend}             load a model's weights; backend 'auto' (WebGPU when the browser
//                                                   offers a hardware adapter, else the CPU), 'gpu' (WebGPU on any
//                                                   adapter, software ones too) or 'cpu'
//   {type: 'convert', id, dataset, rgba, width, height}
//                                                   an opened picture as the data set's model input ('converted')
//   {type: 'work', id, ink?, width?, height?, pixels?, requests, target, render}
//                                                   classify and explain; a newer 'work' replaces older work
//   {type: 'sanity', id, layers, render}             the first map of the last work again, on a copy of the model
//                                                   with its top `layers` parameter layers re-initialised
// (worker → main): 'ready', 'converted', 'input', 'probs', 'progress', 'map', 'done', 'metrics' (after 'done', the
// first map's live metrics), 'sanity', 'error', 'backend' (after a GPU failure).
//
// On WebGPU a map is one awaited GPU computation (the main thread never waits for it); on any GPU error the worker
// falls back to the CPU for good and says so.
//
// Only the newest 'work' message matters: it is kept in `pending`, and a running computation checks for it between
// steps (each step is a few model passes) and gives up when something newer arrived.

import init, * as wasm_bindgen from './whitebox-web.js';

const wasmReady = init({ module_or_path: './whitebox-web_bg.wasm' });
let engine = null;
let pending = null;
// The first map of the last finished work {pixels, map, target, r} (the sanity check re-explains it), the
// sanity request waiting, and the re-initialised copies of the model by layer count.
let lastMain = null;
let pendingSanity = null;
let randomised = new Map();
let running = false;
// The WebGPU device (asked for once), and whether the GPU path is off (chosen, unavailable or failed).
let gpuDevice = null;
let gpuAsked = false;
let gpuOff = false;
let gpuNote = '';

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const yieldToEvents = () => new Promise((resolve) => setTimeout(resolve, 0));

self.onmessage = async (event) => {
  const msg = event.data;
  if (msg.type === 'load') {
    await load(msg);
  } else if (msg.type === 'convert') {
    await convert(msg);
  } else if (msg.type === 'work') {
    pending = msg;
    if (!running) loop();
  } else if (msg.type === 'sanity') {
    pendingSanity = msg;
    if (!running) loop();
  }
};

async function attachGpu(backend) {
  if (backend === 'cpu') {
    gpuOff = true;
    gpuNote = 'CPU chosen';
    return;
  }
  if (!gpuAsked) {
    gpuAsked = true;
    if (!self.navigator || !self.navigator.gpu) {
      gpuNote = 'no WebGPU in this browser';
    } else {
      try {
        gpuDevice = await wasm_bindgen.requestGpu();
      } catch (err) {
        gpuNote = `no WebGPU adapter: ${String(err.message || err)}`;
      }
    }
  }
  if (gpuDevice && gpuDevice.software && backend !== 'gpu') {
    // Measured in headless Chromium: SwiftShader's WebGPU takes 14–25× the WebAssembly path's time per map.
    gpuOff = true;
    gpuNote = `the WebGPU adapter runs on the CPU (${gpuDevice.name}), where WebAssembly is faster; ?backend=gpu uses it anyway`;
  }
  if (gpuDevice && !gpuOff) {
    try {
      engine.useGpu(gpuDevice);
    } catch (err) {
      gpuNote = String(err.message || err);
    }
  }
}

const onGpu = () => engine && engine.hasGpu && !gpuOff;
const backendName = () => (onGpu() ? `WebGPU (${gpuDevice.name})` : 'CPU (WebAssembly)');

// A picture → the model input of `dataset` (pixels, or null when an MNIST picture shows no ink).
async function convert({ id, dataset, rgba, width, height }) {
  try {
    await wasmReady;
    const pixels = wasm_bindgen.inputFromImage(dataset, rgba, width, height);
    post({ type: 'converted', id, dataset, pixels: pixels || null });
  } catch (err) {
    post({ type: 'converted', id, dataset, error: String(err.message || err) });
  }
}

async function load({ model, url, backend }) {
  const t0 = performance.now();
  try {
    await wasmReady;
    const response = await fetch(url);
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    const next = new wasm_bindgen.Engine(bytes);
    if (engine) engine.free();
    engine = next;
    for (const e of randomised.values()) e.free();
    randomised = new Map();
    lastMain = null;
    await attachGpu(backend || 'auto');
    post({
      type: 'ready',
      backend: backendName(),
      backendNote: gpuNote,
      model,
      bytes: bytes.length,
      ms: performance.now() - t0,
      info: {
        arch: engine.arch,
        dataset: engine.dataset,
        side: engine.side,
        channels: engine.channels,
        classes: engine.classes,
        classNames: engine.classNames,
        tapPoints: engine.tapPoints,
        defaultLayer: engine.defaultLayer,
        hasCam: engine.hasCam,
        parameterLayers: engine.parameterLayers,
      },
      // The option lists and input limits come from the engine, so the page offers exactly what it accepts.
      methods: wasm_bindgen.methodList(),
      applicable: engine.applicableMethods,
      ensembles: wasm_bindgen.ensembleList(),
      colormaps: wasm_bindgen.colormapList(),
      models: wasm_bindgen.modelList(),
      datasets: wasm_bindgen.datasetList(),
      limits: Array.from(wasm_bindgen.requestLimits()),
    });
  } catch (err) {
    post({ type: 'error', fatal: !engine, message: `Could not load the ${model} weights: ${String(err.message || err)}` });
  }
}

async function loop() {
  running = true;
  while (pending || pendingSanity) {
    if (pending) {
      const work = pending;
      pending = null;
      try {
        await run(work);
      } catch (err) {
        post({ type: 'error', id: work.id, message: String(err.message || err) });
      }
    } else {
      const sanity = pendingSanity;
      pendingSanity = null;
      try {
        await sanityCheck(sanity);
      } catch (err) {
        post({ type: 'sanity', id: sanity.id, layers: sanity.layers, error: String(err.message || err) });
      }
    }
  }
  running = false;
}

// A map computed to the end on the CPU by `eng` (null when a newer drawing or sanity request arrived).
async function fullCpuMap(eng, request, target, pixels) {
  const task = eng.explain(pixels, request, target);
  try {
    while (!task.step()) {
      await yieldToEvents();
      if (pending || pendingSanity) return null;
    }
    return task.map();
  } finally {
    task.free();
  }
}

// The sanity check (Adebayo et al. 2018's cascading randomisation): the last work's first map on a model whose top
// `layers` parameter layers are re-initialised, and its rank correlation with the original map.
async function sanityCheck({ id, layers, render }) {
  if (!lastMain) return;
  const { pixels, map, target, r } = lastMain;
  const names = engine.parameterLayers;
  let copy = randomised.get(layers);
  if (!copy) {
    copy = engine.randomised(layers, 1);
    randomised.set(layers, copy);
  }
  const request = new wasm_bindgen.Request(r.method, r.ensemble, r.samples, r.noise, JSON.stringify(r.params), 'logit');
  try {
    const other = layers === 0 ? map : await fullCpuMap(copy, request, target, pixels);
    if (!other) return;
    const similarity = wasm_bindgen.mapSimilarity(map, other);
    const rgba = wasm_bindgen.renderMap(pixels, other, engine.dataset, r.method, render.colormap, render.opacity, render.overlay);
    const layer = layers === 0 ? 'none' : `${names[names.length - layers]} and above`;
    post({ type: 'sanity', id, layers, layer, similarity, rgba }, [rgba.buffer]);
  } finally {
    request.free();
  }
}

// The map on the CPU, in steps between which newer work can take over (then null).
async function cpuMap(work, r, request, target, pixels, addMs, setTask) {
  let t = performance.now();
  const task = engine.explain(pixels, request, target);
  setTask(task);
  let finished = task.step();
  addMs(performance.now() - t);
  while (!finished) {
    post({ type: 'progress', id: work.id, key: r.key, label: request.label, fraction: task.progress() });
    await yieldToEvents();
    if (pending) return null; // a newer drawing: this work is stale
    t = performance.now();
    finished = task.step();
    addMs(performance.now() - t);
  }
  return task.map();
}

async function run(work) {
  if (!engine) throw new Error('no model is loaded yet');
  let pixels = work.pixels;
  if (!pixels) {
    const ink = new Float32Array(work.ink.length);
    for (let i = 0; i < ink.length; i++) ink[i] = work.ink[i] / 255;
    pixels = wasm_bindgen.mnistFromDrawing(ink, work.width, work.height);
  }
  if (!pixels) {
    post({ type: 'input', id: work.id, pixels: null });
    post({ type: 'done', id: work.id, empty: true });
    return;
  }
  post({ type: 'input', id: work.id, pixels });
  const probs = engine.probabilities(pixels);
  let predicted = 0;
  for (let c = 1; c < probs.length; c++) if (probs[c] > probs[predicted]) predicted = c;
  const target = work.target >= 0 ? work.target : predicted;
  post({ type: 'probs', id: work.id, probs, predicted, target });

  for (const r of work.requests) {
    const request = new wasm_bindgen.Request(r.method, r.ensemble, r.samples, r.noise, JSON.stringify(r.params), 'logit');
    const label = request.label;
    let task;
    let computeMs = 0;
    try {
      let map = null;
      if (onGpu()) {
        const t = performance.now();
        try {
          map = await engine.explainGpu(pixels, request, target);
          computeMs = performance.now() - t;
        } catch (err) {
          gpuOff = true;
          gpuNote = `WebGPU failed (${String(err.message || err)}); computing on the CPU`;
          post({ type: 'backend', backend: backendName(), note: gpuNote });
        }
        if (pending) return;
      }
      if (!map) map = await cpuMap(work, r, request, target, pixels, (ms) => (computeMs += ms), (t) => (task = t));
      if (!map) return; // stale
      const rgba = wasm_bindgen.renderMap(pixels, map, engine.dataset, r.method, work.render.colormap, work.render.opacity, work.render.overlay);
      const values = wasm_bindgen.displayValues(map, engine.channels, r.method);
      if (r === work.requests[0]) lastMain = { pixels, map, target, r };
      post({ type: 'map', id: work.id, key: r.key, label, method: r.method, rgba, values, ms: computeMs, backend: backendName() }, [rgba.buffer]);
    } catch (err) {
      post({ type: 'map', id: work.id, key: r.key, label, method: r.method, error: String(err.message || err) });
    } finally {
      if (task) task.free();
      request.free();
    }
    if (pending) return;
    await yieldToEvents();
    if (pending) return;
  }
  post({ type: 'done', id: work.id });
  // The first map's live metrics, after the maps (their latency is untouched) and only while nothing newer waits.
  await yieldToEvents();
  if (pending || !lastMain || lastMain.pixels !== pixels) return;
  const t = performance.now();
  const values = engine.liveMetrics(pixels, lastMain.map, target);
  post({ type: 'metrics', id: work.id, key: lastMain.r.key, names: wasm_bindgen.liveMetricNames(), values: Array.from(values), ms: performance.now() - t });
}
