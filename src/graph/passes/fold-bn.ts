/**
 * Folds BatchNormalization into the Conv or Gemm that feeds it (when the conv output has no
 * other reader and its weights are constant): W' = W * s, B' = (B - mean) * s + beta with
 * s = gamma / sqrt(var + eps). This is what hardware runs and what quantization sees.
 */
import { ConstTensor, Graph, Node } from '../ir';

export function foldBatchNorm(g: Graph): Graph {
  const consumers = new Map<string, number>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) consumers.set(i, (consumers.get(i) ?? 0) + 1);
  const outputs = new Set(g.outputs.map((o) => o.name));
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) producer.set(o, n);
  const consts = new Map(g.consts);
  const replaced = new Map<Node, Node>();
  const dropped = new Set<Node>();

  for (const bn of g.nodes) {
    if (bn.op !== 'BatchNormalization' || bn.outputs.filter(Boolean).length !== 1) continue;
    const x = bn.inputs[0];
    const p = producer.get(x);
    if (!p || (p.op !== 'Conv' && p.op !== 'Gemm') || replaced.has(p) || dropped.has(p)) continue;
    if (consumers.get(x) !== 1 || outputs.has(x)) continue;
    const [gamma, beta, mean, vr] = bn.inputs.slice(1, 5).map((n) => consts.get(n));
    const w = consts.get(p.inputs[1]);
    const b = p.inputs[2] ? consts.get(p.inputs[2]) : undefined;
    if (!gamma || !beta || !mean || !vr || !w || w.dtype !== 'float' || (p.inputs[2] && !b)) continue;
    let axis = 0;
    if (p.op === 'Gemm') {
      if (p.attrs.transB !== 1) axis = 1;
      const alpha = (p.attrs.alpha as number | undefined) ?? 1;
      const betaG = (p.attrs.beta as number | undefined) ?? 1;
      if (alpha !== 1 || (b && betaG !== 1) || (b && b.shape.length !== 1)) continue;
    }
    const m = w.shape[axis];
    if ([gamma, beta, mean, vr].some((t) => t.data.length !== m)) continue;
    // f32 at every step, in the order ONNX Runtime's Conv+BN fusion uses, so that the folded
    // weights are the ones its optimized session runs
    const f = Math.fround;
    const eps = f((bn.attrs.epsilon as number | undefined) ?? 1e-5);
    const s = new Float32Array(m);
    for (let i = 0; i < m; i++) s[i] = f(gamma.data[i] / f(Math.sqrt(f(vr.data[i] + eps))));
    const wd = new Float32Array(w.data.length);
    const inner = w.shape.slice(axis + 1).reduce((a, c) => a * c, 1);
    for (let start = 0, k = 0; start < wd.length; start += inner, k = (k + 1) % m) {
      const sk = s[k], end = Math.min(wd.length, start + inner);
      for (let i = start; i < end; i++) wd[i] = w.data[i] * sk;
    }
    const bd = new Float32Array(m);
    for (let i = 0; i < m; i++) bd[i] = f(f(f((b ? b.data[i] : 0) - mean.data[i]) * s[i]) + beta.data[i]);
    const wName = `${p.inputs[1]}::bnfold`;
    const bName = `${p.name}::bnfold_bias`;
    consts.set(wName, { dtype: 'float', shape: w.shape, data: wd, onnxType: 1 } as ConstTensor);
    consts.set(bName, { dtype: 'float', shape: [m], data: bd, onnxType: 1 } as ConstTensor);
    const attrs = { ...p.attrs };
    if (p.op === 'Gemm') attrs.beta = 1;
    replaced.set(p, { ...p, inputs: [p.inputs[0], wName, bName], outputs: [bn.outputs[0]], attrs });
    dropped.add(bn);
  }
  if (dropped.size === 0) return g;
  const nodes = g.nodes.filter((n) => !dropped.has(n)).map((n) => replaced.get(n) ?? n);
  const used = new Set(nodes.flatMap((n) => n.inputs));
  for (const k of [...consts.keys()]) if (!used.has(k) && !outputs.has(k)) consts.delete(k);
  return { ...g, nodes, consts };
}
