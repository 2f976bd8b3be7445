/**
 * Phase 2, the Pareto front: (group, candidate) entries ordered from least to most harmful
 * are applied cumulatively from the all-highest configuration (an entry never raises a
 * group's bits); each prefix is a point with its cost and a predicted SQNR from the summed
 * noise of the candidates in force.
 */
import { Candidate, candKey } from '../profiles/profile';
import { CostModel } from './cost';
import { candCost, Group } from './groups';
import { Phase1Entry } from './phase1';

export type FrontOrder = 'sqnr' | 'efficiency';

export interface FrontPoint {
  index: number;
  /** Candidate of each group (by group id). */
  choice: Candidate[];
  rel_bops: number;
  /** The profile's cost relative to all-W8A8 (= rel_bops unless the profile has latency or conversion costs). */
  rel_cost: number;
  size_bytes: number;
  predicted_sqnr_db: number;
  /** Measured metric, when the point was evaluated. */
  measured: number | null;
}

const noiseOf = (sqnrDb: number) => Math.pow(10, -sqnrDb / 10);

export function predictedSqnr(choice: Candidate[], groups: Group[], sens: Map<string, number>): number {
  let noise = 0;
  groups.forEach((g, i) => {
    const c = choice[i];
    if (candKey(c) === candKey(g.candidates[g.candidates.length - 1])) return;
    const s = sens.get(`${g.id}/${candKey(c)}`);
    if (s !== undefined) noise += noiseOf(s);
  });
  return noise > 0 ? Math.min(200, -10 * Math.log10(noise)) : 200;
}

export function orderEntries(entries: Phase1Entry[], groups: Group[], cost: CostModel, order: FrontOrder): Phase1Entry[] {
  if (order === 'sqnr') return [...entries].sort((a, b) => b.sqnr_db - a.sqnr_db);
  const top = groups.map((g) => g.candidates[g.candidates.length - 1]);
  const base = cost.cost(top);
  const score = (e: Phase1Entry) => {
    const choice = top.slice();
    choice[e.group] = e.candidate;
    const saved = base - cost.cost(choice);
    return noiseOf(e.sqnr_db) / Math.max(saved, 1e-9);
  };
  return [...entries].sort((a, b) => score(a) - score(b));
}

export function buildFront(entries: Phase1Entry[], groups: Group[], cost: CostModel, order: FrontOrder): FrontPoint[] {
  const sens = new Map(entries.map((e) => [`${e.group}/${candKey(e.candidate)}`, e.sqnr_db]));
  const choice = groups.map((g) => g.candidates[g.candidates.length - 1]);
  const point = (): FrontPoint => ({
    index: 0,
    choice: choice.slice(),
    rel_bops: cost.relBops(choice),
    rel_cost: cost.relCost(choice),
    size_bytes: cost.sizeBytes(choice),
    predicted_sqnr_db: predictedSqnr(choice, groups, sens),
    measured: null,
  });
  const front = [point()];
  for (const e of orderEntries(entries, groups, cost, order)) {
    if (candCost(e.candidate) >= candCost(choice[e.group])) continue;
    choice[e.group] = e.candidate;
    front.push(point());
  }
  // with conversion or latency costs a step may not save: keep the points that do
  if (cost.custom) return front.filter((p, i) => i === 0 || p.rel_cost < Math.min(...front.slice(0, i).map((q) => q.rel_cost))).map((p, i) => ({ ...p, index: i }));
  front.forEach((p, i) => (p.index = i));
  return front;
}

/** Area-style quality of a front: mean predicted SQNR over a grid of cost budgets (higher is better). */
export function frontQuality(front: FrontPoint[], lo = 0.5, hi = 1.0, steps = 11): number {
  let t = 0;
  for (let k = 0; k < steps; k++) {
    const budget = lo + ((hi - lo) * k) / (steps - 1);
    const ok = front.filter((p) => p.rel_cost <= budget + 1e-12);
    t += ok.length ? Math.max(...ok.map((p) => p.predicted_sqnr_db)) : 0;
  }
  return t / steps;
}
