/**
 * Specialisation: given concrete input shapes, infers every value's static shape and folds
 * every value computable without input data (the Shape -> Gather -> Concat -> Reshape chains
 * that exporters emit, weight transposes, ...).
 */
import { MpqError } from '../errors';
import { limits } from '../limits';
import { BranchPick, CONTROL_FLOW, inlineControlFlow, Rename } from './control';
import { ConstTensor, Graph, isGraph, Node } from './ir';
import { OPS } from './ops';
import { DataDependent, NeedsData, OpCtx, Val } from './opctx';
export { NeedsData } from './opctx';

/** Values the shapes depend on that come from the data (by plan name), measured on a run. */
export type DataValues = ReadonlyMap<string, ConstTensor>;

/** The plan op that checks, at run time, that a value taken from the data still has the value the plan was made for. */
export const EXPECT_OP = 'MpqExpectValue';

export interface SpecializedNode {
  node: Node;
  ctx: OpCtx;
  outs: Val[];
  /** True when every output is constant: the node is folded away. */
  folded: boolean;
}

export interface Specialized {
  graph: Graph;
  inputShapes: Record<string, number[]>;
  values: Map<string, Val>;
  nodes: SpecializedNode[];
  /** The If nodes (by plan name) that run one branch only, and which. */
  picks: Map<string, BranchPick>;
  /** The If nodes (by plan name) that run both branches and a Where, with their condition's plan value. */
  both: Map<string, string>;
}

/** Throws one error naming every op the tool cannot handle, before any work. */
export function checkSupported(graph: Graph, engineOps: ReadonlySet<string>): void {
  const bad = allNodes(graph).filter((n) => !CONTROL_FLOW.has(n.op) && (!OPS[n.op] || (!engineOps.has(n.op) && !canFold(n.op))));
  if (bad.length === 0) return;
  const byOp = new Map<string, string[]>();
  for (const n of bad) byOp.set(n.op, [...(byOp.get(n.op) ?? []), n.name]);
  const list = [...byOp]
    .map(([op, names]) => `'${op}' (opset ${graph.opset}; node${names.length > 1 ? 's' : ''} ${names.slice(0, 3).map((x) => `'${x}'`).join(', ')}${names.length > 3 ? ` and ${names.length - 3} more` : ''})`)
    .join(', ');
  const supported = Object.keys(OPS).filter((o) => engineOps.has(o) || canAlwaysFold(o)).sort().join(', ');
  throw new MpqError('MPQ_UNSUPPORTED_OP', `unsupported op${byOp.size > 1 ? 's' : ''} ${list}. Supported ops: ${supported}`);
}

/** The nodes of a graph and of all its subgraphs. */
export function allNodes(g: Graph): Node[] {
  return g.nodes.flatMap((n) => [n, ...Object.values(n.attrs).filter(isGraph).flatMap(allNodes)]);
}

function canAlwaysFold(op: string): boolean {
  return op === 'Shape' || op === 'Size' || op === 'ConstantOfShape' || op === 'Range';
}

/** Ops that the engine may lack but that TypeScript computes when their inputs are constant. */
function canFold(op: string): boolean {
  return canAlwaysFold(op) || OPS[op]?.fold !== undefined;
}

/** Resolves each input's shape: explicit shapes win; declared static dims are used; otherwise error. */
export function resolveInputShapes(graph: Graph, given: Record<string, readonly number[]> = {}): Record<string, number[]> {
  const out: Record<string, number[]> = {};
  for (const name of Object.keys(given)) {
    if (!graph.inputs.some((i) => i.name === name)) {
      throw new MpqError('MPQ_BAD_INPUT', `the model has no input '${name}'; its inputs are: ${graph.inputs.map((i) => i.name).join(', ')}`);
    }
  }
  for (const inp of graph.inputs) {
    const g = given[inp.name];
    const dims = inp.dims;
    if (g) {
      if (dims && dims.length !== g.length) {
        throw new MpqError('MPQ_INPUT_SHAPE', `input '${inp.name}' has rank ${dims.length} ([${dims.map((d) => d ?? '?')}]), got shape [${g}]`);
      }
      dims?.forEach((d, i) => {
        if (typeof d === 'number' && d !== g[i]) {
          throw new MpqError('MPQ_INPUT_SHAPE', `input '${inp.name}' needs size ${d} on axis ${i} (declared [${dims.map((x) => x ?? '?')}]), got shape [${g}]`);
        }
      });
      if (g.some((d) => !Number.isInteger(d) || d < 0)) throw new MpqError('MPQ_INPUT_SHAPE', `input '${inp.name}': invalid shape [${g}]`);
      out[inp.name] = g.slice();
    } else {
      if (!dims || dims.some((d) => typeof d !== 'number')) {
        throw new MpqError(
          'MPQ_INPUT_SHAPE',
          `input '${inp.name}' has dynamic dimensions [${(dims ?? ['?']).map((d) => d ?? '?')}]; give its shape (for example --shape ${inp.name}=${(dims ?? []).map((d) => (typeof d === 'number' ? d : 1)).join(',')})`,
        );
      }
      out[inp.name] = dims as number[];
    }
  }
  return out;
}

/**
 * Specialises `graph` for `inputShapes`. A shape that depends on the data (a Reshape target
 * or Range bound computed from input values, the condition of an If whose branches differ
 * in shape, the condition of a Loop with scan outputs) takes its value from `known`, measured
 * by running the nodes before it on the data (see `probeDataValues`); the plan then checks
 * at run time, with an {@link EXPECT_OP} node, that the data gives that value again. Without
 * it in `known`, {@link NeedsData} is thrown.
 */
export function specialize(graph: Graph, inputShapes: Record<string, number[]>, known?: DataValues): Specialized {
  const values = new Map<string, Val>();
  for (const [name, t] of graph.consts) values.set(name, { dtype: t.dtype, shape: t.shape, value: t });
  for (const inp of graph.inputs) values.set(inp.name, { dtype: inp.dtype, shape: inputShapes[inp.name] });
  const nodes: SpecializedNode[] = [];
  const picks = new Map<string, BranchPick>();
  const both = new Map<string, string>();
  const ctxOf = (node: Node) => {
    const inputs = node.inputs.map((n) => {
      if (!n) return undefined;
      const v = values.get(n);
      if (!v) throw new MpqError('MPQ_BAD_MODEL', `node '${node.name}' reads '${n}', which is not defined`);
      return v;
    });
    return { ctx: new OpCtx(node, graph.opset, inputs), inputs };
  };
  /** The name of a constant holding data value `name` as measured (with its run-time check in the plan). */
  const fromData = (name: string, why: string): string => {
    const alias = `${name}@data`;
    if (values.has(alias)) return alias;
    const v = values.get(name)!;
    const t = known?.get(name);
    if (!t) {
      throw new NeedsData(name, `${why}; its value is measured on the data when the model runs on data (run, quantize, search), not known from shapes alone`, { graph, inputShapes, values, nodes: nodes.slice(), picks, both });
    }
    if (t.shape.join() !== v.shape.join()) {
      throw new MpqError('MPQ_INPUT_SHAPE', `the shapes depend on the value of '${name}', measured on the data with shape [${t.shape}]; at these input shapes it has shape [${v.shape}] (a model whose shapes depend on its data needs all batches of one size)`);
    }
    values.set(alias, { dtype: v.dtype, shape: v.shape, value: { ...t, dtype: v.dtype } });
    const check: Node = { name: `${name}@check`, op: EXPECT_OP, domain: '', inputs: [name, alias], outputs: [], attrs: {} };
    nodes.push({ node: check, ctx: ctxOf(check).ctx, outs: [], folded: false });
    return alias;
  };
  const one = (node0: Node) => {
    let node = node0;
    if (CONTROL_FLOW.has(node.op)) return inlineControlFlow(node, rename, inliner);
    const def = OPS[node.op];
    if (!def) throw new MpqError('MPQ_UNSUPPORTED_OP', `op '${node.op}' (node '${node.name}', opset ${graph.opset}) is not supported`);
    let { ctx, inputs } = ctxOf(node);
    let outs: Val[];
    for (;;) {
      try {
        outs = def.infer(ctx);
        break;
      } catch (e) {
        // a shape-like input from the data: read as the constant measured on the data
        if (!(e instanceof DataDependent) || e instanceof NeedsData || !e.value || !node.inputs.includes(e.value) || !values.has(e.value)) throw e;
        const alias = fromData(e.value, e.message);
        node = { ...node, inputs: node.inputs.map((x) => (x === e.value ? alias : x)) };
        ({ ctx, inputs } = ctxOf(node));
      }
    }
    // sizes are checked before anything of that size is computed (here or in the engine)
    const sizes = outs.map((o) => ctx.checkSize(o.shape));
    const allConst = inputs.every((v) => v === undefined || v.value !== undefined);
    // values too large to fold in TypeScript are left to the engine
    const foldable = sizes.every((n) => n <= limits().maxFoldElements);
    if (!outs.every((o) => o.value) && allConst && def.fold && foldable) {
      const folded = def.fold(ctx, outs);
      if (folded) outs = outs.map((o, i) => ({ ...o, value: folded[i] }));
    }
    if (outs.length < node.outputs.filter(Boolean).length) {
      throw new MpqError('MPQ_BAD_NODE', `node '${node.name}' (${node.op}) has ${node.outputs.length} outputs; only ${outs.length} are supported`);
    }
    node.outputs.forEach((o, i) => o && values.set(o, outs[i]));
    nodes.push({ node, ctx, outs, folded: outs.every((o) => o.value !== undefined) });
  };
  let rename: Rename = (x) => x;
  const inliner = {
    opset: graph.opset,
    constant: (name: string) => values.get(name)?.value,
    shape: (name: string) => {
      const v = values.get(name);
      if (!v) throw new MpqError('MPQ_BAD_MODEL', `'${name}' is read before it is defined`);
      return v.shape;
    },
    define: (name: string, t: ConstTensor) => void values.set(name, { dtype: t.dtype, shape: t.shape, value: t }),
    measured: (name: string) => (known?.has(name) ? values.get(fromData(name, ''))!.value : undefined),
    picked: (node: string, pick: BranchPick) => void picks.set(node, pick),
    ranBoth: (node: string, cond: string) => void both.set(node, cond),
    needData: (name: string, why: string): never => {
      fromData(name, why);
      throw new MpqError('MPQ_INTERNAL', `data value '${name}' was asked for though it was measured`);
    },
    nodes: (ns: Node[], r: Rename, prefix = '') => {
      const outer = rename;
      rename = r;
      try {
        // a subgraph's node in the plan's names (its own subgraphs keep theirs, read through `rename`)
        for (const n of ns) one({ ...n, name: prefix + n.name, inputs: n.inputs.map((i) => (i ? r(i) : i)), outputs: n.outputs.map((o) => (o ? r(o) : o)) });
      } finally {
        rename = outer;
      }
    },
  };
  for (const node of graph.nodes) one(node);
  for (const o of graph.outputs) {
    if (!values.has(o.name)) throw new MpqError('MPQ_BAD_MODEL', `graph output '${o.name}' is not computed by any node`);
  }
  return { graph, inputShapes, values, nodes, picks, both };
}

/** Most values one specialisation measures on the data (one per round of {@link probeDataValues}). */
const MAX_MEASURED = 4096;

/**
 * The data values that the shapes of `graph` depend on, for one set of inputs: specialises,
 * and each time a shape needs a value from the data, runs the nodes that compute it
 * (`exec(partial, name, known)`: the plan of `partial`, made with the values `known` so far,
 * with `name` as its output, on the inputs) and
 * specialises again. Returns the values (empty when no shape depends on the data) and the
 * specialisation they give.
 */
export async function probeDataValues(
  graph: Graph,
  inputShapes: Record<string, number[]>,
  exec: (partial: Specialized, name: string, known: DataValues) => Promise<ConstTensor>,
): Promise<{ known: Map<string, ConstTensor>; spec: Specialized }> {
  const known = new Map<string, ConstTensor>();
  for (;;) {
    try {
      return { known, spec: specialize(graph, inputShapes, known) };
    } catch (e) {
      if (!(e instanceof NeedsData)) throw e;
      if (known.has(e.value)) throw new MpqError('MPQ_INTERNAL', `data value '${e.value}' was asked for twice`);
      if (known.size >= MAX_MEASURED) throw new MpqError('MPQ_TOO_LARGE', `the shapes depend on more than ${MAX_MEASURED} values from the data (${e.message})`);
      known.set(e.value, await exec(computing(e.partial, e.value), e.value, known));
    }
  }
}

/** `spec` cut down to the nodes that compute `name`, which becomes its only output. */
function computing(spec: Specialized, name: string): Specialized {
  const need = new Set([name]);
  const nodes: SpecializedNode[] = [];
  for (let i = spec.nodes.length - 1; i >= 0; i--) {
    const sn = spec.nodes[i];
    if (sn.folded || !sn.node.outputs.some((o) => need.has(o))) continue;
    nodes.push(sn);
    for (const x of sn.node.inputs) if (x) need.add(x);
  }
  const v = spec.values.get(name)!;
  const out = { name, dtype: v.dtype, onnxType: v.dtype === 'float' ? 1 : v.dtype === 'int' ? 7 : 9, dims: v.shape };
  return { ...spec, graph: { ...spec.graph, outputs: [out] }, nodes: nodes.reverse() };
}
