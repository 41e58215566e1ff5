// The demo page's main thread: drawing, controls and display. All model work runs in the web worker
// (worker.js); this thread sends it at most one request per animation frame and draws what comes back.

const $ = (id) => document.getElementById(id);
// The loaded model's image side, channels and classes, and the engine's option lists and input limits, all read
// from the engine when a model is ready (state.info, state.limits): none is spelled here.
const side = () => state.info.side;
const idLabel = (s) => { const [id, label] = s.split(':'); return { id, label }; };

// State the tests read (window.whitebox) and the page renders from.
const state = {
  ready: false,
  backend: 'CPU (WebAssembly)',
  // The loaded model, `dataset/arch` (`?model=cifar10/cam` picks the first one).
  model: new URLSearchParams(location.search).get('model') || 'mnist/simple-cnn',
  info: null,
  methods: [],
  limits: null, // {samples, noise}: the largest ensemble the engine accepts
  applicable: [], // ids of the methods that can explain the loaded model
  params: {}, // method parameter values the user set, by key (each method reads its own)
  strokes: [],
  background: null, // a model input (gallery image or opened picture, C×H×W in [0, 1]) under the strokes
  picture: null, // an opened picture {rgba, width, height, name}, converted again when the data set changes
  convertId: 0,
  pixels: null, // the model input of the last result
  probs: null,
  predicted: null,
  target: null,
  maps: {}, // key → {label, method, values, ms, latencyMs}
  lastId: 0,
  doneId: 0, // the newest request whose work has ended (tests wait for doneId === lastId)
  sentAt: {}, // id → time the work was sent
  dirty: false,
  firstMapAt: null,
  errors: [],
  metrics: null, // {id, names, values, ms}: the live metrics of the newest first map
  sanity: null, // {layers, layer, similarity}: the newest sanity-check result
  sanityId: 0,
};
window.whitebox = { state, events: [], schedule: () => schedule() };

function showMessage(text, kind = 'error') {
  const box = $('message');
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
  if (text && kind === 'error') state.errors.push(text);
}

// ---------- capability check and worker ----------

function webAssemblyProblem() {
  if (typeof WebAssembly !== 'object' || typeof Worker !== 'function') {
    return 'This browser cannot run WebAssembly in a web worker, which the demo needs.';
  }
  // A module using one SIMD instruction (v128.const): the engine is built with 128-bit SIMD.
  const simd = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 22, 1, 20, 0, 253,
    12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 11]);
  if (!WebAssembly.validate(simd)) {
    return 'This browser lacks WebAssembly SIMD (Chrome 91+, Firefox 89+, Safari 16.4+ have it).';
  }
  return null;
}

let worker = null;

function startWorker() {
  const problem = webAssemblyProblem();
  if (problem) {
    showMessage(problem);
    $('backend').textContent = 'unavailable';
    return;
  }
  worker = new Worker('worker.js', { type: 'module' });
  worker.onmessage = (e) => onWorkerMessage(e.data);
  worker.onerror = (e) => {
    showMessage(`The engine failed: ${e.message || 'unknown error'}`);
  };
  loadModel(state.model);
}

function loadModel(model) {
  state.ready = false;
  $('backend').textContent = `loading ${model}…`;
  // `?backend=cpu` keeps the computation on the CPU, `?backend=gpu` uses any WebGPU adapter (software ones too);
  // otherwise WebGPU is used when the browser offers a hardware adapter.
  const asked = new URLSearchParams(location.search).get('backend');
  const backend = ['cpu', 'gpu'].includes(asked) ? asked : 'auto';
  worker.postMessage({ type: 'load', model, url: `weights/${model}.safetensors`, backend });
}

function onWorkerMessage(msg) {
  window.whitebox.events.push(msg.type);
  switch (msg.type) {
    case 'ready': {
      const datasetChanged = !state.info || state.info.dataset !== msg.info.dataset;
      state.ready = true;
      state.model = msg.model;
      state.info = msg.info;
      // The registry's descriptors: id, label, title, paper, display, and each parameter's type, default and range.
      state.methods = JSON.parse(msg.methods);
      state.applicable = msg.applicable;
      state.datasets = Object.fromEntries(msg.datasets.map(idLabel).map((d) => [d.id, d.label]));
      const [samples, noise] = msg.limits;
      state.limits = { samples, noise };
      fillOptionLists(msg);
      state.backend = msg.backend;
      $('backend').textContent = state.backend;
      $('backend').title = `${msg.info.arch} on ${msg.info.dataset}, weights ${(msg.bytes / 1024).toFixed(0)} KiB loaded in ${msg.ms.toFixed(0)} ms` +
        (msg.backendNote ? ` (${msg.backendNote})` : '');
      fillMethodControls();
      $('sanity').max = String(msg.info.parameterLayers.length);
      $('sanity').value = '0';
      state.sanity = null;
      if (datasetChanged) onDatasetChange();
      if (!$('message').classList.contains('info')) showMessage('');
      schedule();
      break;
    }
    case 'converted':
      onConverted(msg);
      break;
    case 'input':
      if (msg.id !== state.lastId) return;
      state.pixels = msg.pixels;
      drawPreview(msg.pixels);
      if (!msg.pixels) clearResults(emptyHint());
      break;
    case 'probs':
      if (msg.id !== state.lastId) return;
      state.probs = msg.probs;
      state.predicted = msg.predicted;
      state.target = msg.target;
      drawProbs();
      break;
    case 'progress':
      if (msg.id !== state.lastId) return;
      showProgress(msg.key, msg.fraction, msg.label);
      break;
    case 'backend':
      state.backend = msg.backend;
      $('backend').textContent = state.backend;
      showMessage(msg.note);
      break;
    case 'map':
      if (msg.id !== state.lastId) return;
      onMap(msg);
      break;
    case 'done':
      if (msg.id !== state.lastId) return;
      showProgress(null);
      state.doneId = msg.id;
      break;
    case 'metrics':
      if (msg.id !== state.lastId) return;
      state.metrics = { id: msg.id, names: msg.names, values: msg.values, ms: msg.ms };
      drawMetrics();
      if (Number($('sanity').value) > 0 && $('sanity-panel').open) sendSanity();
      break;
    case 'sanity':
      if (msg.id !== state.sanityId) return;
      if (msg.error) {
        showMessage(`sanity check: ${msg.error}`);
        return;
      }
      state.sanity = { layers: msg.layers, layer: msg.layer, similarity: msg.similarity };
      paint($('sanity-map'), new ImageData(new Uint8ClampedArray(msg.rgba), side(), side()));
      $('sanity-layer').textContent = `re-initialised: ${msg.layer}`;
      $('sanity-sim').textContent = `rank correlation with the original map: ${msg.similarity.toFixed(3)}`;
      break;
    case 'error':
      if (msg.id === undefined || msg.id === state.lastId) showMessage(msg.message);
      if (msg.id === state.lastId) state.doneId = msg.id;
      if (msg.id === undefined && msg.fatal) $('backend').textContent = 'no model';
      if (msg.id === undefined && !msg.fatal) {
        // A model failed to load: keep working with the one already loaded.
        state.ready = true;
        $('model').value = state.model;
        $('backend').textContent = state.backend;
      }
      break;
    default:
      break;
  }
}

// ---------- requests ----------

function currentRequest(method) {
  return {
    key: method,
    method,
    ensemble: $('ensemble').value,
    samples: clampInt($('samples').value, 1, state.limits.samples, 50),
    noise: clampFloat($('noise').value, 0, state.limits.noise, 0.15),
    params: methodParams(method),
  };
}

// The values of `method`'s parameters that the user set (the others take their defaults in the engine).
function methodParams(method) {
  const m = state.methods.find((x) => x.id === method);
  const out = {};
  for (const p of (m ? m.params : [])) {
    const v = state.params[p.key];
    if (v === undefined || v === '') continue;
    if (p.type === 'count') out[p.key] = clampInt(v, p.min, p.max, p.default);
    else if (p.type === 'real') out[p.key] = clampFloat(v, p.min, p.max, p.default);
    else if (p.type === 'layer') out[p.key] = clampInt(v, 0, state.info.tapPoints - 1, state.info.defaultLayer);
    else out[p.key] = String(v);
  }
  return out;
}

function clampInt(v, lo, hi, dflt) {
  const n = Math.round(Number(v));
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
}

function clampFloat(v, lo, hi, dflt) {
  const n = Number(v);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
}

function applicableMethods() {
  return state.methods.filter((m) => state.applicable.includes(m.id));
}

// Marks the input or the settings as changed; the next animation frame sends one request.
function schedule() {
  state.dirty = true;
}

function frame() {
  if (state.dirty && state.ready && worker) {
    state.dirty = false;
    send();
  }
  requestAnimationFrame(frame);
}

function send() {
  const id = ++state.lastId;
  const compare = $('compare').checked;
  const requests = compare ? applicableMethods().map((m) => currentRequest(m.id)) : [currentRequest($('method').value)];
  const render = { colormap: $('colormap').value, opacity: Number($('opacity').value), overlay: $('overlay').checked };
  const target = Number($('target').value);
  const msg = { type: 'work', id, requests, target, render };
  const transfer = [];
  if (state.strokes.length === 0 && state.background) {
    msg.pixels = state.background;
  } else if (state.strokes.length === 0) {
    clearResults(emptyHint());
    drawPreview(null);
    state.doneId = id;
    return;
  } else {
    const ctx = pad.getContext('2d', { willReadFrequently: true });
    const rgba = ctx.getImageData(0, 0, pad.width, pad.height).data;
    const ink = new Uint8Array(pad.width * pad.height);
    for (let i = 0; i < ink.length; i++) ink[i] = rgba[4 * i];
    msg.ink = ink;
    msg.width = pad.width;
    msg.height = pad.height;
    transfer.push(ink.buffer);
  }
  state.sentAt[id] = performance.now();
  if (compare) buildCompareGrid(requests);
  worker.postMessage(msg, transfer);
}

// ---------- results ----------

function onMap(msg) {
  const latencyMs = performance.now() - state.sentAt[msg.id];
  if (state.firstMapAt === null) state.firstMapAt = performance.now();
  if (msg.error) {
    state.maps[msg.key] = { label: msg.label, method: msg.method, error: msg.error };
    showMessage(`${msg.label}: ${msg.error}`);
    return;
  }
  state.maps[msg.key] = { label: msg.label, method: msg.method, values: msg.values, ms: msg.ms, latencyMs };
  const image = new ImageData(new Uint8ClampedArray(msg.rgba), side(), side());
  if ($('compare').checked) {
    const cell = document.querySelector(`#compare-grid [data-key="${msg.key}"]`);
    if (cell) {
      paint(cell.querySelector('canvas'), image);
      cell.querySelector('.ms').textContent = `${msg.ms.toFixed(1)} ms`;
    }
  }
  if (msg.key === $('method').value) {
    paint($('map'), image);
    $('map-title').textContent = `${msg.label} for ${classTitle(state.target)}`;
    $('timing').textContent = `${msg.label}: ${msg.ms.toFixed(1)} ms compute, ${latencyMs.toFixed(0)} ms from input to map`;
  }
}

// The live metrics under the map: what each number is, and which way is better.
function drawMetrics() {
  const box = $('metrics');
  box.innerHTML = '';
  if (!state.metrics) return;
  const better = (name) => (name.startsWith('deletion') || name.startsWith('ROAD MoRF') || name === 'infidelity' ? '↓' : '↑');
  state.metrics.names.forEach((name, i) => {
    const k = document.createElement('span');
    k.textContent = `${name} ${better(name)}`;
    const v = document.createElement('span');
    v.className = 'v';
    v.textContent = state.metrics.values[i].toFixed(3);
    box.append(k, v);
  });
  box.title = `computed in ${state.metrics.ms.toFixed(0)} ms after the map`;
}

function sendSanity() {
  if (!worker || !state.ready) return;
  const render = { colormap: $('colormap').value, opacity: Number($('opacity').value), overlay: $('overlay').checked };
  worker.postMessage({ type: 'sanity', id: ++state.sanityId, layers: Number($('sanity').value), render });
}

$('sanity').addEventListener('input', sendSanity);
$('sanity-panel').addEventListener('toggle', () => {
  if ($('sanity-panel').open) sendSanity();
});

// "class 7" for a digit, the name for a named class ("truck").
function classTitle(c) {
  const name = state.info.classNames[c];
  return /^[0-9]+$/.test(name) ? `class ${name}` : name;
}

function paint(canvas, image) {
  const tmp = document.createElement('canvas');
  tmp.width = image.width;
  tmp.height = image.height;
  tmp.getContext('2d').putImageData(image, 0, 0);
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = 'high';
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(tmp, 0, 0, canvas.width, canvas.height);
}

function clearResults(text) {
  state.pixels = null;
  state.probs = null;
  state.maps = {};
  state.metrics = null;
  drawMetrics();
  const ctx = $('map').getContext('2d');
  ctx.fillStyle = '#111';
  ctx.fillRect(0, 0, 280, 280);
  $('map-title').textContent = 'Saliency';
  $('timing').textContent = text || '\u00a0';
  drawProbs();
  for (const c of document.querySelectorAll('#compare-grid canvas')) c.getContext('2d').clearRect(0, 0, c.width, c.height);
  showProgress(null);
}

function showProgress(key, fraction, label) {
  const bar = $('progress');
  if (key === null || key === undefined) {
    bar.hidden = true;
    return;
  }
  bar.hidden = false;
  bar.firstElementChild.style.width = `${Math.round(100 * fraction)}%`;
  bar.title = `${label}: ${Math.round(100 * fraction)}%`;
}

function drawProbs() {
  const box = $('probs');
  box.innerHTML = '';
  box.classList.toggle('named', !!state.info && state.info.classNames.some((n) => n.length > 2));
  for (let c = 0; c < (state.info ? state.info.classes : 0); c++) {
    const p = state.probs ? state.probs[c] : 0;
    const row = document.createElement('button');
    row.className = 'prob';
    if (state.probs && c === state.predicted) row.classList.add('predicted');
    if (state.probs && c === state.target) row.classList.add('target');
    const name = state.info.classNames[c];
    row.title = `Explain class ${name}`;
    row.innerHTML = `<span class="cls">${name}</span><span class="bar"><span style="width:${(100 * p).toFixed(1)}%"></span></span><span class="pct">${(100 * p).toFixed(1)}%</span>`;
    row.onclick = () => { $('target').value = String(c); schedule(); };
    box.appendChild(row);
  }
}

// Draws a model input (C×side×side values in [0, 1]: grey, or colour planes) onto a canvas's 2-d context at its
// top left; none: black.
function putPixels(ctx, pixels) {
  if (!pixels) {
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, ctx.canvas.width, ctx.canvas.height);
    return;
  }
  const n = side();
  const plane = n * n;
  const colour = pixels.length === 3 * plane;
  const img = ctx.createImageData(n, n);
  for (let i = 0; i < plane; i++) {
    const [r, g, b] = colour ? [pixels[i], pixels[plane + i], pixels[2 * plane + i]] : [pixels[i], pixels[i], pixels[i]];
    img.data.set([Math.round(255 * r), Math.round(255 * g), Math.round(255 * b), 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function drawPreview(pixels) {
  putPixels($('preview').getContext('2d'), pixels);
}

function buildCompareGrid(requests) {
  const grid = $('compare-grid');
  const keys = requests.map((r) => r.key).join(',');
  if (grid.dataset.keys === keys) return;
  grid.dataset.keys = keys;
  grid.innerHTML = '';
  for (const r of requests) {
    const m = state.methods.find((x) => x.id === r.key);
    const cell = document.createElement('figure');
    cell.dataset.key = r.key;
    cell.innerHTML = `<canvas width="112" height="112"></canvas><figcaption>${m ? m.label : r.key} <span class="ms"></span></figcaption>`;
    cell.onclick = () => { $('method').value = r.key; schedule(); };
    grid.appendChild(cell);
  }
}

// ---------- controls ----------

// Fills a <select> with {id, label} options, keeping its value when it is still offered.
function fillSelect(select, options, fallback) {
  const previous = select.value;
  select.length = 0;
  for (const o of options) select.add(new Option(o.label, o.id));
  select.value = options.some((o) => o.id === previous) && previous !== '' ? previous : fallback;
}

// The model menu, grouped by data set.
function fillModels(models, datasets, value) {
  const select = $('model');
  select.innerHTML = '';
  for (const d of datasets.map(idLabel)) {
    const group = document.createElement('optgroup');
    group.label = d.label;
    for (const m of models.map(idLabel).filter((m) => m.id.startsWith(`${d.id}/`))) group.appendChild(new Option(m.label, m.id));
    select.appendChild(group);
  }
  select.value = value;
}

function fillOptionLists(msg) {
  fillModels(msg.models, msg.datasets, msg.model);
  fillSelect($('ensemble'), [{ id: '', label: 'none' }, ...msg.ensembles.map(idLabel)], '');
  fillSelect($('colormap'), msg.colormaps.map((id) => ({ id, label: id })), msg.colormaps[0]);
  $('samples').max = String(state.limits.samples);
  $('noise').max = String(state.limits.noise);
  $('method-papers').textContent = state.methods.map((m) => `${m.paper.split(',')[0]} (${m.label})`).join(', ');
}

// The selected method's parameter controls, built from its descriptor: a number input for counts and reals (with
// the descriptor's range), a menu for choices and for layers (the model's features, its default marked).
function fillParamControls() {
  const box = $('method-params');
  box.innerHTML = '';
  const m = state.methods.find((x) => x.id === $('method').value);
  for (const p of (m ? m.params : [])) {
    const label = document.createElement('label');
    label.title = p.help;
    label.append(`${p.label} `);
    let input;
    if (p.type === 'count' || p.type === 'real') {
      input = document.createElement('input');
      input.type = 'number';
      input.min = String(p.min);
      input.max = String(p.max);
      if (p.type === 'real') input.step = 'any';
      input.value = String(state.params[p.key] ?? p.default);
    } else {
      input = document.createElement('select');
      if (p.type === 'layer') {
        for (let k = 0; k < state.info.tapPoints; k++) {
          input.add(new Option(k === state.info.defaultLayer ? `features[${k}] (default)` : `features[${k}]`, String(k)));
        }
        const v = state.params[p.key];
        input.value = v !== undefined && Number(v) < state.info.tapPoints ? String(v) : String(state.info.defaultLayer);
      } else {
        for (const v of p.values) input.add(new Option(v, v));
        input.value = state.params[p.key] ?? p.default;
      }
    }
    input.id = `param-${p.key}`;
    input.addEventListener('input', () => {
      state.params[p.key] = input.value;
      schedule();
    });
    label.append(input);
    box.append(label);
  }
}

function fillMethodControls() {
  const method = $('method');
  const previous = method.value || 'vbp';
  method.innerHTML = '';
  for (const m of applicableMethods()) method.add(new Option(m.label, m.id));
  method.value = applicableMethods().some((m) => m.id === previous) ? previous : 'vbp';
  // A layer chosen for another model may not exist in this one.
  if (state.params.layer !== undefined && Number(state.params.layer) >= state.info.tapPoints) delete state.params.layer;
  fillParamControls();
  const target = $('target');
  const previousTarget = target.value;
  target.length = 1;
  for (let c = 0; c < state.info.classes; c++) target.add(new Option(state.info.classNames[c], String(c)));
  target.value = Number(previousTarget) < state.info.classes ? previousTarget : '-1';
  $('compare-grid').dataset.keys = '';
}

for (const id of ['method', 'ensemble', 'samples', 'noise', 'target', 'colormap', 'opacity', 'overlay']) {
  $(id).addEventListener('input', schedule);
}
$('method').addEventListener('input', fillParamControls);
$('compare').addEventListener('change', () => {
  $('compare-grid').hidden = !$('compare').checked;
  $('compare-grid').dataset.keys = '';
  schedule();
});
$('model').addEventListener('change', () => {
  state.maps = {};
  loadModel($('model').value);
});

// ---------- drawing ----------

const pad = $('pad');
let current = null;

function redraw() {
  const ctx = pad.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (state.background) {
    const tmp = document.createElement('canvas');
    tmp.width = side();
    tmp.height = side();
    putPixels(tmp.getContext('2d'), state.background);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(tmp, 0, 0, pad.width, pad.height);
  }
  for (const s of state.strokes) drawStroke(ctx, s);
}

function drawStroke(ctx, s) {
  ctx.strokeStyle = '#fff';
  ctx.fillStyle = '#fff';
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.lineWidth = s.width;
  if (s.points.length === 1) {
    ctx.beginPath();
    ctx.arc(s.points[0][0], s.points[0][1], s.width / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(s.points[0][0], s.points[0][1]);
  for (const [x, y] of s.points.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function padPoint(e) {
  const r = pad.getBoundingClientRect();
  return [((e.clientX - r.left) * pad.width) / r.width, ((e.clientY - r.top) * pad.height) / r.height];
}

// Only digits are drawn; on other data sets the canvas shows the chosen image.
const drawing = () => state.info && state.info.dataset === 'mnist';

pad.addEventListener('pointerdown', (e) => {
  if (!drawing()) return;
  e.preventDefault();
  pad.setPointerCapture(e.pointerId);
  // Pens report pressure: scale the stroke a little with it.
  const width = Number($('stroke').value) * (e.pointerType === 'pen' && e.pressure > 0 ? 0.6 + 0.8 * e.pressure : 1);
  current = { width, points: [padPoint(e)] };
  state.strokes.push(current);
  redraw();
  schedule();
});
pad.addEventListener('pointermove', (e) => {
  if (!current) return;
  e.preventDefault();
  const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [e];
  for (const ev of events) current.points.push(padPoint(ev));
  redraw();
  schedule();
});
const endStroke = () => { current = null; };
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);
pad.style.touchAction = 'none';

function undo() {
  if (state.strokes.length) state.strokes.pop();
  else {
    state.background = null;
    state.picture = null;
  }
  redraw();
  schedule();
}

function clearAll() {
  state.strokes = [];
  state.background = null;
  state.picture = null;
  redraw();
  schedule();
}

$('undo').onclick = undo;
$('clear').onclick = clearAll;
document.addEventListener('keydown', (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === 'z') { e.preventDefault(); undo(); }
  if (e.key === 'Escape') clearAll();
});

// ---------- data set, gallery and opened pictures ----------

function emptyHint() {
  return drawing() || !state.info ? 'Draw a digit (or pick one from the gallery).' : 'Pick an image from the gallery, or open one of your own.';
}

// A model of another data set was loaded: the canvas, the hints and the gallery follow it; an opened picture is
// converted again for it, anything else on the canvas is cleared.
function onDatasetChange() {
  const mnist = drawing();
  const dataset = state.datasets[state.info.dataset];
  $('draw-tools').hidden = !mnist;
  $('input-title').textContent = mnist ? 'Draw' : 'Image';
  $('tagline').textContent = mnist ? 'Draw a digit and watch what the network looks at.' : 'Pick or open a picture and watch what the network looks at.';
  pad.style.cursor = mnist ? 'crosshair' : 'default';
  $('preview').width = side();
  $('preview').height = side();
  $('gallery-caption').textContent = `(${dataset} test images)`;
  state.strokes = [];
  state.background = null;
  redraw();
  loadGallery(state.info.dataset);
  if (state.picture) convertPicture();
}

let galleryRequest = 0;
// Whether `?gallery=K` was applied (once, on the first gallery).
let galleryStarted = false;

async function loadGallery(dataset) {
  const request = ++galleryRequest;
  const SIDE = side();
  const channels = state.info.channels;
  const box = $('gallery');
  box.innerHTML = '';
  try {
    const response = await fetch(`assets/${dataset}-gallery.bin`);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (request !== galleryRequest) return;
    const values = channels * SIDE * SIDE;
    const record = 1 + values;
    if (bytes.length === 0 || bytes.length % record !== 0) throw new Error('malformed gallery file');
    for (let k = 0; k < bytes.length / record; k++) {
      const label = bytes[k * record];
      const pixels = new Float32Array(values);
      for (let i = 0; i < values; i++) pixels[i] = bytes[k * record + 1 + i] / 255;
      const c = document.createElement('canvas');
      c.width = SIDE;
      c.height = SIDE;
      c.title = `${state.datasets[dataset]} test image: ${state.info.classNames[label]}`;
      c.dataset.label = String(label);
      putPixels(c.getContext('2d'), pixels);
      c.onclick = () => {
        state.strokes = [];
        state.picture = null;
        state.background = pixels;
        redraw();
        schedule();
      };
      box.appendChild(c);
    }
    // ?gallery=K starts with gallery image K (used by the speed harness to time page load to first map).
    const start = new URLSearchParams(location.search).get('gallery');
    if (start !== null && !galleryStarted && box.children[Number(start)]) {
      galleryStarted = true;
      box.children[Number(start)].click();
    }
  } catch (err) {
    if (request === galleryRequest) box.textContent = `The gallery could not be loaded (${err.message}).`;
  }
}

// A picture from the file picker, a drop or a paste: scaled down to at most 512 pixels a side here (the browser
// decodes it), then made into the model input by the engine (centre square for CIFAR-10, ink to digit for MNIST).
async function openPicture(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob);
  } catch {
    showMessage(`"${name}" is not an image this browser can open (try a PNG, JPEG, GIF or WebP file).`);
    return;
  }
  const scale = Math.min(1, 512 / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  ctx.imageSmoothingQuality = 'high';
  ctx.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  state.picture = { rgba: new Uint8Array(ctx.getImageData(0, 0, width, height).data.buffer), width, height, name };
  convertPicture();
}

function convertPicture() {
  const p = state.picture;
  const id = ++state.convertId;
  worker.postMessage({ type: 'convert', id, dataset: state.info.dataset, rgba: p.rgba.slice(), width: p.width, height: p.height });
}

function onConverted(msg) {
  if (msg.id !== state.convertId || !state.picture || msg.dataset !== state.info.dataset) return;
  const name = state.picture.name;
  if (msg.error || !msg.pixels) {
    showMessage(msg.error ? `"${name}": ${msg.error}` : `No digit found in "${name}": it needs dark strokes on light paper (or light on dark).`);
    return;
  }
  showMessage('');
  state.strokes = [];
  state.background = msg.pixels;
  redraw();
  schedule();
}

$('open').onclick = () => $('file').click();
$('file').addEventListener('change', () => {
  const file = $('file').files[0];
  if (file) openPicture(file, file.name);
  $('file').value = '';
});
for (const target of [pad, $('draw-panel')]) {
  target.addEventListener('dragover', (e) => { e.preventDefault(); e.dataTransfer.dropEffect = 'copy'; });
  target.addEventListener('drop', (e) => {
    e.preventDefault();
    e.stopPropagation();
    const file = e.dataTransfer.files[0];
    if (file) openPicture(file, file.name);
    else showMessage('Drop an image file here.');
  });
}
document.addEventListener('paste', (e) => {
  const item = [...(e.clipboardData ? e.clipboardData.items : [])].find((i) => i.kind === 'file');
  if (!item) return;
  e.preventDefault();
  const file = item.getAsFile();
  openPicture(file, file.name || 'the pasted file');
});

// ---------- download ----------

$('download').onclick = () => {
  const compare = $('compare').checked;
  let canvas = $('map');
  if (compare) {
    const cells = [...document.querySelectorAll('#compare-grid figure')];
    canvas = document.createElement('canvas');
    canvas.width = 120 * cells.length;
    canvas.height = 140;
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    cells.forEach((cell, i) => {
      ctx.drawImage(cell.querySelector('canvas'), 120 * i + 4, 4);
      ctx.fillStyle = '#000';
      ctx.font = '12px sans-serif';
      ctx.fillText(cell.querySelector('figcaption').textContent, 120 * i + 4, 132);
    });
  }
  canvas.toBlob((blob) => {
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `whitebox-${state.model.replace('/', '-')}-${compare ? 'compare' : $('method').value}-class${state.target}.png`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  }, 'image/png');
};

// ---------- start ----------

redraw();
drawProbs();
drawPreview(null);
clearResults('Draw a digit (or pick one from the gallery).');
startWorker();
requestAnimationFrame(frame);
