// End-to-end test of the demo page in headless Chromium: draws a "1" and a "7" with the mouse, checks the
// predictions and that the saliency lies on the strokes, switches methods and ensembles and sees the map change,
// uses the compare view, the gallery and the target selector, and checks the page's handling of bad input.
// Screenshots go to $WHITEBOX_ARTIFACTS (default tests/browser/artifacts). Exit status 1 on any failure.
//
//   node tests/browser/e2e.mjs [dist-dir]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { serve, launch, openPage, settle, draw, DIGITS } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(process.argv[2] || path.join(here, '../../dist'));
const artifacts = path.resolve(process.env.WHITEBOX_ARTIFACTS || path.join(here, 'artifacts'));
fs.mkdirSync(artifacts, { recursive: true });

let failures = 0;
let passes = 0;
function check(ok, what) {
  if (ok) {
    passes++;
    console.log(`ok   ${what}`);
  } else {
    failures++;
    console.log(`FAIL ${what}`);
  }
}

/** Share of the map's display mass on the digit's ink (model input > 0.1, grown by one pixel), and the ink's area share. */
function onStrokes(values, pixels) {
  const ink = new Array(784).fill(false);
  for (let y = 0; y < 28; y++) for (let x = 0; x < 28; x++) {
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      const yy = y + dy, xx = x + dx;
      if (yy >= 0 && yy < 28 && xx >= 0 && xx < 28 && pixels[yy * 28 + xx] > 0.1) ink[y * 28 + x] = true;
    }
  }
  let on = 0, all = 0, area = 0;
  for (let i = 0; i < 784; i++) {
    all += values[i];
    if (ink[i]) { on += values[i]; area++; }
  }
  return { share: all > 0 ? on / all : 0, area: area / 784, total: all };
}

/** A PNG (as a Buffer) of `width`×`height` on `background`, drawn in the page by `paint(ctx, arg)`. */
async function pngOf(page, width, height, background, paint, arg = null) {
  const bytes = await page.evaluate(async ([w, h, bg, body, a]) => {
    const canvas = new OffscreenCanvas(w, h);
    const ctx = canvas.getContext('2d');
    ctx.fillStyle = bg;
    ctx.fillRect(0, 0, w, h);
    new Function('ctx', 'pixels', `(${body})(ctx, pixels)`)(ctx, a);
    const blob = await canvas.convertToBlob({ type: 'image/png' });
    return [...new Uint8Array(await blob.arrayBuffer())];
  }, [width, height, background, paint.toString(), arg]);
  return Buffer.from(bytes);
}

function l1(a, b) {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
  return d / a.length;
}

/** Runs `action`, waits for the page to send new work, and for that work to end. */
async function settleAfter(page, action) {
  const before = await page.evaluate(() => window.whitebox.state.lastId);
  await action();
  await page.waitForFunction((prev) => window.whitebox.state.lastId > prev, before, { timeout: 15000 });
  return settle(page);
}

async function select(page, id, value) {
  await page.selectOption(`#${id}`, value);
  return settle(page);
}

const server = await serve(dist);
const browser = await launch();
const errors = [];
try {
  const page = await openPage(browser, server.url, errors);
  check(await page.locator('#backend').textContent() === 'CPU (WebAssembly)', 'the page shows the backend (CPU: the only WebGPU adapter is SwiftShader, a software one)');

  // The controls come from the engine: its option lists and its input limits (core's), nothing spelled in the page.
  await page.waitForFunction(() => window.whitebox.state.ready, null, { timeout: 30000 });
  const controls = await page.evaluate(() => ({
    models: [...document.querySelectorAll('#model option')].map((o) => o.value),
    groups: [...document.querySelectorAll('#model optgroup')].map((g) => g.label),
    ensembles: [...document.querySelectorAll('#ensemble option')].map((o) => o.value),
    colormaps: [...document.querySelectorAll('#colormap option')].map((o) => o.value),
    maxSamples: document.getElementById('samples').max,
    methods: [...document.querySelectorAll('#method option')].map((o) => o.value),
    registry: window.whitebox.state.methods.map((m) => m.id),
    applicable: window.whitebox.state.applicable,
    classes: document.querySelectorAll('#target option').length - 1,
    info: window.whitebox.state.info,
  }));
  check(controls.models.join() === 'mnist/simple-cnn,mnist/cam,mnist/cbam,cifar10/simple-cnn,cifar10/cam,cifar10/cbam'
    && controls.groups.join() === 'MNIST,CIFAR-10' && controls.ensembles.join() === ',sg,sg-sq,sg-var'
    && controls.colormaps.join() === 'hot,viridis,jet,gray',
  `the option lists come from the engine (${JSON.stringify(controls)})`);
  check(controls.methods.join() === controls.applicable.join() && controls.registry.includes('cam')
    && !controls.methods.includes('cam') && controls.methods.length === controls.registry.length - 1,
  `the method menu is the registry's methods that apply to the model (${controls.methods.join()})`);
  check(controls.maxSamples === '1000' && controls.classes === controls.info.classes
    && controls.info.side === 28 && controls.info.channels === 1, 'the input limits and the class list come from the engine');

  // Empty canvas: a visible hint, no map.
  check((await page.locator('#timing').textContent()).includes('Draw a digit'), 'an empty canvas asks for a digit');

  // Draw a 1 and a 7.
  for (const digit of [1, 7]) {
    await page.click('#clear');
    await draw(page, DIGITS[digit]);
    const r = await settle(page);
    check(r.predicted === digit, `a drawn ${digit} is predicted as ${digit} (got ${r.predicted}, p=${r.probs && r.probs[r.predicted].toFixed(3)})`);
    const vbp = r.maps.vbp;
    check(vbp && vbp.values.length === 784, `the VBP map of the ${digit} arrived`);
    const s = onStrokes(vbp.values, r.pixels);
    check(s.total > 0 && s.share >= 0.4 && s.share >= 2 * s.area,
      `the ${digit}'s VBP map lies on the strokes (${(100 * s.share).toFixed(0)}% of the mass on ${(100 * s.area).toFixed(0)}% of the area)`);
    await page.screenshot({ path: path.join(artifacts, `drawn-${digit}-vbp.png`) });
  }

  // The 7's live metrics appear under the map once the map is done, and the sanity check's slider re-explains it
  // with the model's layers re-initialised from the top: all of them destroy the VBP map (low rank correlation).
  await page.waitForFunction(() => { const m = window.whitebox.state.metrics; return m && m.id === window.whitebox.state.lastId; }, null, { timeout: 15000 });
  const live = await page.evaluate(() => window.whitebox.state.metrics);
  const liveText = await page.locator('#metrics').textContent();
  check(live.names.length === 9 && live.values.every(Number.isFinite) && live.values[0] >= 0 && live.values[1] <= 1
    && liveText.includes('deletion AUC') && liveText.includes('ROAD MoRF 50 %'),
  `the live metrics appear under the map (${live.names.map((n, i) => `${n} ${live.values[i].toFixed(3)}`).join(', ')}; ${live.ms.toFixed(0)} ms, after the map)`);
  await page.click('#sanity-panel summary');
  const sanityAt = async (layers) => {
    await page.evaluate((k) => { const s = document.getElementById('sanity'); s.value = String(k); s.dispatchEvent(new Event('input')); }, layers);
    await page.waitForFunction((k) => { const s = window.whitebox.state.sanity; return s && s.layers === k; }, layers, { timeout: 30000 });
    return page.evaluate(() => window.whitebox.state.sanity);
  };
  const kept = await sanityAt(0);
  const layerCount = Number(await page.getAttribute('#sanity', 'max'));
  const top = await sanityAt(1);
  const destroyed = await sanityAt(layerCount);
  check(layerCount === 8 && Math.abs(kept.similarity - 1) < 1e-9 && destroyed.similarity < 0.5 && destroyed.similarity < top.similarity + 0.2,
    `the sanity check: ρ = ${kept.similarity.toFixed(3)} with no layer re-initialised, ${top.similarity.toFixed(3)} with ${top.layer}, ${destroyed.similarity.toFixed(3)} with all ${layerCount}`);
  await page.screenshot({ path: path.join(artifacts, 'sanity-check.png') });
  await sanityAt(0);

  // Every method on the 7: a map for each, and each differs from VBP's.
  const base = (await settle(page)).maps.vbp.values;
  const methods = await page.evaluate(() => [...document.querySelectorAll('#method option')].map((o) => o.value));
  check(methods.length >= 10, `the method list offers ${methods.length} methods`);
  for (const m of methods.filter((m) => m !== 'vbp')) {
    const r = await select(page, 'method', m);
    const map = r.maps[m];
    check(map && !map.error && map.values.length === 784, `${m}: a map arrived`);
    if (!map || !map.values) continue;
    check(l1(map.values, base) > 0.01, `${m}: the map differs from VBP (mean |Δ| ${l1(map.values, base).toFixed(3)})`);
    // The controls and the class-blind maps (the feature-map mean, its first principal component) need not.
    if (!['random', 'sobel', 'co', 'eigencam'].includes(m)) {
      const s = onStrokes(map.values, r.pixels);
      check(s.share >= 1.2 * s.area, `${m}: the map favours the strokes (${(100 * s.share).toFixed(0)}% on ${(100 * s.area).toFixed(0)}%)`);
    }
    await page.screenshot({ path: path.join(artifacts, `drawn-7-${m}.png`) });
  }

  // Each method's own parameters, from its descriptor: IG a steps input with the registry's range, Grad-CAM a menu
  // of the model's layers; VBP none. Changing one recomputes the map.
  const paramControls = async (m) => {
    await select(page, 'method', m);
    return page.evaluate(() => [...document.querySelectorAll('#method-params input, #method-params select')]
      .map((e) => ({ id: e.id, max: e.max, options: e.options ? e.options.length : 0, value: e.value })));
  };
  const igControls = await paramControls('ig');
  check(igControls.length === 2 && igControls[0].id === 'param-ig-steps' && igControls[0].max === '1000'
    && igControls[0].value === '50' && igControls[1].id === 'param-riemann' && igControls[1].options === 4,
  `IG shows its steps (1..=1000, default 50) and its rule (${JSON.stringify(igControls)})`);
  const gcControls = await paramControls('gc');
  check(gcControls.length === 1 && gcControls[0].id === 'param-layer' && gcControls[0].options === controls.info.tapPoints
    && gcControls[0].value === String(controls.info.defaultLayer), `Grad-CAM shows a layer menu (${JSON.stringify(gcControls)})`);
  const gcDefault = (await settle(page)).maps.gc.values;
  const gcEarly = (await select(page, 'param-layer', '2')).maps.gc;
  check(gcEarly && l1(gcEarly.values, gcDefault) > 0.01, 'another Grad-CAM layer changes the map');
  await select(page, 'param-layer', String(controls.info.defaultLayer));
  check((await paramControls('vbp')).length === 0, 'VBP has no parameters');

  // The perturbation methods on the page: Occlusion with its default 4×4 window (stride 2: 169 occluded copies) in
  // under a second, RISE with its 1000 masks, each with the progress bar moving while its copies are scored.
  for (const [m, limit] of [['occlusion', 1000], ['rise', 3000]]) {
    await select(page, 'method', 'vbp');
    await page.evaluate(() => { window.whitebox.events.length = 0; });
    const map = (await select(page, 'method', m)).maps[m];
    const progressed = await page.evaluate(() => window.whitebox.events.includes('progress'));
    check(map && map.values && map.ms < limit && progressed,
      `${m}: the map in ${map && map.ms.toFixed(0)} ms (under ${limit} ms), progress shown: ${progressed}`);
  }
  // Ensembles on GB: each changes the map, and progress is shown for n = 50.
  await select(page, 'method', 'gb');
  const gb = (await settle(page)).maps.gb.values;
  for (const e of ['sg', 'sg-sq', 'sg-var']) {
    const r = await select(page, 'ensemble', e);
    const map = r.maps.gb;
    check(map && map.label.startsWith(e.toUpperCase()), `${e}: the map is labelled ${map && map.label}`);
    check(map && l1(map.values, gb) > 0.01, `${e}: the ensemble changes the GB map (mean |Δ| ${map && l1(map.values, gb).toFixed(3)})`);
    await page.screenshot({ path: path.join(artifacts, `drawn-7-${e}-gb.png`) });
  }
  const sawProgress = await page.evaluate(() => window.whitebox.events.includes('progress'));
  check(sawProgress, 'an ensemble of 50 samples reports progress');
  await select(page, 'ensemble', '');

  // Target class: explaining class 1 instead of the predicted 7 changes the map.
  await select(page, 'method', 'vbp');
  const r7 = await settle(page);
  await page.selectOption('#target', '1');
  const r1 = await settle(page);
  check(r1.target === 1 && l1(r1.maps.vbp.values, r7.maps.vbp.values) > 0.01, 'explaining class 1 gives another map');
  await page.selectOption('#target', '-1');
  await settle(page);

  // Compare view: every method side by side.
  await page.check('#compare');
  const rc = await settle(page);
  check(methods.every((m) => rc.maps[m] && rc.maps[m].values), 'the compare view computes every method');
  await page.screenshot({ path: path.join(artifacts, 'compare-7.png'), fullPage: true });
  await page.uncheck('#compare');
  await settle(page);

  // A new stroke while a slow ensemble runs: the stale work is dropped and the newest input wins.
  await page.selectOption('#ensemble', 'sg');
  await page.fill('#samples', '200');
  await page.dispatchEvent('#samples', 'input');
  await page.waitForTimeout(30);
  await page.click('#clear');
  await draw(page, DIGITS[1]);
  const rs = await settle(page);
  check(rs.predicted === 1 && rs.maps.vbp && rs.maps.vbp.label === 'SG-VBP', 'a new drawing replaces stale ensemble work');
  await page.selectOption('#ensemble', '');
  await page.fill('#samples', '50');
  await page.dispatchEvent('#samples', 'input');
  await settle(page);

  // Gallery: loading a test image predicts its label.
  const thumbs = page.locator('#gallery canvas');
  check(await thumbs.count() === 30, 'the gallery shows 30 MNIST test images');
  let right = 0;
  for (const k of [0, 10, 20, 29]) {
    await thumbs.nth(k).click();
    const r = await settle(page);
    const label = Number(await thumbs.nth(k).getAttribute('data-label'));
    if (r.predicted === label) right++;
  }
  check(right === 4, `gallery images are classified by their labels (${right}/4)`);
  await page.screenshot({ path: path.join(artifacts, 'gallery.png') });

  // Model switch, and a weights file that fails to load: a visible message, and the page keeps working.
  await page.selectOption('#model', 'mnist/cam');
  await page.waitForFunction(() => window.whitebox.state.ready && window.whitebox.state.info.arch === 'cam', null, { timeout: 30000 });
  const rcam = await settle(page);
  check(rcam.maps.vbp !== undefined, 'switching the model to CAM explains the digit with it');
  const rcamMap = await select(page, 'method', 'cam');
  check(rcamMap.maps.cam && rcamMap.maps.cam.values, 'the CAM model offers the CAM method');
  await page.screenshot({ path: path.join(artifacts, 'cam-model-cam.png') });
  await select(page, 'method', 'vbp');
  await page.route('**/weights/mnist/cbam.safetensors', (route) => route.fulfill({ status: 200, body: 'not a checkpoint' }));
  await page.selectOption('#model', 'mnist/cbam');
  await page.waitForFunction(() => !document.getElementById('message').hidden, null, { timeout: 30000 });
  const msg = await page.locator('#message').textContent();
  check(msg.includes('cbam') && msg.includes('not a safetensors file'), `a corrupt weights file gives a visible message ("${msg}")`);
  await page.screenshot({ path: path.join(artifacts, 'bad-weights.png') });
  await page.click('#clear');
  await draw(page, DIGITS[7]);
  const after = await settle(page);
  check(after.predicted === 7, 'after the failed load the page still classifies with the previous model');
  check(await page.inputValue('#model') === 'mnist/cam', 'the model selector returns to the loaded model');

  // The empty canvas again.
  await page.click('#clear');
  await settle(page);
  check((await page.locator('#timing').textContent()).includes('Draw a digit'), 'clearing the canvas clears the result');

  // Undo removes the last stroke.
  await draw(page, DIGITS[7]);
  await settle(page);
  await page.click('#undo');
  const ru = await settle(page);
  check(ru.pixels && ru.predicted !== undefined, 'undo leaves the first stroke and re-explains it');

  // Open an image: a photographed 7 (dark ink on off-white paper, as a PNG file) becomes a digit; a text file gives
  // a visible message.
  const seven = await pngOf(page, 360, 240, 'rgb(240,236,228)', (ctx) => {
    ctx.strokeStyle = 'rgb(40,40,60)';
    ctx.lineWidth = 14;
    ctx.lineCap = 'round';
    ctx.beginPath();
    ctx.moveTo(130, 50);
    ctx.lineTo(230, 50);
    ctx.lineTo(160, 200);
    ctx.stroke();
  });
  const ro = await settleAfter(page, () => page.setInputFiles('#file', { name: 'seven.png', mimeType: 'image/png', buffer: seven }));
  check(ro.predicted === 7 && ro.maps.vbp && ro.maps.vbp.values.length === 784, `an opened picture of a 7 is read as a 7 (got ${ro.predicted})`);
  await page.screenshot({ path: path.join(artifacts, 'opened-7.png') });
  await page.setInputFiles('#file', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture') });
  await page.waitForFunction(() => document.getElementById('message').textContent.includes('notes.txt'), null, { timeout: 10000 });
  check((await page.locator('#message').textContent()).includes('not an image'), 'a file that is not an image gives a visible message');

  // CIFAR-10: the models of the other data set, its gallery, and pictures opened, dropped or kept across the switch.
  await page.selectOption('#model', 'cifar10/simple-cnn');
  await page.waitForFunction(() => window.whitebox.state.ready && window.whitebox.state.info.dataset === 'cifar10', null, { timeout: 30000 });
  await page.waitForFunction(() => window.whitebox.state.pixels && window.whitebox.state.pixels.length === 3072, null, { timeout: 30000 });
  const rk = await settle(page);
  check(rk.pixels && rk.pixels.length === 3 * 32 * 32 && rk.maps.vbp && rk.maps.vbp.values.length === 1024,
    'the picture opened before the switch is converted for CIFAR-10 and explained');
  check(!(await page.isVisible('#draw-tools')) && (await page.locator('#input-title').textContent()) === 'Image', 'CIFAR-10 shows an image, not a drawing pad');
  const cifarThumbs = page.locator('#gallery canvas');
  await page.waitForFunction(() => document.querySelectorAll('#gallery canvas').length === 30, null, { timeout: 10000 });
  check((await cifarThumbs.first().getAttribute('title')).includes('airplane'), 'the gallery shows CIFAR-10 test images, named');
  let cifarRight = 0;
  const picked = [];
  for (const k of [0, 4, 9, 15, 19, 21, 24, 29]) {
    await cifarThumbs.nth(k).click();
    const r = await settle(page);
    if (r.predicted === Number(await cifarThumbs.nth(k).getAttribute('data-label'))) cifarRight++;
    picked.push(r);
  }
  check(cifarRight >= 6, `CIFAR-10 gallery images are classified by their labels (${cifarRight}/8)`);
  const probNames = await page.evaluate(() => [...document.querySelectorAll('#probs .cls')].map((e) => e.textContent));
  check(probNames[0] === 'airplane' && probNames[9] === 'truck', 'the probabilities are labelled with the class names');
  for (const m of ['gc', 'ig', 'gb']) {
    const r = await select(page, 'method', m);
    check(r.maps[m] && r.maps[m].values && r.maps[m].values.length === 1024, `CIFAR-10 ${m}: a map arrived`);
  }
  await page.screenshot({ path: path.join(artifacts, 'cifar10-gallery-gc.png') });
  await select(page, 'method', 'vbp');
  // The last gallery image, enlarged 3× into a PNG and dropped on the canvas: the same class.
  const last = picked[picked.length - 1];
  const enlarged = await pngOf(page, 96, 96, '#000', (ctx, pixels) => {
    for (let y = 0; y < 96; y++) for (let x = 0; x < 96; x++) {
      const i = Math.floor(y / 3) * 32 + Math.floor(x / 3);
      ctx.fillStyle = `rgb(${[0, 1, 2].map((c) => Math.round(255 * pixels[c * 1024 + i])).join(',')})`;
      ctx.fillRect(x, y, 1, 1);
    }
  }, last.pixels);
  const rd = await settleAfter(page, () => page.evaluate((bytes) => {
    const dt = new DataTransfer();
    dt.items.add(new File([new Uint8Array(bytes)], 'photo.png', { type: 'image/png' }));
    document.getElementById('pad').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, [...enlarged]));
  // (Not exactly the original: the anti-aliasing filter spans three enlarged pixels, so it mixes in neighbours.)
  check(rd.predicted === last.predicted && l1(rd.pixels, last.pixels) < 0.05,
    `a dropped picture is centre-cropped and resized to the model input (class ${rd.predicted} as the original's ${last.predicted}, mean |Δ| ${l1(rd.pixels, last.pixels).toFixed(4)})`);
  await page.screenshot({ path: path.join(artifacts, 'cifar10-dropped.png') });

  // A phone-sized screen: right after drawing, the map is in view without scrolling.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true });
  phone.on('pageerror', (e) => errors.push(String(e)));
  await phone.goto(server.url);
  await phone.waitForFunction(() => window.whitebox && window.whitebox.state.ready, null, { timeout: 60000 });
  await draw(phone, DIGITS[7]);
  const rp = await settle(phone);
  const mapBox = await phone.locator('#map').boundingBox();
  const padBox = await phone.locator('#pad').boundingBox();
  const scrolled = await phone.evaluate(() => window.scrollY);
  check(rp.predicted === 7 && scrolled === 0 && mapBox.y >= 0 && mapBox.y + mapBox.height <= 844 && padBox.y + padBox.height <= 844 && mapBox.width >= 120,
    `390 px wide: the pad and the map are both in view (map ${mapBox.width.toFixed(0)} px at y ${mapBox.y.toFixed(0)}, predicted ${rp.predicted})`);
  await phone.screenshot({ path: path.join(artifacts, 'phone-390.png') });
  await phone.close();

  // Both backends: a page on WebGPU (SwiftShader, asked for with ?backend=gpu) and a page on the CPU, the same drawn
  // 7, every method and two ensembles: the maps agree.
  const gpuPage = await openPage(browser, `${server.url}?backend=gpu`, errors);
  const gpuBadge = await gpuPage.locator('#backend').textContent();
  check(gpuBadge.startsWith('WebGPU'), `?backend=gpu computes on WebGPU (badge: ${gpuBadge})`);
  const cpuPage = await openPage(browser, `${server.url}?backend=cpu`, errors);
  for (const p of [gpuPage, cpuPage]) {
    await draw(p, DIGITS[7]);
    await settle(p);
  }
  for (const [m, e] of [...methods.map((m) => [m, '']), ['gb', 'sg'], ['vbp', 'sg-var']]) {
    const results = [];
    for (const p of [gpuPage, cpuPage]) {
      await p.selectOption('#ensemble', e);
      await p.selectOption('#method', m);
      // Guided IG ranks gradients to choose its path, so a last-bit difference between the backends may send it
      // elsewhere (as between any two float32 implementations); with no room to stray (max distance 0) its path is
      // IG's straight line, and its 200 sequential steps still each await the GPU.
      if (m === 'guidedig') await p.fill('#param-gig-max-dist', '0');
      // Emulated WebGPU (SwiftShader) takes ~30 s for the sampling methods (RISE, KernelSHAP, LIME) on an idle
      // machine; a loaded one may take twice that, so the comparison waits up to four minutes per map.
      results.push((await settle(p, 240000)).maps[m]);
    }
    const [gm, cm] = results;
    const ok = gm && cm && !gm.error && gm.values.length === cm.values.length;
    const d = ok ? Math.max(...gm.values.map((v, i) => Math.abs(v - cm.values[i]))) : Infinity;
    const mean = ok ? l1(gm.values, cm.values) : Infinity;
    // IG's scaled digits have flat regions whose equal values the CPU's matrix products round unequally, so a
    // max-pooling window may route its gradient to another (equally valid) pixel at a few of the 50 steps: IG is
    // held to the mean difference; its largest is printed. GradientSHAP's random points α·x near zero meet the same.
    // Guided IG's straight line and Blur IG's blurs that fade towards zero meet the same near-ties.
    const within = ['ig', 'gradshap', 'guidedig', 'blurig'].includes(m) && !e ? mean < 1e-3 : d < 1e-3;
    check(ok && within, `WebGPU ${e ? `${e}-` : ''}${m}: the map equals the CPU page's (display values: max |Δ| ${d.toExponential(1)}, mean ${mean.toExponential(1)}; ${gm && gm.ms.toFixed(0)} ms vs ${cm && cm.ms.toFixed(0)} ms)`);
  }
  await gpuPage.screenshot({ path: path.join(artifacts, 'webgpu-7-sg-var-vbp.png') });

  const unexpected = errors.filter((e) => !e.includes('not a safetensors file'));
  check(unexpected.length === 0, `no console errors (${unexpected.join(' | ')})`);
} catch (err) {
  failures++;
  console.log(`FAIL ${err.stack || err}`);
} finally {
  await browser.close();
  server.close();
}
console.log(`browser e2e: ${passes} passed, ${failures} failed; screenshots in ${artifacts}`);
process.exit(failures ? 1 : 0);
