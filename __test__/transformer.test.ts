/**
 * Transformers (issue 15): integer inputs end to end, placement of transformer kernels
 * (decomposed LayerNorm, GELU, Softmax attention, HardSwish, embeddings), masks left float,
 * non-float outputs left out of the metrics, and the retrieval evaluation. Small models built
 * here; the MiniLM checks read ../shared and skip with a message when it is absent.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { embedMean, retrievalTop1 } from '../src/eval/retrieval';
import { evaluateModels } from '../src/eval/evaluate';
import { Model } from '../src/model';
import { loadBitConfig } from '../src/quant/config';
import { placeQuantizers } from '../src/quant/placement';
import { calibrate, encodingsFor } from '../src/quant/quantize';
import { loadProfile } from '../src/profiles/profile';
import { buildGroups } from '../src/search/groups';
import { makeMetric } from '../src/search/metric';
import { HAS_SHARED, mpq, OCR, ortRun, randomData, SHARED, SKIP_SHARED_MSG, tinyModel } from './helpers';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-transformer-'));
const rnd = (dims: number[], seed: number, scale = 1) => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed), (v) => v * scale) });
const scalar = (v: number) => ({ dims: [], values: [v] });
const L = 8, H = 16, VOCAB = 20;

/**
 * A one-layer encoder as exporters write it: embedding Gather on int64 ids, a decomposed
 * LayerNorm, MatMul + bias + Erf GELU, attention (QK^T, scale, additive mask made from the int64
 * attention_mask with -3.4e38, Softmax, x V), a residual Add; the ids passed through as the
 * first output (int64), the hidden state second.
 */
function encoderBytes(): Uint8Array {
  return tinyModel({
    opset: 17,
    inputs: { input_ids: ['N', L], attention_mask: ['N', L] },
    inputTypes: { input_ids: 7, attention_mask: 7 },
    outputs: { ids_out: ['N', L], hidden: ['N', L, H] },
    outputTypes: { ids_out: 7 },
    inits: {
      emb: rnd([VOCAB, H], 1), ln_g: rnd([H], 2, 0.2), ln_b: rnd([H], 3, 0.1), two: scalar(2), eps: scalar(1e-5),
      w1: rnd([H, H], 4, 0.5), b1: rnd([H], 5, 0.1), sqrt2: scalar(Math.SQRT2), one: scalar(1), half: scalar(0.5),
      wq: rnd([H, H], 6, 0.5), wk: rnd([H, H], 7, 0.5), scale: scalar(4), neg: scalar(-3.4028234663852886e38),
      ax1: { dims: [1], type: 7, values: [1] },
    },
    nodes: [
      { op: 'Gather', inputs: ['emb', 'input_ids'], outputs: ['e'] },
      { op: 'ReduceMean', inputs: ['e'], outputs: ['m'], attrs: { axes: [-1] } },
      { op: 'Sub', inputs: ['e', 'm'], outputs: ['d'] },
      { op: 'Pow', inputs: ['d', 'two'], outputs: ['p'] },
      { op: 'ReduceMean', inputs: ['p'], outputs: ['v'], attrs: { axes: [-1] } },
      { op: 'Add', inputs: ['v', 'eps'], outputs: ['ve'] },
      { op: 'Sqrt', inputs: ['ve'], outputs: ['s'] },
      { op: 'Div', inputs: ['d', 's'], outputs: ['n'] },
      { op: 'Mul', inputs: ['n', 'ln_g'], outputs: ['ng'] },
      { op: 'Add', inputs: ['ng', 'ln_b'], outputs: ['ln'] },
      { op: 'MatMul', inputs: ['ln', 'w1'], outputs: ['h1'] },
      { op: 'Add', inputs: ['b1', 'h1'], outputs: ['h1b'] },
      { op: 'Div', inputs: ['h1b', 'sqrt2'], outputs: ['t'] },
      { op: 'Erf', inputs: ['t'], outputs: ['er'] },
      { op: 'Add', inputs: ['er', 'one'], outputs: ['a1'] },
      { op: 'Mul', inputs: ['h1b', 'a1'], outputs: ['g1'] },
      { op: 'Mul', inputs: ['g1', 'half'], outputs: ['gelu'] },
      { op: 'MatMul', inputs: ['gelu', 'wq'], outputs: ['q'] },
      { op: 'MatMul', inputs: ['gelu', 'wk'], outputs: ['k'] },
      { op: 'Transpose', inputs: ['k'], outputs: ['kt'], attrs: { perm: [0, 2, 1] } },
      { op: 'MatMul', inputs: ['q', 'kt'], outputs: ['sc'] },
      { op: 'Div', inputs: ['sc', 'scale'], outputs: ['scs'] },
      { op: 'Unsqueeze', inputs: ['attention_mask', 'ax1'], outputs: ['m1'] },
      { op: 'Cast', inputs: ['m1'], outputs: ['mf'], attrs: { to: 1 } },
      { op: 'Sub', inputs: ['one', 'mf'], outputs: ['inv'] },
      { op: 'Mul', inputs: ['inv', 'neg'], outputs: ['madd'] },
      { op: 'Add', inputs: ['scs', 'madd'], outputs: ['sm'] },
      { op: 'Softmax', inputs: ['sm'], outputs: ['pr'], attrs: { axis: -1 } },
      { op: 'MatMul', inputs: ['pr', 'q'], outputs: ['ctx'] },
      { op: 'Add', inputs: ['ctx', 'gelu'], outputs: ['hidden'] },
      { op: 'Identity', inputs: ['input_ids'], outputs: ['ids_out'] },
    ],
  });
}

/** Token ids and masks of `n` samples: real lengths 3..L, zero padded, as in tokenised text. */
function tokens(n: number, seed = 1): { ids: number[]; mask: number[] } {
  const r = randomData(n * (L + 1), seed);
  const ids: number[] = [], mask: number[] = [];
  for (let i = 0; i < n; i++) {
    const len = 3 + Math.floor(Math.abs(r[i * (L + 1)]) * (L - 3)) % (L - 2);
    for (let t = 0; t < L; t++) {
      ids.push(t < len ? 1 + (Math.floor(Math.abs(r[i * (L + 1) + 1 + t]) * 1000) % (VOCAB - 1)) : 0);
      mask.push(t < len ? 1 : 0);
    }
  }
  return { ids, mask };
}

/** A little-endian .npy of int64 (`<i8`) or int32 (`<i4`) values. */
function intNpy(file: string, shape: number[], values: number[], descr: '<i8' | '<i4' = '<i8'): void {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1;
  pre.writeUInt16LE(header.length, 8);
  const size = descr === '<i8' ? 8 : 4;
  const data = Buffer.alloc(values.length * size);
  values.forEach((v, i) => (descr === '<i8' ? data.writeBigInt64LE(BigInt(v), i * 8) : data.writeInt32LE(v, i * 4)));
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'), data]));
}

function placementOf(m: Model, shapes: Record<string, number[]>) {
  const spec = m.specialize(shapes);
  const isFloat = (v: string) => spec.values.get(v)?.dtype === 'float' && !spec.values.get(v)?.value;
  return placeQuantizers(m.graph, isFloat);
}

const batchOf = (n: number, seed = 1) => {
  const { ids, mask } = tokens(n, seed);
  return { input_ids: { shape: [n, L], data: Float32Array.from(ids) }, attention_mask: { shape: [n, L], data: Float32Array.from(mask) } };
};

test('placement: decomposed LayerNorm, Erf GELU and Softmax get one output quantizer each; the mask stays float', (t) => {
  const m = Model.fromBytes(encoderBytes());
  const p = placementOf(m, { input_ids: [2, L], attention_mask: [2, L] });
  // ln: the LayerNorm's last Add; gelu: the GELU's last Mul (MatMul + bias fused into it);
  // q and k feed the attention MatMuls; sc: QK^T; pr: Softmax (scale and mask inside it); ctx: attention x V
  t.deepEqual(p.activations.map((a) => a.tensor), ['ln', 'gelu', 'q', 'k', 'sc', 'pr', 'ctx']);
  t.deepEqual(p.activations.find((a) => a.tensor === 'gelu')!.fused.sort(), ['Add_11', 'Add_14', 'Div_12', 'Erf_13', 'MatMul_10', 'Mul_15', 'Mul_16']);
  // the mask (1 - mask) and its -3.4e38 fill are left float, with the reason
  t.deepEqual(p.skipped.map((s) => s.tensor), ['inv', 'madd']);
  t.regex(p.skipped[0].reason, /mask: computed only from the integer input attention_mask/);
  t.regex(p.skipped[1].reason, /sentinel -3\.4\d*e\+38/);
  // the embedding table is a weight, per row, and the lookup's output needs no quantizer of its own
  t.deepEqual(p.weights.map((w) => [w.tensor, w.op, w.axis]), [['emb', 'Gather', 0], ['w1', 'MatMul', 1], ['wq', 'MatMul', 1], ['wk', 'MatMul', 1]]);
});

test('groups: both inputs of an activation x activation MatMul are activations of their own groups; the embedding table has its own group', (t) => {
  const m = Model.fromBytes(encoderBytes());
  const p = placementOf(m, { input_ids: [2, L], attention_mask: [2, L] });
  const groups = buildGroups(m.graph, p, loadProfile('default'));
  const of = (v: string) => groups.find((g) => g.act === p.encodingOf.get(v))!;
  // QK^T reads q and (through Transpose) k; attention x V reads pr and q
  t.not(of('q').id, of('kt').id);
  t.is(of('kt').act, 'k');
  t.not(of('pr').id, of('q').id);
  t.true(of('q').consumers.includes('MatMul_20') && of('q').consumers.includes('MatMul_28'));
  const emb = groups.find((g) => g.weights.includes('emb'))!;
  t.is(emb.act, undefined);
  t.deepEqual(emb.weights, ['emb']);
  t.true(groups.filter((g) => g.weights.includes('emb')).length === 1);
  // the Softmax group takes the profile's Softmax restriction (8 or 16 bits)
  t.deepEqual([...new Set(of('pr').candidates.map((c) => c.a))], [8, 16]);
});

test('placement: HardSwish as Add/Clip/Mul/Div after a Conv, and GELU in its Tanh form, are one kernel each', (t) => {
  const bytes = tinyModel({
    inputs: { x: [1, 2, 4, 4] },
    outputs: { y: null },
    inits: {
      w1: rnd([2, 2, 1, 1], 1), w2: rnd([2, 2, 1, 1], 2), w3: rnd([2, 2, 1, 1], 3), three: scalar(3), zero: scalar(0), six: scalar(6),
      c3: scalar(3), k: scalar(0.044715), s2pi: scalar(Math.sqrt(2 / Math.PI)), one: scalar(1), half: scalar(0.5),
    },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'] },
      { op: 'Add', inputs: ['c1', 'three'], outputs: ['a'] },
      { op: 'Clip', inputs: ['a', 'zero', 'six'], outputs: ['cl'] },
      { op: 'Mul', inputs: ['c1', 'cl'], outputs: ['mm'] },
      { op: 'Div', inputs: ['mm', 'six'], outputs: ['hs'] },
      { op: 'Conv', inputs: ['hs', 'w2'], outputs: ['c2'] },
      { op: 'Pow', inputs: ['c2', 'c3'], outputs: ['cube'] },
      { op: 'Mul', inputs: ['cube', 'k'], outputs: ['kc'] },
      { op: 'Add', inputs: ['c2', 'kc'], outputs: ['inner'] },
      { op: 'Mul', inputs: ['inner', 's2pi'], outputs: ['arg'] },
      { op: 'Tanh', inputs: ['arg'], outputs: ['th'] },
      { op: 'Add', inputs: ['th', 'one'], outputs: ['t1'] },
      { op: 'Mul', inputs: ['c2', 't1'], outputs: ['g'] },
      { op: 'Mul', inputs: ['g', 'half'], outputs: ['gelu'] },
      { op: 'Conv', inputs: ['gelu', 'w3'], outputs: ['y'] },
    ],
  });
  const p = placementOf(Model.fromBytes(bytes), {});
  // x, the HardSwish output, the GELU output; Conv outputs fused in; y is a graph output
  t.deepEqual(p.activations.map((a) => a.tensor), ['x', 'hs', 'gelu']);
  t.deepEqual(p.skipped, []);
});

test('PP-OCRv4 rec: decomposed LayerNorms and HardSwishes no longer get a quantizer per elementary op', (t) => {
  const m = Model.fromFile(path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'));
  const p = placementOf(m, { x: [1, 3, 48, 320] });
  const producer = new Map(m.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n.op] as const)));
  const ops = p.activations.map((a) => producer.get(a.tensor) ?? 'input');
  // no quantizer inside a LayerNorm (ReduceMean, Pow, Sqrt, Sub) or a HardSwish (Clip, Div)
  for (const op of ['ReduceMean', 'Pow', 'Sqrt', 'Sub', 'Clip', 'Div']) t.false(ops.includes(op), op);
  t.true(p.activations.length < 100, `${p.activations.length} activation quantizers (337 with one per elementary op)`);
  t.is(ops.filter((o) => o === 'Softmax').length, 2);
});

test('config: "float" leaves a quantizer out', (t) => {
  const dir = tmp();
  const f = path.join(dir, 'c.json');
  fs.writeFileSync(f, JSON.stringify({ default: 'W8A8', activations: { pr: 'float', sc: 16 }, float: ['w1'] }));
  const c = loadBitConfig(f);
  t.deepEqual(c.float?.sort(), ['pr', 'w1']);
  t.is(c.activations.sc, 16);
  fs.writeFileSync(f, JSON.stringify({ default: 'W8A8', float: 'pr' }));
  t.throws(() => loadBitConfig(f), { message: /'float' must be a list/ });
});

test('quantize: a config that leaves quantizers float has no encodings for them', async (t) => {
  const m = Model.fromBytes(encoderBytes());
  const b = batchOf(8);
  const cal = await calibrate(m, async function* () { yield b; }, { rounding: 'nearest' });
  const all = encodingsFor(cal, { w: 8, a: 8, weights: {}, activations: {} });
  const some = encodingsFor(cal, { w: 8, a: 8, weights: {}, activations: {}, float: ['pr', 'w1'] });
  t.true(all.activations.has('pr') && all.weights.has('w1'));
  t.false(some.activations.has('pr'));
  t.false(some.weights.has('w1'));
  t.is(some.activations.size, all.activations.size - 1);
});

test('metrics: an integer first output (ids passed through) is left out of SQNR and agreement', async (t) => {
  const m = Model.fromBytes(encoderBytes());
  const b = batchOf(8);
  // the quantized model: the float model with one quantizer: its ids output is equal to float's
  const cal = await calibrate(m, async function* () { yield b; }, { rounding: 'nearest' });
  const { buildQdqGraph } = await import('../src/quant/qdq');
  const q = Model.fromGraph(buildQdqGraph(m.graph, encodingsFor(cal, { w: 2, a: 2, weights: {}, activations: {} })));
  const r = await evaluateModels(m, q, (async function* () { yield { inputs: b, indices: [0, 1, 2, 3, 4, 5, 6, 7], names: [] }; })(), undefined);
  t.regex(r.note ?? '', /'ids_out' \(int\) is not float/);
  // 2-bit everything: the hidden state is far from float, so SQNR is low (with the ids counted it would gain 3 dB from a noiseless output)
  t.true(r.quantized!.sqnr_db < 20, `${r.quantized!.sqnr_db} dB`);
  const metric = await makeMetric(m, { batches: async function* () { yield { inputs: b, names: [], indices: [] }; } }, { input_ids: [8, L], attention_mask: [8, L] }, {});
  // the first float output is [N, L, H]: not a classifier, so SQNR, not agreement on the ids
  t.is(metric.name, 'sqnr_db');
});

test('retrieval: masked mean pooling, L2 normalisation and top-1 of each query\'s own document', (t) => {
  // two samples of 3 tokens of 2 values; the padding token (mask 0) of sample 0 must not count
  const hidden = { shape: [2, 3, 2], data: Float32Array.from([3, 0, 1, 0, 100, 100, 0, 1, 0, 3, 0, 2]) };
  const mask = { shape: [2, 3], data: Float32Array.from([1, 1, 0, 1, 1, 1]) };
  const e = embedMean(hidden, mask);
  t.deepEqual(Array.from(e), [1, 0, 0, 1]);
  // query 0 is nearest to doc 0; query 1 to doc 0 too (a miss): top-1 0.5
  const docs = Float32Array.from([1, 0, 0.6, 0.8]);
  t.is(retrievalTop1(Float32Array.from([1, 0, 0.98, 0.2]), docs, 2), 0.5);
  // embeddings given batch by batch
  t.is(retrievalTop1([Float32Array.from([1, 0]), Float32Array.from([0.6, 0.8])], [docs.subarray(0, 2), docs.subarray(2)], 2), 1);
});

test('CLI: int64 token ids and masks as NAME=PATH calibration; quantize, verify and search run them in onnxruntime', async (t) => {
  const dir = tmp();
  const model = path.join(dir, 'enc.onnx');
  fs.writeFileSync(model, encoderBytes());
  const { ids, mask } = tokens(32, 3);
  intNpy(path.join(dir, 'ids.npy'), [32, L], ids);
  intNpy(path.join(dir, 'mask.npy'), [32, L], mask, '<i4');
  const calib = `input_ids=${path.join(dir, 'ids.npy')},attention_mask=${path.join(dir, 'mask.npy')}`;
  const q = await mpq(['quantize', model, '--calib', calib, '--config', 'W8A16', '--rounding', 'nearest', '--out', path.join(dir, 'q')]);
  t.is(q.code, 0, q.stderr);
  const v = await mpq(['verify', path.join(dir, 'q'), '--json']);
  t.is(v.code, 0, v.stderr);
  const res = JSON.parse(v.stdout);
  t.is(res.samples, 32);
  // the export runs as simulated (16-bit activations: no rounding flips worth a dB)
  t.true(res.qdq.sqnr_db >= 40, `sqnr ${res.qdq.sqnr_db}`);
  t.regex(res.note, /'ids_out' \(int\) is not float/);
  const s = await mpq(['search', model, '--calib', calib, '--max-bops', '0.75', '--rounding', 'nearest', '--out', path.join(dir, 's'), '--json']);
  t.is(s.code, 0, s.stderr);
  const sr = JSON.parse(s.stdout);
  t.truthy(sr.verification, 'the search ran its export in onnxruntime');
  t.true(sr.selected.rel_bops <= 0.75);
});

const minilm = path.join(SHARED, 'models', 'paraphrase-MiniLM-L3-v2.onnx');

test('MiniLM: placement of the real encoder: one quantizer per LayerNorm and GELU, the additive mask left float', (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  if (!fs.existsSync(minilm)) throw new Error(`../shared is present but ${minilm} is missing`);
  const m = Model.fromFile(minilm);
  const p = placementOf(m, { input_ids: [2, 64], attention_mask: [2, 64] });
  const producer = new Map(m.graph.nodes.flatMap((n) => n.outputs.map((o) => [o, n.op] as const)));
  const count = (op: string) => p.activations.filter((a) => producer.get(a.tensor) === op).length;
  t.is(count('Erf'), 0);
  t.is(count('Softmax'), 3);
  // 7 LayerNormalization ops, the last one a graph output (float)
  t.is(count('LayerNormalization'), 6);
  // the -3.4e38 mask and its (1 - mask) are left float
  t.true(p.skipped.some((s) => /sentinel/.test(s.reason)));
  t.true(p.weights.some((w) => w.op === 'Gather' && w.tensor.includes('word_embeddings')));
  // the token-type table is looked up at constant (all-zero) ids: a constant, no quantized weight
  t.false(p.weights.some((w) => w.tensor.includes('token_type_embeddings')));
  t.true(p.skipped.some((s) => s.tensor.includes('token_type_embeddings') && /folds to a constant/.test(s.reason)));
});

test('Erf equals onnxruntime bit for bit (the GELU a quantizer reads rounds as in the runtime)', async (t) => {
  const n = 1 << 15;
  const x = new Float32Array(n);
  const r = randomData(n, 11);
  for (let i = 0; i < n; i++) x[i] = r[i] * 5 * (i % 7 === 0 ? 0.1 : 1);
  x.set([0, -0, 0.921875, -0.921875, 3.725, -3.725, 3.925, -3.925, 10, -10, 1e-30], 0);
  const bytes = tinyModel({ opset: 17, inputs: { x: [n] }, outputs: { y: [n] }, nodes: [{ op: 'Erf', inputs: ['x'], outputs: ['y'] }] });
  const ours = (await Model.fromBytes(bytes).run({ x: { shape: [n], data: x } })).y.data;
  const theirs = (await ortRun(bytes, { x: { shape: [n], data: x } }, { optimize: false })).y.data;
  let differ = 0;
  for (let i = 0; i < n; i++) if (Object.is(ours[i], theirs[i]) === false) differ++;
  t.is(differ, 0, `${differ} of ${n} values differ`);
});
