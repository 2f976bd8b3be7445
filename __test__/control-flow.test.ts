/**
 * Control flow (If, Loop, Scan) on small models built here, against onnxruntime-node: the
 * float engine, and the quantized model (simulation vs the exported QDQ file in ORT).
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Model } from '../src/model';
import { calibrate, exportQdq, quantize } from '../src/quant/quantize';
import { loadBitConfig } from '../src/quant/config';
import { MpqError } from '../src/errors';
import { encodeNpy } from '../src/npy';
import { mpq, ortRun, randomData, relMaxDiff, tinyModel, TinyGraph } from './helpers';

const f32 = (dims: number[], seed: number) => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed)) });
const INT64 = 7, BOOL = 9;

/**
 * x [N, K] -> Relu -> o; If (K > 3): then o * c + b (c a constant inside the branch, b an
 * initializer of the outer graph), else -o (a Constant node in the branch); -> MatMul w -> y.
 */
function ifModel(): Uint8Array {
  const thenG: TinyGraph = {
    outputs: { t2: null },
    nodes: [
      { op: 'Mul', inputs: ['o', 'c'], outputs: ['t1'] },
      { op: 'Add', inputs: ['t1', 'b'], outputs: ['t2'] },
    ],
    inits: { c: { dims: [], values: [1.5] } },
  };
  const elseG: TinyGraph = {
    outputs: { e2: null },
    nodes: [
      { op: 'Constant', inputs: [], outputs: ['m'], attrs: { value: { tensor: { dims: [], values: [-1] } } } },
      { op: 'Mul', inputs: ['o', 'm'], outputs: ['e2'] },
    ],
  };
  return tinyModel({
    inputs: { x: ['N', 'K'] },
    outputs: { y: null },
    nodes: [
      { op: 'Relu', inputs: ['x'], outputs: ['o'] },
      { op: 'Shape', inputs: ['x'], outputs: ['s'] },
      { op: 'Gather', inputs: ['s', 'one'], outputs: ['k'], attrs: { axis: 0 } },
      { op: 'Greater', inputs: ['k', 'three'], outputs: ['cond'] },
      { op: 'If', inputs: ['cond'], outputs: ['z'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
      { op: 'ReduceMean', inputs: ['z'], outputs: ['y'], attrs: { axes: [1], keepdims: 1 } },
    ],
    inits: { b: f32([1], 3), one: { dims: [], type: INT64, values: [1] }, three: { dims: [], type: INT64, values: [3] } },
  });
}

test('If: the branch chosen by a condition on shapes runs equal to onnxruntime, both ways, with outer-scope values and branch constants', async (t) => {
  const bytes = ifModel();
  const m = Model.fromBytes(bytes);
  for (const k of [5, 2]) {
    const x = { shape: [3, k], data: randomData(3 * k, k) };
    const ref = await ortRun(bytes, { x });
    const ours = await m.run({ x });
    t.deepEqual(ours.y.shape, ref.y.shape);
    t.true(relMaxDiff(ours.y.data, ref.y.data) < 1e-6, `K=${k}`);
  }
});

/** Loop with M = 3: v <- v * 0.5 + x + iter (iteration number as float), scan output v each iteration. */
function loopModel(m: number): Uint8Array {
  const body: TinyGraph = {
    inputs: { i: [], cin: [], v: null },
    types: { i: INT64, cin: BOOL, cout: BOOL },
    outputs: { cout: [], v3: null, sc: null },
    nodes: [
      { op: 'Identity', inputs: ['cin'], outputs: ['cout'] },
      { op: 'Cast', inputs: ['i'], outputs: ['fi'], attrs: { to: 1 } },
      { op: 'Mul', inputs: ['v', 'half'], outputs: ['v1'] },
      { op: 'Add', inputs: ['v1', 'x'], outputs: ['v2'] },
      { op: 'Add', inputs: ['v2', 'fi'], outputs: ['v3'] },
      { op: 'Relu', inputs: ['v3'], outputs: ['sc'] },
    ],
    inits: { half: { dims: [], values: [0.5] } },
  };
  return tinyModel({
    inputs: { x: [2, 3] },
    outputs: { vf: null, scans: null },
    nodes: [
      { op: 'Loop', inputs: ['M', 'c0', 'v0'], outputs: ['vf', 'scans'], attrs: { body: { graph: body } } },
    ],
    inits: { M: { dims: [], type: INT64, values: [m] }, c0: { dims: [], type: BOOL, values: [1] }, v0: f32([2, 3], 4) },
  });
}

test('Loop with a constant trip count is unrolled and equals onnxruntime (carried value, iteration number, scan output)', async (t) => {
  const bytes = loopModel(3);
  const x = { shape: [2, 3], data: randomData(6, 9) };
  const ref = await ortRun(bytes, { x });
  const ours = await Model.fromBytes(bytes).run({ x });
  t.deepEqual(ours.scans.shape, [3, 2, 3]);
  for (const o of ['vf', 'scans']) {
    t.deepEqual(ours[o].shape, ref[o].shape, o);
    t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-6, o);
  }
});

test('Loop bounded by M with a condition from the data (a while loop) equals onnxruntime, stopping at different iterations', async (t) => {
  // v <- v * 1.5 + 0.2 while sum(v) < limit, at most 6 times; also counts the iterations run
  const body: TinyGraph = {
    inputs: { i: [], cin: [], v: null, cnt: null },
    types: { i: INT64, cin: BOOL, cout: BOOL },
    outputs: { cout: [], v2: null, cnt2: null },
    nodes: [
      { op: 'Mul', inputs: ['v', 'k'], outputs: ['v1'] },
      { op: 'Add', inputs: ['v1', 'b'], outputs: ['v2'] },
      { op: 'Add', inputs: ['cnt', 'one'], outputs: ['cnt2'] },
      { op: 'ReduceSum', inputs: ['v2'], outputs: ['s'], attrs: { keepdims: 0 } },
      { op: 'Less', inputs: ['s', 'limit'], outputs: ['cout'] },
    ],
    inits: { k: { dims: [], values: [1.5] }, b: { dims: [], values: [0.2] }, one: { dims: [], values: [1] } },
  };
  const bytes = tinyModel({
    inputs: { x: [2, 3], limit: [] },
    outputs: { vf: null, n: null },
    nodes: [
      { op: 'ReduceSum', inputs: ['x'], outputs: ['s0'], attrs: { keepdims: 0 } },
      { op: 'Less', inputs: ['s0', 'limit'], outputs: ['c0'] },
      { op: 'Loop', inputs: ['M', 'c0', 'x', 'zero'], outputs: ['vf', 'n'], attrs: { body: { graph: body } } },
    ],
    inits: { M: { dims: [], type: INT64, values: [6] }, zero: { dims: [], values: [0] } },
  });
  const m = Model.fromBytes(bytes);
  const counts = new Set<number>();
  for (const limit of [-100, 3, 8, 20, 1000]) {
    const feeds = { x: { shape: [2, 3], data: Float32Array.from([0.1, 0.2, 0.3, 0.1, 0.2, 0.3]) }, limit: { shape: [], data: Float32Array.of(limit) } };
    const ref = await ortRun(bytes, feeds);
    const ours = await m.run(feeds);
    t.true(relMaxDiff(ours.vf.data, ref.vf.data) < 1e-6, `limit ${limit}`);
    t.deepEqual(Array.from(ours.n.data), Array.from(ref.n.data), `limit ${limit}`);
    counts.add(ref.n.data[0]);
  }
  t.true(counts.size >= 4, `iterations run: ${[...counts]}`);
});

test('Scan (cumulative sum over a sequence, forward and reverse) equals onnxruntime', async (t) => {
  const body: TinyGraph = {
    inputs: { s: [3], xt: [3] },
    outputs: { s2: [3], o: [3] },
    nodes: [{ op: 'Add', inputs: ['s', 'xt'], outputs: ['s2'] }, { op: 'Tanh', inputs: ['s2'], outputs: ['o'] }],
  };
  for (const dir of [0, 1]) {
    const bytes = tinyModel({
      inputs: { x: ['T', 3] },
      outputs: { sf: null, ys: null },
      nodes: [{ op: 'Scan', inputs: ['s0', 'x'], outputs: ['sf', 'ys'], attrs: { body: { graph: body }, num_scan_inputs: 1, scan_input_directions: [dir] } }],
      inits: { s0: f32([3], 2) },
      opset: 11,
    });
    const x = { shape: [5, 3], data: randomData(15, 7) };
    const ref = await ortRun(bytes, { x });
    const ours = await Model.fromBytes(bytes).run({ x });
    for (const o of ['sf', 'ys']) {
      t.deepEqual(ours[o].shape, ref[o].shape, `${o} dir ${dir}`);
      t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-6, `${o} dir ${dir}`);
    }
  }
});

test('If on a condition that depends on the input data: both branches run and the result equals onnxruntime for either outcome', async (t) => {
  const thenG: TinyGraph = { outputs: { a: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['a'] }] };
  const elseG: TinyGraph = { outputs: { b: null }, nodes: [{ op: 'Mul', inputs: ['x', 'k'], outputs: ['b'] }], inits: { k: { dims: [], values: [-2] } } };
  const bytes = tinyModel({
    inputs: { x: [2, 3] },
    outputs: { y: null },
    nodes: [
      { op: 'ReduceSum', inputs: ['x'], outputs: ['s'], attrs: { keepdims: 0 } },
      { op: 'Greater', inputs: ['s', 'zero'], outputs: ['c'] },
      { op: 'If', inputs: ['c'], outputs: ['y'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
    ],
    inits: { zero: { dims: [], values: [0] } },
  });
  const m = Model.fromBytes(bytes);
  const seen = new Set<boolean>();
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const x = { shape: [2, 3], data: randomData(6, seed) };
    seen.add(x.data.reduce((a, b) => a + b, 0) > 0);
    const ref = await ortRun(bytes, { x });
    t.deepEqual(Array.from((await m.run({ x })).y.data), Array.from(ref.y.data), `seed ${seed}`);
  }
  t.is(seen.size, 2, 'both branches taken');
  // branches whose outputs differ in shape cannot be selected: a clear error
  const elseShape: TinyGraph = { outputs: { b: null }, nodes: [{ op: 'ReduceSum', inputs: ['x'], outputs: ['b'], attrs: { keepdims: 1 } }] };
  const bad = tinyModel({
    inputs: { x: [2, 3] },
    outputs: { y: null },
    nodes: [
      { op: 'ReduceSum', inputs: ['x'], outputs: ['s'], attrs: { keepdims: 0 } },
      { op: 'Greater', inputs: ['s', 'zero'], outputs: ['c'] },
      { op: 'If', inputs: ['c'], outputs: ['y'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseShape } } },
    ],
    inits: { zero: { dims: [], values: [0] } },
  });
  const e = await t.throwsAsync(Model.fromBytes(bad).run({ x: { shape: [2, 3], data: randomData(6, 1) } }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_NODE');
  t.regex(e!.message, /If.*depends on the input data.*different shapes/);
});

test('a model with If is quantized W8A8: quantizers around the If, its branches float; the exported file runs in onnxruntime as simulated', async (t) => {
  // Conv -> If (branch reads the conv output from the outer scope) -> Gemm
  const thenG: TinyGraph = { outputs: { t1: null }, nodes: [{ op: 'Relu', inputs: ['c'], outputs: ['t1'] }] };
  const elseG: TinyGraph = { outputs: { e1: null }, nodes: [{ op: 'Neg', inputs: ['c'], outputs: ['e1'] }] };
  const bytes = tinyModel({
    inputs: { x: ['N', 3, 6, 6] },
    outputs: { y: null },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['c'], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1] } },
      { op: 'Shape', inputs: ['x'], outputs: ['s'] },
      { op: 'Gather', inputs: ['s', 'one'], outputs: ['ch'], attrs: { axis: 0 } },
      { op: 'Equal', inputs: ['ch', 'three'], outputs: ['cond'] },
      { op: 'If', inputs: ['cond'], outputs: ['z'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
      { op: 'GlobalAveragePool', inputs: ['z'], outputs: ['g'] },
      { op: 'Flatten', inputs: ['g'], outputs: ['f'] },
      { op: 'Gemm', inputs: ['f', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      w: f32([4, 3, 3, 3], 5), b: f32([4], 6), gw: f32([5, 4], 7), gb: f32([5], 8),
      one: { dims: [], type: INT64, values: [1] }, three: { dims: [], type: INT64, values: [3] },
    },
  });
  const m = Model.fromBytes(bytes);
  const batch = { x: { shape: [8, 3, 6, 6], data: randomData(8 * 108, 11) } };
  const cal = await calibrate(m, async function* () { yield batch; }, { rounding: 'nearest' });
  t.true(cal.placement.activations.some((a) => a.tensor === 'z'), 'the If output is quantized');
  t.true(cal.placement.weights.some((w) => w.tensor === 'w') && cal.placement.weights.some((w) => w.tensor === 'gw'));
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const sim = await Model.fromGraph(q.graph).run(batch);
  const file = exportQdq(q, cal);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cf-'));
  fs.writeFileSync(path.join(dir, 'm.onnx'), file);
  const ref = await ortRun(file, batch, { optimize: false });
  t.true(relMaxDiff(sim.y.data, ref.y.data) < 1e-5, `simulation vs ORT on the export: ${relMaxDiff(sim.y.data, ref.y.data)}`);
  const float = await ortRun(bytes, batch);
  const d = relMaxDiff(sim.y.data, float.y.data);
  t.true(d > 0 && d < 0.1, `quantized vs float ${d}`);
  // the command line says that the branches stay float
  fs.writeFileSync(path.join(dir, 'calib.npy'), encodeNpy(batch.x.shape, batch.x.data));
  fs.writeFileSync(path.join(dir, 'float.onnx'), bytes);
  const r = await mpq(['quantize', path.join(dir, 'float.onnx'), '--calib', path.join(dir, 'calib.npy'), '--config', 'W8A8', '--out', path.join(dir, 'q')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /note: the subgraphs of 'If_\d+' \(If\) stay float/);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'q', 'quantize.json'), 'utf8')).notes.length, 1);
});
