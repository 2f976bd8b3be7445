/** Data-aware weight rounding (GPTQ) and bias correction, end to end on a tiny conv net. */
import test from 'ava';
import { Model } from '../index';
import { calibrate, exportQdq, isSequential, quantize, quantizeWith } from '../src/quant/quantize';
import { encodingsFromJson, encodingsToJson, EncodingsJson } from '../src/quant/encodings';
import { simulate } from '../src/quant/simulate';
import { BitConfig } from '../src/quant/config';
import { ortRun, randomData, tinyModel } from './helpers';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const N = 16;
const SHAPE = [N, 4, 10, 10];

function init(dims: number[], seed: number, scale: number) {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dims, values: Array.from(randomData(n, seed), (v) => v * scale) };
}

// Conv 3x3 (no bias) -> Relu -> Conv 1x1 (bias) -> Relu -> depthwise 3x3 -> GAP -> Flatten -> Gemm
const bytes = tinyModel({
  inputs: { x: SHAPE },
  outputs: { y: null },
  nodes: [
    { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'], attrs: { pads: [1, 1, 1, 1] } },
    { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
    { op: 'Conv', inputs: ['r1', 'w2', 'b2'], outputs: ['c2'] },
    { op: 'Relu', inputs: ['c2'], outputs: ['r2'] },
    { op: 'Conv', inputs: ['r2', 'w3', 'b3'], outputs: ['c3'], attrs: { group: 24, pads: [1, 1, 1, 1] } },
    { op: 'GlobalAveragePool', inputs: ['c3'], outputs: ['g'] },
    { op: 'Flatten', inputs: ['g'], outputs: ['f'] },
    { op: 'Gemm', inputs: ['f', 'w4', 'b4'], outputs: ['y'], attrs: { transB: 1 } },
  ],
  inits: {
    w1: init([16, 4, 3, 3], 1, 0.3),
    w2: init([24, 16, 1, 1], 2, 0.3),
    b2: init([24], 3, 0.1),
    w3: init([24, 1, 3, 3], 4, 0.5),
    b3: init([24], 5, 0.1),
    w4: init([10, 24], 6, 0.5),
    b4: init([10], 7, 0.1),
  },
});

/** Spatially smooth, channel-correlated inputs (as images are). */
function images(seed: number): Float32Array {
  const [n, c, h, w] = SHAPE;
  const r = randomData(n * c * 3, seed);
  const noise = randomData(n * c * h * w, seed + 1);
  const out = new Float32Array(n * c * h * w);
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) {
          const k = i * c + ch;
          const base = Math.sin(y * (0.3 + 0.2 * r[3 * i * c]) + x * 0.4 * r[3 * i * c + 1]) + 0.3 * ch * r[3 * k + 2];
          out[((k * h) + y) * w + x] = base + 0.2 * noise[((k * h) + y) * w + x];
        }
  return out;
}

const calib = images(11);
const heldOut = images(23);
const batches = async function* () {
  yield { x: { shape: SHAPE, data: calib } };
};
const W4A16: BitConfig = { w: 4, a: 16, weights: {}, activations: {} };
const W16A16: BitConfig = { w: 16, a: 16, weights: {}, activations: {} };
const W8A16: BitConfig = { w: 8, a: 16, weights: {}, activations: {} };

function mse(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - b[i]) ** 2;
  return s / a.length;
}

test('GPTQ with bias correction beats round-to-nearest at 4 bits, and the export carries its integers', async (t) => {
  const model = Model.fromBytes(bytes);
  const feeds = { x: { shape: SHAPE, data: heldOut } };
  const ref = (await model.run(feeds)).y.data;
  const calN = await calibrate(model, batches, { rounding: 'nearest' });
  const calG = await calibrate(model, batches, { rounding: 'gptq' });
  t.is(calN.rounder, undefined);
  t.truthy(calG.rounder);
  for (const w of ['w1', 'w2', 'w3', 'w4']) t.true(calG.rounder!.has(w), w);

  const qN = quantizeWith(calN, W4A16);
  const qG = await quantize(calG, W4A16);
  const errN = mse((await Model.fromGraph(qN.graph).run(feeds)).y.data, ref);
  const simG = (await Model.fromGraph(qG.graph).run(feeds)).y.data;
  const errG = mse(simG, ref);
  t.log(`output MSE vs float at W4A16: nearest ${errN.toExponential(3)}, gptq ${errG.toExponential(3)}`);
  t.true(errG < 0.5 * errN, `gptq ${errG} vs nearest ${errN}`);

  // integers differ from nearest, stay in the 4-bit narrow range, and the bias-less conv got a bias
  const q1 = qG.graph.consts.get('w1_quantized')!.data;
  const n1 = qN.graph.consts.get('w1_quantized')!.data;
  t.true(q1.some((v, i) => v !== n1[i]));
  t.true(Array.from(q1).every((v) => Number.isInteger(v) && Math.abs(v) <= 7));
  const conv1 = qG.graph.nodes.find((n) => n.op === 'Conv' && n.inputs[1] === 'w1_dequantized')!;
  t.is(conv1.inputs.length, 3);
  t.truthy(qG.graph.consts.get(conv1.inputs[2]));

  // what is exported is what was simulated: ORT (no graph optimizations) on the export
  const out = await ortRun(exportQdq(qG, calG), feeds, { optimize: false });
  const rel = Math.sqrt(mse(out.y.data, simG) / mse(simG, new Float32Array(simG.length)));
  t.true(rel < 1e-4, `ORT vs simulation relative RMS ${rel}`);

  // computed once: a second quantize reuses the cached integers
  const secs = calG.rounder!.seconds;
  const again = await quantize(calG, W4A16);
  t.is(calG.rounder!.seconds, secs);
  t.is(again.graph.consts.get('w1_quantized')!.data[0], q1[0]);
});

test('auto rounding keeps round-to-nearest above 8 bits and uses GPTQ at 8 and below', async (t) => {
  const model = Model.fromBytes(bytes);
  const calA = await calibrate(model, batches, {});
  t.is(calA.rounding, 'auto');
  const calN = await calibrate(model, batches, { rounding: 'nearest' });
  const a16 = await quantize(calA, W16A16);
  const n16 = quantizeWith(calN, W16A16);
  t.deepEqual(Array.from(a16.graph.consts.get('w2_quantized')!.data), Array.from(n16.graph.consts.get('w2_quantized')!.data));
  t.is(a16.encodings.weights.get('w2')!.quantized, undefined);
  for (const c of [W8A16, W4A16]) t.truthy((await quantize(calA, c)).encodings.weights.get('w2')!.quantized);
});

test('per-layer rounding is the default; sequential rounding, on request, beats round-to-nearest at W4A8', async (t) => {
  const model = Model.fromBytes(bytes);
  const feeds = { x: { shape: SHAPE, data: heldOut } };
  const ref = (await model.run(feeds)).y.data;
  t.false(isSequential(await calibrate(model, batches, { rounding: 'gptq' })));
  const cal = await calibrate(model, batches, { rounding: 'gptq', roundingOptions: { sequential: true } });
  t.true(isSequential(cal));
  const W4A8: BitConfig = { w: 4, a: 8, weights: {}, activations: {} };
  const q = await quantize(cal, W4A8);
  const calN = await calibrate(model, batches, { rounding: 'nearest' });
  const errN = mse((await Model.fromGraph(quantizeWith(calN, W4A8).graph).run(feeds)).y.data, ref);
  const errS = mse((await Model.fromGraph(q.graph).run(feeds)).y.data, ref);
  t.log(`output MSE vs float at W4A8: nearest ${errN.toExponential(3)}, sequential ${errS.toExponential(3)}`);
  t.true(errS < 0.5 * errN, `sequential ${errS} vs nearest ${errN}`);
  for (const w of ['w1', 'w2', 'w3', 'w4']) t.truthy(q.encodings.weights.get(w)!.quantized, w);
});

test('data-aware integers and bias shifts travel in encodings.json: the simulation rebuilt from the JSON equals the exported model in ORT', async (t) => {
  const model = Model.fromBytes(bytes);
  const feeds = { x: { shape: SHAPE, data: heldOut } };
  const cal = await calibrate(model, batches, { rounding: 'gptq' });
  for (const config of [W4A16, { w: 4, a: 8, weights: { w2: 8 }, activations: {} } as BitConfig]) {
    const q = await quantize(cal, config);
    const json = JSON.parse(JSON.stringify(encodingsToJson(q.encodings), null, 1)) as EncodingsJson;
    t.truthy(json.mpq.rounded?.w1, 'w1 carries its integers');
    t.is(json.mpq.rounded!.w2.dtype, 'int8');
    // the JSON round trip restores the integers, scales and bias shifts exactly
    const back = encodingsFromJson(json);
    for (const [w, e] of q.encodings.weights) {
      const b = back.weights.get(w)!;
      t.deepEqual(Array.from(b.quantized!), Array.from(e.quantized!, (v) => v + 0), w); // -0 is stored as 0
      t.deepEqual(Array.from(b.biasDelta!), Array.from(e.biasDelta!), w);
      t.deepEqual(b.entries.map((x) => x.scale), e.entries.map((x) => x.scale), w);
    }
    // the rebuilt simulation is the exported graph: same integer weights and corrected biases
    const sim = simulate(model, json);
    for (const [k, c] of q.graph.consts) {
      const d = sim.graph.consts.get(k);
      t.truthy(d, k);
      t.deepEqual(Array.from(d!.data, (v) => v + 0), Array.from(c.data, (v) => v + 0), k);
    }
    // and it runs like the exported model in ORT (graph optimizations off)
    const out = (await sim.run(feeds)).y.data;
    const ortOut = (await ortRun(exportQdq(q, cal), feeds, { optimize: false })).y.data;
    let worst = 0;
    for (let i = 0; i < out.length; i++) worst = Math.max(worst, Math.abs(out[i] - ortOut[i]) / Math.max(1e-3, Math.abs(ortOut[i])));
    t.true(worst <= 1e-6, `engine on JSON vs ORT on export: worst relative difference ${worst}`);
    // without the rounded integers the rebuild would be round-to-nearest, and differ
    const plain = { ...json, mpq: { ...json.mpq, rounded: undefined } };
    const near = simulate(model, plain);
    t.notDeepEqual(Array.from(near.graph.consts.get('w1_quantized')!.data), Array.from(q.graph.consts.get('w1_quantized')!.data));
  }
  // a mismatched integer count is an error, not a silent fallback
  const q = await quantize(cal, W4A16);
  const json = encodingsToJson(q.encodings);
  const bad = { ...json, mpq: { ...json.mpq, rounded: { ...json.mpq.rounded, w1: { ...json.mpq.rounded!.w1, q: Buffer.from([1, 2, 3]).toString('base64') } } } };
  t.throws(() => simulate(model, bad), { message: /have 3 values/ });
});

test('each weight keeps the data-aware result only where it measured a lower output error than nearest, and says so', async (t) => {
  const model = Model.fromBytes(bytes);
  const cal = await calibrate(model, batches, { rounding: 'gptq' });
  for (const config of [W4A16, W8A16]) await quantize(cal, config);
  const choices = cal.rounder!.choices();
  t.is(choices.length, 8);
  for (const c of choices) {
    t.false(c.sequential);
    t.true(c.dataAwareChannels >= 0 && c.dataAwareChannels <= c.channels, c.tensor);
    t.is(c.kept, c.dataAwareChannels === c.channels ? 'gptq' : c.dataAwareChannels === 0 ? 'nearest' : 'mixed');
    // never worse than nearest on its own objective
    t.true(c.errorRatio! <= 1, `${c.tensor}@${c.bits}: ${c.errorRatio}`);
  }
  // at 4 bits data-aware rounding wins on most channels of this net
  const four = choices.filter((c) => c.bits === 4);
  const kept = four.reduce((a, c) => a + c.dataAwareChannels, 0) / four.reduce((a, c) => a + c.channels, 0);
  t.log(`4-bit channels keeping GPTQ: ${(100 * kept).toFixed(0)}%; error ratios ${four.map((c) => c.errorRatio!.toFixed(3)).join(', ')}`);
  t.true(kept > 0.5);
});

test('rounding results persist on disk under their key: a second rounder with the same key rounds nothing', async (t) => {
  const model = Model.fromBytes(bytes);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-round-'));
  const first = await calibrate(model, batches, { rounding: 'gptq' });
  first.rounder!.persist(dir, 'k1');
  const q1 = await quantize(first, W4A16);
  t.is(first.rounder!.computed, 4);
  const file = path.join(dir, 'rounding-k1.bin');
  t.true(fs.existsSync(file));
  // a kill mid-write leaves a partial record: it is dropped, the complete ones load
  fs.appendFileSync(file, Buffer.from([200, 0, 0, 0, 9]));
  const second = await calibrate(model, batches, { rounding: 'gptq' });
  second.rounder!.persist(dir, 'k1');
  t.is(second.rounder!.loaded, 4);
  const q2 = await quantize(second, W4A16);
  t.is(second.rounder!.computed, 0);
  t.is(second.rounder!.seconds, 0);
  for (const w of ['w1', 'w2', 'w3', 'w4']) {
    t.deepEqual(Array.from(q2.graph.consts.get(`${w}_quantized`)!.data), Array.from(q1.graph.consts.get(`${w}_quantized`)!.data), w);
  }
  t.deepEqual(second.rounder!.choices(), first.rounder!.choices());
  // another key (other data or options) does not reuse them
  const third = await calibrate(model, batches, { rounding: 'gptq' });
  third.rounder!.persist(dir, 'k2');
  t.is(third.rounder!.loaded, 0);
  await quantize(third, W4A16);
  t.is(third.rounder!.computed, 4);
  fs.rmSync(dir, { recursive: true, force: true });
});
