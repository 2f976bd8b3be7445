/** Calibration: activation statistics over the calibration data, computed in the engine. */
import { MpqError } from '../errors';
import { Model, RunOptions, Tensor } from '../model';
import { mseRange, RangeMethod } from './ranges';

export type Batches = () => AsyncIterable<Record<string, Tensor>>;

export interface ActStats {
  min: number;
  max: number;
  /** Histogram over [min, max] (only for the MSE range method). */
  hist?: Float64Array;
}

const BINS = 1024;

/**
 * Refuses NaN and Inf in calibration data (they would collapse every range). Data sources
 * from `openDataSource` check this per sample, naming the file; this guards other batches.
 */
function checkFinite(batch: Record<string, Tensor>, index: number): void {
  for (const [name, t] of Object.entries(batch)) {
    const d = t.data;
    for (let k = 0; k < d.length; k++) {
      const v = d[k];
      if (v !== v || v === Infinity || v === -Infinity) {
        throw new MpqError('MPQ_BAD_INPUT', `calibration batch ${index}, input '${name}': ${v} at element ${k}; calibration data must be finite`);
      }
    }
  }
}

/** Min/max (and histograms for MSE) of `values` over every calibration batch. */
export async function collectStats(model: Model, batches: Batches, values: string[], method: RangeMethod, opts: RunOptions = {}): Promise<Map<string, ActStats>> {
  const stats = new Map<string, ActStats>();
  for (const v of values) stats.set(v, { min: Infinity, max: -Infinity });
  const plans = new Map<string, { c: ReturnType<Model['compile']>; ids: number[]; names: string[] }>();
  const planFor = (batch: Record<string, Tensor>) => {
    const key = model.inputNames.map((n) => batch[n].shape.join('x')).join(';');
    let p = plans.get(key);
    if (!p) {
      const c = model.compile(Object.fromEntries(model.inputNames.map((n) => [n, batch[n].shape])), values);
      const names = values.filter((v) => c.lowered.index.has(v));
      p = { c, ids: names.map((v) => c.lowered.index.get(v)!), names };
      plans.set(key, p);
    }
    return p;
  };
  let nb = 0;
  for await (const batch of batches()) {
    checkFinite(batch, nb++);
    const p = planFor(batch);
    const r = await model.observe(p.c, model.inputNames.map((n) => batch[n]), p.ids, undefined, opts);
    p.names.forEach((v, i) => {
      const s = stats.get(v)!;
      s.min = Math.min(s.min, r[2 * i]);
      s.max = Math.max(s.max, r[2 * i + 1]);
    });
  }
  if (method === 'mse') {
    for (const s of stats.values()) s.hist = new Float64Array(BINS);
    for await (const batch of batches()) {
      const p = planFor(batch);
      const ranges = new Float64Array(p.names.length * 2);
      p.names.forEach((v, i) => {
        ranges[2 * i] = stats.get(v)!.min;
        ranges[2 * i + 1] = stats.get(v)!.max;
      });
      const h = await model.observe(p.c, model.inputNames.map((n) => batch[n]), p.ids, { ranges, bins: BINS }, opts);
      p.names.forEach((v, i) => {
        const dst = stats.get(v)!.hist!;
        for (let k = 0; k < BINS; k++) dst[k] += h[i * BINS + k];
      });
    }
  }
  return stats;
}

/**
 * Range setting per bit-width. The MSE search runs on a histogram of {@link BINS} bins: above
 * 10 bits a quantization step is narrower than a bin, so the histogram cannot see what a
 * clipped range costs (clipping inside the last bin looks free) and the search clips the
 * extremes; min-max is used there instead. Measured on MobileNetV1 and PP-OCR cls
 * (bench/ROUNDING.md, `npm run bench -- rounding mobilenet cls --ranges`). `mseMaxBits` is
 * exported for that benchmark, to measure the unrestricted search.
 */
export const rangePolicy = { mseMaxBits: Math.floor(Math.log2(BINS)) };

/** The clipping range of an activation at `bits` under `method` (MSE: up to `rangePolicy.mseMaxBits`, min-max above). */
export function activationRange(s: ActStats, bits: number, method: RangeMethod): [number, number] {
  if (!Number.isFinite(s.min) || !Number.isFinite(s.max)) return [0, 0];
  if (method === 'mse' && s.hist && bits <= rangePolicy.mseMaxBits) return mseRange(s.hist, s.min, s.max, bits);
  return [s.min, s.max];
}
