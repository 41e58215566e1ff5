// Shared by the browser tests and the speed harness: a static server for dist/, the system Chromium, and helpers
// that draw on the page and wait for its results.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.wasm': 'application/wasm', '.json': 'application/json', '.png': 'image/png',
};

/** Serves `root` on a free loopback port, and each directory of `mounts` ({'/prefix/': dir}) under its prefix;
 * resolves to {url, close, stats}. */
export function serve(root, mounts = {}) {
  const stats = { bytesSent: 0 };
  const server = http.createServer((req, res) => {
    let rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let base = path.resolve(root);
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (rel.startsWith(prefix)) {
        base = path.resolve(dir);
        rel = '/' + rel.slice(prefix.length);
      }
    }
    const file = path.join(base, rel.endsWith('/') ? rel + 'index.html' : rel);
    if (!file.startsWith(base) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    const body = fs.readFileSync(file);
    stats.bytesSent += body.length;
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${server.address().port}/`, close: () => server.close(), stats });
    });
  });
}

export const CHROMIUM_ARGS = [
  '--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update',
  '--disable-sync', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
];

export async function launch() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/** Opens the page and waits until the model is loaded; collects console errors in `errors`. */
export async function openPage(browser, url, errors = []) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.whitebox && window.whitebox.state.ready, null, { timeout: 60000 });
  return page;
}

/** Waits until the newest request's work has ended and nothing new is scheduled. */
export async function settle(page, timeout = 60000) {
  await page.waitForFunction(() => {
    const s = window.whitebox.state;
    return !s.dirty && s.doneId === s.lastId && s.lastId > 0;
  }, null, { timeout, polling: 20 });
  return page.evaluate(() => {
    const s = window.whitebox.state;
    return { id: s.lastId, probs: s.probs, predicted: s.predicted, target: s.target, pixels: s.pixels && Array.from(s.pixels), maps: s.maps };
  });
}

/** Draws strokes given in pad coordinates (0..280) as real mouse drags. */
export async function draw(page, strokes) {
  const box = await page.locator('#pad').boundingBox();
  const at = ([x, y]) => [box.x + (x * box.width) / 280, box.y + (y * box.height) / 280];
  for (const stroke of strokes) {
    const [x0, y0] = at(stroke[0]);
    await page.mouse.move(x0, y0);
    await page.mouse.down();
    for (let k = 1; k < stroke.length; k++) {
      const [a, b] = [at(stroke[k - 1]), at(stroke[k])];
      for (let t = 1; t <= 8; t++) await page.mouse.move(a[0] + ((b[0] - a[0]) * t) / 8, a[1] + ((b[1] - a[1]) * t) / 8);
    }
    await page.mouse.up();
  }
}

export const DIGITS = {
  1: [[[140, 50], [145, 230]]],
  7: [[[70, 60], [210, 60]], [[210, 60], [120, 235]]],
};
