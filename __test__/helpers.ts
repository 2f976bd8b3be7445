/** Shared test helpers: paths to ../shared, ONNX Runtime reference runs, comparisons, tiny model building. */
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { promisify } from 'util';
import { onnx } from '../src/onnx/proto/onnx';
import * as ort from 'onnxruntime-node';

export const ROOT = path.resolve(__dirname, '..', '..');
export const SHARED = path.resolve(ROOT, '..', 'shared');
export const HAS_SHARED = fs.existsSync(SHARED);
export const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');
export const MOBILENET = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');

/** Path of a file in ../shared; throws (fails loudly) when shared/ exists but the file is missing. */
export function sharedFile(rel: string): string {
  const p = path.join(SHARED, rel);
  if (!fs.existsSync(p)) throw new Error(`../shared is present but ${rel} is missing`);
  return p;
}

/** Runs the `mpq` command (stdout and stderr are pipes, not terminals); never throws on a non-zero exit. */
export async function mpq(args: string[], cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    // stdout and stderr are pipes here, not terminals: progress comes as plain lines
    const r = await promisify(execFile)(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), ...args], { maxBuffer: 64 << 20, cwd });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

export const SKIP_SHARED_MSG = '../shared/ is absent (fresh clone): skipping tests on the shared models and data';

/** Deterministic pseudo-random data in [-1, 1). */
export function randomData(n: number, seed = 1): Float32Array {
  let s = (seed * 2654435761) >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

export async function ortRun(
  model: string | Uint8Array,
  feeds: Record<string, { shape: number[]; data: Float32Array }>,
  opts: { optimize?: boolean; ints?: string[] } = {},
): Promise<Record<string, { shape: number[]; data: Float32Array }>> {
  const so: ort.InferenceSession.SessionOptions = {
    intraOpNumThreads: 2,
    interOpNumThreads: 1,
    graphOptimizationLevel: opts.optimize === false ? 'disabled' : 'all',
  };
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model, so) : await ort.InferenceSession.create(model, so);
  const f: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) {
    f[k] = opts.ints?.includes(k) ? new ort.Tensor('int64', BigInt64Array.from(v.data, (x) => BigInt(x)), v.shape) : new ort.Tensor('float32', v.data, v.shape);
  }
  const r = await s.run(f);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of Object.entries(r)) {
    const d = v.data as unknown;
    out[k] = { shape: v.dims.slice(), data: d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>, Number) };
  }
  await s.release();
  return out;
}

/** max |a - b| / max |b| (0 when both are all zero). */
export function relMaxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let md = 0, mx = 0;
  for (let i = 0; i < b.length; i++) {
    md = Math.max(md, Math.abs(a[i] - b[i]));
    mx = Math.max(mx, Math.abs(b[i]));
  }
  if (a.length !== b.length) return Infinity;
  return mx === 0 ? md : md / mx;
}

// ---- building small ONNX models for op tests ----

export interface TinyNode {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs?: Record<string, number | string | number[] | { floats: number[] } | { tensor: TinyTensor } | { graph: TinyGraph }>;
}
/** A subgraph (If branch, Loop or Scan body): inputs and outputs with dims (null: unknown), nodes, initializers. */
export interface TinyGraph {
  inputs?: Record<string, (number | string)[] | null>;
  outputs: Record<string, (number | string)[] | null>;
  nodes: TinyNode[];
  inits?: Record<string, TinyTensor>;
  /** ONNX element type of inputs/outputs by name (default float). */
  types?: Record<string, number>;
}
export interface TinyTensor {
  dims: number[];
  /** 1 float, 7 int64, 10 float16, 9 bool, 3 int8, 2 uint8, 22 int4 ... */
  type?: number;
  values: number[];
}

function tensorProto(name: string, t: TinyTensor): onnx.ITensorProto {
  const type = t.type ?? 1;
  const p: onnx.ITensorProto = { name, dims: t.dims, dataType: type };
  if (type === 1) p.floatData = t.values;
  else if (type === 7) p.int64Data = t.values;
  else if (type === 10) {
    const buf = Buffer.alloc(t.values.length * 2);
    t.values.forEach((v, i) => buf.writeUInt16LE(f32ToF16(v), i * 2));
    p.rawData = buf;
  } else p.int32Data = t.values;
  return p;
}

function f32ToF16(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >> 16) & 0x8000;
  const exp = ((x >> 23) & 0xff) - 127 + 15;
  const mant = (x >> 13) & 0x3ff;
  if (exp <= 0) return sign;
  if (exp >= 31) return sign | 0x7c00;
  return sign | (exp << 10) | mant;
}

/** Encodes a small model: float32 inputs/outputs with given shapes, initializers, nodes. */
export function tinyModel(opts: {
  inputs: Record<string, (number | string)[]>;
  outputs: Record<string, (number | string)[] | null>;
  nodes: TinyNode[];
  inits?: Record<string, TinyTensor>;
  opset?: number;
  outputTypes?: Record<string, number>;
  /** ONNX element types of inputs (default 1, float; 7 is int64). */
  inputTypes?: Record<string, number>;
}): Uint8Array {
  const vi = (name: string, dims: (number | string)[] | null, type = 1): onnx.IValueInfoProto => ({
    name,
    type: { tensorType: { elemType: type, shape: dims ? { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } : undefined } },
  });
  let n = 0;
  const nodes = (ns: TinyNode[]): onnx.INodeProto[] =>
    ns.map((nd) => ({
      name: `${nd.op}_${n++}`,
      opType: nd.op,
      input: nd.inputs,
      output: nd.outputs,
      attribute: Object.entries(nd.attrs ?? {}).map(([k, v]) => attr(k, v)),
    }));
  const graph = (g: TinyGraph, name: string): onnx.IGraphProto => ({
    name,
    node: nodes(g.nodes),
    input: Object.entries(g.inputs ?? {}).map(([k, d]) => vi(k, d, g.types?.[k] ?? 1)),
    output: Object.entries(g.outputs).map(([k, d]) => vi(k, d, g.types?.[k] ?? 1)),
    initializer: Object.entries(g.inits ?? {}).map(([k, t]) => tensorProto(k, t)),
  });
  const attr = (name: string, v: NonNullable<TinyNode['attrs']>[string]): onnx.IAttributeProto => {
    const T = onnx.AttributeProto.AttributeType;
    if (typeof v === 'number') return Number.isInteger(v) ? { name, type: T.INT, i: v } : { name, type: T.FLOAT, f: v };
    if (typeof v === 'string') return { name, type: T.STRING, s: Buffer.from(v) };
    if (Array.isArray(v)) return { name, type: T.INTS, ints: v };
    if ('floats' in v) return { name, type: T.FLOATS, floats: v.floats };
    if ('graph' in v) return { name, type: T.GRAPH, g: graph(v.graph, name) };
    return { name, type: T.TENSOR, t: tensorProto('', v.tensor) };
  };
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: opts.opset ?? 13 }],
    producerName: 'onnx-mpq-tests',
    graph: {
      name: 'tiny',
      node: nodes(opts.nodes),
      input: Object.entries(opts.inputs).map(([k, d]) => vi(k, d, opts.inputTypes?.[k] ?? 1)),
      output: Object.entries(opts.outputs).map(([k, d]) => vi(k, d, opts.outputTypes?.[k] ?? 1)),
      initializer: Object.entries(opts.inits ?? {}).map(([k, t]) => tensorProto(k, t)),
    },
  };
  return onnx.ModelProto.encode(model).finish();
}
