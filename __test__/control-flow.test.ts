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
import { loadGraph } from '../src/onnx/load';
import { Graph } from '../src/graph/ir';
import { Simulator } from '../src/sim';
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

/** x [2, 3] -> If (sum(x) > 0): then Relu(x), else `elseG` (reading x). */
function dataIfModel(elseG: TinyGraph): Uint8Array {
  const thenG: TinyGraph = { outputs: { a: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['a'] }] };
  return tinyModel({
    inputs: { x: [2, 3] },
    outputs: { y: null },
    nodes: [
      { op: 'ReduceSum', inputs: ['x'], outputs: ['s'], attrs: { keepdims: 0 } },
      { op: 'Greater', inputs: ['s', 'zero'], outputs: ['c'] },
      { op: 'If', inputs: ['c'], outputs: ['y'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
    ],
    inits: { zero: { dims: [], values: [0] } },
  });
}

test('If on a condition that depends on the input data: both branches run and the result equals onnxruntime for either outcome', async (t) => {
  const bytes = dataIfModel({ outputs: { b: null }, nodes: [{ op: 'Mul', inputs: ['x', 'k'], outputs: ['b'] }], inits: { k: { dims: [], values: [-2] } } });
  const m = Model.fromBytes(bytes);
  const seen = new Set<boolean>();
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const x = { shape: [2, 3], data: randomData(6, seed) };
    seen.add(x.data.reduce((a, b) => a + b, 0) > 0);
    const ref = await ortRun(bytes, { x });
    t.deepEqual(Array.from((await m.run({ x })).y.data), Array.from(ref.y.data), `seed ${seed}`);
  }
  t.is(seen.size, 2, 'both branches taken');
});

test('a model with an If whose condition the shapes decide is quantized W8A8 inside the branch those shapes take; the exported file runs in onnxruntime as simulated', async (t) => {
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
  // the then branch (3 channels) is written out: its Relu is the Conv's epilogue, quantized at its output
  t.true(cal.placement.activations.some((a) => a.tensor === 't1'), 'the then branch output is quantized');
  t.false(cal.placement.activations.some((a) => a.tensor === 'c' || a.tensor === 'e1'), 'neither the fused Conv output nor the else branch');
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
  // the quantizer sits inside the then branch of the exported If
  const ifNode = loadGraph(file).nodes.find((n) => n.op === 'If')!;
  const ops = (b: string) => (ifNode.attrs[b] as Graph).nodes.map((n) => n.op);
  t.true(ops('then_branch').includes('QuantizeLinear'), ops('then_branch').join());
  t.false(ops('else_branch').includes('QuantizeLinear'), ops('else_branch').join());
  // the command line says that the other branch stays float
  fs.writeFileSync(path.join(dir, 'calib.npy'), encodeNpy(batch.x.shape, batch.x.data));
  fs.writeFileSync(path.join(dir, 'float.onnx'), bytes);
  const r = await mpq(['quantize', path.join(dir, 'float.onnx'), '--calib', path.join(dir, 'calib.npy'), '--config', 'W8A8', '--out', path.join(dir, 'q')]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stderr, /note: 1 If node whose condition the input shapes decide is quantized in the branch the calibration shapes take; the other branch stays float/);
  t.is(JSON.parse(fs.readFileSync(path.join(dir, 'q', 'quantize.json'), 'utf8')).notes.length, 1);
});

// ---- shapes that depend on the data: measured on the data, checked at run time ----

/** x [1, 10]; n = int(len): y = Relu(x[:, Range(0, n)]); r = Range(min(x), max(x), 0.25) (float bounds from the data). */
function rangeModel(): Uint8Array {
  return tinyModel({
    inputs: { x: [1, 10], len: [] },
    outputs: { y: null, r: null },
    nodes: [
      { op: 'Cast', inputs: ['len'], outputs: ['n'], attrs: { to: INT64 } },
      { op: 'Range', inputs: ['zero', 'n', 'one'], outputs: ['idx'] },
      { op: 'Gather', inputs: ['x', 'idx'], outputs: ['g'], attrs: { axis: 1 } },
      { op: 'Relu', inputs: ['g'], outputs: ['y'] },
      { op: 'ReduceMin', inputs: ['x'], outputs: ['lo'], attrs: { keepdims: 0 } },
      { op: 'ReduceMax', inputs: ['x'], outputs: ['hi'], attrs: { keepdims: 0 } },
      { op: 'Range', inputs: ['lo', 'hi', 'quarter'], outputs: ['r'] },
    ],
    inits: { zero: { dims: [], type: INT64, values: [0] }, one: { dims: [], type: INT64, values: [1] }, quarter: { dims: [], values: [0.25] } },
  });
}

test('Range with start, limit and delta from the data is computed per run and equals onnxruntime', async (t) => {
  const bytes = rangeModel();
  const m = Model.fromBytes(bytes);
  const lens = new Set<number>();
  for (const [n, seed] of [[3, 1], [7, 2], [10, 3], [0, 4], [7, 5]]) {
    const feeds = { x: { shape: [1, 10], data: randomData(10, seed) }, len: { shape: [], data: Float32Array.of(n) } };
    const ref = await ortRun(bytes, feeds);
    const ours = await m.run(feeds);
    for (const o of ['y', 'r']) {
      t.deepEqual(ours[o].shape, ref[o].shape, `${o} len ${n} seed ${seed}`);
      t.deepEqual(Array.from(ours[o].data), Array.from(ref[o].data), `${o} len ${n} seed ${seed}`);
    }
    lens.add(ref.r.shape[0]);
  }
  t.true(lens.size >= 3, `float Range lengths seen: ${[...lens]}`);
});

/** x [2, 12]; k = int(kf): z = Relu(Reshape(x, [k, -1])), y = ReduceSum(z, axis 1). */
function reshapeModel(): Uint8Array {
  return tinyModel({
    inputs: { x: [2, 12], kf: [] },
    outputs: { y: null, z: null },
    nodes: [
      { op: 'Cast', inputs: ['kf'], outputs: ['k'], attrs: { to: INT64 } },
      { op: 'Unsqueeze', inputs: ['k', 'ax0'], outputs: ['k1'] },
      { op: 'Concat', inputs: ['k1', 'minus1'], outputs: ['target'], attrs: { axis: 0 } },
      { op: 'Reshape', inputs: ['x', 'target'], outputs: ['rs'] },
      { op: 'Relu', inputs: ['rs'], outputs: ['z'] },
      { op: 'ReduceSum', inputs: ['z', 'ax1'], outputs: ['y'], attrs: { keepdims: 0 } },
    ],
    inits: { ax0: { dims: [1], type: INT64, values: [0] }, ax1: { dims: [1], type: INT64, values: [1] }, minus1: { dims: [1], type: INT64, values: [-1] } },
  });
}

test('Reshape whose target shape is computed from input values equals onnxruntime for each target', async (t) => {
  const bytes = reshapeModel();
  const m = Model.fromBytes(bytes);
  for (const k of [2, 3, 8, 24, 3]) {
    const feeds = { x: { shape: [2, 12], data: randomData(24, k) }, kf: { shape: [], data: Float32Array.of(k) } };
    const ref = await ortRun(bytes, feeds);
    const ours = await m.run(feeds);
    for (const o of ['y', 'z']) {
      t.deepEqual(ours[o].shape, ref[o].shape, `${o} k ${k}`);
      t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-6, `${o} k ${k}`);
    }
  }
  // a target that does not fit the data is the same clear error as a constant one
  const e = await t.throwsAsync(m.run({ x: { shape: [2, 12], data: randomData(24, 1) }, kf: { shape: [], data: Float32Array.of(5) } }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_NODE');
  t.regex(e!.message, /cannot reshape \[2,12\]/);
});

test('quantizing a model whose shapes depend on the data: measured on the first batch, a batch that gives another shape is refused by name', async (t) => {
  const bytes = reshapeModel();
  const m = Model.fromBytes(bytes);
  const batch = (k: number, seed: number) => ({ x: { shape: [2, 12], data: randomData(24, seed) }, kf: { shape: [], data: Float32Array.of(k) } });
  const cal = await calibrate(m, async function* () { yield batch(3, 1); yield batch(3, 2); }, { rounding: 'nearest' });
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const file = exportQdq(q, cal);
  for (const k of [3, 4]) {
    // the simulation measures its own data values per run, as ORT computes them on the export
    const sim = await Model.fromGraph(q.graph).run(batch(k, 7));
    const ref = await ortRun(file, batch(k, 7), { optimize: false });
    t.deepEqual(sim.z.shape, ref.z.shape);
    t.true(relMaxDiff(sim.z.data, ref.z.data) < 1e-5, `k ${k}: simulation vs ORT on the export ${relMaxDiff(sim.z.data, ref.z.data)}`);
  }
  const e = await t.throwsAsync(calibrate(Model.fromBytes(bytes), async function* () { yield batch(3, 1); yield batch(4, 2); }, { rounding: 'nearest' }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_INPUT');
  t.regex(e!.message, /depend on the value of 'target'.*\[4,-1\].*\[3,-1\]/);
});

test('If whose branches give outputs of different shapes, on a condition from the data, equals onnxruntime both ways', async (t) => {
  const bytes = dataIfModel({ outputs: { b: null }, nodes: [{ op: 'ReduceSum', inputs: ['x'], outputs: ['b'], attrs: { keepdims: 1 } }] });
  const m = Model.fromBytes(bytes);
  const shapes = new Set<string>();
  for (const seed of [1, 2, 3, 4, 5, 6]) {
    const x = { shape: [2, 3], data: randomData(6, seed) };
    const ref = await ortRun(bytes, { x });
    const ours = await m.run({ x });
    t.deepEqual(ours.y.shape, ref.y.shape, `seed ${seed}`);
    t.true(relMaxDiff(ours.y.data, ref.y.data) < 1e-6, `seed ${seed}`);
    shapes.add(ref.y.shape.join('x'));
  }
  t.is(shapes.size, 2, 'both branches taken');
});

test('Loop with scan outputs and a condition from the data: as many scan rows as iterations ran, equal to onnxruntime', async (t) => {
  // v <- v * 1.5 + 0.2 while sum(v) < limit, at most 6 times; each iteration's v is a scan row
  const body: TinyGraph = {
    inputs: { i: [], cin: [], v: null },
    types: { i: INT64, cin: BOOL, cout: BOOL },
    outputs: { cout: [], v2: null, row: null },
    nodes: [
      { op: 'Mul', inputs: ['v', 'k'], outputs: ['v1'] },
      { op: 'Add', inputs: ['v1', 'b'], outputs: ['v2'] },
      { op: 'Identity', inputs: ['v2'], outputs: ['row'] },
      { op: 'ReduceSum', inputs: ['v2'], outputs: ['s'], attrs: { keepdims: 0 } },
      { op: 'Less', inputs: ['s', 'limit'], outputs: ['cout'] },
    ],
    inits: { k: { dims: [], values: [1.5] }, b: { dims: [], values: [0.2] } },
  };
  const bytes = tinyModel({
    inputs: { x: [2, 3], limit: [] },
    outputs: { vf: null, rows: null },
    nodes: [
      { op: 'ReduceSum', inputs: ['x'], outputs: ['s0'], attrs: { keepdims: 0 } },
      { op: 'Less', inputs: ['s0', 'limit'], outputs: ['c0'] },
      { op: 'Loop', inputs: ['M', 'c0', 'x'], outputs: ['vf', 'rows'], attrs: { body: { graph: body } } },
    ],
    inits: { M: { dims: [], type: INT64, values: [6] } },
  });
  const m = Model.fromBytes(bytes);
  const counts = new Set<number>();
  for (const limit of [3, 8, 20, 1000, 8]) {
    const feeds = { x: { shape: [2, 3], data: Float32Array.from([0.1, 0.2, 0.3, 0.1, 0.2, 0.3]) }, limit: { shape: [], data: Float32Array.of(limit) } };
    const ref = await ortRun(bytes, feeds);
    const ours = await m.run(feeds);
    for (const o of ['vf', 'rows']) {
      t.deepEqual(ours[o].shape, ref[o].shape, `${o} limit ${limit}`);
      t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-6, `${o} limit ${limit}`);
    }
    counts.add(ref.rows.shape[0]);
  }
  t.true(counts.size >= 3, `scan lengths: ${[...counts]}`);
});

/**
 * A model in the style of a PyTorch export of a small keyword spotter: batch fixed at 1, a
 * Clip whose upper bound is computed from the input, Conv + Relu, an If on a shape (exporters'
 * `if x.size(2) > 8`), an If on the data with same-shaped branches, the sequence reshaped with
 * a target computed from shapes, an LSTM, a Loop (trip count from a shape) with a MatMul inside
 * and a scan output, then Gemm to 3 classes.
 */
function spotterModel(): Uint8Array {
  const H = 8;
  const thenG: TinyGraph = { outputs: { ta: null }, nodes: [{ op: 'Relu', inputs: ['seq'], outputs: ['ta'] }] };
  const elseG: TinyGraph = { outputs: { ea: null }, nodes: [{ op: 'Neg', inputs: ['seq'], outputs: ['ea'] }] };
  const posG: TinyGraph = { outputs: { pa: null }, nodes: [{ op: 'Identity', inputs: ['hs'], outputs: ['pa'] }] };
  const negG: TinyGraph = { outputs: { na: null }, nodes: [{ op: 'Mul', inputs: ['hs', 'half'], outputs: ['na'] }], inits: { half: { dims: [], values: [0.5] } } };
  const body: TinyGraph = {
    inputs: { i: [], cin: [], v: null },
    types: { i: INT64, cin: BOOL, cout: BOOL },
    outputs: { cout: [], v2: null, sc: null },
    nodes: [
      { op: 'Identity', inputs: ['cin'], outputs: ['cout'] },
      { op: 'MatMul', inputs: ['v', 'lw'], outputs: ['m'] },
      { op: 'Tanh', inputs: ['m'], outputs: ['tm'] },
      { op: 'Add', inputs: ['tm', 'v'], outputs: ['v2'] },
      { op: 'Identity', inputs: ['v2'], outputs: ['sc'] },
    ],
    inits: { lw: f32([H, H], 21) },
  };
  return tinyModel({
    inputs: { x: [1, 1, 16, 6] },
    outputs: { y: [1, 3], steps: null },
    nodes: [
      { op: 'ReduceMax', inputs: ['x'], outputs: ['mx'], attrs: { keepdims: 0 } },
      { op: 'Mul', inputs: ['mx', 'p9'], outputs: ['hi'] },
      { op: 'Clip', inputs: ['x', 'lo', 'hi'], outputs: ['xc'] },
      { op: 'Conv', inputs: ['xc', 'cw', 'cb'], outputs: ['c'], attrs: { kernel_shape: [3, 3], pads: [1, 1, 1, 1] } },
      { op: 'Relu', inputs: ['c'], outputs: ['r'] },
      // [1, 4, T, 6] -> [T, 1, 24]
      { op: 'Transpose', inputs: ['r'], outputs: ['rt'], attrs: { perm: [2, 0, 1, 3] } },
      { op: 'Shape', inputs: ['rt'], outputs: ['s'] },
      { op: 'Gather', inputs: ['s', 'i0'], outputs: ['t'], attrs: { axis: 0 } },
      { op: 'Unsqueeze', inputs: ['t', 'ax0'], outputs: ['t1'] },
      { op: 'Concat', inputs: ['t1', 'one_minus1'], outputs: ['target'], attrs: { axis: 0 } },
      { op: 'Reshape', inputs: ['rt', 'target'], outputs: ['seq'] },
      { op: 'Greater', inputs: ['t', 'eight'], outputs: ['long'] },
      { op: 'If', inputs: ['long'], outputs: ['seq2'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
      { op: 'LSTM', inputs: ['seq2', 'W', 'R', 'B'], outputs: ['', 'hn'], attrs: { hidden_size: H } },
      { op: 'Squeeze', inputs: ['hn', 'ax0'], outputs: ['hs'] },
      { op: 'ReduceSum', inputs: ['hs'], outputs: ['hsum'], attrs: { keepdims: 0 } },
      { op: 'Greater', inputs: ['hsum', 'zero'], outputs: ['pos'] },
      { op: 'If', inputs: ['pos'], outputs: ['h2'], attrs: { then_branch: { graph: posG }, else_branch: { graph: negG } } },
      { op: 'Div', inputs: ['t', 'eight'], outputs: ['trips'] },
      { op: 'Loop', inputs: ['trips', '', 'h2'], outputs: ['hl', 'steps'], attrs: { body: { graph: body } } },
      { op: 'Gemm', inputs: ['hl', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      p9: { dims: [], values: [0.9] }, lo: { dims: [], values: [-0.8] }, zero: { dims: [], values: [0] },
      cw: f32([4, 1, 3, 3], 22), cb: f32([4], 23),
      i0: { dims: [], type: INT64, values: [0] }, ax0: { dims: [1], type: INT64, values: [0] }, eight: { dims: [], type: INT64, values: [8] },
      one_minus1: { dims: [2], type: INT64, values: [1, -1] },
      W: f32([1, 4 * H, 24], 24), R: f32([1, 4 * H, H], 25), B: f32([1, 8 * H], 26),
      gw: f32([3, H], 27), gb: f32([3], 28),
    },
    opset: 14,
  });
}

test('a PyTorch-export-style model (batch 1, If, Loop, LSTM, Clip bound from the data) runs equal to onnxruntime and goes through mpq quantize W8A8 and search --max-bops 0.75 without extra flags', async (t) => {
  const bytes = spotterModel();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-spotter-'));
  const model = path.join(dir, 'spotter.onnx');
  fs.writeFileSync(model, bytes);
  const m = Model.fromBytes(bytes);
  for (const seed of [1, 2, 3]) {
    const x = { shape: [1, 1, 16, 6], data: randomData(96, seed) };
    const ref = await ortRun(bytes, { x });
    const ours = await m.run({ x });
    for (const o of ['y', 'steps']) {
      t.deepEqual(ours[o].shape, ref[o].shape, o);
      t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-5, `${o} seed ${seed}: ${relMaxDiff(ours[o].data, ref[o].data)}`);
    }
  }
  const data = path.join(dir, 'calib.npy');
  fs.writeFileSync(data, encodeNpy([24, 1, 16, 6], randomData(24 * 96, 30)));
  const progress = (s: string) => s.split('\n').filter((l) => /^mpq: \S.* \d+\/\d+/.test(l));
  const q = await mpq(['quantize', model, '--calib', data, '--config', 'W8A8', '--out', path.join(dir, 'q')]);
  t.is(q.code, 0, q.stderr);
  t.true(progress(q.stderr).some((l) => l.startsWith('mpq: calibration 24/24')), q.stderr);
  const qj = JSON.parse(fs.readFileSync(path.join(dir, 'q', 'quantize.json'), 'utf8'));
  // the If on the sequence length is quantized in the branch taken; the Loop body stays float
  t.regex(qj.notes.join(' '), /1 If node whose condition the input shapes decide is quantized/);
  t.regex(qj.notes.join(' '), /subgraphs of 'Loop_\d+' \(Loop\) stay float/);
  t.true(qj.verification.qdq.sqnr_db > 30, JSON.stringify(qj.verification));
  const s = await mpq(['search', model, '--calib', data, '--max-bops', '0.75', '--out', path.join(dir, 's')]);
  t.is(s.code, 0, s.stderr);
  const lines = progress(s.stderr);
  t.true(lines.some((l) => /^mpq: phase1 (\d+)\/\1 100% done/.test(l)), s.stderr);
  t.regex(s.stdout, /^selected: rel_bops/m);
  const run = JSON.parse(fs.readFileSync(path.join(dir, 's', 'run.json'), 'utf8'));
  t.true(run.selected.rel_bops <= 0.75, JSON.stringify(run.selected));
  t.regex(run.options.notes.join(' '), /stay float/);
  t.regex(fs.readFileSync(path.join(dir, 's', 'report.html'), 'utf8'), /<b>Note<\/b>: the subgraphs of/);
  // bad input with --json: one JSON error document on stdout
  const bad = await mpq(['quantize', model, '--calib', path.join(dir, 'missing.npy'), '--config', 'W8A8', '--out', path.join(dir, 'b'), '--json']);
  t.is(bad.code, 1);
  const j = JSON.parse(bad.stdout);
  t.deepEqual(Object.keys(j), ['error']);
  t.regex(j.error.code, /^MPQ_/);
});

test('an If on the data with same-shaped branches (a detector and its verifier, batch fixed at 1) gets quantizers inside its branches; the export computes what the If does', async (t) => {
  // x [1, 16] -> Gemm -> Sigmoid -> p; if p[0,0] >= 0.5: verifier Gemm -> Relu -> Gemm -> Sigmoid (outer weights), else p
  const thenG: TinyGraph = {
    outputs: { p2: null },
    nodes: [
      { op: 'Gemm', inputs: ['x', 'vw1', 'vb1'], outputs: ['v1'], attrs: { transB: 1 } },
      { op: 'Relu', inputs: ['v1'], outputs: ['v2'] },
      { op: 'Gemm', inputs: ['v2', 'vw2', 'vb2'], outputs: ['v3'], attrs: { transB: 1 } },
      { op: 'Sigmoid', inputs: ['v3'], outputs: ['p2'] },
    ],
  };
  const elseG: TinyGraph = { outputs: { p1: null }, nodes: [{ op: 'Identity', inputs: ['p'], outputs: ['p1'] }] };
  const bytes = tinyModel({
    inputs: { x: [1, 16] },
    outputs: { y: [1, 1] },
    nodes: [
      { op: 'Gemm', inputs: ['x', 'w', 'b'], outputs: ['g'], attrs: { transB: 1 } },
      { op: 'Sigmoid', inputs: ['g'], outputs: ['p'] },
      { op: 'ReduceMax', inputs: ['p'], outputs: ['pm'], attrs: { keepdims: 0 } },
      { op: 'GreaterOrEqual', inputs: ['pm', 'half'], outputs: ['c'] },
      { op: 'If', inputs: ['c'], outputs: ['y'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
    ],
    inits: { w: f32([1, 16], 40), b: { dims: [1], values: [0.05] }, half: { dims: [], values: [0.5] }, vw1: f32([32, 16], 41), vb1: f32([32], 42), vw2: f32([1, 32], 43), vb2: f32([1], 44) },
  });
  const m = Model.fromBytes(bytes);
  t.false(m.graph.nodes.some((n) => n.op === 'If'), 'the If is written out in the graph that is quantized');
  const samples = Array.from({ length: 16 }, (_, k) => ({ x: { shape: [1, 16], data: randomData(16, 50 + k) } }));
  // which branch each sample takes: p = sigmoid(w . x + b) >= 0.5
  const w = f32([1, 16], 40).values;
  const logit = samples.map((s) => w.reduce((a, v, i) => a + v * s.x.data[i], 0.05));
  const taken = logit.map((g) => g >= 0);
  t.true(taken.some((x) => x) && taken.some((x) => !x), `branches taken: ${taken}`);
  for (const s of samples) {
    const ref = await ortRun(bytes, s);
    t.true(relMaxDiff((await m.run(s)).y.data, ref.y.data) < 1e-6);
  }
  const cal = await calibrate(m, async function* () { for (const s of samples) yield s; }, { rounding: 'nearest' });
  for (const w of ['w', 'vw1', 'vw2']) t.true(cal.placement.weights.some((p) => p.tensor === w), `weight ${w} is quantized`);
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const file = exportQdq(q, cal);
  let compared = 0;
  for (const [k, s] of samples.entries()) {
    const sim = await Model.fromGraph(q.graph).run(s);
    const ref = await ortRun(file, s, { optimize: false });
    t.true(relMaxDiff(sim.y.data, ref.y.data) < 1e-5, `simulation vs ORT on the export ${relMaxDiff(sim.y.data, ref.y.data)}`);
    // near the threshold quantization may flip the branch; elsewhere the result stays close to float
    if (Math.abs(logit[k]) < 0.2) continue;
    compared++;
    const float = await ortRun(bytes, s);
    t.true(Math.abs(sim.y.data[0] - float.y.data[0]) < 0.05, `sample ${k}: quantized ${sim.y.data[0]} vs float ${float.y.data[0]}`);
  }
  t.true(compared >= 8, `${compared} samples away from the threshold`);
  // the search can now lower the verifier's bits: a budget of 0.75 of W8A8 is met
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cf-'));
  fs.writeFileSync(path.join(dir, 'm.onnx'), bytes);
  const all = new Float32Array(16 * 16);
  samples.forEach((s, k) => all.set(s.x.data, k * 16));
  fs.writeFileSync(path.join(dir, 'calib.npy'), encodeNpy([16, 16], all));
  const r = await mpq(['search', path.join(dir, 'm.onnx'), '--calib', path.join(dir, 'calib.npy'), '--max-bops', '0.75', '--out', path.join(dir, 's'), '--quiet', '--json']);
  t.is(r.code, 0, r.stderr);
  t.true(JSON.parse(r.stdout).selected.rel_bops <= 0.75);
  const notes: string[] = JSON.parse(fs.readFileSync(path.join(dir, 's', 'run.json'), 'utf8')).options.notes;
  t.deepEqual(notes, [`If 'If_4' (a condition from the data, branches of one shape) is quantized inside: the exported model computes both branches and picks with Where`]);
});

test('an If on an int64 sample-rate input (silero VAD style) is quantized inside the branch the calibration data take; the export keeps the If, runs in onnxruntime as simulated, and the other branch stays float', async (t) => {
  // x [B, 8] -> MatMul -> Relu -> Transpose -> rt [6, B], read inside both branches (outer scope)
  // If sr == 16000: Transpose -> Gemm (outer weight) -> Tanh -> MatMul (branch weight); else: Transpose -> MatMul
  // -> z [B, 3] -> MatMul -> y. Both branches give [B, 3]: the plan could run both and a Where.
  const thenG: TinyGraph = {
    outputs: { tout: null },
    nodes: [
      { op: 'Transpose', inputs: ['rt'], outputs: ['u'], attrs: { perm: [1, 0] } },
      { op: 'Gemm', inputs: ['u', 'tw', 'tb'], outputs: ['g1'], attrs: { transB: 1 } },
      { op: 'Tanh', inputs: ['g1'], outputs: ['t1'] },
      { op: 'MatMul', inputs: ['t1', 'tw2'], outputs: ['tout'] },
    ],
    inits: { tw2: f32([5, 3], 62) },
  };
  const elseG: TinyGraph = {
    outputs: { eout: null },
    nodes: [
      { op: 'Transpose', inputs: ['rt'], outputs: ['u2'], attrs: { perm: [1, 0] } },
      { op: 'MatMul', inputs: ['u2', 'ew'], outputs: ['eout'] },
    ],
  };
  const bytes = tinyModel({
    inputs: { x: ['batch', 8], sr: [] },
    inputTypes: { sr: INT64 },
    outputs: { y: null },
    nodes: [
      { op: 'MatMul', inputs: ['x', 'w0'], outputs: ['a'] },
      { op: 'Relu', inputs: ['a'], outputs: ['r'] },
      { op: 'Transpose', inputs: ['r'], outputs: ['rt'], attrs: { perm: [1, 0] } },
      { op: 'Equal', inputs: ['sr', 'k16'], outputs: ['is16'] },
      { op: 'If', inputs: ['is16'], outputs: ['z'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
      { op: 'MatMul', inputs: ['z', 'fw'], outputs: ['y'] },
    ],
    inits: { w0: f32([8, 6], 60), tw: f32([5, 6], 61), tb: f32([5], 63), ew: f32([6, 3], 64), fw: f32([3, 1], 65), k16: { dims: [], type: INT64, values: [16000] } },
  });
  const feeds = (sr: number, seed: number) => ({ x: { shape: [4, 8], data: randomData(32, seed) }, sr: { shape: [], data: Float32Array.of(sr) } });
  const m = Model.fromBytes(bytes);
  for (const sr of [16000, 8000]) {
    const ref = await ortRun(bytes, feeds(sr, 70), { ints: ['sr'] });
    t.true(relMaxDiff((await m.run(feeds(sr, 70))).y.data, ref.y.data) < 1e-6, `float, sr ${sr}`);
  }
  const cal = await calibrate(m, async function* () { yield feeds(16000, 71); yield feeds(16000, 72); }, { rounding: 'nearest' });
  t.regex(cal.notes[0], /^If 'If_\d+' ran its then_branch on the calibration data .* its else_branch stays float: no calibration sample took it/);
  const ws = cal.placement.weights.map((w) => w.tensor).sort();
  t.deepEqual(ws, ['fw', 'tw', 'tw2', 'w0'], 'the weights of the branch taken, not those of the other');
  t.true(cal.placement.activations.some((a) => a.tensor === 'tout'), 'the branch output is quantized inside the branch');
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const file = exportQdq(q, cal);
  const ifNode = loadGraph(file).nodes.find((n) => n.op === 'If')!;
  const inThen = (ifNode.attrs.then_branch as Graph).nodes.map((n) => n.name);
  for (const v of ['tw', 'tw2']) t.true(inThen.includes(`${v}_DequantizeLinear`), `${v}'s DequantizeLinear inside the then branch: ${inThen}`);
  t.true(inThen.includes('tout_QuantizeLinear'));
  t.false((ifNode.attrs.else_branch as Graph).nodes.some((n) => /Quantize/.test(n.op)), 'the else branch stays float');
  // the search's simulation (one plan, quantizer slots) equals the export in onnxruntime, optimizations off and on
  const sim = Simulator.of(cal);
  for (const seed of [73, 74, 75]) {
    const s = await sim.run(feeds(16000, seed), q.encodings);
    const off = await ortRun(file, feeds(16000, seed), { optimize: false, ints: ['sr'] });
    t.true(relMaxDiff(s.y.data, off.y.data) < 1e-5, `simulation vs onnxruntime on the export: ${relMaxDiff(s.y.data, off.y.data)}`);
    const on = await ortRun(file, feeds(16000, seed), { ints: ['sr'] });
    t.true(relMaxDiff(s.y.data, on.y.data) < 0.05, `default optimizations: ${relMaxDiff(s.y.data, on.y.data)}`);
    const float = await ortRun(bytes, feeds(16000, seed), { ints: ['sr'] });
    const d = relMaxDiff(s.y.data, float.y.data);
    t.true(d > 0 && d < 0.1, `quantized vs float ${d}`);
  }
  // an input taking the other branch: the export runs it, in float on the quantized values around it (whose ranges
  // come from data that took the then branch, hence only near float); the simulation refuses it
  const other = await ortRun(file, feeds(8000, 76), { optimize: false, ints: ['sr'] });
  const otherFloat = await ortRun(bytes, feeds(8000, 76), { ints: ['sr'] });
  t.deepEqual(other.y.shape, otherFloat.y.shape);
  t.true(relMaxDiff(other.y.data, otherFloat.y.data) < 0.5, `${other.y.data} vs float ${otherFloat.y.data}`);
  const e = await t.throwsAsync(sim.run(feeds(8000, 76), q.encodings), { instanceOf: MpqError });
  t.is(e!.code, 'MPQ_BAD_INPUT');
  // the command line: a budget below W8A8 is met by lowering the bits inside the branch, the note says what stays float
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cf-'));
  fs.writeFileSync(path.join(dir, 'm.onnx'), bytes);
  fs.writeFileSync(path.join(dir, 'x.npy'), encodeNpy([16, 8], randomData(128, 77)));
  fs.writeFileSync(path.join(dir, 'sr.npy'), encodeNpy([16], new Float32Array(16).fill(16000)));
  const data = `x=${path.join(dir, 'x.npy')},sr=${path.join(dir, 'sr.npy')}`;
  const r = await mpq(['search', path.join(dir, 'm.onnx'), '--calib', data, '--max-bops', '0.75', '--out', path.join(dir, 's'), '--quiet', '--json']);
  t.is(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  t.true(res.selected.rel_bops <= 0.75 && res.selected.meets_target, JSON.stringify(res.selected));
  t.true(res.verification.faithful, JSON.stringify(res.verification));
  t.regex(res.options.notes.join(' '), /its else_branch stays float/);
  t.regex(fs.readFileSync(path.join(dir, 's', 'report.html'), 'utf8'), /<b>Note<\/b>: If &#39;If_\d+&#39; ran its then_branch/);
  // mpq verify applies encodings.json (quantizers inside the branch) to the float model again
  const v = await mpq(['verify', path.join(dir, 's'), '--json']);
  t.is(v.code, 0, v.stderr);
  t.true(JSON.parse(v.stdout).qdq.sqnr_db > 60, v.stdout);
});

test('a 16-bit export (opset 21) converts the ops inside If branches too (ReduceMean axes become an input): onnxruntime loads it and equals the simulation', async (t) => {
  const thenG: TinyGraph = {
    outputs: { t2: null },
    nodes: [
      { op: 'MatMul', inputs: ['x', 'w'], outputs: ['t1'] },
      { op: 'ReduceMean', inputs: ['t1'], outputs: ['t2'], attrs: { axes: [1], keepdims: 1 } },
    ],
  };
  const elseG: TinyGraph = { outputs: { e1: null }, nodes: [{ op: 'ReduceMean', inputs: ['x'], outputs: ['e1'], attrs: { axes: [1], keepdims: 1 } }] };
  const bytes = tinyModel({
    inputs: { x: ['N', 4] },
    outputs: { y: null },
    nodes: [
      { op: 'Shape', inputs: ['x'], outputs: ['s'] },
      { op: 'Gather', inputs: ['s', 'one'], outputs: ['k'], attrs: { axis: 0 } },
      { op: 'Greater', inputs: ['k', 'three'], outputs: ['cond'] },
      { op: 'If', inputs: ['cond'], outputs: ['z'], attrs: { then_branch: { graph: thenG }, else_branch: { graph: elseG } } },
      { op: 'Mul', inputs: ['z', 'z'], outputs: ['y'] },
    ],
    inits: { w: f32([4, 6], 80), one: { dims: [], type: INT64, values: [1] }, three: { dims: [], type: INT64, values: [3] } },
    opset: 13,
  });
  const m = Model.fromBytes(bytes);
  const batch = { x: { shape: [5, 4], data: randomData(20, 81) } };
  const cal = await calibrate(m, async function* () { yield batch; }, { rounding: 'nearest' });
  const q = await quantize(cal, loadBitConfig('W8A16'));
  const file = exportQdq(q, cal);
  const ifNode = loadGraph(file).nodes.find((n) => n.op === 'If')!;
  const rm = (ifNode.attrs.then_branch as Graph).nodes.find((n) => n.op === 'ReduceMean')!;
  t.is(rm.attrs.axes, undefined, 'axes moved to an input at opset 21');
  const sim = await Simulator.of(cal).run(batch, q.encodings);
  const ref = await ortRun(file, batch, { optimize: false });
  t.true(relMaxDiff(sim.y.data, ref.y.data) < 1e-5, `simulation vs onnxruntime: ${relMaxDiff(sim.y.data, ref.y.data)}`);
});
