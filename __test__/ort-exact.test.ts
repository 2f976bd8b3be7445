/**
 * Bit-exactness with ONNX Runtime (CPU provider, graph optimizations disabled) for the ops
 * whose float summation order we reproduce (Conv incl. depthwise/grouped, Gemm, MatMul):
 * simulated quantizers round x / scale, so a one-ulp difference flips codes and cascades.
 * Every engine level this CPU has (scalar, AVX2, AVX-512) is run and compared with the live
 * runtime: the levels share one summation order, so each must equal onnxruntime on any CPU
 * with FMA. `__test__/golden.test.ts` compares with outputs recorded on other CPU classes.
 */
import test from 'ava';
import { Model, engineInfo, setEngineLevel } from '../index';
import { ortRun, randomData, tinyModel, TinyNode, TinyTensor } from './helpers';

const rnd = (dims: number[], seed: number, scale = 1): TinyTensor => ({
  dims,
  values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed), (v) => v * scale),
});

interface Case {
  name: string;
  x: number[];
  /** a second graph input `x2` of this shape (both MatMul operands computed at run time) */
  x2?: number[];
  node: TinyNode;
  inits: Record<string, TinyTensor>;
  /** more nodes after `node` (reading its output `y0`, ending in `y`) */
  then?: TinyNode[];
  opset?: number;
  /** scale of the random input x (default 1) */
  xScale?: number;
}

const conv = (name: string, x: number[], cout: number, k: number, stride: number, group = 1, pad = (k - 1) >> 1): Case => ({
  name: `Conv ${name} x=${x.join('x')} -> ${cout} k${k} s${stride} g${group}`,
  x,
  node: { op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: { kernel_shape: [k, k], strides: [stride, stride], pads: [pad, pad, pad, pad], group } },
  inits: { w: rnd([cout, x[1] / group, k, k], 11, 1 / Math.sqrt((x[1] / group) * k * k)), b: rnd([cout], 12, 0.1) },
});

const cases: Case[] = [];
for (const [n, c, hw] of [[2, 24, 112], [1, 24, 112], [2, 384, 14], [1, 384, 14], [2, 576, 7]]) {
  for (const s of [1, 2]) cases.push(conv('depthwise', [n, c, hw, hw], c, 3, s, c));
}
cases.push(conv('depthwise 5x5', [1, 32, 40, 40], 32, 5, 1, 32));
for (const [ci, co, hw] of [[24, 48, 112], [48, 96, 56], [192, 192, 56], [192, 192, 28], [384, 384, 28], [384, 384, 14], [768, 768, 14], [768, 768, 7], [768, 1001, 1]]) {
  for (const n of [1, 2]) cases.push(conv('pointwise', [n, ci, hw, hw], co, 1, 1));
}
for (const n of [1, 2]) cases.push(conv('full', [n, 3, 224, 224], 24, 3, 2));
// PP-OCR-like: 3x3 full convs, grouped, more filters than output pixels, 1xK
cases.push(conv('full', [1, 16, 40, 40], 32, 3, 1));
cases.push(conv('full', [1, 64, 20, 20], 128, 3, 2));
cases.push(conv('grouped', [2, 32, 20, 20], 64, 3, 1, 4));
cases.push(conv('many filters', [1, 64, 4, 4], 256, 3, 1));
cases.push(conv('pointwise', [1, 96, 10, 80], 480, 1, 1));
cases.push({
  name: 'Gemm transB with bias [1,768]x[1000,768]^T',
  x: [1, 768],
  node: { op: 'Gemm', inputs: ['x', 'w', 'b'], outputs: ['y'], attrs: { transB: 1 } },
  inits: { w: rnd([1000, 768], 21, 0.05), b: rnd([1000], 22, 0.1) },
});
cases.push({
  name: 'Gemm with bias [8,256]x[256,64]',
  x: [8, 256],
  node: { op: 'Gemm', inputs: ['x', 'w', 'b'], outputs: ['y'] },
  inits: { w: rnd([256, 64], 23, 0.1), b: rnd([64], 24, 0.1) },
});
for (const [m, k, n] of [[40, 384, 96], [40, 120, 6625], [160, 384, 384]]) {
  cases.push({
    name: `MatMul constant B [2,${m},${k}]x[${k},${n}]`,
    x: [2, m, k],
    node: { op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] },
    inits: { w: rnd([k, n], 25, 0.1) },
  });
}

// A B that onnxruntime does not pre-pack (not an initializer): a DequantizeLinear of an int8
// weight (every weight of a QDQ export), or an activation (QK^T, attention x V). MLAS then
// copies B panel by panel and cuts K by the columns of each thread's part, where the
// pre-packed path cuts it in blocks of 256: the two differ in the last bits.
const int8 = (dims: number[], seed: number): TinyTensor => ({ dims, type: 3, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed), (v) => Math.round(v * 127)) });
const dqB = (name: string, x: number[], k: number, n: number, trans = false): Case => {
  const wdims = trans ? [n, k] : [k, n];
  const axis = trans ? 0 : 1;
  return {
    name,
    x,
    node: { op: 'DequantizeLinear', inputs: ['wq', 'ws', 'wz'], outputs: ['w'], attrs: { axis } },
    inits: { wq: int8(wdims, 41 + k + n), ws: { dims: [n], values: Array.from(randomData(n, 42), (v) => 0.002 + 0.001 * (v + 1)) }, wz: { dims: [n], type: 3, values: new Array(n).fill(0) }, b: rnd([n], 43, 0.1) },
  };
};
for (const [x, k, n] of [[[2, 64, 384], 384, 384], [[8, 64, 384], 384, 384], [[2, 64, 384], 384, 1536], [[2, 64, 1536], 1536, 384], [[1, 384], 384, 100], [[3, 200], 200, 1], [[1, 33, 300], 300, 40]] as [number[], number, number][]) {
  const c = dqB(`MatMul DequantizeLinear B [${x.join(',')}]x[${k},${n}]`, x, k, n);
  c.then = [{ op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }];
  cases.push(c);
}
for (const [m, k, n, trans, bias] of [[8, 256, 64, true, true], [1, 256, 64, true, true], [3, 100, 300, false, true], [40, 384, 96, false, false]] as [number, number, number, boolean, boolean][]) {
  const c = dqB(`Gemm DequantizeLinear B [${m},${k}]x[${k},${n}]${trans ? ' transB' : ''}${bias ? ' + bias' : ''}`, [m, k], k, n, trans);
  c.then = [{ op: 'Gemm', inputs: bias ? ['x', 'w', 'b'] : ['x', 'w'], outputs: ['y'], attrs: { transB: trans ? 1 : 0 } }];
  cases.push(c);
}
for (const [x, x2] of [[[2, 12, 64, 32], [2, 12, 32, 64]], [[2, 12, 64, 64], [2, 12, 64, 32]], [[1, 2, 200, 64], [1, 2, 64, 300]], [[2, 3, 40], [40]], [[2, 70, 300], [300, 50]], [[5, 1, 40], [5, 40, 20]]]) {
  cases.push({ name: `MatMul of two activations [${x.join(',')}]x[${x2.join(',')}]`, x, x2, node: { op: 'MatMul', inputs: ['x', 'x2'], outputs: ['y'] }, inits: {} });
}

// Softmax (MLAS's exp polynomial and lane sums, which differ between the AVX-512F and FMA3 CPU
// classes: the engine follows the class of this CPU), with the inputs attention has
for (const [op, x, axis, opset] of [['Softmax', [2, 12, 64, 64], -1, 13], ['Softmax', [3, 7, 41], 1, 13], ['Softmax', [4, 3, 33], 1, 11], ['LogSoftmax', [2, 5, 100], -1, 13], ['Softmax', [1, 1, 1, 5], -1, 13]] as [string, number[], number, number][]) {
  cases.push({ name: `${op} [${x.join(',')}] axis ${axis} opset ${opset}`, x, xScale: 8, opset, node: { op, inputs: ['x'], outputs: ['y'], attrs: { axis } }, inits: {} });
}
// attention scores plus an additive mask of -3.4e38 on some keys (exp underflows to 0 or a subnormal)
cases.push({
  name: 'Softmax of scores + additive -3.4e38 mask [2,12,64,64]',
  x: [2, 12, 64, 64],
  xScale: 6,
  opset: 13,
  node: { op: 'Add', inputs: ['x', 'mask'], outputs: ['y0'] },
  inits: { mask: { dims: [2, 1, 1, 64], values: Array.from({ length: 128 }, (_, i) => ((i % 64) < (i < 64 ? 40 : 57) ? 0 : -3.4028234663852886e38)) } },
  then: [{ op: 'Softmax', inputs: ['y0'], outputs: ['y'], attrs: { axis: -1 } }],
});

// Conv + BatchNormalization (+ Clip): onnxruntime with optimizations off runs them apart, the
// engine fuses them into one step in the unfused arithmetic (depthwise, GEMM, 1x1-plane paths)
for (const [label, x, cout, k, group] of [
  ['depthwise', [2, 24, 28, 28], 24, 3, 24],
  ['pointwise', [1, 48, 28, 28], 96, 1, 1],
  ['full', [2, 16, 20, 20], 32, 3, 1],
  ['1x1 plane', [2, 64, 1, 1], 100, 1, 1],
] as const) {
  const c = conv(`${label} + BatchNormalization + Clip`, [...x], cout, k, 1, group);
  c.node = { ...c.node, outputs: ['y0'] };
  const bn = (seed: number, lo: number, span: number) => ({ dims: [cout], values: Array.from(randomData(cout, seed), (v) => lo + span * (v + 1)) });
  c.inits = { ...c.inits, gamma: bn(31, 0.5, 0.5), beta: bn(32, -0.2, 0.2), mean: bn(33, -0.1, 0.1), var: bn(34, 0.01, 1) };
  c.then = [
    { op: 'BatchNormalization', inputs: ['y0', 'gamma', 'beta', 'mean', 'var'], outputs: ['y1'], attrs: { epsilon: 0.001 } },
    { op: 'Clip', inputs: ['y1'], outputs: ['y'], attrs: { min: -0.25, max: 1.5 } },
  ];
  cases.push(c);
}

const LEVELS = engineInfo().available;
const DEFAULT_LEVEL = engineInfo().level;
test.after.always(() => setEngineLevel(DEFAULT_LEVEL));

// Serial: the level is process-wide, so each test sets it and runs alone.
for (const c of cases) {
  test.serial(`bit-exact with onnxruntime at every engine level: ${c.name}`, async (t) => {
    const inputs: Record<string, number[]> = c.x2 ? { x: c.x, x2: c.x2 } : { x: c.x };
    const opset = c.opset ?? (c.node.op === 'DequantizeLinear' ? 13 : c.then ? 10 : 13);
    const bytes = tinyModel({ inputs, outputs: { y: null }, nodes: [c.node, ...(c.then ?? [])], inits: c.inits, opset });
    const feeds: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const [name, dims] of Object.entries(inputs)) feeds[name] = { shape: dims, data: randomData(dims.reduce((a, b) => a * b, 1), name === 'x' ? 5 : 6).map((v) => v * (c.xScale ?? 1)) };
    const ref = await ortRun(bytes, feeds, { optimize: false });
    const model = Model.fromBytes(bytes);
    for (const level of LEVELS) {
      t.is(setEngineLevel(level), level);
      const ours = await model.run(feeds);
      t.deepEqual(ours.y.shape, ref.y.shape);
      const a = ours.y.data, b = ref.y.data;
      let bad = 0, md = 0;
      for (let i = 0; i < b.length; i++) {
        if (a[i] !== b[i]) bad++;
        md = Math.max(md, Math.abs(a[i] - b[i]));
      }
      t.is(bad, 0, `${level}: ${bad} of ${b.length} differ, max |diff| ${md}`);
    }
  });
}

// LayerNormalization in onnxruntime 1.30's order (crates/core/src/ops/norm.rs ln_row_stats):
// the output and the Mean and InvStdDev outputs bit for bit, for rows of 384 values (MiniLM's
// hidden size) and rows whose length leaves a tail of 1 to 7 after the blocks of eight, with
// offsets and small spreads (cancellation in the variance).
test.serial('LayerNormalization equals onnxruntime bit for bit (output, Mean, InvStdDev) at every engine level', async (t) => {
  for (const D of [384, 8, 13, 20, 31, 387]) {
    const R = 96;
    const bytes = tinyModel({
      inputs: { x: [R, D] },
      outputs: { y: null, m: null, iv: null },
      opset: 17,
      inits: { g: rnd([D], 51), b: rnd([D], 52, 0.2) },
      nodes: [{ op: 'LayerNormalization', inputs: ['x', 'g', 'b'], outputs: ['y', 'm', 'iv'], attrs: { axis: -1, epsilon: 1e-12 } }],
    });
    const x = randomData(R * D, 5 + D);
    for (let r = 0; r < R; r++) for (let i = 0; i < D; i++) x[r * D + i] = Math.fround(x[r * D + i] * (1 + (r % 7)) * (r % 3 === 0 ? 1e-3 : 1) + (r % 5) * 0.7);
    const feeds = { x: { shape: [R, D], data: x } };
    const ref = await ortRun(bytes, feeds, { optimize: false });
    const model = Model.fromBytes(bytes);
    for (const level of LEVELS) {
      setEngineLevel(level);
      const ours = await model.run(feeds);
      for (const k of ['y', 'm', 'iv']) {
        let off = 0;
        ref[k].data.forEach((v, i) => (off += v === ours[k].data[i] ? 0 : 1));
        t.is(off, 0, `D ${D}, ${level}, ${k}: ${off} of ${ref[k].data.length} values differ from onnxruntime`);
      }
    }
  }
});
