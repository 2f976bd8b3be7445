/**
 * Phase 3 targets as strategies (DESIGN.md section 5): each selects one point of the front
 * (ordered from the costliest to the cheapest) with as few real evaluations as it can.
 */
import { MpqError } from '../errors';
import { FrontPoint } from './pareto';

/** Measures a point's metric (cached by the caller: a point is evaluated at most once). */
export type EvalPoint = (p: FrontPoint) => Promise<number>;

export interface TargetStrategy {
  readonly name: string;
  select(front: FrontPoint[], evalPoint: EvalPoint): Promise<FrontPoint>;
}

/**
 * The cheapest point whose measured metric is at least `goal`, by binary search along the
 * front (which assumes the metric falls as the cost falls); the point before the answer is
 * measured too, so that the answer is the cheapest of the measured points that meet the goal.
 * When no point meets it, the costliest point.
 */
export function binarySearch(goal: number): TargetStrategy {
  return {
    name: 'binary',
    async select(front, evalPoint) {
      let lo = 0, hi = front.length - 1, best = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if ((await evalPoint(front[mid])) >= goal) {
          best = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      const p = front[best >= 0 ? best : 0];
      await evalPoint(p);
      return p;
    },
  };
}

/**
 * The same answer as {@link binarySearch} under a monotone metric, found by interpolation:
 * the next point tried is where the line between the two bracketing measurements crosses the
 * goal (fewer evaluations when the metric falls smoothly with the front's index), with a
 * bisection step whenever interpolation stops narrowing the bracket fast enough.
 */
export function interpolationSearch(goal: number): TargetStrategy {
  return {
    name: 'interpolation',
    async select(front, evalPoint) {
      let lo = 0, hi = front.length - 1;
      const mLo = await evalPoint(front[lo]);
      if (mLo < goal) return front[0];
      let vLo = mLo;
      let vHi = await evalPoint(front[hi]);
      if (vHi >= goal) return front[hi];
      // invariant: front[lo] meets the goal, front[hi] does not
      let bisect = false;
      while (hi - lo > 1) {
        let mid: number;
        if (bisect || !(vLo > vHi)) mid = (lo + hi) >> 1;
        else mid = Math.round(lo + ((hi - lo) * (vLo - goal)) / (vLo - vHi));
        mid = Math.min(hi - 1, Math.max(lo + 1, mid));
        const width = hi - lo;
        const v = await evalPoint(front[mid]);
        if (v >= goal) {
          lo = mid;
          vLo = v;
        } else {
          hi = mid;
          vHi = v;
        }
        // alternate with bisection when a step removed less than a quarter of the bracket
        bisect = !bisect && hi - lo > 0.75 * width;
      }
      return front[lo];
    },
  };
}

/**
 * The most accurate evaluated point among the costliest `tries` points that fit the budget
 * (`within`); an error naming the cheapest point's cost when none fits.
 */
export function budget(within: (p: FrontPoint) => boolean, tries = 3): TargetStrategy {
  return {
    name: 'budget',
    async select(front, evalPoint) {
      const ok = front.filter(within);
      if (ok.length === 0) {
        const cheapest = front[front.length - 1];
        throw new MpqError('MPQ_BAD_INPUT', `no configuration meets the budget: the cheapest on the front has relative cost ${cheapest.rel_cost.toFixed(3)} and ${(cheapest.size_bytes / 1e6).toFixed(2)} MB`);
      }
      const cands = ok.slice(0, tries);
      let best = cands[0], bestV = -Infinity;
      for (const p of cands) {
        const v = await evalPoint(p);
        if (v > bestV) [best, bestV] = [p, v];
      }
      return best;
    },
  };
}
