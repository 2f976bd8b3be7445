/** Lowering: a specialised graph becomes the plan that the Rust executor runs. */
import { ConstTensor } from './ir';
import { Specialized } from './specialize';

export interface PlanValue { name: string; shape: number[]; dtype: string }
export interface PlanNode {
  op: string;
  name: string;
  inputs: (number | null)[];
  outputs: number[];
  attrs: Record<string, number | string | number[]>;
  opset: number;
}
export interface PlanDef {
  values: PlanValue[];
  inputs: number[];
  outputs: number[];
  /**
   * `folded`: computed by constant folding, not an initializer or Constant node of the
   * graph. onnxruntime (graph optimizations off) computes such a value at run time and does
   * not pre-pack it as a MatMul/Gemm weight, which changes its summation order.
   */
  constants: { value: number; weight: string; folded?: boolean }[];
  nodes: PlanNode[];
}

/** A constant the plan needs, with the weight-store key it is uploaded under. */
export interface PlanConst { key: string; tensor: ConstTensor }

export interface Lowered {
  plan: PlanDef;
  consts: PlanConst[];
  /** Value index of each value name in the plan. */
  index: Map<string, number>;
  /** Graph outputs that are constants (never reach the engine). */
  constOutputs: Map<string, ConstTensor>;
}

/**
 * Lowers `spec`. `constKey(name, tensor)` names the weight-store entry of each constant:
 * original weights keep their names (uploaded once), folded values get a key per shape set.
 */
export function lower(spec: Specialized, constKey: (name: string) => string): Lowered {
  const values: PlanValue[] = [];
  const index = new Map<string, number>();
  const consts: PlanConst[] = [];
  const constants: PlanDef['constants'] = [];
  const valueOf = (name: string): number => {
    let i = index.get(name);
    if (i !== undefined) return i;
    const v = spec.values.get(name)!;
    i = values.length;
    values.push({ name, shape: v.shape, dtype: v.dtype });
    index.set(name, i);
    if (v.value) {
      const key = constKey(name);
      consts.push({ key, tensor: v.value });
      constants.push(spec.graph.consts.has(name) ? { value: i, weight: key } : { value: i, weight: key, folded: true });
    }
    return i;
  };
  const inputs = spec.graph.inputs.map((i) => valueOf(i.name));
  const nodes: PlanNode[] = [];
  for (const sn of spec.nodes) {
    if (sn.folded) continue;
    const def = sn.ctx;
    const l = (opDef(sn.node.op).lower ?? defaultLower)(def, sn.outs);
    const keep = l.inputs ?? sn.node.inputs.map((_, i) => i);
    nodes.push({
      op: l.op ?? sn.node.op,
      name: sn.node.name,
      inputs: keep.map((k) => (sn.node.inputs[k] ? valueOf(sn.node.inputs[k]) : null)),
      outputs: sn.node.outputs.filter(Boolean).map(valueOf),
      attrs: l.attrs ?? plainAttrs(sn.node.attrs),
      opset: spec.graph.opset,
    });
  }
  const constOutputs = new Map<string, ConstTensor>();
  const outputs: number[] = [];
  for (const o of spec.graph.outputs) {
    const v = spec.values.get(o.name)!;
    if (v.value && !nodes.some((n) => n.outputs.includes(index.get(o.name) ?? -1))) constOutputs.set(o.name, v.value);
    else outputs.push(valueOf(o.name));
  }
  return { plan: { values, inputs, outputs, constants, nodes }, consts, index, constOutputs };
}

import { OPS } from './ops';
import { OpCtx, Lowered as LoweredNode, Val } from './opctx';
const opDef = (op: string) => OPS[op];
const defaultLower = (c: OpCtx, _outs: Val[]): LoweredNode => ({ attrs: plainAttrs(c.node.attrs) });

function plainAttrs(a: Record<string, unknown>): Record<string, number | string | number[]> {
  const out: Record<string, number | string | number[]> = {};
  for (const [k, v] of Object.entries(a)) {
    if (typeof v === 'number' || typeof v === 'string') out[k] = v;
    else if (Array.isArray(v) && v.every((x) => typeof x === 'number')) out[k] = v as number[];
  }
  return out;
}
