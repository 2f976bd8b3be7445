/**
 * Where quantizers go (DESIGN.md section 3): a weight quantizer on each constant weight of
 * Conv, ConvTranspose, Gemm and MatMul; an activation quantizer on each graph input and on
 * the output of every op that computes new values, after fusing the patterns hardware runs
 * as one kernel; data-movement ops pass their input's encoding through.
 */
import { Graph, Node } from '../graph/ir';

/** Ops whose output has the encoding of their (first) input. */
export const PASS_THROUGH = new Set([
  'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Slice', 'Split', 'Pad', 'Identity', 'Dropout', 'MaxPool',
  'Expand', 'Tile', 'GlobalMaxPool', 'Gather',
]);

/** Ops that absorb a following activation into one kernel. */
const FUSES_ACTIVATION = new Set(['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'Add', 'BatchNormalization']);
const ACTIVATIONS = new Set(['Relu', 'Clip', 'LeakyRelu', 'HardSwish', 'HardSigmoid', 'Sigmoid', 'Tanh', 'PRelu']);
/** Ops with weights (input 1; LSTM and GRU also their recurrent weights R, input 2). */
export const WEIGHTED = new Set(['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'LSTM', 'GRU']);
/** Ops producing shape-like or index values, never quantized. */
const NON_NUMERIC = new Set(['Shape', 'Size', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'ConstantOfShape', 'Range', 'Cast', 'QuantizeLinear', 'DequantizeLinear']);

export interface WeightQuantizer {
  /** Name of the weight constant. */
  tensor: string;
  node: string;
  op: string;
  /** Per-channel axis of the weight (output channels). */
  axis: number;
}

export interface ActQuantizer {
  /** Name of the quantized value. */
  tensor: string;
  /** Node that produces it ('' for a graph input). */
  producer: string;
  /** Compute nodes fused into this quantizer's kernel (producer chain). */
  fused: string[];
}

export interface Placement {
  weights: WeightQuantizer[];
  activations: ActQuantizer[];
  /** For each float value: the activation quantizer whose encoding it carries (itself or through data movement). */
  encodingOf: Map<string, string>;
}

function weightAxis(n: Node, wShape: number[]): number {
  switch (n.op) {
    case 'Conv': return 0;
    case 'ConvTranspose': return 1;
    case 'Gemm': return n.attrs.transB === 1 ? 0 : 1;
    case 'LSTM': case 'GRU': return 1; // [dirs, gates x hidden, input]: per gate row
    default: return wShape.length - 1; // MatMul [.., K, N]: per column
  }
}

/**
 * Computes the placement on `g` (BatchNormalization already folded). `isFloat(value)` says
 * whether a value carries float data (from shape inference); non-float values get no quantizer.
 */
export function placeQuantizers(g: Graph, isFloat: (v: string) => boolean): Placement {
  const consumers = new Map<string, Node[]>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const outputs = new Set(g.outputs.map((o) => o.name));

  const weights: WeightQuantizer[] = [];
  for (const n of g.nodes) {
    if (!WEIGHTED.has(n.op)) continue;
    const w = g.consts.get(n.inputs[1]);
    if (!w || w.dtype !== 'float' || w.shape.length < 2) continue;
    weights.push({ tensor: n.inputs[1], node: n.name, op: n.op, axis: weightAxis(n, w.shape) });
    const r = n.op === 'LSTM' || n.op === 'GRU' ? g.consts.get(n.inputs[2]) : undefined;
    if (r && r.dtype === 'float' && r.shape.length === 3) weights.push({ tensor: n.inputs[2], node: n.name, op: n.op, axis: 1 });
  }

  const activations: ActQuantizer[] = [];
  const encodingOf = new Map<string, string>();
  for (const i of g.inputs) {
    if (i.dtype !== 'float') continue;
    activations.push({ tensor: i.name, producer: '', fused: [] });
    encodingOf.set(i.name, i.name);
  }
  const fusedAway = new Set<string>(); // values inside a fused kernel: no quantizer
  for (const n of g.nodes) {
    const out = n.outputs[0];
    if (!out || NON_NUMERIC.has(n.op) || !isFloat(out)) continue;
    if (PASS_THROUGH.has(n.op)) {
      const src = encodingOf.get(n.inputs[0]);
      for (const o of n.outputs) if (o && src) encodingOf.set(o, src);
      if (src) continue;
    }
    // Fuse: this op's output feeds exactly one activation and nothing else.
    const cs = consumers.get(out) ?? [];
    if (FUSES_ACTIVATION.has(n.op) && cs.length === 1 && ACTIVATIONS.has(cs[0].op) && cs[0].inputs[0] === out && !outputs.has(out)) {
      fusedAway.add(out);
      continue;
    }
    const fused: string[] = [];
    if (ACTIVATIONS.has(n.op) && fusedAway.has(n.inputs[0])) {
      const p = g.nodes.find((m) => m.outputs[0] === n.inputs[0]);
      if (p) fused.push(p.name);
    }
    for (const o of n.outputs) {
      // Graph outputs stay float: the caller's code reads them as the float model's, and
      // quantizing a softmax makes ties of its argmax.
      if (!o || !isFloat(o) || outputs.has(o)) continue;
      activations.push({ tensor: o, producer: n.name, fused: [...fused, n.name] });
      encodingOf.set(o, o);
    }
  }
  return { weights, activations, encodingOf };
}
