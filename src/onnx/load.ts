/**
 * ONNX loading: decodes a ModelProto with `onnx-proto`, reads initializers, Constant nodes
 * (PaddleOCR keeps its weights there), float16/bfloat16 and packed 4-bit tensors, and external
 * data files confined to the model's folder.
 */
import * as fs from 'fs';
import * as path from 'path';
import { runInWorker } from '../worker';
import { onnx } from './proto/onnx';
import { MpqError } from '../errors';
import { AttrValue, ConstTensor, Graph, isGraph, Node, ValueInfo } from '../graph/ir';
import { dtypeOfOnnx, numel } from '../graph/tensor';
import { checkTensorSize } from '../limits';

type Long = { toNumber(): number } | number | string;
const num = (v: Long | null | undefined): number =>
  v == null ? 0 : typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : v.toNumber();

const bad = (msg: string) => new MpqError('MPQ_BAD_MODEL', msg);

/** Options for {@link loadGraph}. */
export interface LoadOptions {
  /** Folder that external-data paths are resolved against (and confined to). */
  baseDir?: string;
}

export function loadGraphFromFile(file: string): Graph {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new MpqError('MPQ_BAD_MODEL', `cannot read model file '${file}': ${(e as Error).message}`);
  }
  return loadGraph(bytes, { baseDir: path.dirname(path.resolve(file)) });
}

export function loadGraph(bytes: Uint8Array, opts: LoadOptions = {}): Graph {
  if (bytes.length === 0) throw bad('the model file is empty');
  let model: onnx.ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw bad(`not a valid ONNX model (protobuf decoding failed: ${(e as Error).message}); is the file truncated?`);
  }
  const g = model.graph;
  if (!g || !g.node || g.node.length === 0) {
    throw bad('not a valid ONNX model: it has no graph or the graph has no nodes (truncated or not an ONNX file?)');
  }
  let opset = 0;
  for (const o of model.opsetImport ?? []) {
    if (!o.domain || o.domain === 'ai.onnx') opset = num(o.version as Long);
  }
  if (opset === 0) opset = 9;
  if (opset < 7 || opset > 22) throw bad(`opset ${opset} is not supported (supported: 7 to 22)`);

  const ctx: TensorCtx = { baseDir: opts.baseDir, opset, anon: { n: 0 } };
  const body = readBody(g, ctx, new Set());
  if (body.outputs.length === 0) throw bad('the graph declares no outputs');
  return {
    name: g.name ?? '',
    opset,
    irVersion: num(model.irVersion as Long),
    producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
    ...body,
  };
}

/**
 * Nodes, constants, inputs and outputs of a graph or subgraph. `outer` holds the names a
 * subgraph may read from the scopes around it.
 */
function readBody(g: onnx.IGraphProto, ctx: TensorCtx, outer: ReadonlySet<string>): Pick<Graph, 'nodes' | 'inputs' | 'outputs' | 'consts'> {
  const consts = new Map<string, ConstTensor>();
  for (const t of g.initializer ?? []) consts.set(t.name ?? '', readTensor(t, ctx));
  const declared = new Set([...outer, ...(g.input ?? []).map((i) => i.name ?? ''), ...consts.keys()]);
  for (const n of g.node ?? []) for (const o of n.output ?? []) if (o) declared.add(o);

  // every value has exactly one definition: a graph input, an initializer or one node's output
  const definedBy = new Map<string, string>();
  const define = (v: string, by: string) => {
    if (!v) return;
    const prev = definedBy.get(v);
    if (prev !== undefined) throw bad(`value '${v}' is defined twice: by ${prev} and by ${by}; each value must have one producer`);
    definedBy.set(v, by);
  };
  for (const name of consts.keys()) define(name, `initializer '${name}'`);
  for (const i of g.input ?? []) if (!consts.has(i.name ?? '')) define(i.name ?? '', `graph input '${i.name}'`);

  const nodes: Node[] = [];
  for (const n of g.node ?? []) {
    const name = n.name || `${n.opType}_${ctx.anon ? ctx.anon.n++ : 0}`;
    for (const o of n.output ?? []) define(o, `node '${name}' (${n.opType})`);
    const domain = n.domain ?? '';
    if (domain !== '' && domain !== 'ai.onnx') {
      throw new MpqError(
        'MPQ_UNSUPPORTED_OP',
        `op '${domain}.${n.opType}' (node '${name}') is from a custom domain; only the standard ONNX domain is supported`,
      );
    }
    const attrs: Record<string, AttrValue> = {};
    const attrTypes: Record<string, number> = {};
    for (const a of n.attribute ?? []) {
      attrs[a.name ?? ''] = readAttr(a, { ...ctx, outer: declared }, name);
      if (a.type) attrTypes[a.name ?? ''] = a.type;
    }
    if (n.opType === 'Constant') {
      const out = n.output?.[0] ?? '';
      consts.set(out, constantNodeValue(attrs, name));
      continue;
    }
    const node: Node = { name, op: n.opType ?? '', domain, inputs: [...(n.input ?? [])], outputs: [...(n.output ?? [])], attrs, attrTypes };
    const subgraphs = Object.values(attrs).filter(isGraph);
    if (subgraphs.length) {
      // the outer-scope values the subgraphs read become extra (undeclared) inputs
      node.declaredInputs = node.inputs.length;
      const extra = new Set<string>();
      for (const sg of subgraphs) for (const v of outerReads(sg)) if (!node.inputs.includes(v)) extra.add(v);
      node.inputs.push(...extra);
    }
    nodes.push(node);
  }
  const inputs: ValueInfo[] = (g.input ?? []).filter((i) => !consts.has(i.name ?? '')).map((v) => valueInfo(v, 'input'));
  const outputs: ValueInfo[] = (g.output ?? []).map((v) => valueInfo(v, 'output'));
  return { nodes: topoSort(nodes, new Set([...outer, ...inputs.map((i) => i.name), ...consts.keys()])), inputs, outputs, consts };
}

/** Names a subgraph reads that it does not define itself (values of the scopes around it). */
export function outerReads(g: Pick<Graph, 'nodes' | 'inputs' | 'consts' | 'outputs'>): string[] {
  const defined = new Set([...g.inputs.map((i) => i.name), ...g.consts.keys()]);
  for (const n of g.nodes) for (const o of n.outputs) if (o) defined.add(o);
  const out = new Set<string>();
  for (const n of g.nodes) for (const i of n.inputs) if (i && !defined.has(i)) out.add(i);
  for (const o of g.outputs) if (!defined.has(o.name)) out.add(o.name);
  return [...out];
}

/** ONNX element types the tool reads (0 = undefined is taken as float). */
const ELEM_TYPES: Record<number, string> = {
  1: 'float', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 9: 'bool', 10: 'float16',
  11: 'double', 12: 'uint32', 13: 'uint64', 16: 'bfloat16', 21: 'uint4', 22: 'int4',
};
const ELEM_TYPE_NAMES = Object.values(ELEM_TYPES).join(', ');

function valueInfo(v: onnx.IValueInfoProto, kind: 'input' | 'output'): ValueInfo {
  const tt = v.type?.tensorType;
  if (kind === 'input' && v.type && !tt) throw bad(`graph input '${v.name}' is not a tensor (sequences, maps and optionals are not supported)`);
  const onnxType = tt?.elemType || 1;
  if (!ELEM_TYPES[onnxType]) {
    throw bad(`graph ${kind} '${v.name}' has element type ${onnxType}, which is ${onnxType > 23 || onnxType < 0 ? 'not an ONNX tensor type' : 'not supported'} (supported: ${ELEM_TYPE_NAMES})`);
  }
  const dims = tt?.shape?.dim
    ? tt.shape.dim.map((d) => {
        const n = d.dimValue != null ? num(d.dimValue as Long) : 0;
        if (!Number.isSafeInteger(n)) throw bad(`graph ${kind} '${v.name}' declares dimension ${n}, which is not a valid size`);
        return n > 0 ? n : d.dimParam || null;
      })
    : null;
  return { name: v.name ?? '', onnxType, dtype: dtypeOfOnnx(onnxType), dims };
}

/** Orders nodes so that each comes after the producers of its inputs. */
function topoSort(nodes: Node[], available: Set<string>): Node[] {
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => n.outputs.forEach((o) => o && producer.set(o, i)));
  const state = new Uint8Array(nodes.length); // 0 new, 1 visiting, 2 done
  const order: Node[] = [];
  const visit = (start: number) => {
    const stack: [number, number][] = [[start, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [i, k] = top;
      if (k === 0) {
        if (state[i] === 2) { stack.pop(); continue; }
        state[i] = 1;
      }
      const n = nodes[i];
      if (k < n.inputs.length) {
        top[1]++;
        const inp = n.inputs[k];
        if (!inp || available.has(inp)) continue;
        const p = producer.get(inp);
        if (p === undefined) throw bad(`node '${n.name}' (${n.op}) reads '${inp}', which no node, input or initializer defines`);
        if (state[p] === 1) throw bad(`the graph has a cycle through node '${n.name}'`);
        if (state[p] === 0) stack.push([p, 0]);
        continue;
      }
      state[i] = 2;
      order.push(n);
      stack.pop();
    }
  };
  for (let i = 0; i < nodes.length; i++) if (state[i] === 0) visit(i);
  return order;
}

function constantNodeValue(attrs: Record<string, AttrValue>, name: string): ConstTensor {
  const v = attrs.value;
  if (v && typeof v === 'object' && !Array.isArray(v) && !isGraph(v)) return v;
  const f = attrs.value_float, fs_ = attrs.value_floats, i = attrs.value_int, is = attrs.value_ints;
  const mk = (dtype: 'float' | 'int', shape: number[], vals: number[]): ConstTensor => ({
    dtype, shape, data: dtype === 'float' ? Float32Array.from(vals) : Float64Array.from(vals), onnxType: dtype === 'float' ? 1 : 7,
  });
  if (typeof f === 'number') return mk('float', [], [f]);
  if (Array.isArray(fs_)) return mk('float', [fs_.length], fs_ as number[]);
  if (typeof i === 'number') return mk('int', [], [i]);
  if (Array.isArray(is)) return mk('int', [is.length], is as number[]);
  throw new MpqError('MPQ_UNSUPPORTED_OP', `Constant node '${name}' has no tensor, float(s) or int(s) value (sparse and string constants are not supported)`);
}

interface TensorCtx {
  baseDir?: string;
  opset?: number;
  /** Names defined around a subgraph being read. */
  outer?: ReadonlySet<string>;
  /** Counter naming unnamed nodes (per model, subgraphs included). */
  anon?: { n: number };
}

function readAttr(a: onnx.IAttributeProto, ctx: TensorCtx, node: string): AttrValue {
  switch (a.type) {
    case onnx.AttributeProto.AttributeType.FLOAT: return a.f ?? 0;
    case onnx.AttributeProto.AttributeType.INT: return num(a.i as Long);
    case onnx.AttributeProto.AttributeType.STRING: return Buffer.from(a.s ?? []).toString('utf8');
    case onnx.AttributeProto.AttributeType.TENSOR: return a.t ? readTensor(a.t, ctx) : undefined;
    case onnx.AttributeProto.AttributeType.FLOATS: return [...(a.floats ?? [])];
    case onnx.AttributeProto.AttributeType.INTS: return (a.ints ?? []).map((x) => num(x as Long));
    case onnx.AttributeProto.AttributeType.STRINGS: return (a.strings ?? []).map((s) => Buffer.from(s).toString('utf8'));
    case onnx.AttributeProto.AttributeType.GRAPH:
      if (!a.g) throw bad(`node '${node}': subgraph attribute '${a.name}' is empty`);
      return { name: a.g.name ?? '', opset: ctx.opset ?? 0, irVersion: 0, producer: '', ...readBody(a.g, ctx, ctx.outer ?? new Set()) };
    case onnx.AttributeProto.AttributeType.GRAPHS:
      throw new MpqError('MPQ_UNSUPPORTED_OP', `node '${node}' has a list of subgraphs in attribute '${a.name}', which is not supported`);
    default:
      // Old exporters leave `type` unset: infer it from the field that is filled.
      if (a.t) return readTensor(a.t, ctx);
      if (a.ints && a.ints.length) return a.ints.map((x) => num(x as Long));
      if (a.floats && a.floats.length) return [...a.floats];
      if (a.s && a.s.length) return Buffer.from(a.s).toString('utf8');
      if (a.i != null && num(a.i as Long) !== 0) return num(a.i as Long);
      if (a.f) return a.f;
      return undefined;
  }
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const ELEM_BYTES: Record<number, number> = { 1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2 };

/** Reads external data, refusing any path that leaves the model's folder. */
function externalBytes(t: onnx.ITensorProto, ctx: TensorCtx, count: number): Uint8Array {
  const kv = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const loc = kv.get('location');
  if (!loc) throw bad(`tensor '${t.name}' is stored externally but names no location`);
  if (!ctx.baseDir) throw bad(`tensor '${t.name}' uses external data; load the model from a file so its folder is known`);
  const base = fs.realpathSync(ctx.baseDir);
  const target = path.resolve(base, loc);
  const rel = path.relative(base, target);
  if (path.isAbsolute(loc) || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw bad(`tensor '${t.name}': external data path '${loc}' leaves the model's folder; refusing to read it`);
  }
  let real: string;
  try {
    real = fs.realpathSync(target);
  } catch {
    throw bad(`tensor '${t.name}': external data file '${loc}' does not exist next to the model`);
  }
  const relReal = path.relative(base, real);
  if (relReal.startsWith('..') || path.isAbsolute(relReal)) {
    throw bad(`tensor '${t.name}': external data file '${loc}' links outside the model's folder; refusing to read it`);
  }
  const st = fs.statSync(real);
  if (!st.isFile()) throw bad(`tensor '${t.name}': external data location '${loc}' is ${st.isDirectory() ? 'a folder' : 'not a regular file'}, not a data file`);
  const offset = Number(kv.get('offset') ?? 0);
  const size = st.size;
  const type = t.dataType ?? 0;
  const need = type === 21 || type === 22 ? Math.ceil(count / 2) : count * (ELEM_BYTES[type] ?? 0);
  const length = kv.has('length') ? Number(kv.get('length')) : Math.min(size - offset, need);
  if (!(Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= size)) {
    throw bad(`tensor '${t.name}': external data range [${offset}, ${offset + length}) is outside '${loc}' (${size} bytes)`);
  }
  if (length < need) throw bad(`tensor '${t.name}': external data in '${loc}' has ${length} bytes, shape [${t.dims}] needs ${need} (truncated file?)`);
  const buf = Buffer.alloc(need);
  const fd = fs.openSync(real, 'r');
  try {
    if (fs.readSync(fd, buf, 0, need, offset) < need) throw bad(`tensor '${t.name}': external data file '${loc}' changed or is truncated`);
  } finally {
    fs.closeSync(fd);
  }
  return buf;
}

/** Decodes a TensorProto into a {@link ConstTensor}. */
export function readTensor(t: onnx.ITensorProto, ctx: TensorCtx = {}): ConstTensor {
  const shape = (t.dims ?? []).map((d) => num(d as Long));
  const type = t.dataType ?? 0;
  const name = t.name ?? '';
  if (!ELEM_TYPES[type]) throw bad(`tensor '${name}' has data type ${type}, which is not supported (supported: ${ELEM_TYPE_NAMES})`);
  // the size is checked before anything is allocated or read (dims of 2^33 in a tiny file)
  const n = checkTensorSize(shape, `tensor '${name}'`, 'MPQ_BAD_MODEL');
  const dtype = dtypeOfOnnx(type);
  const external = t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
  const raw = external ? externalBytes(t, ctx, n) : t.rawData && t.rawData.length ? t.rawData : null;
  const need = type === 21 || type === 22 ? Math.ceil(n / 2) : n * (ELEM_BYTES[type] ?? 0);
  if (raw && raw.length < need) throw bad(`tensor '${name}' has ${raw.length} bytes, shape [${shape}] needs ${need} (truncated file?)`);
  const out = dtype === 'float' ? new Float32Array(n) : new Float64Array(n);
  if (raw) {
    const dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    if (type === 21 || type === 22) {
      // 4-bit, two per byte, low nibble first
      if (raw.length < Math.ceil(n / 2)) throw bad(`tensor '${name}' has ${raw.length} bytes, shape [${shape}] needs ${Math.ceil(n / 2)}`);
      for (let i = 0; i < n; i++) {
        const b = raw[i >> 1];
        const v = i & 1 ? b >> 4 : b & 15;
        out[i] = type === 22 && v >= 8 ? v - 16 : v;
      }
    } else {
      const eb = ELEM_BYTES[type];
      if (!eb) throw bad(`tensor '${name}' has data type ${type}, which is not supported`);
      if (raw.length < n * eb) throw bad(`tensor '${name}' has ${raw.length} bytes, shape [${shape}] needs ${n * eb} (truncated file?)`);
      for (let i = 0; i < n; i++) {
        const o = i * eb;
        switch (type) {
          case 1: out[i] = dv.getFloat32(o, true); break;
          case 2: case 9: out[i] = dv.getUint8(o); break;
          case 3: out[i] = dv.getInt8(o); break;
          case 4: out[i] = dv.getUint16(o, true); break;
          case 5: out[i] = dv.getInt16(o, true); break;
          case 6: out[i] = dv.getInt32(o, true); break;
          case 7: out[i] = Number(dv.getBigInt64(o, true)); break;
          case 10: out[i] = f16ToF32(dv.getUint16(o, true)); break;
          case 11: out[i] = dv.getFloat64(o, true); break;
          case 12: out[i] = dv.getUint32(o, true); break;
          case 13: out[i] = Number(dv.getBigUint64(o, true)); break;
          case 16: {
            const tmp = new DataView(new ArrayBuffer(4));
            tmp.setUint32(0, dv.getUint16(o, true) << 16, true);
            out[i] = tmp.getFloat32(0, true);
            break;
          }
        }
      }
    }
  } else {
    let src: ArrayLike<number | Long> = [];
    if (type === 1) src = t.floatData ?? [];
    else if (type === 11) src = t.doubleData ?? [];
    else if (type === 7) src = t.int64Data ?? [];
    else if (type === 12 || type === 13) src = t.uint64Data ?? [];
    else if (type === 10 || type === 16) {
      const h = t.int32Data ?? [];
      if (h.length < n) throw bad(`tensor '${name}' has ${h.length} values, shape [${shape}] needs ${n}`);
      for (let i = 0; i < n; i++) out[i] = type === 10 ? f16ToF32(h[i]) : new Float32Array(new Uint32Array([h[i] << 16]).buffer)[0];
      return { dtype, shape, data: out, onnxType: type };
    } else if (type === 21 || type === 22) {
      const packed = t.int32Data ?? [];
      if (packed.length < Math.ceil(n / 2)) throw bad(`tensor '${name}' has ${packed.length} values, shape [${shape}] needs ${Math.ceil(n / 2)} (truncated file?)`);
      for (let i = 0; i < n; i++) {
        const b = packed[i >> 1] ?? 0;
        const v = i & 1 ? (b >> 4) & 15 : b & 15;
        out[i] = type === 22 && v >= 8 ? v - 16 : v;
      }
      return { dtype, shape, data: out, onnxType: type };
    } else src = t.int32Data ?? [];
    if (src.length < n) throw bad(`tensor '${name}' has ${src.length} values, shape [${shape}] needs ${n} (truncated file?)`);
    for (let i = 0; i < n; i++) out[i] = num(src[i] as Long);
  }
  return { dtype, shape, data: out, onnxType: type };
}

/**
 * {@link loadGraphFromFile} or {@link loadGraph} in a worker thread, so that decoding a large
 * model does not hold up the caller's event loop. An abort through `signal` stops the worker
 * and rejects with an AbortError.
 */
export function loadGraphOffThread(src: { file: string } | { bytes: Uint8Array; baseDir?: string }, signal?: AbortSignal): Promise<{ graph: Graph; folded: Graph }> {
  return runInWorker<{ graph: Graph; folded: Graph }>(path.join(__dirname, 'load-worker.js'), src, 'the model load', signal);
}
