// Speed figures of the demo page in headless Chromium (this machine's CPU, one WebAssembly thread in the worker):
// per method, the worker's compute time per map and the time from input to map on the page (message passing and
// drawing included); page load to first map; what a visitor downloads (gzip) for the default model; and, side by
// side in the same browser, TensorFlow.js 4.22 computing the same maps of the same model (tfjs/).
//
//   node tests/browser/bench.mjs [dist-dir]      (build dist first: trunk build --release)
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { serve, launch, openPage, settle } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(process.argv[2] || path.join(here, '../../dist'));
const median = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]; };

// Download size: what the page fetches for the default model, gzip -9 (as a server would send it).
const files = ['index.html', 'app.js', 'worker.js', 'style.css', 'whitebox-web.js', 'whitebox-web_bg.wasm', 'weights/mnist/simple-cnn.safetensors', 'assets/mnist-gallery.bin'];
let raw = 0, gz = 0;
const sizes = {};
for (const f of files) {
  const bytes = fs.readFileSync(path.join(dist, f));
  const z = zlib.gzipSync(bytes, { level: 9 }).length;
  sizes[f] = { raw: bytes.length, gzip: z };
  raw += bytes.length;
  gz += z;
}

const server = await serve(dist, { '/harness/': here });
const browser = await launch();
const rows = [];
let firstMap;
let tfjs;
let ours;
try {
  // Page load to first map: a fresh page that starts with gallery image 0.
  const cold = await browser.newPage();
  await cold.goto(`${server.url}?gallery=0`);
  await cold.waitForFunction(() => window.whitebox && window.whitebox.state.firstMapAt !== null, null, { timeout: 60000 });
  firstMap = await cold.evaluate(() => window.whitebox.state.firstMapAt);
  await cold.close();

  const page = await openPage(browser, `${server.url}?gallery=0`);
  await settle(page);
  const cases = [
    ['vbp', ''], ['ib', ''], ['deconvnet', ''], ['gb', ''], ['gc', ''], ['gbgc', ''], ['co', ''], ['sobel', ''],
    ['ig', ''], ['vbp', 'sg'], ['gb', 'sg'], ['vbp', 'sg-var'],
  ];
  ours = await settle(page);
  // Warm-up: every case once (the first maps of a fresh worker are slower).
  for (const [method, ensemble] of cases) {
    await page.selectOption('#method', method);
    await page.selectOption('#ensemble', ensemble);
    await settle(page);
  }
  for (const [method, ensemble] of cases) {
    await page.selectOption('#method', method);
    await page.selectOption('#ensemble', ensemble);
    await settle(page);
    const reps = method === 'ig' || ensemble ? 5 : 25;
    const compute = [], latency = [];
    let label = '';
    for (let r = 0; r < reps; r++) {
      await page.evaluate(() => window.whitebox.schedule());
      const res = await settle(page);
      const m = res.maps[method];
      compute.push(m.ms);
      latency.push(m.latencyMs);
      label = m.label;
    }
    rows.push({ label: method === 'ig' ? 'IG-50' : ensemble ? `${label}-50` : label, compute: median(compute), latency: median(latency) });
  }

  // TensorFlow.js on the same digit, target and weights.
  const ref = await browser.newPage();
  await ref.goto(`${server.url}harness/tfjs/index.html`);
  tfjs = await ref.evaluate(([pixels, target]) => window.runBench('/weights/mnist/simple-cnn.safetensors', pixels, target),
    [ours.pixels, ours.target]);
  await ref.close();
} finally {
  await browser.close();
  server.close();
}

// The port is checked: TensorFlow.js's probabilities must equal whitebox's.
for (const [name, b] of Object.entries(tfjs.backends)) {
  const d = Math.max(...b.probs.map((p, i) => Math.abs(p - ours.probs[i])));
  if (!(d < 1e-4)) {
    console.error(`TensorFlow.js (${name}) disagrees with whitebox: max |Δp| = ${d}`);
    process.exit(1);
  }
}
const tw = tfjs.backends.wasm, tc = tfjs.backends.cpu;
const ref = { 'VBP': [tw.vbpMs, tc.vbpMs], 'SG-VBP-50': [tw.sg50Ms, tc.sg50Ms] };
console.log(`| map (SimpleCNN, one 28×28 digit) | whitebox: compute in the worker (ms) | whitebox: input → map on the page (ms) | TF.js ${tfjs.version} wasm (ms) | TF.js cpu (ms) | ratio TF.js wasm / whitebox |`);
console.log('|---|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const t = ref[r.label];
  const cells = t ? [t[0].toFixed(1), t[1].toFixed(1), `${(t[0] / r.compute).toFixed(1)}×`] : ['', '', ''];
  console.log(`| ${r.label} | ${r.compute.toFixed(1)} | ${r.latency.toFixed(1)} | ${cells.join(' | ')} |`);
}
console.log(`(TF.js wasm: SIMD ${tw.simd}, threads ${tw.threads}; its SmoothGrad runs the 50 samples as one batch.)`);
console.log('');
console.log(`page load → first map (SimpleCNN, VBP): ${firstMap.toFixed(0)} ms`);
console.log(`download for the default model: ${(gz / 1e6).toFixed(2)} MB gzip (${(raw / 1e6).toFixed(2)} MB raw): ` +
  `wasm ${(sizes['whitebox-web_bg.wasm'].gzip / 1e6).toFixed(2)} MB, weights ${(sizes['weights/mnist/simple-cnn.safetensors'].gzip / 1e6).toFixed(2)} MB`);
fs.mkdirSync(path.join(here, 'artifacts'), { recursive: true });
fs.writeFileSync(path.join(here, 'artifacts', 'bench.json'), JSON.stringify({ rows, firstMap, sizes, gzip: gz, raw, tfjs }, null, 2));
