/** Writes a graph IR as an ONNX model (used for the QDQ export). */
import { onnx } from './proto/onnx';
import { AttrValue, ConstTensor, Graph, isGraph, ValueInfo } from '../graph/ir';

const FLOAT_ATTRS = new Set([
  'alpha', 'beta', 'epsilon', 'gamma', 'min', 'max', 'value', 'ratio', 'bias', 'lambd', 'cubic_coeff_a', 'extrapolation_value', 'scale', 'momentum',
]);
const T = onnx.AttributeProto.AttributeType;

function attrProto(name: string, v: AttrValue, type?: number): onnx.IAttributeProto | null {
  if (v === undefined) return null;
  if (typeof v === 'number') {
    const isFloat = type === T.FLOAT || (type === undefined && (FLOAT_ATTRS.has(name) || !Number.isInteger(v)));
    return isFloat ? { name, type: T.FLOAT, f: v } : { name, type: T.INT, i: v };
  }
  if (typeof v === 'string') return { name, type: T.STRING, s: Buffer.from(v, 'utf8') };
  if (Array.isArray(v)) {
    if (v.length > 0 && typeof v[0] === 'string') return { name, type: T.STRINGS, strings: (v as string[]).map((s) => Buffer.from(s, 'utf8')) };
    const isFloat = type === T.FLOATS || (type === undefined && (v as number[]).some((x) => !Number.isInteger(x)));
    return isFloat ? { name, type: T.FLOATS, floats: v as number[] } : { name, type: T.INTS, ints: v as number[] };
  }
  if (isGraph(v)) return { name, type: T.GRAPH, g: graphProto(v) };
  return { name, type: T.TENSOR, t: tensorProto('', v) };
}

/** Encodes a constant as raw little-endian data of its ONNX type (4-bit types packed, low nibble first). */
export function tensorProto(name: string, t: ConstTensor): onnx.ITensorProto {
  const n = t.data.length;
  const type = t.onnxType;
  let raw: Buffer;
  switch (type) {
    case 1: raw = Buffer.from(Float32Array.from(t.data).buffer); break;
    case 2: case 9: raw = Buffer.from(Uint8Array.from(t.data)); break;
    case 3: raw = Buffer.from(Int8Array.from(t.data).buffer); break;
    case 4: raw = Buffer.from(Uint16Array.from(t.data).buffer); break;
    case 5: raw = Buffer.from(Int16Array.from(t.data).buffer); break;
    case 6: raw = Buffer.from(Int32Array.from(t.data).buffer); break;
    case 7: raw = Buffer.from(BigInt64Array.from(Array.from(t.data, (x) => BigInt(Math.trunc(Math.max(Math.min(x, 9.2e18), -9.2e18))))).buffer); break;
    case 11: raw = Buffer.from(Float64Array.from(t.data).buffer); break;
    case 21: case 22: {
      raw = Buffer.alloc(Math.ceil(n / 2));
      for (let i = 0; i < n; i++) raw[i >> 1] |= (t.data[i] & 15) << ((i & 1) * 4);
      break;
    }
    default: {
      // float16 and other float types read as float32 are written back as float32
      raw = Buffer.from(Float32Array.from(t.data).buffer);
      return { name, dims: t.shape, dataType: 1, rawData: raw };
    }
  }
  return { name, dims: t.shape, dataType: type, rawData: raw };
}

function valueInfo(v: ValueInfo): onnx.IValueInfoProto {
  return {
    name: v.name,
    type: {
      tensorType: {
        elemType: v.onnxType,
        shape: v.dims ? { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : d ? { dimParam: d } : {})) } : undefined,
      },
    },
  };
}

/** The IR version that goes with an opset (ONNX's versioning table). */
function irVersionFor(opset: number): number {
  if (opset >= 21) return 10;
  if (opset >= 19) return 9;
  if (opset >= 15) return 8;
  if (opset >= 13) return 7;
  if (opset >= 9) return 4;
  return 3;
}

/** A graph or subgraph as a GraphProto: initializers that no node (or nested subgraph) reads are left out. */
function graphProto(g: Graph): onnx.IGraphProto {
  // a node's inputs include the outer-scope values its subgraphs read, so `used` sees them
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  for (const o of g.outputs) used.add(o.name);
  return {
    name: g.name || 'mpq',
    node: g.nodes.map((n) => ({
      name: n.name,
      opType: n.op,
      domain: n.domain || undefined,
      input: n.declaredInputs === undefined ? n.inputs : n.inputs.slice(0, n.declaredInputs),
      output: n.outputs,
      attribute: Object.entries(n.attrs)
        .filter(([k]) => !k.startsWith('mpq_'))
        .map(([k, v]) => attrProto(k, v, n.attrTypes?.[k]))
        .filter((a): a is onnx.IAttributeProto => a !== null),
    })),
    input: g.inputs.map(valueInfo),
    output: g.outputs.map(valueInfo),
    initializer: [...g.consts].filter(([k]) => used.has(k)).map(([k, t]) => tensorProto(k, t)),
  };
}

export function saveGraph(g: Graph, producer = 'onnx-mpq'): Uint8Array {
  const model: onnx.IModelProto = {
    irVersion: irVersionFor(g.opset),
    producerName: producer,
    opsetImport: [{ domain: '', version: g.opset }],
    graph: graphProto(g),
  };
  return onnx.ModelProto.encode(model).finish();
}
