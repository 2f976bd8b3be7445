/**
 * Deterministic mutations of ONNX models, as a hostile user (or a broken exporter) makes
 * them: dims of initializers and declared inputs, shape-like constants (Reshape, Expand,
 * Tile, Resize, Pad, Range, ConstantOfShape inputs), attributes, element types, node wiring
 * and op types, plus raw byte flips and truncation. Used by the CI fuzz test
 * (__test__/fuzz.test.ts) and the longer run in bench/fuzz.ts.
 */
import { onnx } from '../src/onnx/proto/onnx';

/** xorshift32: the same seed gives the same mutations on every machine. */
export class Rng {
  private s: number;
  constructor(seed: number) {
    this.s = (seed * 2654435761) >>> 0 || 1;
  }
  next(): number {
    let s = this.s;
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    this.s = s;
    return s / 2 ** 32;
  }
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)];
  }
}

/** Values a hostile file puts where a size goes. */
const HOSTILE_INTS = [0, -1, -2, 1, 2, 3, 7, 255, 65536, 2 ** 20, 2 ** 31 - 1, 2 ** 31, 2 ** 32, 2 ** 33, 2 ** 40, 2 ** 53, -(2 ** 31)];
const HOSTILE_FLOATS = [0, -1, 1e-30, 1e4, 1e9, 3e38, -3e38, NaN, Infinity, -Infinity];
const OPS = ['Relu', 'Conv', 'Add', 'Reshape', 'Expand', 'Tile', 'Concat', 'Gather', 'Resize', 'Pad', 'Slice', 'Softmax', 'MatMul', 'Foo', ''];

type Long = { toNumber(): number; low?: number } | number;
const toNum = (v: Long): number => (typeof v === 'number' ? v : v.toNumber());

export interface Mutation {
  bytes: Uint8Array;
  /** What was changed, for reports. */
  what: string;
}

/** One mutation of `model` (bytes of a valid ONNX file). */
export function mutate(model: Uint8Array, rng: Rng): Mutation {
  const kind = rng.int(10);
  if (kind === 0) {
    // raw byte flips
    const b = Uint8Array.from(model);
    const n = 1 + rng.int(8);
    for (let i = 0; i < n; i++) b[rng.int(b.length)] = rng.int(256);
    return { bytes: b, what: `${n} random bytes` };
  }
  if (kind === 1) {
    const cut = rng.int(model.length);
    return { bytes: model.subarray(0, cut), what: `truncated at ${cut}` };
  }
  const m = onnx.ModelProto.decode(model);
  const g = m.graph!;
  const what = structural(m, g, rng, kind);
  return { bytes: onnx.ModelProto.encode(m).finish(), what };
}

function structural(m: onnx.ModelProto, g: onnx.IGraphProto, rng: Rng, kind: number): string {
  const inits = g.initializer ?? [];
  const nodes = g.node ?? [];
  switch (kind) {
    case 2: {
      // an initializer dim
      if (!inits.length) return 'nothing (no initializer)';
      const t = rng.pick(inits);
      if (!t.dims || !t.dims.length) t.dims = [1];
      const i = rng.int(t.dims.length);
      const v = rng.pick(HOSTILE_INTS);
      t.dims[i] = v;
      return `initializer '${t.name}' dim ${i} = ${v}`;
    }
    case 3: {
      // the values of a small integer initializer (shapes, repeats, pads, axes)
      const small = inits.filter((t) => (t.dataType === 7 || t.dataType === 6) && (t.dims ?? []).reduce((a: number, d) => a * toNum(d as Long), 1) <= 8);
      if (!small.length) return 'nothing (no small int initializer)';
      const t = rng.pick(small);
      const vals: number[] = t.rawData && t.rawData.length
        ? Array.from({ length: t.rawData.length / 8 }, (_, k) => Number(Buffer.from(t.rawData!).readBigInt64LE(k * 8)))
        : (t.int64Data ?? t.int32Data ?? []).map((x) => toNum(x as Long));
      if (!vals.length) return 'nothing (empty int initializer)';
      const i = rng.int(vals.length);
      vals[i] = rng.pick(HOSTILE_INTS);
      t.rawData = new Uint8Array(0);
      if (t.dataType === 7) {
        t.int64Data = vals;
        t.int32Data = [];
      } else t.int32Data = vals;
      return `values of '${t.name}'[${i}] = ${vals[i]}`;
    }
    case 4: {
      // float initializer values (scales of Resize, weights)
      const fl = inits.filter((t) => t.dataType === 1 && (t.dims ?? []).reduce((a: number, d) => a * toNum(d as Long), 1) <= 4096);
      if (!fl.length) return 'nothing (no float initializer)';
      const t = rng.pick(fl);
      const n = (t.dims ?? []).reduce((a: number, d) => a * toNum(d as Long), 1);
      const vals = t.floatData && t.floatData.length ? [...t.floatData] : Array.from(new Float32Array(Uint8Array.from(t.rawData ?? []).buffer, 0, n));
      if (!vals.length) return 'nothing (empty float initializer)';
      const i = rng.int(vals.length);
      vals[i] = rng.pick(HOSTILE_FLOATS);
      t.rawData = new Uint8Array(0);
      t.floatData = vals;
      return `float '${t.name}'[${i}] = ${vals[i]}`;
    }
    case 5: {
      // an integer attribute
      const withInts = nodes.filter((n) => (n.attribute ?? []).some((a) => a.ints?.length || a.type === onnx.AttributeProto.AttributeType.INT));
      if (!withInts.length) return 'nothing (no int attribute)';
      const n = rng.pick(withInts);
      const a = rng.pick((n.attribute ?? []).filter((x) => x.ints?.length || x.type === onnx.AttributeProto.AttributeType.INT));
      const v = rng.pick(HOSTILE_INTS);
      if (a.ints && a.ints.length) a.ints[rng.int(a.ints.length)] = v;
      else a.i = v;
      return `attribute ${n.name}.${a.name} gets ${v}`;
    }
    case 6: {
      // declared input dims and element type
      const inp = g.input?.[0];
      const tt = inp?.type?.tensorType;
      if (!tt) return 'nothing (no input)';
      if (rng.int(2) === 0) {
        tt.elemType = rng.pick([0, 2, 7, 8, 9, 14, 17, 23, 999, -5]);
        return `input elemType ${tt.elemType}`;
      }
      const dims = tt.shape?.dim ?? [];
      if (!dims.length) return 'nothing (no dims)';
      const i = rng.int(dims.length);
      dims[i] = { dimValue: rng.pick(HOSTILE_INTS) };
      return `input dim ${i} = ${toNum(dims[i].dimValue as Long)}`;
    }
    case 7: {
      // rewire: an input of one node to some other value name (cycles, two producers, undefined)
      if (!nodes.length) return 'nothing (no nodes)';
      const n = rng.pick(nodes);
      const names = [...nodes.flatMap((x) => x.output ?? []), ...(g.input ?? []).map((i) => i.name ?? ''), 'nowhere'];
      if (rng.int(2) === 0 && n.input?.length) {
        const i = rng.int(n.input.length);
        n.input[i] = rng.pick(names);
        return `node ${n.name} input ${i} = '${n.input[i]}'`;
      }
      if (n.output?.length) {
        n.output[0] = rng.pick(names);
        return `node ${n.name} output = '${n.output[0]}'`;
      }
      return 'nothing';
    }
    case 8: {
      // op type
      if (!nodes.length) return 'nothing (no nodes)';
      const n = rng.pick(nodes);
      n.opType = rng.pick(OPS);
      return `node ${n.name} op = '${n.opType}'`;
    }
    default: {
      // an initializer's data type or a data cut short
      if (!inits.length) return 'nothing (no initializer)';
      const t = rng.pick(inits);
      if (rng.int(2) === 0) {
        t.dataType = rng.pick([0, 8, 14, 15, 17, 23, 99, 1, 7, 10]);
        return `initializer '${t.name}' dataType ${t.dataType}`;
      }
      if (t.rawData && t.rawData.length) t.rawData = t.rawData.subarray(0, rng.int(t.rawData.length));
      else if (t.floatData && t.floatData.length) t.floatData = t.floatData.slice(0, rng.int(t.floatData.length));
      return `initializer '${t.name}' data cut short`;
    }
  }
}

/** Small models with the ops whose sizes come from data (Expand, Tile, Resize, Pad, Range, ConstantOfShape). */
export function seedModels(): { name: string; bytes: Uint8Array }[] {
  const T = onnx.AttributeProto.AttributeType;
  const vi = (name: string, dims: number[]): onnx.IValueInfoProto => ({ name, type: { tensorType: { elemType: 1, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });
  const i64 = (name: string, vals: number[]): onnx.ITensorProto => ({ name, dims: [vals.length], dataType: 7, int64Data: vals });
  const f32 = (name: string, dims: number[], vals: number[]): onnx.ITensorProto => ({ name, dims, dataType: 1, floatData: vals });
  const model = (name: string, nodes: onnx.INodeProto[], inits: onnx.ITensorProto[], inDims: number[]): { name: string; bytes: Uint8Array } => ({
    name,
    bytes: onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: { name, node: nodes.map((n, i) => ({ name: `${n.opType}_${i}`, ...n })), initializer: inits, input: [vi('x', inDims)], output: [{ name: 'y' }] },
    }).finish(),
  });
  return [
    model('expand', [{ opType: 'Expand', input: ['x', 's'], output: ['y'] }], [i64('s', [2, 3])], [1, 3]),
    model('tile', [{ opType: 'Tile', input: ['x', 'r'], output: ['y'] }], [i64('r', [2, 2])], [2, 3]),
    model('resize', [{ opType: 'Resize', input: ['x', '', 'sc'], output: ['y'], attribute: [{ name: 'mode', type: T.STRING, s: Buffer.from('nearest') }] }], [f32('sc', [4], [1, 1, 2, 2])], [1, 1, 4, 4]),
    model('pad', [{ opType: 'Pad', input: ['x', 'p'], output: ['y'] }], [i64('p', [0, 1, 0, 1])], [2, 3]),
    model('range-add', [
      { opType: 'Range', input: ['a', 'b', 'c'], output: ['r'] },
      { opType: 'Cast', input: ['r'], output: ['rf'], attribute: [{ name: 'to', type: T.INT, i: 1 }] },
      { opType: 'Add', input: ['x', 'rf'], output: ['y'] },
    ], [{ name: 'a', dims: [], dataType: 7, int64Data: [0] }, { name: 'b', dims: [], dataType: 7, int64Data: [4] }, { name: 'c', dims: [], dataType: 7, int64Data: [1] }], [4]),
    model('constant-of-shape', [
      { opType: 'ConstantOfShape', input: ['s'], output: ['z'], attribute: [{ name: 'value', type: T.TENSOR, t: f32('', [1], [1]) }] },
      { opType: 'Add', input: ['x', 'z'], output: ['y'] },
    ], [i64('s', [2, 3])], [2, 3]),
    model('conv-reshape', [
      { opType: 'Conv', input: ['x', 'w', 'b'], output: ['c'], attribute: [{ name: 'pads', type: T.INTS, ints: [1, 1, 1, 1] }, { name: 'strides', type: T.INTS, ints: [1, 1] }] },
      { opType: 'Relu', input: ['c'], output: ['r'] },
      { opType: 'Reshape', input: ['r', 'sh'], output: ['y'] },
    ], [f32('w', [2, 1, 3, 3], Array.from({ length: 18 }, (_, i) => (i % 5) / 5 - 0.4)), f32('b', [2], [0.1, -0.1]), i64('sh', [1, -1])], [1, 1, 5, 5]),
  ];
}

/** The crafted cases of issue 11, each a few hundred bytes. */
export function hostileModels(): { name: string; bytes: Uint8Array }[] {
  const vi = (name: string, dims: number[], elemType = 1): onnx.IValueInfoProto => ({ name, type: { tensorType: { elemType, shape: { dim: dims.map((d) => ({ dimValue: d })) } } } });
  const i64 = (name: string, vals: number[], dims = [vals.length]): onnx.ITensorProto => ({ name, dims, dataType: 7, int64Data: vals });
  const model = (name: string, nodes: onnx.INodeProto[], inits: onnx.ITensorProto[], input = vi('x', [1, 1])): { name: string; bytes: Uint8Array } => ({
    name,
    bytes: onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      graph: { name, node: nodes.map((n, i) => ({ name: `${n.opType}_${i}`, ...n })), initializer: inits, input: [input], output: [{ name: 'y' }] },
    }).finish(),
  });
  return [
    model('expand-2^20x2^20', [{ opType: 'Expand', input: ['x', 's'], output: ['y'] }], [i64('s', [2 ** 20, 2 ** 20])]),
    model('expand-2^16x2^16', [{ opType: 'Expand', input: ['x', 's'], output: ['y'] }], [i64('s', [2 ** 16, 2 ** 16])]),
    model('tile-2^20x2^20', [{ opType: 'Tile', input: ['x', 'r'], output: ['y'] }], [i64('r', [2 ** 20, 2 ** 20])]),
    model('tile-2^16x2^16', [{ opType: 'Tile', input: ['x', 'r'], output: ['y'] }], [i64('r', [2 ** 16, 2 ** 16])]),
    model('constant-of-shape-huge', [{ opType: 'ConstantOfShape', input: ['s'], output: ['z'] }, { opType: 'Add', input: ['x', 'z'], output: ['y'] }], [i64('s', [1, 2 ** 36])]),
    model('initializer-dims-2^33', [{ opType: 'Add', input: ['x', 'w'], output: ['y'] }], [{ name: 'w', dims: [2 ** 33], dataType: 1, floatData: [1] }]),
    model('input-elem-type-999', [{ opType: 'Relu', input: ['x'], output: ['y'] }], [], vi('x', [1, 1], 999)),
    model('two-producers', [{ opType: 'Relu', input: ['x'], output: ['y'] }, { opType: 'Neg', input: ['x'], output: ['y'] }], []),
  ];
}
