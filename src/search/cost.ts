/**
 * Cost of a configuration: BOPs = MACs x a x w per compute op (activation-by-activation
 * MatMul: a1 x a2), with MACs from the real shapes; weight memory = sum(params x w) / 8.
 * `rel_bops` is relative to the all-W8A8 configuration.
 */
import { Graph } from '../graph/ir';
import { nodeMacs } from '../graph/macs';
import { Specialized } from '../graph/specialize';
import { Placement } from '../quant/placement';
import { Candidate } from '../profiles/profile';
import { Group } from './groups';

interface OpCost {
  node: string;
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

  constructor(g: Graph, spec: Specialized, placement: Placement, groups: Group[]) {
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
        macs,
        inGroup: encGroup(n.inputs[0]),
        in2Group: w === undefined && n.op === 'MatMul' ? encGroup(n.inputs[1]) : -1,
        wGroup: w ?? -1,
      });
    }
    this.params = [];
    for (const [w, gid] of groupOfWeight) this.params.push({ group: gid, count: g.consts.get(w)!.data.length });
    this.w8a8Bops = this.bops(groups.map(() => ({ a: 8, w: 8 })));
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
