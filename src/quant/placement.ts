/**
 * Where quantizers go (DESIGN.md section 3): a weight quantizer on each constant weight of
 * Conv, ConvTranspose, Gemm and MatMul, and on the embedding table behind a Gather; an
 * activation quantizer on each graph input and on the output of every kernel, after fusing
 * what hardware runs as one kernel; data-movement ops pass their input's encoding through.
 *
 * Kernels. Elementwise and row-wise ops (unary math, binary arithmetic with constants,
 * ReduceMean, Softmax, LayerNormalization) that read one activation X, directly or through
 * each other, form one region rooted at X: a decomposed LayerNorm (ReduceMean, Sub, Pow,
 * ReduceMean, Add, Sqrt, Div, Mul, Add), GELU in its Erf or Tanh form, HardSwish as
 * Add/Clip/Mul/Div, Swish as Sigmoid/Mul, a bias Add or a scale after MatMul. Only the
 * values of a region that something outside it reads get a quantizer (one output
 * quantizer per LayerNorm, GELU, ...), never its intermediate values. A region with no
 * row-wise op (an activation function or an epilogue) also absorbs the Conv/Gemm/MatMul (or
 * the multi-input Add) that produces X when it is X's only reader, as a fused epilogue does.
 *
 * Masks. Float values computed only from integer inputs and constants (an additive
 * attention mask made from `attention_mask`) and values that carry a large-magnitude
 * sentinel (-inf or -3.4e38 fills) get no quantizer: quantizing them wastes the whole
 * range on the sentinel (a scale of 1e36). They are listed in {@link Placement.skipped}
 * with the reason.
 *
 * Log inputs. Values that a Log reads through elementwise, data-movement and linear ops with
 * constant weights (an audio front-end's STFT, power spectrum, magnitude and mel filterbank)
 * stay float too: their small values carry what the Log spreads out, and a uniform grid rounds
 * them to zero or one step. Graph inputs keep their quantizer; the weights keep theirs.
 * Measured on calibration data (synthetic audio): silero VAD's speech probability off float by
 * up to 0.23 at W8A8 with them quantized, 0.09 without; openWakeWord's melspectrogram output
 * SQNR 8.0 dB at W8A8 and 16.0 dB at W16A16 with them, 28.3 and 79.6 dB without.
 */
import { ConstTensor, Graph, Node } from '../graph/ir';

/** Ops whose output has the encoding of their (first) input. */
export const PASS_THROUGH = new Set([
  'Reshape', 'Flatten', 'Transpose', 'Squeeze', 'Unsqueeze', 'Slice', 'Split', 'Pad', 'Identity', 'Dropout', 'MaxPool',
  'Expand', 'Tile', 'GlobalMaxPool', 'Gather',
]);

/** Ops with weights (input 1; LSTM and GRU also their recurrent weights R, input 2). */
export const WEIGHTED = new Set(['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'LSTM', 'GRU']);
/** Ops producing shape-like or index values, never quantized. */
const NON_NUMERIC = new Set(['Shape', 'Size', 'Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual', 'Not', 'And', 'Or', 'Xor', 'ConstantOfShape', 'Range', 'Cast', 'QuantizeLinear', 'DequantizeLinear']);

/** Elementwise ops: with their constant inputs, a function of their activation inputs value by value. */
const ELEMENTWISE = new Set([
  'Relu', 'Clip', 'LeakyRelu', 'HardSwish', 'HardSigmoid', 'Sigmoid', 'Tanh', 'Erf', 'Exp', 'Log', 'Sqrt', 'Reciprocal',
  'Neg', 'Abs', 'Softplus', 'Softsign', 'Elu', 'Selu', 'Celu', 'Mish', 'Gelu', 'ThresholdedRelu', 'PRelu',
  'Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min', 'Sum', 'Mean', 'Where', 'BatchNormalization',
]);
/** Row-wise ops: normalise or reduce along an axis (the parts of LayerNorm and Softmax kernels). */
const ROW_WISE = new Set(['ReduceMean', 'Softmax', 'LogSoftmax', 'LayerNormalization', 'InstanceNormalization', 'GroupNormalization']);
/** Producers a following activation-only region fuses with (their epilogue). */
const FUSABLE = new Set(['Conv', 'ConvTranspose', 'Gemm', 'MatMul', 'BatchNormalization']);
/** Ops through which a sentinel (-inf, -3.4e38) reaches their output unchanged in magnitude. */
const CARRIES_SENTINEL = new Set([...PASS_THROUGH, 'Add', 'Sub', 'Mul', 'Div', 'Where', 'Max', 'Min', 'Concat', 'Neg', 'Sum']);

/** Magnitude from which a constant is a sentinel, not a value (float32 max is 3.4e38). */
export const SENTINEL_MAGNITUDE = 1e30;

export interface WeightQuantizer {
  /** Name of the weight constant. */
  tensor: string;
  node: string;
  op: string;
  /** Per-channel axis of the weight (output channels; rows of an embedding table). */
  axis: number;
}

export interface ActQuantizer {
  /** Name of the quantized value. */
  tensor: string;
  /** Node that produces it ('' for a graph input). */
  producer: string;
  /** Nodes fused into this quantizer's kernel (the region computing it, and an absorbed producer). */
  fused: string[];
}

/** A float value that would be a quantizer position but is left float, and why. */
export interface SkippedValue {
  tensor: string;
  reason: string;
}

export interface Placement {
  weights: WeightQuantizer[];
  activations: ActQuantizer[];
  /** For each float value: the activation quantizer whose encoding it carries (itself or through data movement). */
  encodingOf: Map<string, string>;
  /** Values left unquantized on purpose (masks, sentinels), with the reason; for the report. */
  skipped: SkippedValue[];
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

/** Is `n` a lookup in a float constant table (an embedding): `Gather(table, ids)` on axis 0? */
function isEmbedding(g: Graph, n: Node): boolean {
  if (n.op !== 'Gather' || ((n.attrs.axis as number | undefined) ?? 0) !== 0) return false;
  const t = g.consts.get(n.inputs[0]);
  return !!t && t.dtype === 'float' && t.shape.length === 2 && !g.consts.has(n.inputs[1]);
}

/** Does the constant `v` (or the fill of a ConstantOfShape) hold a sentinel? */
function sentinelConst(g: Graph, v: string, producer: Node | undefined): number | undefined {
  const t = g.consts.get(v) ?? (producer?.op === 'ConstantOfShape' ? (producer.attrs.value as ConstTensor | undefined) : undefined);
  if (!t || t.dtype !== 'float') return undefined;
  for (const x of t.data) if (!Number.isFinite(x) || Math.abs(x) >= SENTINEL_MAGNITUDE) return x;
  return undefined;
}

/**
 * Computes the placement on `g` (BatchNormalization already folded). `isFloat(value)` says
 * whether a value carries float data that depends on the inputs (from shape inference:
 * folded constants and integer values are not); other values get no quantizer.
 */
export function placeQuantizers(g: Graph, isFloat: (v: string) => boolean): Placement {
  const consumers = new Map<string, Node[]>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) consumers.set(i, [...(consumers.get(i) ?? []), n]);
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) if (o) producer.set(o, n);
  const outputs = new Set(g.outputs.map((o) => o.name));
  const floatInputs = new Set(g.inputs.filter((i) => i.dtype === 'float').map((i) => i.name));

  const weights: WeightQuantizer[] = [];
  const embeddings = new Set<string>(); // outputs of embedding lookups: on the table's grid already
  const constLookups: Node[] = []; // lookups at indices known before run time: folded to constants
  for (const n of g.nodes) {
    if (isEmbedding(g, n)) {
      if (!isFloat(n.outputs[0])) {
        constLookups.push(n);
        continue;
      }
      weights.push({ tensor: n.inputs[0], node: n.name, op: n.op, axis: 0 });
      embeddings.add(n.outputs[0]);
      continue;
    }
    if (!WEIGHTED.has(n.op)) continue;
    const w = g.consts.get(n.inputs[1]);
    if (!w || w.dtype !== 'float' || w.shape.length < 2) continue;
    weights.push({ tensor: n.inputs[1], node: n.name, op: n.op, axis: weightAxis(n, w.shape) });
    const r = n.op === 'LSTM' || n.op === 'GRU' ? g.consts.get(n.inputs[2]) : undefined;
    if (r && r.dtype === 'float' && r.shape.length === 3) weights.push({ tensor: n.inputs[2], node: n.name, op: n.op, axis: 1 });
  }

  // Masks: float values that depend on no float input and on no embedding (only on integer
  // inputs and constants), and the sentinels they or constants hold.
  const isStatic = new Map<string, boolean>(); // float value -> computed from integer inputs and constants only
  const sentinel = new Map<string, number>(); // value -> the sentinel it carries
  const maskInputs = new Map<string, Set<string>>(); // static value -> the integer inputs it comes from
  const staticIn = (v: string) => !v || !isFloat(v) || isStatic.get(v) === true;
  for (const i of g.inputs) if (i.dtype !== 'float') maskInputs.set(i.name, new Set([i.name]));
  for (const n of g.nodes) {
    const ins = n.inputs.filter(Boolean);
    const from = new Set<string>();
    for (const i of ins) for (const s of maskInputs.get(i) ?? []) from.add(s);
    const allStatic = !isEmbedding(g, n) && ins.every((i) => !floatInputs.has(i) && staticIn(i));
    let carried: number | undefined;
    for (const i of ins) carried ??= sentinel.get(i) ?? sentinelConst(g, i, producer.get(i));
    for (const o of n.outputs) {
      if (!o) continue;
      if (from.size) maskInputs.set(o, from);
      if (allStatic && from.size && isFloat(o)) isStatic.set(o, true);
      // a sentinel survives arithmetic and selection, not squashing (Softmax, Exp, Relu, ...)
      if (carried !== undefined && CARRIES_SENTINEL.has(n.op) && isFloat(o)) sentinel.set(o, carried);
    }
    if (n.op === 'ConstantOfShape') {
      const s = sentinelConst(g, n.outputs[0], n);
      if (s !== undefined) sentinel.set(n.outputs[0], s);
    }
  }
  const isActivation = (v: string) => !!v && isFloat(v) && !isStatic.get(v);

  // Log inputs: the values a Log reads through elementwise, data-movement and constant-weight
  // linear ops (a mel filterbank over a power spectrum, the STFT before it), graph inputs aside
  const logFed = new Map<string, string>(); // value -> the Log it feeds
  for (const n of g.nodes) {
    if (n.op !== 'Log') continue;
    const stack = [n.inputs[0]];
    while (stack.length) {
      const v = stack.pop()!;
      if (!isActivation(v) || logFed.has(v)) continue;
      logFed.set(v, n.name);
      const p = producer.get(v);
      if (!p) continue;
      if (ELEMENTWISE.has(p.op) || (PASS_THROUGH.has(p.op) && !isEmbedding(g, p))) stack.push(...p.inputs.filter(Boolean));
      // through linear kernels with constant weights (a mel filterbank, an STFT as Conv) too
      else if (FUSABLE.has(p.op) && p.op !== 'BatchNormalization' && g.consts.has(p.inputs[1])) stack.push(p.inputs[0]);
    }
  }

  // Regions: each elementwise / row-wise node's root is the one activation it reads (directly or
  // through other members); a node reading two activations of different roots starts a root itself.
  const rootOf = new Map<string, string>(); // value -> root of the region that computes it
  const regionOf = new Map<string, string>(); // node -> root of its region
  const rowWise = new Set<string>(); // roots whose region has a row-wise op
  const members = new Map<string, Node[]>(); // root -> region nodes
  for (const n of g.nodes) {
    if (!ELEMENTWISE.has(n.op) && !ROW_WISE.has(n.op)) continue;
    const roots = new Set(n.inputs.filter(isActivation).map((i) => rootOf.get(i) ?? i));
    if (roots.size !== 1) continue; // starts a root (its output is one)
    const r = [...roots][0];
    regionOf.set(n.name, r);
    for (const o of n.outputs) if (o) rootOf.set(o, r);
    if (ROW_WISE.has(n.op)) rowWise.add(r);
    members.set(r, [...(members.get(r) ?? []), n]);
  }
  const inRegion = (n: Node, r: string) => regionOf.get(n.name) === r;
  /** A root that its region absorbs: a fusable producer's output read by an activation-only region alone. */
  const absorbed = (v: string): boolean => {
    const p = producer.get(v);
    if (!p || outputs.has(v) || rowWise.has(v) || !members.has(v)) return false;
    const fusable = FUSABLE.has(p.op) || (ELEMENTWISE.has(p.op) && !regionOf.has(p.name));
    return fusable && (consumers.get(v) ?? []).every((c) => inRegion(c, v));
  };

  const activations: ActQuantizer[] = [];
  const encodingOf = new Map<string, string>();
  const skipped: SkippedValue[] = [];
  const skip = (v: string) => {
    const s = sentinel.get(v);
    const src = [...(maskInputs.get(v) ?? [])].join(', ');
    const why: string[] = [];
    if (isStatic.get(v)) why.push(`a mask: computed only from the integer input${src.includes(',') ? 's' : ''} ${src} and constants`);
    if (s !== undefined) why.push(`carries the sentinel ${s} (a quantizer would spend its whole range on it)`);
    const log = logFed.get(v);
    if (log !== undefined) why.push(`feeds Log '${log}' (a uniform grid rounds its small values to zero or one step, which the Log turns into large errors)`);
    skipped.push({ tensor: v, reason: why.join('; ') });
  };
  for (const i of g.inputs) {
    if (i.dtype !== 'float') continue;
    activations.push({ tensor: i.name, producer: '', fused: [] });
    encodingOf.set(i.name, i.name);
  }
  for (const n of g.nodes) {
    const out = n.outputs[0];
    if (!out || NON_NUMERIC.has(n.op) || !isFloat(out)) continue;
    if (PASS_THROUGH.has(n.op) && !isEmbedding(g, n)) {
      const src = encodingOf.get(n.inputs[0]);
      for (const o of n.outputs) if (o && src) encodingOf.set(o, src);
      if (src) continue;
    }
    for (const o of n.outputs) {
      // Graph outputs stay float: the caller's code reads them as the float model's, and
      // quantizing a softmax makes ties of its argmax.
      if (!o || !isFloat(o) || outputs.has(o) || embeddings.has(o)) continue;
      const r = rootOf.get(o);
      // inside a region: quantized only where something outside the region reads it
      if (r !== undefined && !(consumers.get(o) ?? []).some((c) => !inRegion(c, r))) continue;
      if (absorbed(o)) continue;
      if (isStatic.get(o) || sentinel.has(o) || logFed.has(o)) {
        skip(o);
        continue;
      }
      const fused = r === undefined ? [n.name] : [...(absorbed(r) ? [producer.get(r)!.name] : []), ...members.get(r)!.map((m) => m.name)];
      activations.push({ tensor: o, producer: n.name, fused });
      encodingOf.set(o, o);
    }
  }
  for (const n of constLookups) {
    skipped.push({ tensor: n.inputs[0], reason: `an embedding table looked up at indices known before run time: '${n.name}' folds to a constant, so nothing of it is computed at run time (token type ids that are all zero, for instance)` });
  }
  return { weights, activations, encodingOf, skipped };
}
