/**
 * Builds the QDQ graph: weights stored as integers feeding DequantizeLinear, and a
 * QuantizeLinear -> DequantizeLinear pair on every quantized activation. The same graph is
 * run by the engine (simulation) and written as the exported model, so both see the same numbers.
 */
import { MpqError } from '../errors';
import { ConstTensor, Graph, Node } from '../graph/ir';
import { Encodings } from './encodings';
import { qrange, quantize } from './scheme';

/** ONNX element type of a quantized integer tensor of `bits` bits. */
export function intType(bits: number, signed: boolean): number {
  if (bits <= 4) return signed ? 22 : 21;
  if (bits <= 8) return signed ? 3 : 2;
  return signed ? 5 : 4;
}

export function buildQdqGraph(g: Graph, enc: Encodings): Graph {
  const consts = new Map(g.consts);
  const outputs = new Set(g.outputs.map((o) => o.name));
  const rename = new Map<string, string>(); // value read by consumers -> value they read instead
  const front: Node[] = [];
  const after = new Map<string, Node[]>(); // value -> nodes to insert after its producer
  const biasFix = new Map<string, Float32Array>(); // weight -> bias correction of its node

  for (const [w, e] of enc.weights) {
    const t = g.consts.get(w);
    if (!t) continue;
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
    consts.set(`${w}_quantized`, { dtype: 'int', shape: t.shape, data: q, onnxType: type });
    consts.set(`${w}_scale`, { dtype: 'float', shape: sShape, data: scales, onnxType: 1 });
    consts.set(`${w}_zero_point`, { dtype: 'int', shape: sShape, data: new Float64Array(scales.length), onnxType: type });
    front.push({
      name: `${w}_DequantizeLinear`, op: 'DequantizeLinear', domain: '',
      inputs: [`${w}_quantized`, `${w}_scale`, `${w}_zero_point`], outputs: [`${w}_dequantized`],
      attrs: e.axis === undefined ? {} : { axis },
    });
    rename.set(w, `${w}_dequantized`);
  }

  const producerRename = new Map<string, string>(); // graph output produced under a new name
  for (const [v, e] of enc.activations) {
    const x = e.entries[0];
    const type = intType(x.bitwidth, false);
    const scale: ConstTensor = { dtype: 'float', shape: [], data: Float32Array.of(x.scale), onnxType: 1 };
    const zp: ConstTensor = { dtype: 'int', shape: [], data: Float64Array.of(-x.offset), onnxType: type };
    consts.set(`${v}_scale`, scale);
    consts.set(`${v}_zero_point`, zp);
    const isOutput = outputs.has(v);
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
    if (g.inputs.some((i) => i.name === v)) front.push(...pair);
    else after.set(v, pair);
  }

  const nodes: Node[] = [...front];
  for (const n of g.nodes) {
    const fix = biasFix.get(n.inputs[1]);
    const inputs = fix ? correctBias(n, fix, consts) : n.inputs;
    const m: Node = {
      ...n,
      inputs: inputs.map((i) => rename.get(i) ?? i),
      outputs: n.outputs.map((o) => producerRename.get(o) ?? o),
    };
    nodes.push(m);
    for (const o of n.outputs) {
      const ins = after.get(o);
      if (ins) nodes.push(...ins);
    }
  }
  return { ...g, nodes, consts };
}

/**
 * Bias correction: the inputs of weighted node `n` with `delta` (per output channel) added to
 * its bias, as a new constant (a bias input is added when the node has none). MatMul has no
 * bias input and is left as it is.
 */
function correctBias(n: Node, delta: Float32Array, consts: Map<string, ConstTensor>): string[] {
  if (!['Conv', 'ConvTranspose', 'Gemm'].includes(n.op)) return n.inputs;
  const name = `${n.name || n.inputs[1]}::bias_corrected`;
  const old = n.inputs[2] ? consts.get(n.inputs[2]) : undefined;
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
