/** `mpq inspect`: what a model is made of, and what it costs at given shapes. */
import { MpqError } from './errors';
import { ValueInfo } from './graph/ir';
import { nodeMacs } from './graph/macs';
import { resolveInputShapes, specialize } from './graph/specialize';
import { numel } from './graph/tensor';
import { Model } from './model';

export interface InspectReport {
  name: string;
  producer: string;
  opset: number;
  inputs: { name: string; dtype: string; dims: (number | string | null)[] | null; shape: number[] | null }[];
  outputs: { name: string; dtype: string; dims: (number | string | null)[] | null; shape: number[] | null }[];
  nodes: number;
  ops: Record<string, number>;
  parameters: number;
  /** MACs per compute op at the resolved shapes; null when input shapes are unknown. */
  macs: { node: string; op: string; macs: number }[] | null;
  totalMacs: number | null;
  /** Why MACs are missing, when they are. */
  note?: string;
}

export function inspectModel(model: Model, shapes: Record<string, number[]> = {}): InspectReport {
  const g = model.graph;
  const ops: Record<string, number> = {};
  for (const n of g.nodes) ops[n.op] = (ops[n.op] ?? 0) + 1;
  const used = new Set(g.nodes.flatMap((n) => n.inputs));
  let parameters = 0;
  for (const [name, t] of g.consts) if (t.dtype === 'float' && used.has(name) && t.shape.length > 0) parameters += numel(t.shape);
  const info = (v: ValueInfo, shape: number[] | null) => ({ name: v.name, dtype: v.dtype, dims: v.dims, shape });
  let macs: InspectReport['macs'] = null;
  let note: string | undefined;
  let resolved: Record<string, number[]> | null = null;
  let outShapes: Record<string, number[]> = {};
  try {
    resolved = resolveInputShapes(g, shapes);
    const spec = specialize(g, resolved);
    macs = spec.nodes.filter((sn) => !sn.folded).map((sn) => ({ node: sn.node.name, op: sn.node.op, macs: nodeMacs(sn) })).filter((m) => m.macs > 0);
    outShapes = Object.fromEntries(g.outputs.map((o) => [o.name, spec.values.get(o.name)!.shape]));
  } catch (e) {
    // unknown shapes are a note; a model that asks for more memory than allowed is an error
    if (e instanceof MpqError && e.code === 'MPQ_TOO_LARGE') throw e;
    note = (e as Error).message;
  }
  return {
    name: g.name,
    producer: g.producer,
    opset: g.opset,
    inputs: g.inputs.map((i) => info(i, resolved?.[i.name] ?? null)),
    outputs: g.outputs.map((o) => info(o, outShapes[o.name] ?? null)),
    nodes: g.nodes.length,
    ops,
    parameters,
    macs,
    totalMacs: macs ? macs.reduce((a, m) => a + m.macs, 0) : null,
    note,
  };
}

export function formatInspect(r: InspectReport): string {
  const dims = (d: (number | string | null)[] | null) => (d ? `[${d.map((x) => x ?? '?').join(', ')}]` : '[?]');
  const lines: string[] = [];
  lines.push(`model: ${r.name || '(unnamed)'}  producer: ${r.producer || '?'}  opset ${r.opset}`);
  lines.push('inputs:');
  for (const i of r.inputs) lines.push(`  ${i.name}  ${i.dtype}  ${dims(i.dims)}${i.shape ? `  -> [${i.shape.join(', ')}]` : ''}`);
  lines.push('outputs:');
  for (const o of r.outputs) lines.push(`  ${o.name}  ${o.dtype}  ${dims(o.dims)}${o.shape ? `  -> [${o.shape.join(', ')}]` : ''}`);
  lines.push(`nodes: ${r.nodes}   parameters: ${r.parameters.toLocaleString('en-US')}`);
  lines.push('ops: ' + Object.entries(r.ops).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', '));
  if (r.macs) {
    lines.push(`MACs: ${r.totalMacs!.toLocaleString('en-US')} total`);
    for (const m of r.macs) lines.push(`  ${m.op.padEnd(14)} ${m.macs.toLocaleString('en-US').padStart(16)}  ${m.node}`);
  } else lines.push(`MACs: unknown (${r.note})`);
  return lines.join('\n');
}
