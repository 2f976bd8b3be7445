/**
 * Cost of a configuration: BOPs = MACs x a x w per compute op (activation-by-activation
 * MatMul: a1 x a2), with MACs from the real shapes; weight memory = sum(params x w) / 8.
 * `rel_bops` is relative to the all-W8A8 configuration.
 *
 * A profile may instead give a latency per MAC for each op type and candidate
 * (`cost.metric: "latency"`), and a cost per precision-conversion op where an op's input and
 * output groups run at different activation widths (`cost.conversion`). The search then ranks
 * and budgets by `relCost` (relative to all-W8A8 in the same units); `rel_bops` is reported
 * beside it.
 */
import { Graph } from '../graph/ir';
import { nodeMacs } from '../graph/macs';
import { Specialized } from '../graph/specialize';
import { Placement } from '../quant/placement';
import { Candidate, candKey, Profile } from '../profiles/profile';
import { Group } from './groups';

interface OpCost {
  node: string;
  op: string;
  /** Group of the op's output activation, or -1. */
  outGroup: number;
  macs: number;
  /** Group of the op's first input (its activation bits), or -1 when that input is float. */
  inGroup: number;
  /** Group of the second activation input (act x act MatMul), or -1. */
  in2Group: number;
  /** Group owning the op's weights, or -1 when it has none. */
  wGroup: number;
}

export class CostModel {
  readonly ops: OpCost[];
  readonly params: { group: number; count: number }[];
  readonly w8a8Bops: number;
  private readonly w8a8Cost: number;

  constructor(g: Graph, spec: Specialized, placement: Placement, groups: Group[], private readonly profile?: Profile) {
    const groupOfAct = new Map<string, number>();
    const groupOfWeight = new Map<string, number>();
    for (const grp of groups) {
      if (grp.act) groupOfAct.set(grp.act, grp.id);
      for (const w of grp.weights) groupOfWeight.set(w, grp.id);
    }
    const encGroup = (v: string) => {
      const e = placement.encodingOf.get(v);
      return e !== undefined ? (groupOfAct.get(e) ?? -1) : -1;
    };
    this.ops = [];
    for (const sn of spec.nodes) {
      if (sn.folded) continue;
      const macs = nodeMacs(sn);
      if (macs === 0) continue;
      const n = sn.node;
      const w = groupOfWeight.get(n.inputs[1]);
      this.ops.push({
        node: n.name,
        op: n.op,
        outGroup: encGroup(n.outputs[0]),
        macs,
        inGroup: encGroup(n.inputs[0]),
        in2Group: w === undefined && n.op === 'MatMul' ? encGroup(n.inputs[1]) : -1,
        wGroup: w ?? -1,
      });
    }
    this.params = [];
    for (const [w, gid] of groupOfWeight) this.params.push({ group: gid, count: g.consts.get(w)!.data.length });
    const w8a8 = groups.map(() => ({ a: 8, w: 8 }));
    this.w8a8Bops = this.bops(w8a8);
    this.w8a8Cost = this.cost(w8a8);
  }

  /** True when the profile ranks by something other than plain BOPs. */
  get custom(): boolean {
    return this.profile?.cost?.metric === 'latency' || (this.profile?.cost?.conversion ?? 0) > 0;
  }

  /** The profile's cost: BOPs or latency, plus precision conversions. */
  cost(choice: Candidate[]): number {
    const c = this.profile?.cost;
    let t = 0;
    if (c?.metric === 'latency') {
      for (const o of this.ops) {
        const g = o.wGroup >= 0 ? o.wGroup : o.inGroup;
        const cand = g >= 0 ? choice[g] : { a: 32, w: 32 };
        const perMac = c.latency?.[o.op]?.[candKey(cand)] ?? (cand.a * cand.w) / 64;
        t += o.macs * perMac;
      }
    } else t = this.bops(choice);
    if (c?.conversion) {
      for (const o of this.ops) {
        if (o.inGroup >= 0 && o.outGroup >= 0 && choice[o.inGroup].a !== choice[o.outGroup].a) t += c.conversion;
      }
    }
    return t;
  }

  /** The profile's cost relative to all-W8A8 (equal to relBops for plain BOPs profiles). */
  relCost(choice: Candidate[]): number {
    return this.w8a8Cost > 0 ? this.cost(choice) / this.w8a8Cost : 0;
  }

  /** Total BOPs with group i at choice[i]; float (unquantized) operands count as 32 bits. */
  bops(choice: Candidate[]): number {
    let t = 0;
    for (const o of this.ops) {
      const a = o.inGroup >= 0 ? choice[o.inGroup].a : 32;
      const second = o.wGroup >= 0 ? choice[o.wGroup].w : o.in2Group >= 0 ? choice[o.in2Group].a : 32;
      t += o.macs * a * second;
    }
    return t;
  }

  relBops(choice: Candidate[]): number {
    return this.w8a8Bops > 0 ? this.bops(choice) / this.w8a8Bops : 0;
  }

  /** Weight memory in bytes. */
  sizeBytes(choice: Candidate[]): number {
    let bits = 0;
    for (const p of this.params) bits += p.count * choice[p.group].w;
    return bits / 8;
  }
}
