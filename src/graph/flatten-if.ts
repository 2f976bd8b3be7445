/**
 * Quantizers inside If branches: an If whose condition comes from the data and whose
 * branches agree in shape runs as both branches and a Where (see control.ts). For
 * quantization the graph says so itself: such an If is written out as the nodes of both
 * branches (their values named `<if>/then/<name>`, `<if>/else/<name>`) and one Where per
 * output, so that quantizers are placed and grouped inside the branches as anywhere else,
 * and the exported QDQ model computes what the If does (ONNX ops have no side effects).
 *
 * Only where that holds for every input the model accepts: its input shapes are all
 * declared (fixed), and the specialisation at those shapes takes the Where path. Other
 * control flow stays as it is (its subgraphs float, with a note).
 */
import { scoped } from './control';
import { Graph, isGraph, Node } from './ir';
import { resolveInputShapes, specialize } from './specialize';

/** `g` with its data-conditioned, same-shaped If nodes written out (`g` itself when there are none). */
export function flattenDataIfs(g: Graph): Graph {
  if (!g.nodes.some((n) => n.op === 'If')) return g;
  let selected: Set<string>;
  try {
    const spec = specialize(g, resolveInputShapes(g, {}), g.dataValues);
    selected = new Set(spec.nodes.map((sn) => sn.node.name));
  } catch {
    return g; // shapes not all declared, or the model fails later: leave it as it is
  }
  const consts = new Map(g.consts);
  const nodes: Node[] = [];
  let changed = false;
  for (const n of g.nodes) {
    const branches = [n.attrs.then_branch, n.attrs.else_branch];
    const flat =
      n.op === 'If' &&
      branches.every((b) => isGraph(b) && b.outputs.length === n.outputs.length && b.nodes.every((m) => !Object.values(m.attrs).some(isGraph))) &&
      n.outputs.some((o, i) => o && selected.has(`${n.name}/select${i}`));
    if (!flat) {
      nodes.push(n);
      continue;
    }
    changed = true;
    const outs = (branches as Graph[]).map((b, k) => {
      const prefix = `${n.name}/${k ? 'else' : 'then'}/`;
      const r = scoped(b, prefix, (x) => x, new Map());
      for (const [name, t] of b.consts) consts.set(r(name), t);
      for (const m of b.nodes) nodes.push({ ...m, name: prefix + m.name, inputs: m.inputs.map((i) => (i ? r(i) : i)), outputs: m.outputs.map((o) => (o ? r(o) : o)) });
      return b.outputs.map((o) => r(o.name));
    });
    n.outputs.forEach((o, i) => {
      if (o) nodes.push({ name: `${n.name}/select${i}`, op: 'Where', domain: '', inputs: [n.inputs[0], outs[0][i], outs[1][i]], outputs: [o], attrs: {} });
    });
  }
  return changed ? { ...g, nodes, consts } : g;
}

/** A note naming the If nodes that {@link flattenDataIfs} wrote out in `g` (null when none). */
export function flattenedIfsNote(g: Graph): string | null {
  const names = new Set(g.nodes.map((n) => n.name));
  const ifs = [...new Set(g.nodes.filter((n) => n.op === 'Where' && /\/select\d+$/.test(n.name)).map((n) => n.name.replace(/\/select\d+$/, '')))].filter(
    (x) => [...names].some((m) => m.startsWith(`${x}/then/`) || m.startsWith(`${x}/else/`)),
  );
  if (ifs.length === 0) return null;
  const list = ifs.slice(0, 3).map((x) => `'${x}'`).join(', ') + (ifs.length > 3 ? ` and ${ifs.length - 3} more` : '');
  return `If ${list} (a condition from the data, branches of one shape) ${ifs.length > 1 ? 'are' : 'is'} quantized inside: the exported model computes both branches and picks with Where`;
}
