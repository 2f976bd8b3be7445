/**
 * The quantization session of a search: the model, its calibration (placement, statistics,
 * rounding), the quantizer groups and cost model of the profile, and the key that names
 * everything that determines the encodings phase 1 measures. The search and a phase-1
 * worker (`mpq worker`) open the same session from the same inputs, so their measurements
 * are interchangeable.
 */
import { Model } from '../model';
import { candKey, Profile } from '../profiles/profile';
import { Batches } from '../quant/calibrate';
import { calibrate, Calibrated, DEFAULT_RANGES, DEFAULT_ROUNDING, QuantizeOptions } from '../quant/quantize';
import { hashOf } from './cache';
import { CostModel } from './cost';
import { buildGroups, Group } from './groups';

export interface Session {
  model: Model;
  profile: Profile;
  cal: Calibrated;
  groups: Group[];
  cost: CostModel;
  /** Hash of model, profile, data and every option that determines the encodings. */
  key: string;
  /** The options in that hash, as resolved (what a phase-1 worker opens the same session with). */
  options: Pick<QuantizeOptions, 'weightRange' | 'actRange' | 'rounding' | 'roundingOptions'> & { samples: number };
}

/** Calibration data as a session needs it. */
export interface SessionData {
  batches: Batches;
  /** Content hash of the samples. */
  fingerprint: string;
  count: number;
}

/** Calibration batches that report the samples that went through them. */
function counted(batches: Batches, tick: (samples: number) => void): Batches {
  return async function* () {
    for await (const b of batches()) {
      yield b;
      tick(Object.values(b)[0]?.shape[0] ?? 0);
    }
  };
}

/**
 * Calibrates `model` on `data` (passes over the data: first batch, min/max, histograms for
 * MSE ranges, layer statistics for data-aware rounding; `onProgress` in samples) and builds
 * the groups of `profile`. Data-aware rounding is per layer unless `roundingOptions.sequential`
 * is set: phase 1, the evaluations and the export must all use the weights that are exported.
 */
export async function openSession(
  model: Model,
  modelHash: string,
  data: SessionData,
  profile: Profile,
  o: QuantizeOptions,
  onProgress?: (done: number, total: number) => void,
): Promise<Session> {
  const passes = 1 + ((o.actRange ?? DEFAULT_RANGES.act) === 'mse' ? 1 : 0) + ((o.rounding ?? DEFAULT_ROUNDING) === 'nearest' ? 0 : 1);
  const total = data.count * passes + Math.min(data.count, 1);
  let done = 0;
  onProgress?.(0, total);
  const batches = counted(data.batches, (n) => onProgress?.(Math.min((done += n), total), total));
  const roundingOptions = { ...o.roundingOptions, sequential: o.roundingOptions?.sequential ?? false };
  const cal = await calibrate(model, batches, { ...o, scheme: profile.scheme, roundingOptions });
  cal.batches = data.batches;
  onProgress?.(total, total);
  const spec = model.specialize(cal.shapes);
  const groups = buildGroups(cal.graph, cal.placement, profile);
  const cost = new CostModel(cal.graph, spec, cal.placement, groups, profile);
  // a rerun with other settings into the same --out recomputes instead of reusing
  const options = { weightRange: cal.weightRange, actRange: cal.actRange, rounding: cal.rounding, roundingOptions, samples: data.count };
  // and so does one whose quantizers or groups differ (another version's placement): cached
  // entries are named by group id, which only means the same thing under the same groups
  const layout = groups.map((g) => [g.id, g.act ?? null, g.weights, g.candidates.map(candKey)]);
  const key = hashOf(modelHash, JSON.stringify(profile), data.fingerprint, JSON.stringify(options), JSON.stringify(layout), JSON.stringify(cal.placement.activations.map((a) => a.tensor)));
  return { model, profile, cal, groups, cost, key, options };
}
