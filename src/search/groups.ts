/**
 * Quantizer groups (DESIGN.md section 3): the output activation quantizer of one producer plus
 * the weight quantizers of every compute op that consumes that tensor (seen through
 * data-movement ops). Each compute op's cost then depends on one group. Weights whose op
 * reads an unquantized value form a group of their own.
 */
import { MpqError } from '../errors';
import { Graph, Node } from '../graph/ir';
import { Placement, WEIGHTED } from '../quant/placement';
import { allowedCandidates, Candidate, candKey, Profile } from '../profiles/profile';
import { actBits, BitConfig, weightBits } from '../quant/config';

export interface Group {
  id: number;
  /** The activation quantizer (tensor name), if any. */
  act?: string;
  /** Weight quantizers (weight tensor names). */
  weights: string[];
  /** Names of the compute nodes that read this group's activation or own its weights. */
  consumers: string[];
  /** Op types involved (producer and consumers), for profile restrictions. */
  ops: string[];
  /** Candidates every op in the group supports, cheapest first. */
  candidates: Candidate[];
}

/** Cost order of candidates: weight bits times activation bits, then activation bits. */
export const candCost = (c: Candidate) => c.a * c.w * 1000 + c.a;

export function buildGroups(g: Graph, placement: Placement, profile: Profile): Group[] {
  const producer = new Map<string, Node>();
  for (const n of g.nodes) for (const o of n.outputs) producer.set(o, n);
  const byAct = new Map<string, Group>();
  const groups: Group[] = [];
  for (const a of placement.activations) {
    const grp: Group = { id: groups.length, act: a.tensor, weights: [], consumers: [], ops: [], candidates: [] };
    const p = producer.get(a.tensor);
    if (p) grp.ops.push(p.op);
    groups.push(grp);
    byAct.set(a.tensor, grp);
  }
  // a node's weights (LSTM and GRU have two: W and R)
  const weightsOf = new Map<string, string[]>();
  for (const w of placement.weights) weightsOf.set(w.node, [...(weightsOf.get(w.node) ?? []), w.tensor]);
  for (const n of g.nodes) {
    const encs = n.inputs.filter(Boolean).map((i) => placement.encodingOf.get(i)).filter((e): e is string => !!e);
    for (const e of new Set(encs)) {
      const grp = byAct.get(e)!;
      grp.consumers.push(n.name);
      if (!grp.ops.includes(n.op)) grp.ops.push(n.op);
    }
    const ws = weightsOf.get(n.name);
    if (!ws) continue;
    // the activation a weighted op reads (an embedding Gather reads its table: a group of its own)
    const src = WEIGHTED.has(n.op) ? placement.encodingOf.get(n.inputs[0]) : undefined;
    const grp = src ? byAct.get(src)! : undefined;
    if (grp) {
      for (const w of ws) if (!grp.weights.includes(w)) grp.weights.push(w);
    } else {
      groups.push({ id: groups.length, weights: [...ws], consumers: [n.name], ops: [n.op], candidates: [] });
    }
  }
  for (const grp of groups) {
    grp.candidates = allowedCandidates(profile, grp.ops).sort((x, y) => candCost(x) - candCost(y));
    if (grp.candidates.length === 0) {
      throw new MpqError(
        'MPQ_BAD_INPUT',
        `quantizer group ${grp.id} (${grp.act ?? grp.weights[0]}; ops ${grp.ops.join(', ')}) has no candidate that all its ops support in profile '${profile.name}' (${profile.candidates.map(candKey).join(', ')})`,
      );
    }
  }
  return groups;
}

/** The bit configuration that sets every group to its chosen candidate. */
export function configOf(groups: Group[], choice: Candidate[]): { w: number; a: number; weights: Record<string, number>; activations: Record<string, number> } {
  const weights: Record<string, number> = {};
  const activations: Record<string, number> = {};
  groups.forEach((grp, i) => {
    const c = choice[i];
    if (grp.act) activations[grp.act] = c.a;
    for (const w of grp.weights) weights[w] = c.w;
  });
  return { w: 8, a: 8, weights, activations };
}

/**
 * Checks that `config` gives every group a candidate it allows (quantize --profile): the
 * activation bits of the group's quantizer paired with each of its weights' bits.
 */
export function checkConfigAllowed(groups: Group[], config: BitConfig, profile: Profile): void {
  for (const grp of groups) {
    const a = grp.act ? actBits(config, grp.act) : undefined;
    const pairs = grp.weights.length ? grp.weights.map((w) => ({ a, w: weightBits(config, w) })) : [{ a, w: undefined }];
    for (const p of pairs) {
      const ok = grp.candidates.some((c) => (p.a === undefined || c.a === p.a) && (p.w === undefined || c.w === p.w));
      if (!ok) {
        const what = `${p.w !== undefined ? `W${p.w}` : ''}${p.a !== undefined ? `A${p.a}` : ''}`;
        throw new MpqError(
          'MPQ_BAD_INPUT',
          `${what} is not allowed by profile '${profile.name}' for quantizer group ${grp.id} (${grp.act ?? grp.weights[0]}; ops ${grp.ops.join(', ')}): it allows ${grp.candidates.map(candKey).join(', ')}`,
        );
      }
    }
  }
}
