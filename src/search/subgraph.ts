/**
 * The part of a graph downstream of some nodes: what must be recomputed when only those nodes
 * change. Its inputs (the frontier) are float activations computed by the unchanged upstream.
 */
import { Graph, Node, ValueInfo } from '../graph/ir';

export interface Downstream {
  graph: Graph;
  /** Frontier values: read by the downstream part, produced upstream (or graph inputs). */
  frontier: string[];
  /** Graph outputs the downstream part recomputes (the others are unchanged). */
  outputs: string[];
}

export function downstreamOf(g: Graph, seeds: ReadonlySet<string>, shapeOf: (v: string) => (number | string)[] | undefined): Downstream {
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
  for (const n of nodes) {
    for (const i of n.inputs) {
      if (!i || changed.has(i) || g.consts.has(i) || seen.has(i)) continue;
      seen.add(i);
      frontier.push(i);
    }
  }
  const outputs = g.outputs.filter((o) => changed.has(o.name)).map((o) => o.name);
  const inputs: ValueInfo[] = frontier.map((name) => {
    const declared = g.inputs.find((i) => i.name === name);
    return declared ?? { name, dtype: 'float', onnxType: 1, dims: shapeOf(name) ?? null };
  });
  return {
    graph: { ...g, nodes, inputs, outputs: g.outputs.filter((o) => changed.has(o.name)) },
    frontier,
    outputs,
  };
}
