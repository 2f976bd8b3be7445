/**
 * Builds the QDQ graph: weights stored as integers feeding DequantizeLinear, and a
 * QuantizeLinear -> DequantizeLinear pair on every quantized activation. The exported model
 * computes what the simulation plan computes, so both see the same numbers.
 */
import { MpqError } from '../errors';
import { ConstTensor, Graph, isGraph, Node } from '../graph/ir';
import { outerReads } from '../onnx/load';
import { Encodings, TensorEncoding } from './encodings';
import { PASS_THROUGH } from './placement';
import { qrange, quantize } from './scheme';

/** ONNX element type of a quantized integer tensor of `bits` bits. */
export function intType(bits: number, signed: boolean): number {
  if (bits <= 4) return signed ? 22 : 21;
  if (bits <= 8) return signed ? 3 : 2;
  return signed ? 5 : 4;
}

/**
 * The QDQ graph of `g` under `enc`. Quantizers of values inside subgraphs (the branch of an
 * If that the calibration data ran, see taken-branches.ts) are written inside that subgraph:
 * an activation's pair after its producer, in the producer's scope (a subgraph output is
 * produced under a new name and dequantized into its own); a weight's DequantizeLinear and
 * integers in the scope of the nodes that read it (the scope that holds the weight when they
 * are in several). Every reader, in any scope, reads the dequantized value; control-flow
 * nodes then read the outer-scope values their rebuilt subgraphs read. ONNX value names are
 * unique across a model's scopes, so one rename serves all of them.
 */
export function buildQdqGraph(g: Graph, enc: Encodings): Graph {
  const scopes = scopesOf(g);
  const scopeOf = (v: string): Scope | undefined => scopes.find((sc) => sc.defines.has(v));
  const rename = new Map<string, string>(); // value read by consumers -> value they read instead
  const producerRename = new Map<string, string>(); // subgraph or graph output produced under a new name
  const biasFix = new Map<string, Float32Array>(); // weight -> bias correction of its node

  for (const [w, e] of enc.weights) {
    const home = scopes.find((sc) => sc.graph.consts.has(w));
    if (!home) continue;
    const t = home.graph.consts.get(w)!;
    const readers = scopes.filter((sc) => sc.reads.has(w));
    const sc = readers.length === 1 ? readers[0] : home;
    const bits = e.entries[0].bitwidth;
    const { qmin, qmax } = qrange(e.rangeBits ?? bits, true);
    const axis = e.axis ?? 0;
    const ch = e.axis === undefined ? 1 : t.shape[axis];
    const inner = e.axis === undefined ? t.data.length : t.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
    const scales = Float32Array.from(e.entries.map((x) => x.scale));
    const q = new Float64Array(t.data.length);
    if (e.quantized && e.quantized.length !== q.length) {
      throw new MpqError('MPQ_BAD_INPUT', `the rounded integers of '${w}' have ${e.quantized.length} values, the weight has ${q.length}: were the encodings made for another model?`);
    }
    if (e.quantized) {
      for (let i = 0; i < q.length; i++) q[i] = Math.min(qmax, Math.max(qmin, e.quantized[i]));
    } else {
      // channel by channel run (no index arithmetic per value: this runs over every weight)
      for (let start = 0, c = 0; start < q.length; start += inner, c = ch === 1 ? 0 : (c + 1) % ch) {
        const sc = scales[c], end = Math.min(q.length, start + inner);
        for (let i = start; i < end; i++) q[i] = quantize(t.data[i], sc, 0, qmin, qmax);
      }
    }
    if (e.biasDelta) biasFix.set(w, e.biasDelta);
    const type = intType(bits, true);
    const sShape = e.axis === undefined ? [] : [ch];
    sc.consts.set(`${w}_quantized`, { dtype: 'int', shape: t.shape, data: q, onnxType: type });
    sc.consts.set(`${w}_scale`, { dtype: 'float', shape: sShape, data: scales, onnxType: 1 });
    sc.consts.set(`${w}_zero_point`, { dtype: 'int', shape: sShape, data: new Float64Array(scales.length), onnxType: type });
    sc.front.push({
      name: `${w}_DequantizeLinear`, op: 'DequantizeLinear', domain: '',
      inputs: [`${w}_quantized`, `${w}_scale`, `${w}_zero_point`], outputs: [`${w}_dequantized`],
      attrs: e.axis === undefined ? {} : { axis },
    });
    rename.set(w, `${w}_dequantized`);
  }

  for (const [v, e] of [...enc.activations, ...carriedIntoSubgraphs(scopes, enc)]) {
    const sc = scopeOf(v);
    if (!sc) continue;
    const x = e.entries[0];
    const type = intType(x.bitwidth, false);
    const scale: ConstTensor = { dtype: 'float', shape: [], data: Float32Array.of(x.scale), onnxType: 1 };
    const zp: ConstTensor = { dtype: 'int', shape: [], data: Float64Array.of(-x.offset), onnxType: type };
    sc.consts.set(`${v}_scale`, scale);
    sc.consts.set(`${v}_zero_point`, zp);
    const isOutput = sc.graph.outputs.some((o) => o.name === v);
    const src = isOutput ? `${v}_float` : v;
    const dst = isOutput ? v : `${v}_dequantized`;
    if (isOutput) producerRename.set(v, src);
    else rename.set(v, dst);
    const pair: Node[] = [
      {
        name: `${v}_QuantizeLinear`, op: 'QuantizeLinear', domain: '', inputs: [src, `${v}_scale`, `${v}_zero_point`], outputs: [`${v}_quantized`],
        // widths without an ONNX type are simulated in a wider container, clamped to their own range
        attrs: [4, 8, 16].includes(x.bitwidth) ? {} : { mpq_qmin: 0, mpq_qmax: 2 ** x.bitwidth - 1 },
      },
      { name: `${v}_DequantizeLinear`, op: 'DequantizeLinear', domain: '', inputs: [`${v}_quantized`, `${v}_scale`, `${v}_zero_point`], outputs: [dst], attrs: {} },
    ];
    if (sc.graph.inputs.some((i) => i.name === v)) sc.front.push(...pair);
    else sc.after.set(v, pair);
  }

  const rebuild = (sc: Scope): Graph => {
    const nodes: Node[] = [...sc.front];
    for (const n of sc.graph.nodes) {
      const fix = biasFix.get(n.inputs[1]);
      const inputs = fix ? correctBias(n, fix, (k) => scopes.find((x) => x.consts.has(k))?.consts.get(k), sc.consts) : n.inputs;
      const attrs = Object.fromEntries(Object.entries(n.attrs).map(([k, a]) => [k, isGraph(a) ? rebuild(scopes.find((x) => x.graph === a)!) : a]));
      const declared = n.declaredInputs ?? inputs.length;
      const m: Node = {
        ...n,
        attrs,
        inputs: inputs.slice(0, declared).map((i) => rename.get(i) ?? i),
        outputs: n.outputs.map((o) => producerRename.get(o) ?? o),
      };
      if (n.declaredInputs !== undefined) {
        // the outer-scope values the rebuilt subgraphs read (a weight's integers may now be inside)
        for (const sg of Object.values(attrs).filter(isGraph)) for (const v of outerReads(sg)) if (!m.inputs.includes(v)) m.inputs.push(v);
      }
      nodes.push(m);
      for (const o of n.outputs) {
        const ins = sc.after.get(o);
        if (ins) nodes.push(...ins);
      }
    }
    return { ...sc.graph, nodes, consts: sc.consts };
  };
  return rebuild(scopes[0]);
}

/**
 * Values that subgraphs read from outside (implicit inputs of If, Loop, Scan) and that carry a
 * quantized value's encoding through data movement (a Transpose of a dequantized value), each
 * with that encoding: they get a QuantizeLinear/DequantizeLinear pair of their own. Their
 * values are on that grid already, so the pair changes no number (round(k s / s) = k); it
 * keeps onnxruntime's optimizer (1.30, default options) from aborting the process when it
 * moves a DequantizeLinear through the Transpose to an If that reads its output implicitly
 * (it indexes the If's declared inputs with the implicit input's position). Pad is left out:
 * its constant need not be on the grid.
 */
function carriedIntoSubgraphs(scopes: Scope[], enc: Encodings): [string, TensorEncoding][] {
  const carried = new Map<string, string>([...enc.activations.keys()].map((v) => [v, v]));
  const out = new Map<string, TensorEncoding>();
  for (const sc of scopes) {
    for (const n of sc.graph.nodes) {
      const from = carried.get(n.inputs[0]);
      if (from && PASS_THROUGH.has(n.op) && n.op !== 'Pad') for (const o of n.outputs) if (o && !carried.has(o)) carried.set(o, from);
      if (n.declaredInputs === undefined) continue;
      for (const v of n.inputs.slice(n.declaredInputs)) {
        const e = carried.get(v);
        if (e && e !== v) out.set(v, enc.activations.get(e)!);
      }
    }
  }
  return [...out];
}

/** A graph or subgraph being rebuilt: what it defines and reads, and the QDQ nodes it gets. */
interface Scope {
  graph: Graph;
  consts: Map<string, ConstTensor>;
  /** Values its inputs, constants and nodes define. */
  defines: Set<string>;
  /** Values its nodes read as declared inputs (not through their subgraphs). */
  reads: Set<string>;
  front: Node[];
  /** Value -> nodes to insert after its producer. */
  after: Map<string, Node[]>;
}

/** `g` and its subgraphs, `g` first. */
function scopesOf(g: Graph, out: Scope[] = []): Scope[] {
  const defines = new Set([...g.inputs.map((i) => i.name), ...g.consts.keys(), ...g.nodes.flatMap((n) => n.outputs.filter(Boolean))]);
  const reads = new Set(g.nodes.flatMap((n) => n.inputs.slice(0, n.declaredInputs ?? n.inputs.length).filter(Boolean)));
  out.push({ graph: g, consts: new Map(g.consts), defines, reads, front: [], after: new Map() });
  for (const n of g.nodes) for (const a of Object.values(n.attrs)) if (isGraph(a)) scopesOf(a, out);
  return out;
}

/**
 * Bias correction: the inputs of weighted node `n` with `delta` (per output channel) added to
 * its bias, as a new constant (a bias input is added when the node has none). MatMul has no
 * bias input and is left as it is. `constOf` finds a constant in any scope; the new one goes
 * into `consts`, those of the node's scope.
 */
function correctBias(n: Node, delta: Float32Array, constOf: (name: string) => ConstTensor | undefined, consts: Map<string, ConstTensor>): string[] {
  if (!['Conv', 'ConvTranspose', 'Gemm'].includes(n.op)) return n.inputs;
  const name = `${n.name || n.inputs[1]}::bias_corrected`;
  const old = n.inputs[2] ? constOf(n.inputs[2]) : undefined;
  if (n.inputs[2] && !old) return n.inputs; // bias computed at run time: leave it
  const beta = n.op === 'Gemm' ? Number(n.attrs.beta ?? 1) : 1;
  if (!(beta !== 0 && Number.isFinite(beta))) return n.inputs;
  const data = new Float32Array(delta.length);
  if (old) {
    const len = old.data.length;
    if (old.dtype !== 'float' || (len !== delta.length && len !== 1)) return n.inputs;
    for (let i = 0; i < data.length; i++) data[i] = old.data[len === 1 ? 0 : i];
  }
  for (let i = 0; i < data.length; i++) data[i] += delta[i] / beta;
  const shape = old && old.data.length === delta.length ? old.shape : [delta.length];
  consts.set(name, { dtype: 'float', shape, data, onnxType: 1 });
  const inputs = [...n.inputs];
  while (inputs.length < 2) inputs.push('');
  inputs[2] = name;
  return inputs;
}
