/**
 * Control flow at specialisation: `If`, `Loop` and `Scan` become plain nodes of the plan.
 *
 * - If: the branch its condition selects is inlined, when the condition is known once the
 *   input shapes are (a constant, or computed from shapes: what exporters emit for
 *   `if x.size(1) > 1`). Its outputs are Identity nodes from the branch's outputs. A
 *   condition that depends on the data runs both branches and selects with Where, when the
 *   branches' outputs have the same shapes (ONNX ops have no side effects); otherwise the
 *   condition is measured on the data (see `specialize`) and the branch it selects inlined.
 * - Loop: unrolled, when the trip count is known (a constant `M`, one computed from shapes,
 *   or one measured on the data); each iteration's values get their own names
 *   (`<loop>/<k>/<name>`), scan outputs are stacked with Unsqueeze + Concat. A condition that
 *   depends on the data: when M bounds the loop and it has no scan outputs, every iteration
 *   is computed and Where keeps the carried values of those that ran; otherwise (scan outputs,
 *   whose length it decides, or no M) each iteration's condition is measured on the data.
 * - Scan: unrolled over its scan axis (known from shapes), slicing inputs with Gather and
 *   stacking outputs with Unsqueeze + Concat, in either direction.
 *
 * The graph IR keeps the node with its subgraphs; only the plan sees the inlined nodes. The
 * specialisation records which If nodes run one branch (`picks`) and which run both and a
 * Where (`both`): an If that runs one branch is written out as that branch for placement
 * (taken-branches.ts) and gets its quantizers inside it; the nodes inside other control flow
 * (Loop and Scan bodies, an If run as both branches) stay float, quantizers going on the
 * values around them.
 */
import { MpqError } from '../errors';
import { ConstTensor, Graph, isGraph, Node } from './ir';
import { NeedsData } from './opctx';

/** Longest loop the unroller accepts (each iteration becomes nodes of the plan). */
export const MAX_UNROLL = 4096;

/** How names inside an inlined subgraph map to the plan's names. */
export type Rename = (name: string) => string;

/** What the specialiser offers the inliner. */
export interface Inliner {
  opset: number;
  /** The constant value of a plan value, if it is known now. */
  constant(name: string): ConstTensor | undefined;
  /** The static shape of a plan value specialised so far. */
  shape(name: string): number[];
  /** Adds a constant under a plan name. */
  define(name: string, t: ConstTensor): void;
  /** The value of a plan value measured on the data, if one was (the plan then checks it at run time). */
  measured(name: string): ConstTensor | undefined;
  /** Asks for the value of `name` to be measured on the data (throws `NeedsData`). */
  needData(name: string, why: string): never;
  /** Specialises `nodes` (in order) under `rename`, their node names prefixed with `prefix`. */
  nodes(nodes: Node[], rename: Rename, prefix?: string): void;
  /** Records that If node `node` (its plan name) runs one branch only, and why. */
  picked(node: string, pick: BranchPick): void;
  /** Records that If node `node` runs both branches and selects with Where on its condition `cond`. */
  ranBoth(node: string, cond: string): void;
}

/** The one branch an If runs in a plan: its condition is known from shapes or measured on the data. */
export interface BranchPick {
  branch: 'then_branch' | 'else_branch';
  /** 'shapes': a constant or computed from shapes; 'data': measured on the data (checked at run time). */
  from: 'shapes' | 'data';
}

export const CONTROL_FLOW = new Set(['If', 'Loop', 'Scan']);

/**
 * A note on the control-flow nodes of `g`, whose subgraphs stay float when quantizing (null
 * when there are none). `g` is the graph quantizers are placed on: the If nodes whose branch
 * the calibration runs are written out in it already (taken-branches.ts).
 */
export function floatSubgraphsNote(g: Graph): string | null {
  const cf = g.nodes.filter((n) => CONTROL_FLOW.has(n.op));
  if (cf.length === 0) return null;
  const names = cf.slice(0, 3).map((n) => `'${n.name}' (${n.op})`).join(', ') + (cf.length > 3 ? ` and ${cf.length - 3} more` : '');
  return `the subgraphs of ${names} stay float: quantizers are placed on the values around them, not inside`;
}

const fail = (n: Node, msg: string): never => {
  throw new MpqError('MPQ_BAD_NODE', `node '${n.name}' (${n.op}): ${msg}`);
};

/** Every name a graph or subgraph defines, nested subgraphs included. */
export function definedIn(g: Graph, out = new Set<string>()): Set<string> {
  for (const i of g.inputs) out.add(i.name);
  for (const k of g.consts.keys()) out.add(k);
  for (const n of g.nodes) {
    for (const o of n.outputs) if (o) out.add(o);
    for (const v of Object.values(n.attrs)) if (isGraph(v)) definedIn(v, out);
  }
  return out;
}

const scalar = (dtype: 'int' | 'bool', v: number): ConstTensor => ({ dtype, shape: [], data: Float64Array.of(v), onnxType: dtype === 'int' ? 7 : 9 });
const ints1 = (v: number[]): ConstTensor => ({ dtype: 'int', shape: [v.length], data: Float64Array.from(v), onnxType: 7 });

function subgraph(n: Node, attr: string): Graph {
  const g = n.attrs[attr];
  if (!isGraph(g)) fail(n, `attribute '${attr}' must be a subgraph`);
  return g as Graph;
}

/** Names of a subgraph instance: its own names get `prefix`, outer names go through `outer`. */
export function scoped(g: Graph, prefix: string, outer: Rename, bound: Map<string, string>): Rename {
  const own = definedIn(g);
  return (name) => bound.get(name) ?? (own.has(name) ? prefix + name : outer(name));
}

function defineConsts(g: Graph, rename: Rename, ix: Inliner): void {
  for (const [k, t] of g.consts) ix.define(rename(k), t);
}

/** `Unsqueeze(v, 0)` for each value, then `Concat` on axis 0 into `out`. */
function stack(ix: Inliner, base: string, parts: string[], axis: number, out: string): Node[] {
  const nodes: Node[] = [];
  const axes = `${base}/axes`;
  if (ix.opset >= 13) ix.define(axes, ints1([axis]));
  const ups = parts.map((p, i) => {
    const u = `${base}/unsq${i}`;
    nodes.push(ix.opset >= 13
      ? { name: u, op: 'Unsqueeze', domain: '', inputs: [p, axes], outputs: [u], attrs: {} }
      : { name: u, op: 'Unsqueeze', domain: '', inputs: [p], outputs: [u], attrs: { axes: [axis] } });
    return u;
  });
  nodes.push({ name: `${base}/concat`, op: 'Concat', domain: '', inputs: ups, outputs: [out], attrs: { axis } });
  return nodes;
}

const identity = (name: string, from: string, to: string): Node => ({ name, op: 'Identity', domain: '', inputs: [from], outputs: [to], attrs: {} });

/** Inlines one control-flow node (already renamed into the plan's names) whose subgraphs read names through `rename`. */
export function inlineControlFlow(n: Node, rename: Rename, ix: Inliner): void {
  const declared = n.inputs.slice(0, n.declaredInputs ?? n.inputs.length);
  if (n.op === 'If') {
    const branch = (attr: string, own: string) => {
      const g = subgraph(n, attr);
      if (g.outputs.length !== n.outputs.length) fail(n, `${attr} has ${g.outputs.length} outputs, the node ${n.outputs.length}`);
      const r = scoped(g, own, rename, new Map());
      defineConsts(g, r, ix);
      ix.nodes(g.nodes, r, own || `${n.name}/`);
      return g.outputs.map((o) => r(o.name));
    };
    const pick = (c: ConstTensor, from: BranchPick['from']) => {
      const attr = c.data[0] ? 'then_branch' : 'else_branch';
      ix.picked(n.name, { branch: attr, from });
      const outs = branch(attr, '');
      ix.nodes(outs.map((o, i) => identity(`${n.name}/out${i}`, o, n.outputs[i])).filter((x) => x.outputs[0]), (x) => x);
    };
    const known = ix.constant(declared[0]);
    if (known) return pick(known, 'shapes');
    const measured = ix.measured(declared[0]);
    if (measured) return pick(measured, 'data');
    // a condition known only from the data: both branches run and Where picks, when their
    // outputs agree in shape (ONNX ops have no side effects); otherwise the condition is measured
    let why: string;
    try {
      const a = branch('then_branch', `${n.name}/then/`), b = branch('else_branch', `${n.name}/else/`);
      const differ = a.findIndex((v, i) => ix.shape(v).join() !== ix.shape(b[i]).join());
      if (differ < 0) {
        ix.ranBoth(n.name, declared[0]);
        ix.nodes(a.map((v, i) => ({ name: `${n.name}/select${i}`, op: 'Where', domain: '', inputs: [declared[0], v, b[i]], outputs: [n.outputs[i]], attrs: {} })).filter((x) => x.outputs[0]), (x) => x);
        return;
      }
      why = `its branches give output ${differ} different shapes ([${ix.shape(a[differ])}] and [${ix.shape(b[differ])}])`;
    } catch (e) {
      if (e instanceof NeedsData || !(e instanceof MpqError)) throw e;
      why = `a branch cannot run on these inputs (${e.message})`;
    }
    ix.needData(declared[0], `node '${n.name}' (If): its condition depends on the input data and ${why}`);
  }
  if (n.op === 'Loop') {
    const body = subgraph(n, 'body');
    let trips = Infinity;
    if (declared[0]) {
      const m = ix.constant(declared[0]) ?? ix.measured(declared[0]) ?? ix.needData(declared[0], `node '${n.name}' (Loop): its trip count M depends on the input data`);
      trips = Number(m.data[0]);
    }
    let carried = declared.slice(2);
    const nScan = body.outputs.length - 1 - carried.length;
    if (body.inputs.length !== 2 + carried.length || nScan < 0) fail(n, `the body has ${body.inputs.length} inputs and ${body.outputs.length} outputs for ${carried.length} loop-carried values`);
    const scans: string[][] = Array.from({ length: nScan }, () => []);
    // A condition from the data is measured on the data (each iteration's in turn) when the
    // loop has scan outputs, whose length it decides, or no trip count M to bound it; otherwise
    // every iteration up to M is computed and Where keeps the carried values of those that ran.
    const measure = nScan > 0 || !Number.isFinite(trips);
    const measured = (name: string, k: number): boolean =>
      !!(ix.measured(name) ?? ix.needData(name, `node '${n.name}' (Loop): its condition ${k < 0 ? '' : `after iteration ${k} `}depends on the input data and it ${nScan > 0 ? 'has scan outputs, whose length the condition decides' : 'has no trip count M'}`)).data[0];
    // `active`: the plan value saying whether the iteration about to run really runs, once that
    // depends on the data (null while every iteration so far is known to run)
    let cond = true;
    let active: string | null = null;
    if (declared[1]) {
      const c = ix.constant(declared[1]);
      if (c) cond = !!c.data[0];
      else if (measure) cond = measured(declared[1], -1);
      else active = declared[1];
    }
    for (let k = 0; k < trips && cond; k++) {
      if (k >= MAX_UNROLL) fail(n, `runs more than ${MAX_UNROLL} iterations (a trip count M is needed, or a condition that turns false)`);
      const pfx = `${n.name}/${k}/`;
      const bound = new Map<string, string>([[body.inputs[0].name, `${pfx}iter`], [body.inputs[1].name, active ?? `${pfx}cond`]]);
      ix.define(`${pfx}iter`, scalar('int', k));
      if (!active) ix.define(`${pfx}cond`, scalar('bool', 1));
      body.inputs.slice(2).forEach((inp, j) => bound.set(inp.name, carried[j]));
      const r = scoped(body, pfx, rename, bound);
      defineConsts(body, r, ix);
      ix.nodes(body.nodes, r, pfx);
      const condOut = r(body.outputs[0].name);
      const co = ix.constant(condOut);
      const next = body.outputs.slice(1, 1 + carried.length).map((o) => r(o.name));
      if (!active) {
        // this iteration runs for sure
        carried = next;
        body.outputs.slice(1 + carried.length).forEach((o, j) => scans[j].push(r(o.name)));
        if (co) cond = !!co.data[0];
        else if (measure) cond = measured(condOut, k);
        else active = condOut;
        continue;
      }
      // bounded by M, condition from the data: every iteration is computed, Where keeps the values of those that ran
      const sel: Node[] = next.map((v, j) => {
        if (ix.shape(v).join() !== ix.shape(carried[j]).join()) fail(n, `loop-carried value ${j} changes shape ([${ix.shape(carried[j])}] to [${ix.shape(v)}]) under a condition from the data`);
        return { name: `${pfx}sel${j}`, op: 'Where', domain: '', inputs: [active!, v, carried[j]], outputs: [`${pfx}sel${j}`], attrs: {} };
      });
      const nodes = [...sel];
      if (co && !co.data[0]) cond = false;
      else if (!co) nodes.push({ name: `${pfx}active`, op: 'And', domain: '', inputs: [active, condOut], outputs: [`${pfx}active`], attrs: {} });
      ix.nodes(nodes, (x) => x);
      carried = sel.map((x) => x.outputs[0]);
      if (!co) active = `${pfx}active`;
    }
    const outs: Node[] = carried.map((v, j) => identity(`${n.name}/out${j}`, v, n.outputs[j])).filter((x) => x.outputs[0]);
    scans.forEach((parts, j) => {
      const out = n.outputs[carried.length + j];
      if (!out) return;
      if (parts.length === 0) fail(n, `runs no iteration, so its scan output '${out}' has no known shape`);
      outs.push(...stack(ix, `${n.name}/scan${j}`, parts, 0, out));
    });
    ix.nodes(outs, (x) => x);
    return;
  }
  if (n.op === 'Scan') {
    if (ix.opset < 9) fail(n, 'Scan before opset 9 (with a sequence_lens input) is not supported');
    const body = subgraph(n, 'body');
    const nIn = Number(n.attrs.num_scan_inputs ?? 0);
    const nState = declared.length - nIn;
    const nOut = body.outputs.length - nState;
    if (nIn < 1 || nState < 0 || nOut < 0 || body.inputs.length !== nState + nIn) fail(n, `the body's inputs and outputs do not fit ${nState} states and ${nIn} scan inputs`);
    const list = (a: string, len: number) => {
      const v = n.attrs[a];
      return Array.isArray(v) ? (v as number[]) : new Array(len).fill(0);
    };
    const inAxes = list('scan_input_axes', nIn), inDirs = list('scan_input_directions', nIn);
    const outAxes = list('scan_output_axes', nOut), outDirs = list('scan_output_directions', nOut);
    const scanIn = declared.slice(nState);
    const s0 = ix.shape(scanIn[0]);
    const len = s0[inAxes[0] < 0 ? inAxes[0] + s0.length : inAxes[0]];
    if (len === undefined) fail(n, `scan axis ${inAxes[0]} is out of range for input shape [${s0}]`);
    let states = declared.slice(0, nState);
    const outsPer: string[][] = Array.from({ length: nOut }, () => []);
    if (len > MAX_UNROLL) fail(n, `scans ${len} steps, more than ${MAX_UNROLL}`);
    for (let k = 0; k < len; k++) {
      const pfx = `${n.name}/${k}/`;
      const bound = new Map<string, string>();
      body.inputs.slice(0, nState).forEach((inp, j) => bound.set(inp.name, states[j]));
      const pre: Node[] = [];
      body.inputs.slice(nState).forEach((inp, j) => {
        const rank = ix.shape(scanIn[j]).length;
        const axis = inAxes[j] < 0 ? inAxes[j] + rank : inAxes[j];
        const idx = `${pfx}idx${j}`;
        ix.define(idx, scalar('int', inDirs[j] ? len - 1 - k : k));
        const v = `${pfx}in${j}`;
        pre.push({ name: v, op: 'Gather', domain: '', inputs: [scanIn[j], idx], outputs: [v], attrs: { axis } });
        bound.set(inp.name, v);
      });
      ix.nodes(pre, (x) => x);
      const r = scoped(body, pfx, rename, bound);
      defineConsts(body, r, ix);
      ix.nodes(body.nodes, r, pfx);
      states = body.outputs.slice(0, nState).map((o) => r(o.name));
      body.outputs.slice(nState).forEach((o, j) => outsPer[j].push(r(o.name)));
    }
    const outs: Node[] = states.map((v, j) => identity(`${n.name}/out${j}`, v, n.outputs[j])).filter((x) => x.outputs[0]);
    outsPer.forEach((parts, j) => {
      const out = n.outputs[nState + j];
      if (!out) return;
      if (parts.length === 0) fail(n, `scans no step, so its output '${out}' has no known shape`);
      const ordered = outDirs[j] ? [...parts].reverse() : parts;
      const rank = ix.shape(parts[0]).length + 1;
      const axis = outAxes[j] < 0 ? outAxes[j] + rank : outAxes[j];
      outs.push(...stack(ix, `${n.name}/scan${j}`, ordered, axis, out));
    });
    ix.nodes(outs, (x) => x);
    return;
  }
  fail(n, 'not a control-flow op');
}
