/** LSTM and GRU on small models built here, against onnxruntime-node; and their weights quantized. */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { encodeNpy } from '../src/npy';
import { Model } from '../src/model';
import { calibrate, exportQdq, quantize } from '../src/quant/quantize';
import { loadBitConfig } from '../src/quant/config';
import { mpq, ortRun, randomData, relMaxDiff, tinyModel, TinyNode } from './helpers';

const f32 = (dims: number[], seed: number, scale = 1) => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed), (v) => v * scale) });

interface Case {
  name: string;
  op: 'LSTM' | 'GRU';
  dirs: number;
  attrs: NonNullable<TinyNode['attrs']>;
  outputs: string[];
  /** feed initial_h (and initial_c) as graph inputs, as a streaming model does with its state */
  state?: boolean;
  layout?: number;
}

const SEQ = 5, BATCH = 2, IN = 6, H = 4;

const cases: Case[] = [
  { name: 'LSTM forward, bias, state as inputs', op: 'LSTM', dirs: 1, attrs: { hidden_size: H }, outputs: ['Y', 'Y_h', 'Y_c'], state: true },
  { name: 'LSTM bidirectional, only Y_h', op: 'LSTM', dirs: 2, attrs: { hidden_size: H, direction: 'bidirectional' }, outputs: ['', 'Y_h'] },
  { name: 'LSTM reverse, clip', op: 'LSTM', dirs: 1, attrs: { hidden_size: H, direction: 'reverse', clip: 0.7 }, outputs: ['Y', 'Y_h'] },
  { name: 'GRU forward', op: 'GRU', dirs: 1, attrs: { hidden_size: H }, outputs: ['Y', 'Y_h'], state: true },
  { name: 'GRU bidirectional, linear_before_reset', op: 'GRU', dirs: 2, attrs: { hidden_size: H, direction: 'bidirectional', linear_before_reset: 1 }, outputs: ['Y', 'Y_h'] },
];

function model(c: Case): Uint8Array {
  const g = c.op === 'LSTM' ? 4 : 3;
  const inputs: Record<string, number[]> = { x: c.layout ? [BATCH, SEQ, IN] : [SEQ, BATCH, IN] };
  const st = c.layout ? [BATCH, c.dirs, H] : [c.dirs, BATCH, H];
  if (c.state) {
    inputs.h0 = st;
    if (c.op === 'LSTM') inputs.c0 = st;
  }
  const ins = ['x', 'W', 'R', 'B', '', c.state ? 'h0' : ''];
  if (c.op === 'LSTM') ins.push(c.state ? 'c0' : '');
  while (ins[ins.length - 1] === '') ins.pop();
  return tinyModel({
    inputs,
    outputs: Object.fromEntries(c.outputs.filter(Boolean).map((o) => [o, null])),
    nodes: [{ op: c.op, inputs: ins, outputs: c.outputs, attrs: c.attrs }],
    inits: { W: f32([c.dirs, g * H, IN], 1, 0.6), R: f32([c.dirs, g * H, H], 2, 0.6), B: f32([c.dirs, 2 * g * H], 3, 0.3) },
    opset: 14,
  });
}

for (const c of cases) {
  test(`${c.name} equals onnxruntime`, async (t) => {
    const bytes = model(c);
    const feeds: Record<string, { shape: number[]; data: Float32Array }> = {};
    const xs = c.layout ? [BATCH, SEQ, IN] : [SEQ, BATCH, IN];
    feeds.x = { shape: xs, data: randomData(SEQ * BATCH * IN, 9) };
    if (c.state) {
      const st = c.layout ? [BATCH, c.dirs, H] : [c.dirs, BATCH, H];
      feeds.h0 = { shape: st, data: randomData(c.dirs * BATCH * H, 10) };
      if (c.op === 'LSTM') feeds.c0 = { shape: st, data: randomData(c.dirs * BATCH * H, 11) };
    }
    const ref = await ortRun(bytes, feeds);
    const ours = await Model.fromBytes(bytes).run(feeds);
    for (const o of c.outputs.filter(Boolean)) {
      t.deepEqual(ours[o].shape, ref[o].shape, o);
      const d = relMaxDiff(ours[o].data, ref[o].data);
      t.true(d < 1e-5, `${o}: ${d}`);
    }
  });
}

test('LSTM with layout 1 (batch first; onnxruntime has no kernel for it) equals onnxruntime on the layout-0 model with transposed data', async (t) => {
  const base: Case = { name: '', op: 'LSTM', dirs: 1, attrs: { hidden_size: H, direction: 'reverse', clip: 0.7 }, outputs: ['Y', 'Y_h', 'Y_c'], state: true };
  const l1: Case = { ...base, attrs: { ...base.attrs, layout: 1 }, layout: 1 };
  const x0 = randomData(SEQ * BATCH * IN, 9);
  const x1 = new Float32Array(x0.length);
  for (let s = 0; s < SEQ; s++) for (let b = 0; b < BATCH; b++) for (let i = 0; i < IN; i++) x1[(b * SEQ + s) * IN + i] = x0[(s * BATCH + b) * IN + i];
  const h0 = randomData(BATCH * H, 10), c0 = randomData(BATCH * H, 11);
  const ref = await ortRun(model(base), { x: { shape: [SEQ, BATCH, IN], data: x0 }, h0: { shape: [1, BATCH, H], data: h0 }, c0: { shape: [1, BATCH, H], data: c0 } });
  const ours = await Model.fromBytes(model(l1)).run({ x: { shape: [BATCH, SEQ, IN], data: x1 }, h0: { shape: [BATCH, 1, H], data: h0 }, c0: { shape: [BATCH, 1, H], data: c0 } });
  t.deepEqual(ours.Y.shape, [BATCH, SEQ, 1, H]);
  const y = new Float32Array(ref.Y.data.length);
  for (let s = 0; s < SEQ; s++) for (let b = 0; b < BATCH; b++) for (let j = 0; j < H; j++) y[(b * SEQ + s) * H + j] = ref.Y.data[(s * BATCH + b) * H + j];
  t.true(relMaxDiff(ours.Y.data, y) < 1e-5);
  t.true(relMaxDiff(ours.Y_h.data, ref.Y_h.data) < 1e-5);
  t.true(relMaxDiff(ours.Y_c.data, ref.Y_c.data) < 1e-5);
});

test('an LSTM model quantized W8A8: its weights W and R get weight quantizers, and the export runs in onnxruntime as simulated', async (t) => {
  // Gemm front -> LSTM -> Gemm head on the last hidden state
  const bytes = tinyModel({
    inputs: { x: [SEQ, BATCH, IN] },
    outputs: { y: null },
    nodes: [
      { op: 'MatMul', inputs: ['x', 'fw'], outputs: ['f'] },
      { op: 'LSTM', inputs: ['f', 'W', 'R', 'B'], outputs: ['', 'hn'], attrs: { hidden_size: H } },
      { op: 'Squeeze', inputs: ['hn', 'ax0'], outputs: ['h'] },
      { op: 'Gemm', inputs: ['h', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      fw: f32([IN, IN], 4), W: f32([1, 4 * H, IN], 1, 0.6), R: f32([1, 4 * H, H], 2, 0.6), B: f32([1, 8 * H], 3, 0.3),
      ax0: { dims: [1], type: 7, values: [0] }, gw: f32([3, H], 5), gb: f32([3], 6),
    },
  });
  const m = Model.fromBytes(bytes);
  const batch = { x: { shape: [SEQ, BATCH, IN], data: randomData(SEQ * BATCH * IN, 12) } };
  const cal = await calibrate(m, async function* () { yield batch; }, { rounding: 'nearest' });
  t.true(cal.placement.weights.some((w) => w.tensor === 'W' && w.axis === 1), 'LSTM W is quantized per gate row');
  t.true(cal.placement.weights.some((w) => w.tensor === 'R' && w.axis === 1), 'LSTM R is quantized per gate row');
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const sim = await Model.fromGraph(q.graph).run(batch);
  const ref = await ortRun(exportQdq(q, cal), batch, { optimize: false });
  const d = relMaxDiff(sim.y.data, ref.y.data);
  t.true(d < 1e-5, `simulation vs ORT on the export: ${d}`);
  const float = await m.run(batch);
  const qd = relMaxDiff(sim.y.data, float.y.data);
  t.true(qd > 0 && qd < 0.1, `quantized vs float: ${qd}`);
});

test('a streaming-style model (batch 1, data-dependent Clip bound, LSTM with its state as inputs) goes through mpq quantize, verify and search without flags', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-rnn-'));
  const bytes = tinyModel({
    inputs: { x: [1, 8, 6], h0: [1, 1, H], c0: [1, 1, H] },
    outputs: { y: null, hn: null, cn: null },
    nodes: [
      { op: 'ReduceMax', inputs: ['x'], outputs: ['mx'], attrs: { keepdims: 0 } },
      { op: 'Sub', inputs: ['mx', 'range'], outputs: ['lo'] },
      { op: 'Clip', inputs: ['x', 'lo'], outputs: ['xc'] },
      { op: 'Transpose', inputs: ['xc'], outputs: ['xt'], attrs: { perm: [1, 0, 2] } },
      { op: 'LSTM', inputs: ['xt', 'W', 'R', 'B', '', 'h0', 'c0'], outputs: ['', 'hn', 'cn'], attrs: { hidden_size: H } },
      { op: 'Squeeze', inputs: ['hn', 'ax0'], outputs: ['hs'] },
      { op: 'Gemm', inputs: ['hs', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      range: { dims: [], values: [0.5] }, W: f32([1, 4 * H, 6], 1, 0.6), R: f32([1, 4 * H, H], 2, 0.6), B: f32([1, 8 * H], 3, 0.3),
      ax0: { dims: [1], type: 7, values: [0] }, gw: f32([3, H], 5), gb: f32([3], 6),
    },
    opset: 14,
  });
  const model = path.join(dir, 'm.onnx');
  fs.writeFileSync(model, bytes);
  const n = 24;
  const files: [string, number[], number][] = [['x', [n, 8, 6], 3], ['h0', [n, 1, H], 4], ['c0', [n, 1, H], 5]];
  for (const [k, shape, seed] of files) {
    fs.writeFileSync(path.join(dir, `${k}.npy`), encodeNpy(shape, randomData(shape.reduce((a, b) => a * b, 1), seed)));
  }
  const data = ['x', 'h0', 'c0'].map((k) => `${k}=${path.join(dir, `${k}.npy`)}`).join(',');
  // float engine vs onnxruntime on one sample
  const feeds = { x: { shape: [1, 8, 6], data: randomData(48, 3) }, h0: { shape: [1, 1, H], data: randomData(H, 4) }, c0: { shape: [1, 1, H], data: randomData(H, 5) } };
  const ref = await ortRun(bytes, feeds);
  const ours = await Model.fromBytes(bytes).run(feeds);
  for (const o of ['y', 'hn', 'cn']) t.true(relMaxDiff(ours[o].data, ref[o].data) < 1e-5, o);
  const q = await mpq(['quantize', model, '--calib', data, '--config', 'W8A8', '--out', path.join(dir, 'q'), '--quiet']);
  t.is(q.code, 0, q.stderr);
  const v = await mpq(['verify', path.join(dir, 'q'), '--json']);
  t.is(v.code, 0, v.stderr);
  t.true(JSON.parse(v.stdout).qdq.sqnr_db > 40, v.stdout);
  const s = await mpq(['search', model, '--calib', data, '--max-bops', '0.75', '--out', path.join(dir, 's'), '--quiet', '--json']);
  t.is(s.code, 0, s.stderr);
  const r = JSON.parse(s.stdout);
  t.true(r.selected.rel_bops <= 0.75);
  const enc = JSON.parse(fs.readFileSync(path.join(dir, 's', 'encodings.json'), 'utf8'));
  t.truthy(enc.param_encodings.W && enc.param_encodings.R, 'both LSTM weights have encodings');
  t.true(r.verification.qdq.sqnr_db > 40);
});
