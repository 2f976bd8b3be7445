/** Data-movement and shape ops: most fold when constant; the rest lower with resolved attributes. */
import { ConstTensor } from '../ir';
import { OpCtx, OpDef, Val } from '../opctx';
import { broadcastIndexer, broadcastShapes, makeConst, numel, strides } from '../tensor';

const same = (c: OpCtx, shape: number[]): Val[] => [{ dtype: c.in(0).dtype, shape }];
const reshapeFold = (c: OpCtx, outs: Val[]): ConstTensor[] => {
  const x = c.constOf(0)!;
  return [{ ...x, shape: outs[0].shape, data: x.data.slice() }];
};
const onlyData = { inputs: [0], attrs: {} };

function reshapeTarget(c: OpCtx): number[] {
  const inShape = c.shape(0);
  const target = c.opset < 5 ? (c.aints('shape') ?? c.fail('missing shape')) : c.ints(1, 'target shape');
  const allowZero = c.ai('allowzero', 0) === 1;
  const out = target.map((d, i) => (d === 0 && !allowZero ? (inShape[i] ?? c.fail('0 in target shape beyond input rank')) : d));
  const neg = out.filter((d) => d === -1).length;
  if (neg > 1) c.fail(`target shape [${target}] has more than one -1`);
  const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  const total = numel(inShape);
  if (neg === 1) {
    if (known === 0 || total % known !== 0) c.fail(`cannot reshape [${inShape}] to [${target}]`);
    out[out.indexOf(-1)] = total / known;
  }
  if (numel(out) !== total) c.fail(`cannot reshape [${inShape}] (${total} elements) to [${target}]`);
  return out;
}

function squeezeAxes(c: OpCtx): number[] | undefined {
  const ax = c.opset >= 13 ? (c.has(1) ? c.ints(1, 'axes') : undefined) : c.aints('axes');
  return ax?.map((a) => c.axis(a, c.rank(0)));
}

/** Normalised slice per axis: start, step and length, following the ONNX spec's clamping rules. */
function sliceParams(c: OpCtx): { starts: number[]; steps: number[]; shape: number[] } {
  const shape = c.shape(0);
  const r = shape.length;
  let starts: number[], ends: number[], axes: number[] | undefined, steps: number[] | undefined;
  if (c.opset < 10) {
    starts = c.aints('starts') ?? c.fail('missing starts');
    ends = c.aints('ends') ?? c.fail('missing ends');
    axes = c.aints('axes');
  } else {
    starts = c.ints(1, 'starts');
    ends = c.ints(2, 'ends');
    axes = c.has(3) ? c.ints(3, 'axes') : undefined;
    steps = c.has(4) ? c.ints(4, 'steps') : undefined;
  }
  axes = axes ?? starts.map((_, i) => i);
  const st = new Array<number>(r).fill(0);
  const sp = new Array<number>(r).fill(1);
  const out = shape.slice();
  axes.forEach((a0, k) => {
    const a = c.axis(a0, r);
    const d = shape[a];
    const step = steps?.[k] ?? 1;
    if (step === 0) c.fail('slice step cannot be 0');
    let s = starts[k], e = ends[k];
    if (s < 0) s += d;
    if (e < 0) e += d;
    if (step > 0) {
      s = Math.min(Math.max(s, 0), d);
      e = Math.min(Math.max(e, 0), d);
    } else {
      s = Math.min(Math.max(s, -1), d - 1);
      e = Math.min(Math.max(e, -1), d - 1);
    }
    const len = Math.max(0, Math.ceil((e - s) / step));
    st[a] = len > 0 ? s : 0;
    sp[a] = step;
    out[a] = len;
  });
  return { starts: st, steps: sp, shape: out };
}

function splitSizes(c: OpCtx): { axis: number; sizes: number[] } {
  const axis = c.axis(c.ai('axis', 0), c.rank(0));
  const d = c.shape(0)[axis];
  const n = c.node.outputs.length;
  let sizes = c.opset >= 13 ? (c.has(1) ? c.ints(1, 'split') : undefined) : c.aints('split');
  if (!sizes) {
    const per = Math.ceil(d / n);
    sizes = Array.from({ length: n }, (_, i) => Math.max(0, Math.min(per, d - i * per)));
  }
  if (sizes.length !== n || sizes.reduce((a, b) => a + b, 0) !== d) c.fail(`split sizes [${sizes}] do not add up to ${d} over ${n} outputs`);
  return { axis, sizes };
}

/** Gathers elements of `x` at multi-indices produced by `src(outIndex) -> flat input index`. */
function gatherConst(x: ConstTensor, shape: number[], src: (i: number) => number): ConstTensor {
  const n = numel(shape);
  const vals = new Array<number>(n);
  for (let i = 0; i < n; i++) vals[i] = x.data[src(i)];
  return makeConst(x.dtype, shape, vals, x.onnxType);
}

function unravel(i: number, shape: number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

function padsOf(c: OpCtx): { pads: number[]; mode: string; value: number } {
  const r = c.rank(0);
  let pads: number[];
  let value: number;
  if (c.opset < 11) {
    pads = c.aints('pads') ?? c.fail('missing pads');
    value = c.af('value', 0);
  } else {
    const p = c.ints(1, 'pads');
    value = c.has(2) ? c.floats(2, 'constant_value')[0] : 0;
    if (c.has(3)) {
      const axes = c.ints(3, 'axes').map((a) => c.axis(a, r));
      pads = new Array<number>(2 * r).fill(0);
      axes.forEach((a, k) => {
        pads[a] = p[k];
        pads[a + r] = p[k + axes.length];
      });
    } else pads = p;
  }
  if (pads.length !== 2 * r) c.fail(`pads has ${pads.length} values, expected ${2 * r}`);
  return { pads, mode: c.as('mode', 'constant'), value };
}

export const MOVEMENT: Record<string, OpDef> = {
  Identity: { infer: (c) => [c.in(0)].map((v) => ({ dtype: v.dtype, shape: v.shape })), fold: reshapeFold, lower: () => onlyData },
  Dropout: {
    infer: (c) => {
      if (c.node.outputs.length > 1 && c.node.outputs[1]) c.fail('the mask output of Dropout is not supported');
      return same(c, c.shape(0));
    },
    fold: reshapeFold,
    lower: () => onlyData,
  },
  Reshape: { infer: (c) => same(c, reshapeTarget(c)), fold: reshapeFold, lower: () => onlyData },
  Flatten: {
    infer: (c) => {
      const s = c.shape(0);
      const a = c.ai('axis', 1);
      const ax = a < 0 ? a + s.length : a;
      if (ax < 0 || ax > s.length) c.fail(`axis ${a} is out of range`);
      return same(c, [numel(s.slice(0, ax)), numel(s.slice(ax))]);
    },
    fold: reshapeFold,
    lower: () => onlyData,
  },
  Squeeze: {
    infer: (c) => {
      const s = c.shape(0);
      const axes = squeezeAxes(c);
      if (axes) for (const a of axes) if (s[a] !== 1) c.fail(`cannot squeeze axis ${a} of size ${s[a]}`);
      return same(c, s.filter((d, i) => (axes ? !axes.includes(i) : d !== 1)));
    },
    fold: reshapeFold,
    lower: () => onlyData,
  },
  Unsqueeze: {
    infer: (c) => {
      const s = c.shape(0);
      const raw = c.opset >= 13 ? c.ints(1, 'axes') : (c.aints('axes') ?? c.fail('missing axes'));
      const r = s.length + raw.length;
      const axes = raw.map((a) => c.axis(a, r));
      const out: number[] = [];
      let k = 0;
      for (let i = 0; i < r; i++) out.push(axes.includes(i) ? 1 : s[k++]);
      return same(c, out);
    },
    fold: reshapeFold,
    lower: () => onlyData,
  },
  Shape: {
    infer: (c) => {
      const s = c.shape(0);
      const r = s.length;
      const clampAx = (a: number) => Math.min(Math.max(a < 0 ? a + r : a, 0), r);
      const v = s.slice(clampAx(c.ai('start', 0)), clampAx(c.ai('end', r)));
      return [{ dtype: 'int', shape: [v.length], value: makeConst('int', [v.length], v) }];
    },
  },
  Size: { infer: (c) => [{ dtype: 'int', shape: [], value: makeConst('int', [], [numel(c.shape(0))]) }] },
  ConstantOfShape: {
    infer: (c) => {
      const shape = c.ints(0, 'shape');
      const v = c.attr('value') as ConstTensor | undefined;
      const dtype = v?.dtype ?? 'float';
      const fill = v ? Number(v.data[0]) : 0;
      const n = c.checkSize(shape, true);
      return [{ dtype, shape, value: makeConst(dtype, shape, new Array<number>(n).fill(fill), v?.onnxType) }];
    },
  },
  // the run-time check of a value measured on the data (see specialize's `known`): no outputs
  MpqExpectValue: { infer: () => [], lower: () => ({ attrs: {} }) },
  Range: {
    infer: (c) => {
      const [s, l, d] = [0, 1, 2].map((i) => c.floats(i, ['start', 'limit', 'delta'][i])[0]);
      const n = Math.max(Math.ceil((l - s) / d), 0);
      if (!Number.isFinite(n)) c.fail(`start ${s}, limit ${l} and delta ${d} give no finite number of elements`);
      c.checkSize([n], true);
      const dtype = c.in(0).dtype;
      return [{ dtype, shape: [n], value: makeConst(dtype, [n], Array.from({ length: n }, (_, i) => s + i * d)) }];
    },
  },
  Transpose: {
    infer: (c) => {
      const s = c.shape(0);
      const perm = c.aints('perm') ?? s.map((_, i) => s.length - 1 - i);
      if (perm.length !== s.length || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) c.fail(`perm [${perm}] is not a permutation of rank ${s.length}`);
      return same(c, perm.map((p) => s[p]));
    },
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const s = x.shape;
      const perm = c.aints('perm') ?? s.map((_, i) => s.length - 1 - i);
      const st = strides(s);
      return [gatherConst(x, outs[0].shape, (i) => unravel(i, outs[0].shape).reduce((acc, v, d) => acc + v * st[perm[d]], 0))];
    },
    lower: (c) => {
      const s = c.shape(0);
      return { inputs: [0], attrs: { perm: c.aints('perm') ?? s.map((_, i) => s.length - 1 - i) } };
    },
  },
  Concat: {
    infer: (c) => {
      const ins = c.node.inputs.map((_, i) => c.in(i));
      const r = ins[0].shape.length;
      const axis = c.axis(c.ai('axis', 0), r);
      const out = ins[0].shape.slice();
      out[axis] = 0;
      for (const v of ins) {
        if (v.shape.length !== r || v.shape.some((d, i) => i !== axis && d !== ins[0].shape[i])) c.fail(`inputs [${ins.map((x) => x.shape.join('x')).join(', ')}] cannot be concatenated on axis ${axis}`);
        out[axis] += v.shape[axis];
      }
      return [{ dtype: ins[0].dtype, shape: out }];
    },
    fold: (c, outs) => {
      const ins = c.node.inputs.map((_, i) => c.constOf(i)!);
      const axis = c.axis(c.ai('axis', 0), ins[0].shape.length);
      const outer = numel(ins[0].shape.slice(0, axis));
      const vals: number[] = [];
      for (let o = 0; o < outer; o++) {
        for (const t of ins) {
          const blk = numel(t.shape.slice(axis));
          for (let k = 0; k < blk; k++) vals.push(t.data[o * blk + k]);
        }
      }
      return [makeConst(outs[0].dtype, outs[0].shape, vals, ins[0].onnxType)];
    },
    lower: (c) => ({ inputs: c.node.inputs.map((_, i) => i), attrs: { axis: c.axis(c.ai('axis', 0), c.rank(0)) } }),
  },
  Split: {
    infer: (c) => {
      const { axis, sizes } = splitSizes(c);
      return sizes.map((n) => {
        const s = c.shape(0).slice();
        s[axis] = n;
        return { dtype: c.in(0).dtype, shape: s };
      });
    },
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const { axis } = splitSizes(c);
      const st = strides(x.shape);
      let off = 0;
      return outs.map((o) => {
        const base = off;
        off += o.shape[axis];
        return gatherConst(x, o.shape, (i) => unravel(i, o.shape).reduce((acc, v, d) => acc + (d === axis ? v + base : v) * st[d], 0));
      });
    },
    lower: (c) => {
      const { axis, sizes } = splitSizes(c);
      return { inputs: [0], attrs: { axis, split: sizes } };
    },
  },
  Slice: {
    infer: (c) => same(c, sliceParams(c).shape),
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const { starts, steps } = sliceParams(c);
      const st = strides(x.shape);
      return [gatherConst(x, outs[0].shape, (i) => unravel(i, outs[0].shape).reduce((acc, v, d) => acc + (starts[d] + v * steps[d]) * st[d], 0))];
    },
    lower: (c) => {
      const { starts, steps } = sliceParams(c);
      return { inputs: [0], attrs: { starts, steps } };
    },
  },
  Gather: {
    infer: (c) => {
      const s = c.shape(0);
      const axis = c.axis(c.ai('axis', 0), s.length);
      return [{ dtype: c.in(0).dtype, shape: [...s.slice(0, axis), ...c.shape(1), ...s.slice(axis + 1)] }];
    },
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const idx = c.constOf(1)!;
      const axis = c.axis(c.ai('axis', 0), x.shape.length);
      const st = strides(x.shape);
      const ir = idx.shape.length;
      const d = x.shape[axis];
      return [gatherConst(x, outs[0].shape, (i) => {
        const u = unravel(i, outs[0].shape);
        const ii = u.slice(axis, axis + ir);
        let k = ir === 0 ? Number(idx.data[0]) : Number(idx.data[ii.reduce((a, v, j) => a * idx.shape[j] + v, 0)]);
        if (k < 0) k += d;
        if (k < 0 || k >= d) c.fail(`index ${k} is out of range for axis of size ${d}`);
        const full = [...u.slice(0, axis), k, ...u.slice(axis + ir)];
        return full.reduce((a, v, j) => a + v * st[j], 0);
      })];
    },
    lower: (c) => ({ inputs: [0, 1], attrs: { axis: c.axis(c.ai('axis', 0), c.rank(0)) } }),
  },
  Expand: {
    infer: (c) => {
      const out = broadcastShapes([c.shape(0), c.ints(1, 'shape')]);
      if (!out) return c.fail(`cannot expand [${c.shape(0)}] to [${c.ints(1, 'shape')}]`);
      return same(c, out);
    },
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      return [gatherConst(x, outs[0].shape, broadcastIndexer(x.shape, outs[0].shape))];
    },
    lower: () => onlyData,
  },
  Tile: {
    infer: (c) => {
      const reps = c.ints(1, 'repeats');
      if (reps.length !== c.rank(0)) c.fail(`repeats has ${reps.length} values for rank ${c.rank(0)}`);
      return same(c, c.shape(0).map((d, i) => d * reps[i]));
    },
    fold: (c, outs) => {
      const x = c.constOf(0)!;
      const st = strides(x.shape);
      return [gatherConst(x, outs[0].shape, (i) => unravel(i, outs[0].shape).reduce((a, v, d) => a + (v % x.shape[d]) * st[d], 0))];
    },
    lower: () => onlyData,
  },
  Pad: {
    infer: (c) => {
      const { pads } = padsOf(c);
      const r = c.rank(0);
      return same(c, c.shape(0).map((d, i) => d + pads[i] + pads[i + r]));
    },
    lower: (c) => {
      const { pads, mode, value } = padsOf(c);
      if (!['constant', 'reflect', 'edge'].includes(mode)) c.fail(`pad mode '${mode}' is not supported (constant, reflect, edge)`);
      return { inputs: [0], attrs: { pads, mode, value } };
    },
  },
};
