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
 * over [min, max] (bin centres stand for their values).
 */
export function mseRange(hist: ArrayLike<number>, min: number, max: number, bits: number): [number, number] {
  const lo0 = Math.min(0, min);
  const hi0 = Math.max(0, max);
  const bins = hist.length;
  const width = (max - min) / bins;
  if (!(hi0 > lo0) || !(width > 0)) return [lo0, hi0];
  const levels = 2 ** bits - 1;
  const centres = Array.from({ length: bins }, (_, i) => min + (i + 0.5) * width);
  const cost = (lo: number, hi: number) => {
    const s = (hi - lo) / levels;
    let e = 0;
    for (let i = 0; i < bins; i++) {
      const n = hist[i];
      if (!n) continue;
      const x = centres[i];
      let d: number;
      if (x < lo) d = lo - x;
      else if (x > hi) d = x - hi;
      else {
        // uniform within-step error of a bin that spans many steps, s^2/12; rounding error of a point otherwise
        const r = (x - lo) / s;
        const rd = Math.abs(r - Math.round(r)) * s;
        d = width > s ? Math.sqrt((s * s) / 12) : rd;
      }
      e += n * d * d;
    }
    return e;
  };
  let best: [number, number] = [lo0, hi0];
  let bestCost = cost(lo0, hi0);
  for (let a = 0; a <= 30; a++) {
    for (let b = 0; b <= 30; b++) {
      const lo = lo0 * (1 - a / 40);
      const hi = hi0 * (1 - b / 40);
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
