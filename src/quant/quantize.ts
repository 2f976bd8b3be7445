/**
 * Homogeneous and per-tensor quantization: calibrate, set ranges, build the QDQ graph that
 * the engine simulates and that is exported.
 */
import { MpqError } from '../errors';
import { Graph } from '../graph/ir';
import { Model, RunOptions, Tensor } from '../model';
import { saveGraph } from '../onnx/save';
import { upgradeOpset } from '../onnx/upgrade';
import { activationRange, Batches, collectStats } from './calibrate';
import { actBits, BitConfig, weightBits } from './config';
import { Encodings, TensorEncoding } from './encodings';
import { Placement, placeQuantizers } from './placement';
import { buildQdqGraph } from './qdq';
import { RangeMethod, weightScales } from './ranges';
import { asymmetric } from './scheme';

export interface QuantizeOptions extends RunOptions {
  /** Range setting for weights and activations (default: see DEFAULT_RANGES). */
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
}

export const DEFAULT_RANGES: { weight: RangeMethod; act: RangeMethod } = { weight: 'mse', act: 'mse' };

export interface Calibrated {
  model: Model;
  placement: Placement;
  /** Activation statistics by tensor. */
  stats: Awaited<ReturnType<typeof collectStats>>;
  actRange: RangeMethod;
  weightRange: RangeMethod;
  /** Input shapes of the first calibration batch. */
  shapes: Record<string, number[]>;
}

export interface Quantized {
  graph: Graph;
  encodings: Encodings;
  config: BitConfig;
}

async function firstBatch(batches: Batches): Promise<Record<string, Tensor>> {
  for await (const b of batches()) return b;
  throw new MpqError('MPQ_BAD_INPUT', 'the calibration data has no samples');
}

/** Places quantizers and collects activation statistics (done once per model and data). */
export async function calibrate(model: Model, batches: Batches, opts: QuantizeOptions = {}): Promise<Calibrated> {
  const actRange = opts.actRange ?? DEFAULT_RANGES.act;
  const weightRange = opts.weightRange ?? DEFAULT_RANGES.weight;
  const b0 = await firstBatch(batches);
  const shapes = Object.fromEntries(model.inputNames.map((n) => [n, b0[n].shape]));
  const spec = model.specialize(shapes);
  const isFloat = (v: string) => {
    const val = spec.values.get(v);
    return !!val && val.dtype === 'float' && !val.value;
  };
  const placement = placeQuantizers(model.graph, isFloat);
  const stats = await collectStats(model, batches, placement.activations.map((a) => a.tensor), actRange, opts);
  return { model, placement, stats, actRange, weightRange, shapes };
}

const weightScaleCache = new WeakMap<Calibrated, Map<string, Float32Array>>();

/** Encodings of every quantizer for a bit configuration. */
export function encodingsFor(cal: Calibrated, config: BitConfig): Encodings {
  const g = cal.model.graph;
  const weights = new Map<string, TensorEncoding>();
  let cache = weightScaleCache.get(cal);
  if (!cache) weightScaleCache.set(cal, (cache = new Map()));
  for (const w of cal.placement.weights) {
    const bits = weightBits(config, w.tensor);
    const t = g.consts.get(w.tensor)!;
    const key = `${w.tensor}@${bits}`;
    let scales = cache.get(key);
    if (!scales) cache.set(key, (scales = weightScales(t.data as Float32Array, t.shape, w.axis, bits, cal.weightRange)));
    const qmax = 2 ** (bits - 1) - 1;
    weights.set(w.tensor, {
      axis: w.axis,
      signed: true,
      entries: Array.from(scales, (s) => ({ bitwidth: bits, dtype: 'int' as const, is_symmetric: 'True' as const, scale: s, offset: 0, min: -s * qmax, max: s * qmax })),
    });
  }
  const activations = new Map<string, TensorEncoding>();
  for (const a of cal.placement.activations) {
    const s = cal.stats.get(a.tensor);
    if (!s) continue;
    const bits = actBits(config, a.tensor);
    const [lo, hi] = activationRange(s, bits, cal.actRange);
    const e = asymmetric(lo, hi, bits);
    activations.set(a.tensor, {
      signed: false,
      entries: [{ bitwidth: bits, dtype: 'int', is_symmetric: 'False', scale: e.scale, offset: -e.zeroPoint, min: e.min, max: e.max }],
    });
  }
  return { weights, activations };
}

export function quantizeWith(cal: Calibrated, config: BitConfig): Quantized {
  const encodings = encodingsFor(cal, config);
  return { graph: buildQdqGraph(cal.model.graph, encodings), encodings, config };
}

/** The opset an export needs: 21 when 4- or 16-bit types occur, else at least 13. */
export function exportOpset(q: Quantized, from: number): number {
  const all = [...q.encodings.weights.values(), ...q.encodings.activations.values()];
  for (const e of all) {
    const b = e.entries[0].bitwidth;
    if (![4, 8, 16].includes(b)) {
      throw new MpqError('MPQ_BAD_INPUT', `a ${b}-bit quantizer cannot be exported: ONNX has 4-, 8- and 16-bit integer types only. ${b}-bit widths can be simulated (mpq run --encodings) but not exported.`);
    }
  }
  const needs21 = all.some((e) => e.entries[0].bitwidth !== 8);
  return Math.max(from, needs21 ? 21 : 13);
}

/** The exported QDQ model bytes (opset converted as needed). */
export function exportQdq(q: Quantized, cal: Calibrated): Uint8Array {
  const spec = cal.model.specialize(cal.shapes);
  const rank = (v: string) => spec.values.get(v)?.shape.length;
  const g = upgradeOpset(q.graph, exportOpset(q, q.graph.opset), rank);
  return saveGraph(g);
}
