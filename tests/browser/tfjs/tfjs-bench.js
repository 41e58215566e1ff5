// SimpleCNN in TensorFlow.js with whitebox's shipped weights (BatchNorm folded into the convolutions, as whitebox
// does in evaluation mode): class probabilities (checked against whitebox's by the harness), and the time of one
// VBP map and of SmoothGrad-50 as one batch, on the wasm (SIMD, one thread: the page is not cross-origin isolated)
// and cpu backends. Called by tests/browser/bench.mjs as runBench(weightsUrl, pixels, target).
/* global tf */

function halfToFloat(h) {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const f = h & 0x3ff;
  if (e === 0) return s * 2 ** -14 * (f / 1024);
  if (e === 31) return f ? NaN : s * Infinity;
  return s * 2 ** (e - 15) * (1 + f / 1024);
}

async function loadSafetensors(url) {
  const buf = await (await fetch(url)).arrayBuffer();
  const n = Number(new DataView(buf).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 8, n)));
  const out = {};
  for (const [key, v] of Object.entries(header)) {
    if (key === '__metadata__') continue;
    const bytes = buf.slice(8 + n + v.data_offsets[0], 8 + n + v.data_offsets[1]);
    let data;
    if (v.dtype === 'F16') {
      const h = new Uint16Array(bytes);
      data = Float32Array.from(h, halfToFloat);
    } else if (v.dtype === 'F32') {
      data = new Float32Array(bytes);
    } else {
      throw new Error(`${key}: unsupported dtype ${v.dtype}`);
    }
    out[key] = { shape: v.shape, data };
  }
  return out;
}

function buildModel(w) {
  const t = (k) => tf.tensor(w[k].data, w[k].shape);
  const convs = [];
  for (let i = 0; i < 3; i++) {
    const weight = t(`features.${4 * i}.weight`);
    const bias = t(`features.${4 * i}.bias`);
    const g = t(`features.${4 * i + 1}.weight`);
    const beta = t(`features.${4 * i + 1}.bias`);
    const mean = t(`features.${4 * i + 1}.running_mean`);
    const variance = t(`features.${4 * i + 1}.running_var`);
    const scale = tf.div(g, tf.sqrt(tf.add(variance, 1e-5)));
    convs.push({
      kernel: tf.transpose(tf.mul(weight, tf.reshape(scale, [-1, 1, 1, 1])), [2, 3, 1, 0]), // OIHW → HWIO
      bias: tf.add(tf.mul(tf.sub(bias, mean), scale), beta),
    });
  }
  const fc1 = { kernel: tf.transpose(t('classifier.0.weight')), bias: t('classifier.0.bias') };
  const fc2 = { kernel: tf.transpose(t('classifier.2.weight')), bias: t('classifier.2.bias') };
  return (x) => {
    let h = x;
    for (const c of convs) h = tf.maxPool(tf.relu(tf.add(tf.conv2d(h, c.kernel, 1, 'same'), c.bias)), 2, 2, 'valid');
    h = tf.reshape(tf.transpose(h, [0, 3, 1, 2]), [h.shape[0], -1]); // flatten in PyTorch's C×H×W order
    h = tf.relu(tf.add(tf.matMul(h, fc1.kernel), fc1.bias));
    return tf.add(tf.matMul(h, fc2.kernel), fc2.bias);
  };
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function timeIt(reps, f) {
  const times = [];
  for (let r = 0; r < reps + 1; r++) {
    const t0 = performance.now();
    const out = f();
    await out.data();
    out.dispose();
    if (r > 0) times.push(performance.now() - t0); // the first run warms up
  }
  return median(times);
}

window.runBench = async (weightsUrl, pixels, target) => {
  tf.wasm.setWasmPaths(new URL('../node_modules/@tensorflow/tfjs-backend-wasm/dist/', location.href).href);
  const weights = await loadSafetensors(weightsUrl);
  const result = { version: tf.version_core, backends: {} };
  for (const backend of ['wasm', 'cpu']) {
    await tf.setBackend(backend);
    await tf.ready();
    const model = buildModel(weights);
    const x = tf.tensor(Float32Array.from(pixels, (p) => (p - 0.1307) / 0.3081), [1, 28, 28, 1]);
    const probs = Array.from(await tf.softmax(model(x)).data());
    const oneHot = (n) => tf.oneHot(tf.fill([n], target, 'int32'), 10);
    const vbp = tf.grad((input) => tf.sum(tf.mul(model(input), oneHot(input.shape[0]))));
    const range = Math.max(...pixels) - Math.min(...pixels);
    const sigma = (0.15 * range) / 0.3081;
    const sg = () => tf.tidy(() => tf.mean(vbp(tf.add(tf.tile(x, [50, 1, 1, 1]), tf.randomNormal([50, 28, 28, 1], 0, sigma))), 0));
    result.backends[backend] = {
      probs,
      vbpMs: await timeIt(backend === 'cpu' ? 5 : 15, () => tf.tidy(() => vbp(x))),
      sg50Ms: await timeIt(3, sg),
      simd: backend === 'wasm' ? await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT') : undefined,
      threads: backend === 'wasm' ? await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT') : undefined,
    };
  }
  return result;
};
