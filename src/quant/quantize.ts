/**
 * Homogeneous and per-tensor quantization: calibrate, set ranges, build the QDQ graph that
 * the engine simulates and that is exported.
 */
import { abortError, fromNative, MpqError } from '../errors';
import { ConstTensor } from '../graph/ir';
import { native } from '../native';
import { Graph } from '../graph/ir';
import * as path from 'path';
import { flattenedIfsNote } from '../graph/flatten-if';
import { inlineTakenBranches } from '../graph/taken-branches';
import { pinConditions } from './conditions';
import { Model, RunOptions, Tensor } from '../model';
import { runInWorker } from '../worker';
import { saveGraph } from '../onnx/save';
import { upgradeOpset } from '../onnx/upgrade';
import { activationRange, Batches, collectStats } from './calibrate';
import { actBits, BitConfig, leftFloat, weightBits } from './config';
import { Encodings, TensorEncoding } from './encodings';
import { Placement, placeQuantizers } from './placement';
import { buildQdqGraph } from './qdq';
import { RangeMethod } from './ranges';
import { gatherRoundingStats, methodFor, RoundedWeight, Rounding, RoundingOptions, WeightRounder } from './rounding';
import { Scheme } from '../profiles/profile';
import { asymmetric } from './scheme';

export interface QuantizeOptions extends RunOptions {
  /** Range setting for weights and activations (default: see DEFAULT_RANGES). */
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  /** Weight rounding (default: see DEFAULT_ROUNDING); 'nearest' skips gathering layer statistics. */
  rounding?: Rounding;
  roundingOptions?: RoundingOptions;
  /** Scheme options of the hardware profile (`reduce_range`: 8-bit weights in [-63, 63]). */
  scheme?: Pick<Scheme, 'reduce_range'>;
}

/** Data-aware rounding at 8 bits and below, round to nearest above (chosen by measurement, bench/rounding.ts: it also helps at W8A8). */
export const DEFAULT_ROUNDING: Rounding = 'auto';

export const DEFAULT_RANGES: { weight: RangeMethod; act: RangeMethod } = { weight: 'mse', act: 'mse' };

/**
 * Per-layer rounding by default (not sequential): it is cached per weight and bit-width (and
 * on disk), so the search's metric, `quantize --config` and the export are the same weights;
 * sequential rounding measured no better (bench/ROUNDING.md).
 */
export const DEFAULT_SEQUENTIAL = false;

export interface Calibrated {
  model: Model;
  /**
   * The graph the quantizers are placed on: `model.graph` with each If that the calibration
   * runs one branch of written out as that branch (taken-branches.ts).
   */
  graph: Graph;
  /** What stays float and why (untaken If branches, other control flow), for run.json, quantize.json and the report. */
  notes: string[];
  placement: Placement;
  /** Activation statistics by tensor. */
  stats: Awaited<ReturnType<typeof collectStats>>;
  actRange: RangeMethod;
  weightRange: RangeMethod;
  /** Input shapes of the first calibration batch. */
  shapes: Record<string, number[]>;
  rounding: Rounding;
  /** Layer statistics and rounded weights (absent when rounding is 'nearest'). */
  rounder?: WeightRounder;
  /** The calibration data (sequential rounding runs it again per exported configuration). */
  batches?: Batches;
  /** 8-bit weights use the 7-bit range inside int8 storage. */
  reduceRange: boolean;
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
  // shapes that depend on the data (Range bounds, Reshape targets, ... from input values) are
  // measured on the first batch; every later plan checks that its data gives the same
  await model.measureDataValues(b0, { ...opts, share: true });
  // If conditions from the data that every batch agrees on select one branch (quantized inside)
  const bothNotes = await pinConditions(model, shapes, batches, opts);
  const spec = model.specialize(shapes);
  const isFloat = (v: string) => {
    const val = spec.values.get(v);
    return !!val && val.dtype === 'float' && !val.value;
  };
  const { graph, notes } = inlineTakenBranches(model.graph, spec);
  const flattened = flattenedIfsNote(model.graph);
  if (flattened) notes.push(flattened);
  notes.unshift(...bothNotes);
  const placement = placeQuantizers(graph, isFloat);
  const stats = await collectStats(model, batches, placement.activations.map((a) => a.tensor), actRange, opts);
  const rounding = opts.rounding ?? DEFAULT_ROUNDING;
  const rounder = rounding === 'nearest' ? undefined : await gatherRoundingStats(model, graph, placement, batches, opts.roundingOptions, opts);
  return { model, graph, notes, placement, stats, actRange, weightRange, shapes, rounding, rounder, batches, reduceRange: !!opts.scheme?.reduce_range };
}

/**
 * The signed range, in bits, of a weight stored at `bits`: 7 for 8-bit weights under
 * reduce_range (integers in [-63, 63], still int8 and costed as 8-bit), else `bits`.
 */
export function weightRangeBits(cal: Pick<Calibrated, 'reduceRange'>, bits: number): number {
  return cal.reduceRange && bits === 8 ? 7 : bits;
}

function scaleCache(cal: Calibrated): Map<string, Float32Array> {
  let cache = weightScaleCache.get(cal);
  if (!cache) weightScaleCache.set(cal, (cache = new Map()));
  return cache;
}

/**
 * Per-channel scales of a weight at `bits` (cached per calibration). Computed on the calling
 * thread when {@link prepareScales} has not computed them already.
 */
function scalesOf(cal: Calibrated, tensor: string, axis: number, bits: number): Float32Array {
  const cache = scaleCache(cal);
  const key = `${tensor}@${bits}`;
  let scales = cache.get(key);
  if (!scales) {
    const t = cal.graph.consts.get(tensor)!;
    cache.set(key, (scales = native().weightScalesSync(weightData(t), t.shape, axis, bits, cal.weightRange)));
  }
  return scales;
}

const weightData = (t: ConstTensor) => (t.data instanceof Float32Array ? t.data : Float32Array.from(t.data));

/** Computes, off the JS thread, the weight scales that `config` needs and that are not cached yet. */
export async function prepareScales(cal: Calibrated, config: BitConfig, opts: RunOptions = {}): Promise<void> {
  const cache = scaleCache(cal);
  const jobs: Promise<void>[] = [];
  for (const w of cal.placement.weights) {
    const bits = weightRangeBits(cal, weightBits(config, w.tensor));
    const key = `${w.tensor}@${bits}`;
    if (cache.has(key)) continue;
    const t = cal.graph.consts.get(w.tensor)!;
    jobs.push(native().weightScales(weightData(t), t.shape, w.axis, bits, cal.weightRange).then((s) => void cache.set(key, s), (e) => Promise.reject(fromNative(e))));
  }
  await Promise.all(jobs);
  if (opts.signal?.aborted) throw abortError('the quantization was aborted');
}

/**
 * Computes (once per weight and bit-width, then cached) the data-aware rounded weights that
 * `config` needs, so that {@link encodingsFor} and {@link quantizeWith} use them. Call before
 * scoring or exporting a configuration; a no-op under 'nearest' rounding.
 */
export async function prepareWeights(cal: Calibrated, config: BitConfig, opts: RunOptions = {}): Promise<void> {
  await prepareScales(cal, config, opts);
  const r = cal.rounder;
  if (!r) return;
  const jobs: Promise<unknown>[] = [];
  for (const w of cal.placement.weights) {
    const bits = weightRangeBits(cal, weightBits(config, w.tensor));
    if (methodFor(cal.rounding, bits) !== 'gptq' || !r.has(w.tensor)) continue;
    const t = cal.graph.consts.get(w.tensor)!;
    jobs.push(r.round(w.tensor, t.data as Float32Array, t.shape, scalesOf(cal, w.tensor, w.axis, bits), bits));
  }
  await Promise.all(jobs);
}

/** Key of a configuration's resolved bit-widths (sequential rounding depends on all of them). */
function configKey(cal: Calibrated, config: BitConfig): string {
  return [...cal.placement.weights.map((w) => weightBits(config, w.tensor)), '|', ...cal.placement.activations.map((a) => actBits(config, a.tensor))].join(',');
}

/** Whether {@link quantize} rounds sequentially (data-aware rounding with `sequential` on, see DEFAULT_SEQUENTIAL). */
export function isSequential(cal: Calibrated): boolean {
  return !!cal.rounder && !!cal.batches && (cal.rounder.options.sequential ?? DEFAULT_SEQUENTIAL);
}

/**
 * Sequential data-aware rounding of `config` (see {@link WeightRounder.roundSequential}):
 * computed once per configuration, then used by {@link encodingsFor}.
 */
export async function prepareSequential(cal: Calibrated, config: BitConfig, opts: RunOptions = {}): Promise<void> {
  await prepareScales(cal, config, opts);
  const r = cal.rounder;
  if (!r || !cal.batches) return;
  const order = new Map<string, number>();
  cal.graph.nodes.forEach((n, i) => n.inputs[1] && !order.has(n.inputs[1]) && order.set(n.inputs[1], i));
  const jobs = cal.placement.weights
    .filter((w) => !leftFloat(config, w.tensor) && methodFor(cal.rounding, weightBits(config, w.tensor)) === 'gptq' && r.has(w.tensor))
    .sort((a, b) => (order.get(a.tensor) ?? 0) - (order.get(b.tensor) ?? 0))
    .map((w) => {
      const t = cal.graph.consts.get(w.tensor)!;
      const bits = weightRangeBits(cal, weightBits(config, w.tensor));
      return { tensor: w.tensor, w: t.data as Float32Array, shape: t.shape, scales: scalesOf(cal, w.tensor, w.axis, bits), bits };
    });
  await r.roundSequential(configKey(cal, config), cal.model, cal.graph, cal.batches, jobs, (done, pending) => {
    const e = encodingsFor(cal, config, false);
    for (const w of pending) e.weights.delete(w);
    for (const [w, d] of done) withRounded(e.weights.get(w)!, d);
    return e;
  }, opts);
}

function withRounded(e: TensorEncoding, r: RoundedWeight): void {
  const qmax = 2 ** ((e.rangeBits ?? e.entries[0].bitwidth) - 1) - 1;
  e.quantized = r.q;
  e.biasDelta = r.biasDelta;
  e.entries = Array.from(r.scales, (s) => ({ ...e.entries[0], scale: s, min: -s * qmax, max: s * qmax }));
}

/** Rounds the weights `config` needs (`prepareSequential` or `prepareWeights`), then {@link quantizeWith}. */
export async function quantize(cal: Calibrated, config: BitConfig, opts: RunOptions = {}): Promise<Quantized> {
  await prepareConfig(cal, config, opts);
  return quantizeWith(cal, config);
}

/**
 * The encodings of `config` with the weights {@link quantize} would export (rounded first as
 * needed), without building the QDQ graph: what the simulation plan runs.
 */
export async function encodingsOf(cal: Calibrated, config: BitConfig, opts: RunOptions = {}): Promise<Encodings> {
  await prepareConfig(cal, config, opts);
  return encodingsFor(cal, config);
}

async function prepareConfig(cal: Calibrated, config: BitConfig, opts: RunOptions): Promise<void> {
  if (isSequential(cal)) await prepareSequential(cal, config, opts);
  else await prepareWeights(cal, config, opts);
}

const weightScaleCache = new WeakMap<Calibrated, Map<string, Float32Array>>();
const actRangeCache = new WeakMap<Calibrated, Map<string, [number, number]>>();

/**
 * Encodings of every quantizer for a bit configuration: with the sequentially rounded weights
 * of this configuration when they were computed (and `sequential` is not false), else with the
 * per-weight data-aware ones computed so far, else rounded to nearest.
 */
export function encodingsFor(cal: Calibrated, config: BitConfig, sequential = true): Encodings {
  const weights = new Map<string, TensorEncoding>();
  const seq = sequential ? cal.rounder?.sequentialFor(configKey(cal, config)) : undefined;
  for (const w of cal.placement.weights) {
    if (leftFloat(config, w.tensor)) continue;
    const bits = weightBits(config, w.tensor);
    const rb = weightRangeBits(cal, bits);
    const base = scalesOf(cal, w.tensor, w.axis, rb);
    const qmax = 2 ** (rb - 1) - 1;
    const rounded = methodFor(cal.rounding, rb) === 'gptq' ? cal.rounder?.cached(w.tensor, rb, base) : undefined;
    const scales = rounded?.scales ?? base;
    weights.set(w.tensor, {
      ...(rounded ? { quantized: rounded.q, biasDelta: rounded.biasDelta } : {}),
      ...(rb !== bits ? { rangeBits: rb } : {}),
      axis: w.axis,
      signed: true,
      entries: Array.from(scales, (s) => ({ bitwidth: bits, dtype: 'int' as const, is_symmetric: 'True' as const, scale: s, offset: 0, min: -s * qmax, max: s * qmax })),
    });
    const sq = seq?.get(w.tensor);
    if (sq) withRounded(weights.get(w.tensor)!, sq);
  }
  const activations = new Map<string, TensorEncoding>();
  let rangeCache = actRangeCache.get(cal);
  if (!rangeCache) actRangeCache.set(cal, (rangeCache = new Map()));
  for (const a of cal.placement.activations) {
    const s = cal.stats.get(a.tensor);
    if (!s || leftFloat(config, a.tensor)) continue;
    const bits = actBits(config, a.tensor);
    const rkey = `act:${a.tensor}@${bits}`;
    let range = rangeCache.get(rkey);
    if (!range) rangeCache.set(rkey, (range = activationRange(s, bits, cal.actRange)));
    const [lo, hi] = range;
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
export function exportOpset(encodings: Encodings, from: number): number {
  const all = [...encodings.weights.values(), ...encodings.activations.values()];
  for (const e of all) {
    const b = e.entries[0].bitwidth;
    if (![4, 8, 16].includes(b)) {
      throw new MpqError('MPQ_BAD_INPUT', `a ${b}-bit quantizer cannot be exported: ONNX has 4-, 8- and 16-bit integer types only. ${b}-bit widths can be simulated (mpq run --encodings) but not exported.`);
    }
  }
  const needs21 = all.some((e) => e.entries[0].bitwidth !== 8);
  return Math.max(from, needs21 ? 21 : 13);
}

/** The rank of each value of the model at the calibration shapes (what an opset upgrade needs). */
function ranksOf(cal: Calibrated): (v: string) => number | undefined {
  const spec = cal.model.specialize(cal.shapes);
  return (v: string) => spec.values.get(v)?.shape.length;
}

/** `rank` for the values of a QDQ graph, which carry the shape of the float value they stand for. */
const qdqRank = (rank: (v: string) => number | undefined) => (v: string) => rank(v.replace(/_(dequantized|quantized|float)$/, ''));

/** The exported model bytes of `graph` quantized with `encodings` (opset converted as needed). */
export function exportBytes(graph: Graph, encodings: Encodings, rank: (v: string) => number | undefined): Uint8Array {
  const q = buildQdqGraph(graph, encodings);
  return saveGraph(upgradeOpset(q, exportOpset(encodings, q.opset), qdqRank(rank)));
}

/** The exported QDQ model bytes (opset converted as needed). */
export function exportQdq(q: Quantized, cal: Calibrated): Uint8Array {
  return saveGraph(upgradeOpset(q.graph, exportOpset(q.encodings, q.graph.opset), qdqRank(ranksOf(cal))));
}

/**
 * {@link exportQdq} of `encodings` in a worker thread: building the QDQ graph and encoding
 * the bytes take about a second of CPU for a model of a few million weights, which would
 * otherwise hold up the event loop. `signal` aborts it (AbortError).
 */
export async function exportQdqOffThread(cal: Calibrated, encodings: Encodings, signal?: AbortSignal): Promise<Uint8Array> {
  const spec = cal.model.specialize(cal.shapes);
  const ranks = new Map<string, number>([...spec.values].map(([v, s]) => [v, s.shape.length]));
  return runInWorker<Uint8Array>(path.join(__dirname, 'export-worker.js'), { graph: cal.model.graph, encodings, ranks }, 'the export', signal);
}
