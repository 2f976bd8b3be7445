/**
 * The part of a graph downstream of some nodes: what must be recomputed when only those nodes
 * change. Its inputs (the frontier) are float activations computed by the unchanged upstream.
 */
import { ConstTensor, Graph, Node, ValueInfo } from '../graph/ir';

export interface Downstream {
  graph: Graph;
  /** Frontier values: read by the downstream part, produced upstream (or graph inputs). */
  frontier: string[];
  /** Graph outputs the downstream part recomputes (the others are unchanged). */
  outputs: string[];
}

/**
 * `constOf(v)` gives the value of upstream values that are constant at the current input
 * shapes (shape arithmetic): they become constants of the downstream graph, not inputs.
 */
export function downstreamOf(
  g: Graph,
  seeds: ReadonlySet<string>,
  shapeOf: (v: string) => (number | string)[] | undefined,
  constOf: (v: string) => ConstTensor | undefined = () => undefined,
): Downstream {
  const changed = new Set<string>(); // values produced by downstream nodes
  const nodes: Node[] = [];
  for (const n of g.nodes) {
    if (seeds.has(n.name) || n.inputs.some((i) => changed.has(i))) {
      nodes.push(n);
      for (const o of n.outputs) if (o) changed.add(o);
    }
  }
  const frontier: string[] = [];
  const seen = new Set<string>();
  const consts = new Map(g.consts);
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (!i || changed.has(i) || consts.has(i) || seen.has(i)) continue;
      seen.add(i);
      const c = constOf(i);
      if (c) consts.set(i, c);
      else frontier.push(i);
    }
  }
  const outputs = g.outputs.filter((o) => changed.has(o.name)).map((o) => o.name);
  const inputs: ValueInfo[] = frontier.map((name) => {
    const declared = g.inputs.find((i) => i.name === name);
    return declared ?? { name, dtype: 'float', onnxType: 1, dims: shapeOf(name) ?? null };
  });
  return {
    graph: { ...g, nodes, inputs, consts, outputs: g.outputs.filter((o) => changed.has(o.name)) },
    frontier,
    outputs,
  };
}
