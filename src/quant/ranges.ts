/**
 * Range setting. Weights: per-channel max-abs, or a per-channel search of the clipping
 * ratio that minimises the squared quantization error (MSE). Activations: min-max over the
 * calibration data, or an MSE search of the clipping range over a histogram.
 */
import { fakeQuant, qrange, symmetricScale } from './scheme';

export type RangeMethod = 'minmax' | 'mse';

/** Per-channel symmetric scales of a weight tensor with output-channel axis `axis`. */
export function weightScales(data: Float32Array, shape: number[], axis: number, bits: number, method: RangeMethod): Float32Array {
  const ch = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const scales = new Float32Array(ch);
  const { qmin, qmax } = qrange(bits, true);
  const vals: number[] = [];
  for (let c = 0; c < ch; c++) {
    vals.length = 0;
    for (let o = 0; o < outer; o++) {
      const base = (o * ch + c) * inner;
      for (let i = 0; i < inner; i++) vals.push(data[base + i]);
    }
    let maxAbs = 0;
    for (const v of vals) maxAbs = Math.max(maxAbs, Math.abs(v));
    let best = symmetricScale(maxAbs, bits);
    if (method === 'mse' && maxAbs > 0) {
      let bestErr = Infinity;
      for (let k = 0; k <= 40; k++) {
        const ratio = 1 - k * 0.0125; // 1.0 .. 0.5
        const s = symmetricScale(maxAbs * ratio, bits);
        let err = 0;
        for (const v of vals) {
          const d = v - fakeQuant(v, s, 0, qmin, qmax);
          err += d * d;
        }
        if (err < bestErr) {
          bestErr = err;
          best = s;
        }
      }
    }
    scales[c] = best;
  }
  return scales;
}

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
