/** Compute ops: convolutions, pooling, matrix products, normalisation, reductions, Resize, QDQ. */
import { OpCtx, OpDef, Val } from '../opctx';
import { broadcastShapes, makeConst } from '../tensor';

/** Explicit pads for a sliding window, resolving auto_pad as ONNX Runtime does. */
function windowPads(c: OpCtx, spatial: number[], kernel: number[], strides: number[], dil: number[]): number[] {
  const n = spatial.length;
  const autoPad = c.as('auto_pad', 'NOTSET');
  if (autoPad === 'NOTSET') {
    const p = c.aints('pads') ?? new Array<number>(2 * n).fill(0);
    if (p.length !== 2 * n) c.fail(`pads has ${p.length} values, expected ${2 * n}`);
    return p;
  }
  if (autoPad === 'VALID') return new Array<number>(2 * n).fill(0);
  if (autoPad !== 'SAME_UPPER' && autoPad !== 'SAME_LOWER') c.fail(`auto_pad '${autoPad}' is not valid`);
  const pads = new Array<number>(2 * n).fill(0);
  for (let i = 0; i < n; i++) {
    const out = Math.ceil(spatial[i] / strides[i]);
    const total = Math.max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - spatial[i]);
    const small = Math.floor(total / 2);
    pads[i] = autoPad === 'SAME_UPPER' ? small : total - small;
    pads[i + n] = total - pads[i];
  }
  return pads;
}

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  pads: number[];
  out: number[];
}

function window(c: OpCtx, kernel: number[], ceil: boolean): Window {
  const x = c.shape(0);
  const spatial = x.slice(2);
  const n = spatial.length;
  if (kernel.length !== n) c.fail(`kernel has ${kernel.length} spatial dims, input has ${n}`);
  const strides = c.aints('strides') ?? new Array<number>(n).fill(1);
  const dilations = c.aints('dilations') ?? new Array<number>(n).fill(1);
  const pads = windowPads(c, spatial, kernel, strides, dilations);
  const out = spatial.map((d, i) => {
    const span = (kernel[i] - 1) * dilations[i] + 1;
    const num = d + pads[i] + pads[i + n] - span;
    if (num < 0) c.fail(`window of ${span} does not fit input of ${d} (+ pads) on spatial axis ${i}`);
    let o = (ceil ? Math.ceil(num / strides[i]) : Math.floor(num / strides[i])) + 1;
    if (ceil && (o - 1) * strides[i] >= d + pads[i]) o--;
    return o;
  });
  return { kernel, strides, dilations, pads, out };
}

function matmulShape(c: OpCtx, a: number[], b: number[]): number[] {
  if (a.length === 0 || b.length === 0) c.fail('MatMul inputs must have rank >= 1');
  const a2 = a.length === 1 ? [1, a[0]] : a;
  const b2 = b.length === 1 ? [b[0], 1] : b;
  const [m, k] = a2.slice(-2);
  const [k2, n] = b2.slice(-2);
  if (k !== k2) c.fail(`inner dimensions differ: [${a}] x [${b}]`);
  const batch = broadcastShapes([a2.slice(0, -2), b2.slice(0, -2)]);
  if (!batch) return c.fail(`batch dimensions of [${a}] and [${b}] do not broadcast`);
  const out = [...batch, m, n];
  if (a.length === 1) out.splice(out.length - 2, 1);
  if (b.length === 1) out.splice(out.length - 1, 1);
  return out;
}

function reduceAxes(c: OpCtx): number[] | null {
  const r = c.rank(0);
  const fromInput = c.opset >= 18 || (c.node.op === 'ReduceSum' && c.opset >= 13);
  const raw = fromInput ? (c.has(1) ? c.ints(1, 'axes') : undefined) : c.aints('axes');
  if (!raw || raw.length === 0) {
    if (c.ai('noop_with_empty_axes', 0) === 1) return null;
    return Array.from({ length: r }, (_, i) => i);
  }
  return [...new Set(raw.map((a) => c.axis(a, r)))].sort((a, b) => a - b);
}

const reduce: OpDef = {
  infer: (c) => {
    const axes = reduceAxes(c);
    const keep = c.ai('keepdims', 1) === 1;
    const s = c.shape(0);
    if (!axes) return [{ dtype: c.in(0).dtype, shape: s }];
    const out = keep ? s.map((d, i) => (axes.includes(i) ? 1 : d)) : s.filter((_, i) => !axes.includes(i));
    return [{ dtype: c.in(0).dtype, shape: out }];
  },
  fold: (c, outs) => {
    const axes = reduceAxes(c);
    const x = c.constOf(0)!;
    if (!axes) return [x];
    const op = c.node.op;
    const s = x.shape;
    const keepShape = s.map((d, i) => (axes.includes(i) ? 1 : d));
    const acc = new Map<number, number[]>();
    const ks = keepShape.map((_, i) => keepShape.slice(i + 1).reduce((a, b) => a * b, 1));
    for (let i = 0; i < x.data.length; i++) {
      let rem = i, key = 0;
      for (let d = s.length - 1; d >= 0; d--) {
        const v = rem % s[d];
        rem = Math.floor(rem / s[d]);
        if (!axes.includes(d)) key += v * ks[d];
      }
      const l = acc.get(key) ?? [];
      l.push(Number(x.data[i]));
      acc.set(key, l);
    }
    const n = outs[0].shape.reduce((a, b) => a * b, 1);
    const vals = Array.from({ length: n }, (_, k) => {
      const l = acc.get(k) ?? [];
      switch (op) {
        case 'ReduceSum': return l.reduce((a, b) => a + b, 0);
        case 'ReduceMean': return l.reduce((a, b) => a + b, 0) / l.length;
        case 'ReduceMax': return Math.max(...l);
        case 'ReduceMin': return Math.min(...l);
        case 'ReduceProd': return l.reduce((a, b) => a * b, 1);
        default: return Math.sqrt(l.reduce((a, b) => a + b * b, 0));
      }
    });
    return [makeConst(x.dtype, outs[0].shape, vals, x.onnxType)];
  },
  lower: (c) => {
    const axes = reduceAxes(c) ?? [];
    return { inputs: [0], attrs: { axes, keepdims: c.ai('keepdims', 1) } };
  },
};

const softmax: OpDef = {
  infer: (c) => [{ dtype: 'float', shape: c.shape(0) }],
  lower: (c) => ({
    inputs: [0],
    attrs: { axis: c.axis(c.ai('axis', c.opset < 13 ? 1 : -1), c.rank(0)), legacy: c.opset < 13 ? 1 : 0 },
  }),
};

/** Resolved Resize parameters (opset 10, 11+, and Upsample 7-9). */
function resizeParams(c: OpCtx): { scales: number[]; out: number[] } {
  const x = c.shape(0);
  let scales: number[] | undefined;
  let sizes: number[] | undefined;
  if (c.node.op === 'Upsample') scales = c.opset < 9 ? c.afloats('scales') : c.floats(1, 'scales');
  else if (c.opset < 11) scales = c.floats(1, 'scales');
  else {
    if (c.has(3) && c.constOf(3)?.data.length) sizes = c.ints(3, 'sizes');
    else if (c.has(2)) scales = c.floats(2, 'scales');
    if (c.attr('axes') !== undefined) c.fail("the 'axes' attribute of Resize is not supported");
    if (c.as('keep_aspect_ratio_policy', 'stretch') !== 'stretch') c.fail('keep_aspect_ratio_policy other than stretch is not supported');
  }
  if (sizes && sizes.length) {
    if (sizes.length !== x.length) c.fail(`sizes has ${sizes.length} values for rank ${x.length}`);
    return { scales: sizes.map((s, i) => s / x[i]), out: sizes };
  }
  if (!scales || scales.length !== x.length) c.fail('Resize needs scales or sizes with one value per axis');
  return { scales, out: x.map((d, i) => Math.floor(d * scales![i])) };
}

const conv: OpDef = {
  infer: (c) => {
    const x = c.shape(0);
    const w = c.shape(1);
    const group = c.ai('group', 1);
    if (x.length < 3) c.fail(`input must be [N, C, spatial...], got [${x}]`);
    if (w.length !== x.length) c.fail(`weight rank ${w.length} differs from input rank ${x.length}`);
    if (x[1] !== w[1] * group) c.fail(`input has ${x[1]} channels, weight expects ${w[1]} x group ${group}`);
    const kernel = c.aints('kernel_shape') ?? w.slice(2);
    const win = window(c, kernel, false);
    if (c.has(2) && (c.shape(2).length !== 1 || c.shape(2)[0] !== w[0])) c.fail(`bias shape [${c.shape(2)}] does not match ${w[0]} output channels`);
    return [{ dtype: 'float', shape: [x[0], w[0], ...win.out] }];
  },
  lower: (c) => {
    const w = c.shape(1);
    const win = window(c, c.aints('kernel_shape') ?? w.slice(2), false);
    return {
      inputs: c.has(2) ? [0, 1, 2] : [0, 1],
      attrs: { pads: win.pads, strides: win.strides, dilations: win.dilations, group: c.ai('group', 1) },
    };
  },
};

function convTransposeParams(c: OpCtx) {
  const x = c.shape(0);
  const w = c.shape(1);
  const n = x.length - 2;
  const group = c.ai('group', 1);
  const kernel = c.aints('kernel_shape') ?? w.slice(2);
  const strides = c.aints('strides') ?? new Array<number>(n).fill(1);
  const dilations = c.aints('dilations') ?? new Array<number>(n).fill(1);
  const outPad = c.aints('output_padding') ?? new Array<number>(n).fill(0);
  const outputShape = c.aints('output_shape');
  const autoPad = c.as('auto_pad', 'NOTSET');
  let pads = c.aints('pads') ?? new Array<number>(2 * n).fill(0);
  const full = (i: number) => strides[i] * (x[i + 2] - 1) + outPad[i] + (kernel[i] - 1) * dilations[i] + 1;
  if (outputShape || autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') {
    const target = outputShape ? outputShape.slice(-n) : x.slice(2).map((d, i) => d * strides[i]);
    pads = new Array<number>(2 * n).fill(0);
    for (let i = 0; i < n; i++) {
      const total = Math.max(0, full(i) - target[i]);
      const small = Math.floor(total / 2);
      const lower = autoPad === 'SAME_UPPER' ? small : total - small;
      pads[i] = outputShape && autoPad !== 'SAME_UPPER' ? total - small : lower;
      pads[i + n] = total - pads[i];
    }
  } else if (autoPad === 'VALID') pads = new Array<number>(2 * n).fill(0);
  const out = x.slice(2).map((_, i) => full(i) - pads[i] - pads[i + n]);
  if (out.some((d) => d <= 0)) c.fail(`output spatial size [${out}] is not positive`);
  if (x[1] !== w[0]) c.fail(`input has ${x[1]} channels, weight expects ${w[0]}`);
  return { shape: [x[0], w[1] * group, ...out], pads, strides, dilations, group, outPad };
}

const pool = (avg: boolean): OpDef => ({
  infer: (c) => {
    if (c.node.outputs.length > 1 && c.node.outputs[1]) c.fail('the Indices output of MaxPool is not supported');
    const kernel = c.aints('kernel_shape') ?? c.fail('kernel_shape is required');
    const win = window(c, kernel, c.ai('ceil_mode', 0) === 1);
    const x = c.shape(0);
    return [{ dtype: 'float', shape: [x[0], x[1], ...win.out] }];
  },
  lower: (c) => {
    const win = window(c, c.aints('kernel_shape')!, c.ai('ceil_mode', 0) === 1);
    if (c.ai('storage_order', 0) !== 0) c.fail('storage_order 1 is not supported');
    return {
      inputs: [0],
      attrs: {
        kernel_shape: win.kernel, pads: win.pads, strides: win.strides, dilations: win.dilations,
        count_include_pad: avg ? c.ai('count_include_pad', 0) : 0,
      },
    };
  },
});

const globalPool: OpDef = {
  infer: (c) => {
    const x = c.shape(0);
    return [{ dtype: 'float', shape: [x[0], x[1], ...x.slice(2).map(() => 1)] }];
  },
};

/** qmin/qmax of the integer type a QuantizeLinear produces (from its zero point or output_dtype). */
function qrange(c: OpCtx): { qmin: number; qmax: number } {
  if (c.attr('mpq_qmin') !== undefined) return { qmin: c.ai('mpq_qmin', 0), qmax: c.ai('mpq_qmax', 255) };
  const t = c.constOf(2)?.onnxType ?? c.ai('output_dtype', 2);
  const ranges: Record<number, [number, number]> = {
    2: [0, 255], 3: [-128, 127], 4: [0, 65535], 5: [-32768, 32767], 21: [0, 15], 22: [-8, 7], 6: [-2147483648, 2147483647],
  };
  const r = ranges[t];
  if (!r) c.fail(`quantized type ${t} is not supported (uint8, int8, uint16, int16, uint4, int4, int32)`);
  return { qmin: r[0], qmax: r[1] };
}

function qdqAxis(c: OpCtx): number {
  const s = c.shape(1);
  if (s.length > 1 || c.attr('block_size')) c.fail('blocked quantization is not supported');
  // per-tensor (one scale): the axis means nothing, whatever the rank (a scalar activation)
  if ((s[0] ?? 1) === 1 && c.rank(0) <= 1) return 0;
  return c.axis(c.ai('axis', 1), Math.max(c.rank(0), 1));
}

export const NN: Record<string, OpDef> = {
  Conv: conv,
  ConvTranspose: {
    infer: (c) => [{ dtype: 'float', shape: convTransposeParams(c).shape }],
    lower: (c) => {
      const p = convTransposeParams(c);
      return {
        inputs: c.has(2) ? [0, 1, 2] : [0, 1],
        attrs: { pads: p.pads, strides: p.strides, dilations: p.dilations, group: p.group, output_padding: p.outPad },
      };
    },
  },
  MaxPool: pool(false),
  AveragePool: pool(true),
  GlobalAveragePool: globalPool,
  GlobalMaxPool: globalPool,
  Gemm: {
    infer: (c) => {
      const a = c.shape(0), b = c.shape(1);
      if (a.length !== 2 || b.length !== 2) c.fail(`Gemm needs 2-D inputs, got [${a}] and [${b}]`);
      const [m, k] = c.ai('transA', 0) ? [a[1], a[0]] : a;
      const [k2, n] = c.ai('transB', 0) ? [b[1], b[0]] : b;
      if (k !== k2) c.fail(`inner dimensions differ: ${k} vs ${k2}`);
      if (c.has(2) && !broadcastShapes([c.shape(2), [m, n]])) c.fail(`C [${c.shape(2)}] does not broadcast to [${m}, ${n}]`);
      return [{ dtype: 'float', shape: [m, n] }];
    },
    lower: (c) => ({
      inputs: c.has(2) ? [0, 1, 2] : [0, 1],
      attrs: { alpha: c.af('alpha', 1), beta: c.af('beta', 1), transA: c.ai('transA', 0), transB: c.ai('transB', 0) },
    }),
  },
  MatMul: { infer: (c) => [{ dtype: 'float', shape: matmulShape(c, c.shape(0), c.shape(1)) }] },
  BatchNormalization: {
    infer: (c) => {
      if (c.node.outputs.filter(Boolean).length > 1) c.fail('training-mode BatchNormalization (extra outputs) is not supported');
      return [{ dtype: 'float', shape: c.shape(0) }];
    },
    lower: (c) => ({ inputs: [0, 1, 2, 3, 4], attrs: { epsilon: c.af('epsilon', 1e-5) } }),
  },
  LayerNormalization: {
    infer: (c) => {
      const s = c.shape(0);
      const axis = c.axis(c.ai('axis', -1), s.length);
      const stat = s.map((d, i) => (i < axis ? d : 1));
      return c.node.outputs.map((_, i) => ({ dtype: 'float' as const, shape: i === 0 ? s : stat }));
    },
    lower: (c) => ({
      inputs: c.has(2) ? [0, 1, 2] : [0, 1],
      attrs: { axis: c.axis(c.ai('axis', -1), c.rank(0)), epsilon: c.af('epsilon', 1e-5) },
    }),
  },
  Softmax: softmax,
  LogSoftmax: softmax,
  ReduceMean: reduce,
  ReduceSum: reduce,
  ReduceMax: reduce,
  ReduceMin: reduce,
  ReduceProd: reduce,
  ReduceL2: reduce,
  Resize: {
    infer: (c) => [{ dtype: c.in(0).dtype, shape: resizeParams(c).out }],
    lower: (c) => {
      const { scales } = resizeParams(c);
      const mode = c.as('mode', 'nearest');
      if (!['nearest', 'linear', 'cubic'].includes(mode)) c.fail(`mode '${mode}' is not supported`);
      return {
        op: 'Resize',
        inputs: [0],
        attrs: {
          mode,
          coordinate_transformation_mode: c.opset < 11 ? 'asymmetric' : c.as('coordinate_transformation_mode', 'half_pixel'),
          nearest_mode: c.opset < 11 ? 'floor' : c.as('nearest_mode', 'round_prefer_floor'),
          cubic_coeff_a: c.af('cubic_coeff_a', -0.75),
          exclude_outside: c.ai('exclude_outside', 0),
          extrapolation_value: c.af('extrapolation_value', 0),
          scales,
        },
      };
    },
  },
  QuantizeLinear: {
    infer: (c) => [{ dtype: 'int', shape: c.shape(0) }],
    lower: (c) => {
      const { qmin, qmax } = qrange(c);
      return { inputs: c.has(2) ? [0, 1, 2] : [0, 1], attrs: { axis: qdqAxis(c), qmin, qmax } };
    },
  },
  DequantizeLinear: {
    infer: (c) => [{ dtype: 'float', shape: c.shape(0) }],
    fold: (c, outs) => {
      const x = c.constOf(0)!, s = c.constOf(1)!, z = c.constOf(2);
      const axis = qdqAxis(c);
      const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
      const ch = s.data.length > 1 ? x.shape[axis] : 1;
      // typed arrays and a loop per channel run: this folds every weight of a QDQ graph (millions
      // of values) on the JS thread, so it must stay cheap
      const vals = new Float32Array(x.data.length);
      const q = x.data, sd = s.data, zd = z?.data;
      for (let start = 0, k = 0; start < q.length; start += inner, k = ch > 1 ? (k + 1) % ch : 0) {
        const sk = sd[k], zk = zd ? zd[k] : 0;
        const end = Math.min(q.length, start + inner);
        for (let i = start; i < end; i++) vals[i] = (q[i] - zk) * sk;
      }
      return [{ dtype: 'float', shape: outs[0].shape, data: vals, onnxType: 1 }];
    },
    lower: (c) => ({ inputs: c.has(2) ? [0, 1, 2] : [0, 1], attrs: { axis: qdqAxis(c) } }),
  },
};
/**
 * LSTM and GRU: outputs Y [seq, dirs, batch, hidden] (layout 1: [batch, seq, dirs, hidden]),
 * Y_h and (LSTM) Y_c [dirs, batch, hidden]. `sequence_lens` is accepted when it is a constant
 * saying every sequence is full length (what exporters write), and then dropped.
 */
function rnn(gates: number, nOut: number): OpDef {
  const dims = (c: OpCtx) => {
    const x = c.shape(0);
    if (x.length !== 3) c.fail(`X must have rank 3, has shape [${x}]`);
    const layout = c.ai('layout', 0);
    const [seq, batch] = layout ? [x[1], x[0]] : [x[0], x[1]];
    const dirs = c.as('direction', 'forward') === 'bidirectional' ? 2 : 1;
    const w = c.shape(1);
    const hidden = c.ai('hidden_size', Math.floor((w[1] ?? 0) / gates));
    if (w.length !== 3 || w[0] !== dirs || w[1] !== gates * hidden || w[2] !== x[2]) c.fail(`W has shape [${w}], expected [${dirs}, ${gates * hidden}, ${x[2]}]`);
    return { layout, seq, batch, dirs, hidden };
  };
  return {
    infer: (c) => {
      const { layout, seq, batch, dirs, hidden } = dims(c);
      const state = layout ? [batch, dirs, hidden] : [dirs, batch, hidden];
      const y = layout ? [batch, seq, dirs, hidden] : [seq, dirs, batch, hidden];
      return [y, state, state].slice(0, nOut).map((shape) => ({ dtype: 'float' as const, shape }));
    },
    lower: (c) => {
      const { seq } = dims(c);
      if (c.has(4)) {
        const lens = c.ints(4, 'sequence_lens');
        if (lens.some((l) => l !== seq)) c.fail(`sequence_lens [${lens}] has sequences shorter than ${seq}; only full-length sequences are supported`);
      }
      const attrs: Record<string, number | string | number[]> = {
        hidden_size: dims(c).hidden,
        direction: c.as('direction', 'forward'),
        layout: c.ai('layout', 0),
        present: Array.from({ length: nOut }, (_, i) => (c.node.outputs[i] ? 1 : 0)),
      };
      const acts = c.attr('activations');
      if (Array.isArray(acts) && acts.length) attrs.activations = (acts as string[]).join(',');
      for (const k of ['activation_alpha', 'activation_beta']) {
        const v = c.afloats(k);
        if (v) attrs[k] = v;
      }
      if (c.attr('clip') !== undefined) attrs.clip = c.af('clip', 0);
      if (gates === 4) attrs.input_forget = c.ai('input_forget', 0);
      else attrs.linear_before_reset = c.ai('linear_before_reset', 0);
      // sequence_lens (input 4) never reaches Rust
      return { inputs: Array.from({ length: c.node.inputs.length }, (_, i) => (i === 4 ? -1 : i)), attrs };
    },
  };
}
NN.LSTM = rnn(4, 3);
NN.GRU = rnn(3, 2);

NN.Upsample = { infer: NN.Resize.infer, lower: (c, o) => ({ ...NN.Resize.lower!(c, o), op: 'Resize' }) };

export type { Val };
