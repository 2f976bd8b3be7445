/**
 * Quantizers inside the If branch a plan runs. An If whose condition is known at the
 * calibration shapes, or measured on the calibration data (checked at run time by
 * MpqExpectValue, see specialize.ts), runs one branch in the plan: its nodes are inlined
 * under their own value names. The graph quantizers are placed on is the model's graph with
 * each such If written as the nodes of that branch (node names as in the plan), so that
 * placement, groups, cost and rounding see the branch's nodes like any others, and the
 * simulation (whose plan has the same names) quantizes them. The export puts the quantizers
 * back inside that branch of the If (qdq.ts); the branch the calibration data did not take
 * stays float, and a note says so.
 *
 * An If output that is a graph output takes the graph output's name in the branch (graph
 * outputs stay float, as anywhere else); other If outputs are Identity nodes from the
 * branch's outputs, as in the plan.
 */
import { floatSubgraphsNote } from './control';
import { Graph, isGraph, Node } from './ir';
import { Specialized } from './specialize';

export interface TakenBranches {
  /** The graph with the If nodes the plan runs one branch of written out as that branch. */
  graph: Graph;
  /** What stays float, and why (untaken branches, control flow left as it is). */
  notes: string[];
}

/** The If nodes of `g` (nested ones in taken branches too) that `spec` runs one branch of, written out. */
export function inlineTakenBranches(g: Graph, spec: Specialized): TakenBranches {
  const consts = new Map(g.consts);
  const graphOutputs = new Set(g.outputs.map((o) => o.name));
  const fromData: string[] = [];
  let fromShapes = 0;
  const walk = (nodes: Node[], prefix: string, ren: Map<string, string>, out: Node[]): void => {
    const r = (v: string) => ren.get(v) ?? v;
    for (const n0 of nodes) {
      const name = prefix + n0.name;
      const n: Node = { ...n0, name, inputs: n0.inputs.map((i) => (i ? r(i) : i)), outputs: n0.outputs.map((o) => (o ? r(o) : o)) };
      const pick = n.op === 'If' ? spec.picks.get(name) : undefined;
      const b = pick && n.attrs[pick.branch];
      if (!pick || !isGraph(b) || b.outputs.length !== n.outputs.length) {
        out.push(n);
        continue;
      }
      for (const [k, t] of b.consts) consts.set(k, t);
      const produced = new Set(b.nodes.flatMap((m) => m.outputs));
      const inner = new Map(ren);
      b.outputs.forEach((o, i) => {
        const v = n.outputs[i];
        if (v && graphOutputs.has(v) && produced.has(o.name) && !inner.has(o.name)) inner.set(o.name, v);
      });
      walk(b.nodes, `${name}/`, inner, out);
      b.outputs.forEach((o, i) => {
        const v = n.outputs[i], from = inner.get(o.name) ?? o.name;
        if (v && from !== v) out.push({ name: `${name}/out${i}`, op: 'Identity', domain: '', inputs: [from], outputs: [v], attrs: {} });
      });
      if (pick.from === 'data') fromData.push(`If '${name}' ran its ${pick.branch} on the calibration data (its condition '${n.inputs[0]}' comes from the input data), which is quantized; its ${other(pick.branch)} stays float: no calibration sample took it (the exported model runs it in float; the simulation refuses inputs that take it)`);
      else fromShapes++;
    }
  };
  const nodes: Node[] = [];
  walk(g.nodes, '', new Map(), nodes);
  if (!fromData.length && !fromShapes) return { graph: g, notes: noteOf(floatSubgraphsNote(g)) };
  const graph: Graph = { ...g, nodes, consts };
  const notes = [...fromData];
  if (fromShapes) notes.push(`${fromShapes} If node${fromShapes > 1 ? 's' : ''} whose condition the input shapes decide ${fromShapes > 1 ? 'are' : 'is'} quantized in the branch the calibration shapes take; the other branch stays float`);
  notes.push(...noteOf(floatSubgraphsNote(graph)));
  return { graph, notes };
}

const other = (b: string) => (b === 'then_branch' ? 'else_branch' : 'then_branch');
const noteOf = (n: string | null) => (n ? [n] : []);
