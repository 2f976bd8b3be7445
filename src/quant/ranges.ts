/**
 * Range setting. Weights: per-channel max-abs, or a per-channel search of the clipping
 * ratio that minimises the squared quantization error (MSE), in the engine off the JS thread
 * (`mpq_core::ranges`, through the binding's `weightScales`). Activations: min-max over
 * the calibration data, or an MSE search of the clipping range over a histogram (here: it is
 * cheap, O(bins log bins) per candidate range).
 */
export type RangeMethod = 'minmax' | 'mse';

/**
 * The clipping range [lo, hi] (within the observed [min, max], always containing 0) that
 * minimises the expected squared error of `bits`-bit asymmetric quantization of a histogram
 * over [min, max]: clipping error of the values outside, plus s^2/12 per value inside (the
 * rounding error of a value uniformly placed within a step). Prefix sums of n, n*x, n*x^2
 * make each candidate O(log bins).
 */
export function mseRange(hist: ArrayLike<number>, min: number, max: number, bits: number): [number, number] {
  const lo0 = Math.min(0, min);
  const hi0 = Math.max(0, max);
  const bins = hist.length;
  const width = (max - min) / bins;
  if (!(hi0 > lo0) || !(width > 0)) return [lo0, hi0];
  const levels = 2 ** bits - 1;
  // prefix sums over bins (bin centres stand for their values)
  const c0 = new Float64Array(bins + 1), c1 = new Float64Array(bins + 1), c2 = new Float64Array(bins + 1);
  for (let i = 0; i < bins; i++) {
    const n = hist[i], x = min + (i + 0.5) * width;
    c0[i + 1] = c0[i] + n;
    c1[i + 1] = c1[i] + n * x;
    c2[i + 1] = c2[i] + n * x * x;
  }
  const total = c0[bins];
  // number of bins whose centre is below v
  const below = (v: number) => Math.min(bins, Math.max(0, Math.ceil((v - min) / width - 0.5)));
  const cost = (lo: number, hi: number) => {
    const s = (hi - lo) / levels;
    const a = below(lo), b = below(hi);
    const nLo = c0[a], sLo = c1[a], qLo = c2[a];
    const nHi = total - c0[b], sHi = c1[bins] - c1[b], qHi = c2[bins] - c2[b];
    const clipLo = lo * lo * nLo - 2 * lo * sLo + qLo;
    const clipHi = hi * hi * nHi - 2 * hi * sHi + qHi;
    return clipLo + clipHi + (total - nLo - nHi) * ((s * s) / 12);
  };
  let best: [number, number] = [lo0, hi0];
  let bestCost = cost(lo0, hi0);
  const steps = 100;
  const aSteps = lo0 < 0 ? steps : 0;
  for (let a = 0; a <= aSteps; a++) {
    for (let b = 0; b <= steps; b++) {
      const lo = lo0 * (1 - (0.8 * a) / steps);
      const hi = hi0 * (1 - (0.8 * b) / steps);
      if (!(hi > lo)) continue;
      const c = cost(lo, hi);
      if (c < bestCost) {
        bestCost = c;
        best = [lo, hi];
      }
    }
  }
  return best;
}
