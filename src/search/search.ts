/**
 * The mixed-precision search (DESIGN.md section 5): calibrate, phase 1 (sensitivity, cached),
 * phase 2 (Pareto front), phase 3 (selection with real evaluations), export and report.
 */
import * as fs from 'fs';
import * as path from 'path';
import { DataSourceOptions } from '../data/source';
import { MpqError, throwIfAborted, untilAborted } from '../errors';
import { Verification, verifyExport, VERIFY_SAMPLES } from '../eval/verify';
import { OutputDir } from '../fsutil';
import { Model, RunOptions, Runnable } from '../model';
import { hasOrt, ORT_INSTALL } from '../ort';
import { loadProfile, Profile, candKey, Candidate } from '../profiles/profile';
import { Batches } from '../quant/calibrate';
import { encodingsToJson } from '../quant/encodings';
import { encodingsFor, encodingsOf, exportQdqOffThread, quantizeWith, QuantizeOptions } from '../quant/quantize';
import { Simulator } from '../sim';
import { renderReport, renderSummary } from '../report/html';
import { SensitivityCache } from './cache';
import { configOf, Group } from './groups';
import { EvalData, EvaluateFn, makeMetric, MetricName } from './metric';
import { buildFront, FrontOrder, FrontPoint, frontQuality } from './pareto';
import { pendingWork, Phase1Compute, Phase1Timing, prepareEntries, runPhase1 } from './phase1';
import { binarySearch, budget, interpolationSearch, TargetStrategy } from './targets';
import { openSession } from './session';
import type { Coordinator, QueueOptions } from '../queue/coordinator';
import { CalibrationInput, modelBytesOf, ModelInput, resolveCalibration, resolveModel } from './inputs';
import { OnProgress, progressReporter } from './progress';

export interface SearchTarget {
  /** Largest allowed drop of the metric from float (top-1 fraction, or dB for SQNR). */
  maxDrop?: number;
  /** Largest allowed BOPs relative to all-W8A8. */
  maxBops?: number;
  /** Largest allowed weight memory in MB (1e6 bytes). */
  maxSizeMb?: number;
}

export type { Phase, Progress } from './progress';

export interface SearchOptions extends QuantizeOptions {
  /** The model: an ONNX file path, ONNX bytes, or a loaded {@link Model}. */
  model: ModelInput;
  /**
   * Calibration data: a data path (`.npy`, folder, `NAME=PATH,...`; images with `data.preset`
   * or `data.preprocess`), one batch or an array of batches, or `{ batches, fingerprint?, count? }`.
   */
  calibration?: CalibrationInput;
  /** The same as `calibration` in its `{ batches, fingerprint, count }` form (the older name). */
  calib?: { batches: Batches; fingerprint: string; count: number };
  /** How a calibration path is read (preset, preprocessing, selection, batch size). */
  data?: DataSourceOptions;
  /** Built-in profile name or profile file (default 'default'), or a profile object. */
  profile?: string | Profile;
  target: SearchTarget;
  /** Evaluation data for phase 3 (default: the calibration data). */
  eval?: EvalData;
  /** A custom evaluation function (higher is better); overrides the built-in metrics. */
  evaluate?: EvaluateFn;
  task?: string;
  /** Front order: the paper's (sqnr), efficiency, or auto (the better predicted front). */
  order?: FrontOrder | 'auto';
  /** Output folder. */
  out: string;
  /** Progress, in every phase: `{ phase, done, total, etaSeconds }`. */
  onProgress?: OnProgress;
  /** Extra fields recorded in run.json (for example the command line). */
  record?: Record<string, unknown>;
  /** How a `maxDrop` target walks the front: binary search (default) or interpolation search. */
  targetSearch?: 'binary' | 'interpolation';
  /** Computes phase-1 entries elsewhere (a job queue); default: in this process. */
  phase1Compute?: Phase1Compute;
  /** Computes phase 1 on the `mpq worker`s of a Redis (BullMQ): results land in the same cache. */
  queue?: QueueOptions;
}

export interface EvaluatedPoint {
  name: string;
  rel_bops: number;
  size_bytes: number;
  metric: number;
}

export interface SearchResult {
  tool: string;
  version: string;
  versions: Record<string, string>;
  options: Record<string, unknown>;
  /**
   * Wall seconds per stage: load, calibration, rounding (the weights phase 1 measures, scaled
   * and rounded before it starts), phase1, phase2, phase3, export, verify, total.
   */
  seconds: Record<string, number>;
  /**
   * Phase-1 entries computed and reused; `float_seconds` and `entry_seconds`: time of the
   * native calls in the shared float passes and in the entries' own downstream steps;
   * `rounding_seconds`: rounding still done inside phase 1 (0 when the rounding stage did it all);
   * `workers`: entries computed per worker when phase 1 ran on a queue.
   */
  phase1: { computed: number; reused: number; total: number; float_seconds?: number; entry_seconds?: number; rounding_seconds?: number; workers?: Record<string, number> };
  /** Data-aware roundings of a weight at a bit-width done in this run, and loaded from the cache. */
  rounding: { computed: number; loaded: number };
  groups: number;
  /** Values the placement leaves float on purpose (masks, sentinels, what a Log reads), with the reason (as quantize.json's). */
  left_float: { tensor: string; reason: string }[];
  order: FrontOrder;
  metric: MetricName;
  float_metric: number;
  selected: { index: number; rel_bops: number; size_bytes: number; metric: number; meets_target: boolean };
  homogeneous: EvaluatedPoint[];
  files: Record<string, string>;
  /**
   * The exported model run in onnxruntime-node on the first {@link VERIFY_SAMPLES} calibration
   * samples, against the simulation: with graph optimizations off (QDQ semantics, should be
   * exact) and with the default session options (what a default deployment runs), and whether
   * the latter is faithful.
   */
  verification?: Verification;
  /** Why {@link SearchResult.verification} is absent (onnxruntime-node is not installed). */
  verification_skipped?: string;
}

function pkgVersion(): string {
  return require('../../../package.json').version;
}

/**
 * The mixed-precision search: calibrate, measure each quantizer group's sensitivity (phase 1,
 * cached in `out/cache`), build the Pareto front (phase 2), select the configuration that
 * meets `target` with real evaluations (phase 3), export it and write the report. Every
 * phase reports progress through `onProgress`; `signal` aborts at any point: the promise
 * rejects with an AbortError (code MPQ_ABORTED) and nothing more is written to `out`.
 */
export async function search(o: SearchOptions): Promise<SearchResult> {
  const t0 = Date.now();
  const check = () => throwIfAborted(o.signal, 'the search');
  const seconds: Record<string, number> = {};
  const lap = (k: string, since: number) => (seconds[k] = +((Date.now() - since) / 1000).toFixed(2));
  const { target } = o;
  const nTargets = [target.maxDrop, target.maxBops, target.maxSizeMb].filter((x) => x !== undefined).length;
  if (nTargets !== 1) throw new MpqError('MPQ_BAD_INPUT', 'give exactly one target: --max-drop, --max-bops or --max-size');
  const profile = typeof o.profile === 'object' ? o.profile : loadProfile(o.profile ?? 'default');
  const opt: RunOptions = { signal: o.signal };
  check();
  // bullmq is loaded only for a search that uses it
  if (o.queue?.whole) return (require('../queue/remote') as typeof import('../queue/remote')).submitSearch(o, profile);
  // all files or none: written into a staging folder, put in place at once at the end
  // (cache/ is written in place, line by line, so that a killed run resumes)
  const out = OutputDir.open(o.out);
  try {
    const r = await searchInto(o, out, { t0, seconds, lap, opt, profile });
    await out.commitAsync(o.signal, 'the search');
    return r;
  } finally {
    out.abort();
  }
}

async function searchInto(
  o: SearchOptions,
  out: OutputDir,
  { t0, seconds, lap, opt, profile }: { t0: number; seconds: Record<string, number>; lap: (k: string, since: number) => void; opt: RunOptions; profile: Profile },
): Promise<SearchResult> {
  const { target } = o;
  const progress = progressReporter(o.onProgress);
  const check = () => throwIfAborted(o.signal, 'the search');

  // the model, decoded off the JS thread
  let t = Date.now();
  progress('load', 0, 1);
  const { model, hash: modelHash, file: modelFile } = await resolveModel(o.model, opt);
  if (!o.calibration && !o.calib) throw new MpqError('MPQ_BAD_INPUT', 'give the calibration data (calibration: a data path, batches, or { batches })');
  const calibData = await resolveCalibration(o.calibration ?? o.calib!, model, o.data);
  progress('load', 1, 1);
  lap('load', t);
  check();

  // calibration, placement, groups and the phase-1 cache key: the quantization session
  t = Date.now();
  const session = await openSession(model, modelHash, calibData, profile, o, (done, total) => progress('calibration', done, total));
  const { cal, groups, cost, key } = session;
  lap('calibration', t);
  check();

  const cache = new SensitivityCache(path.join(o.out, 'cache', 'sensitivity.jsonl'), key);
  const phase1Timing: Phase1Timing = { floatSecs: 0, entrySecs: 0, calls: 0 };
  // rounded weights beside it, under the same key: a rerun rounds nothing
  cal.rounder?.persist(path.join(o.out, 'cache'), key);
  let entries;
  // bullmq is loaded only for a search that uses it
  let queue: Coordinator | undefined;
  try {
    if (o.queue) queue = (require('../queue/coordinator') as typeof import('../queue/coordinator')).openCoordinator(o.queue, { session, modelBytes: modelBytesOf(o.model), calib: calibData });
    // the weights phase 1 will read, scaled and rounded first (on a queue, the workers do it)
    t = Date.now();
    if (!queue && !o.phase1Compute) await prepareEntries(cal, groups, pendingWork(groups, cache), { signal: o.signal, onProgress: (d, n) => progress('rounding', d, n) });
    lap('rounding', t);
    check();
    // phase 1
    t = Date.now();
    entries = await runPhase1(cal, groups, calibData.batches, cache, {
      signal: o.signal,
      timing: phase1Timing,
      compute: queue?.compute ?? o.phase1Compute,
      samples: calibData.count,
      onProgress: (p) => progress('phase1', p.done, p.total),
    });
  } finally {
    cache.close();
    await queue?.close();
  }
  const reused = entries.filter((e) => e.cached).length;
  lap('phase1', t);
  check();

  // phase 2
  t = Date.now();
  const fronts = { sqnr: buildFront(entries, groups, cost, 'sqnr'), efficiency: buildFront(entries, groups, cost, 'efficiency') };
  const order: FrontOrder = o.order && o.order !== 'auto' ? o.order : frontQuality(fronts.efficiency) > frontQuality(fronts.sqnr) ? 'efficiency' : 'sqnr';
  const front = fronts[order];
  lap('phase2', t);

  // phase 3
  t = Date.now();
  const evalData: EvalData = o.eval ?? {
    batches: async function* () {
      let i = 0;
      for await (const b of calibData.batches()) {
        const n = b[model.inputNames[0]].shape[0];
        yield { inputs: b, names: Array.from({ length: n }, (_, k) => String(i + k)), indices: Array.from({ length: n }, (_, k) => i + k) };
        i += n;
      }
    },
  };
  const metric = await makeMetric(model, evalData, cal.shapes, { custom: o.evaluate, task: o.task, signal: o.signal });
  // evaluations so far of the number phase 3 will make (the selection's, then the homogeneous ones)
  let evals = 0;
  const homogeneousCands = profile.candidates.filter((c) => groups.every((g) => g.candidates.some((x) => candKey(x) === candKey(c))));
  const plannedEvals = () => evals + 1 + homogeneousCands.length;
  progress('phase3', 0, plannedEvals());
  const floatMetric = await untilAborted(metric.measure(model, opt), o.signal);
  const simCache = new Map<string, number>();
  // every evaluated configuration and the export check run on one simulation plan (the QDQ
  // graph of a configuration as a model of its own where the plan cannot take the weights)
  const sim = Simulator.of(cal);
  const simulated = async (config: ReturnType<typeof configOf>): Promise<Runnable> => {
    const enc = await encodingsOf(cal, config, opt);
    return sim.unsupported ? Model.fromGraph(quantizeWith(cal, config).graph) : sim.runnable(enc);
  };
  const evaluate = async (choice: Candidate[]): Promise<number> => {
    const k = choice.map(candKey).join(',');
    let v = simCache.get(k);
    if (v === undefined) {
      check();
      v = await untilAborted(metric.measure(await simulated(configOf(groups, choice)), opt), o.signal);
      simCache.set(k, v);
      evals++;
      progress('phase3', evals, plannedEvals());
    }
    return v;
  };
  const evalPoint = async (p: FrontPoint) => {
    if (p.measured === null) p.measured = await evaluate(p.choice);
    return p.measured;
  };

  const strategy: TargetStrategy =
    target.maxDrop !== undefined
      ? (o.targetSearch === 'interpolation' ? interpolationSearch : binarySearch)(floatMetric - target.maxDrop)
      : // --max-bops budgets the profile's cost (BOPs unless the profile gives latencies or conversion costs)
        budget((p) => (target.maxBops !== undefined ? p.rel_cost <= target.maxBops + 1e-12 : p.size_bytes <= target.maxSizeMb! * 1e6));
  const selected = await strategy.select(front, evalPoint).catch((e: unknown) => {
    // a budget out of reach because compute stays float (inside control flow): say so
    const float = cal.notes.filter((n) => /stays? float/.test(n));
    if (float.length && e instanceof MpqError && e.code === 'MPQ_BAD_INPUT' && /^no configuration meets the budget/.test(e.message)) {
      throw new MpqError(e.code, `${e.message} (${float.join('; ')}, so nothing there can be made cheaper)`, { cause: e });
    }
    throw e;
  });

  // homogeneous configurations, evaluated beside the mixed ones
  const homogeneous: EvaluatedPoint[] = [];
  for (const c of homogeneousCands) {
    const choice = groups.map(() => c);
    homogeneous.push({ name: candKey(c), rel_bops: cost.relBops(choice), size_bytes: cost.sizeBytes(choice), metric: await evaluate(choice) });
  }
  progress('phase3', evals, evals);
  lap('phase3', t);
  check();

  // export, then the export run in onnxruntime against the simulation (before anything is
  // written, so that an abort during either leaves nothing behind)
  t = Date.now();
  progress('export', 0, 1);
  const selectedConfig = configOf(groups, selected.choice);
  const selectedSim = await simulated(selectedConfig);
  const q = { encodings: encodingsFor(cal, selectedConfig), config: selectedConfig };
  const bytes = await exportQdqOffThread(cal, q.encodings, o.signal);
  progress('export', 1, 1);
  lap('export', t);
  t = Date.now();
  let verification: SearchResult['verification'];
  if (hasOrt()) {
    // the export run in onnxruntime both ways (before any file is written: a model
    // onnxruntime cannot load leaves no output)
    progress('verify', 0, 1);
    verification = await verifyExport(bytes, selectedSim, calibData.batches(), { limit: VERIFY_SAMPLES, profile: profile.name, signal: o.signal });
    progress('verify', 1, 1);
  }
  lap('verify', t);
  check();
  t = Date.now();
  const files = {
    model: path.join(o.out, 'model.qdq.onnx'),
    encodings: path.join(o.out, 'encodings.json'),
    pareto: path.join(o.out, 'pareto.json'),
    sensitivity: path.join(o.out, 'sensitivity.json'),
    report: path.join(o.out, 'report.html'),
    summary: path.join(o.out, 'summary.md'),
    run: path.join(o.out, 'run.json'),
    config: path.join(o.out, 'config.json'),
    cache: path.join(o.out, 'cache', 'sensitivity.jsonl'),
  };
  const pointJson = (p: FrontPoint) => ({
    index: p.index,
    rel_bops: +p.rel_bops.toFixed(6),
    rel_cost: +p.rel_cost.toFixed(6),
    size_bytes: p.size_bytes,
    predicted_sqnr_db: +p.predicted_sqnr_db.toFixed(3),
    measured: p.measured,
    configuration: Object.fromEntries(groups.map((g, i) => [String(g.id), candKey(p.choice[i])])),
  });
  const sensitivity = groups.map((g) => ({
    group: g.id,
    activation: g.act ?? null,
    weights: g.weights,
    ops: g.ops,
    candidates: g.candidates.map(candKey),
    sqnr_db: Object.fromEntries(entries.filter((e) => e.group === g.id).map((e) => [candKey(e.candidate), +e.sqnr_db.toFixed(3)])),
  }));
  const config = configOf(groups, selected.choice);
  const meets =
    target.maxDrop !== undefined ? (selected.measured ?? -Infinity) >= floatMetric - target.maxDrop : target.maxBops !== undefined ? selected.rel_cost <= target.maxBops + 1e-12 : selected.size_bytes <= target.maxSizeMb! * 1e6;
  const result: SearchResult = {
    tool: 'onnx-mpq',
    version: pkgVersion(),
    versions: { node: process.version, 'onnx-mpq': pkgVersion() },
    options: { model: modelFile ?? null, profile: profile.name, target, order, weightRange: cal.weightRange, actRange: cal.actRange, calib_samples: calibData.count, ...(o.record ?? {}), notes: [...((o.record?.notes as string[] | undefined) ?? []), ...cal.notes] },
    seconds,
    phase1: { computed: entries.length - reused, reused, total: entries.length, float_seconds: +phase1Timing.floatSecs.toFixed(3), entry_seconds: +phase1Timing.entrySecs.toFixed(3), rounding_seconds: +(phase1Timing.roundSecs ?? 0).toFixed(3), ...(queue ? { workers: queue.counts } : {}) },
    rounding: { computed: cal.rounder?.computed ?? 0, loaded: cal.rounder?.loaded ?? 0 },
    groups: groups.length,
    left_float: cal.placement.skipped,
    order,
    metric: metric.name,
    float_metric: floatMetric,
    selected: { index: selected.index, rel_bops: +selected.rel_bops.toFixed(6), size_bytes: selected.size_bytes, metric: selected.measured!, meets_target: meets },
    homogeneous,
    files,
    ...(verification ? { verification } : { verification_skipped: `onnxruntime-node is not installed: ${ORT_INSTALL}` }),
  };
  out.write('encodings.json', JSON.stringify(encodingsToJson(q.encodings), null, 1));
  out.write('config.json', JSON.stringify({ default: 'W8A8', weights: config.weights, activations: config.activations }, null, 2));
  out.write('pareto.json', JSON.stringify({ order, metric: metric.name, float_metric: floatMetric, points: front.map(pointJson), other_order: { order: order === 'sqnr' ? 'efficiency' : 'sqnr', points: fronts[order === 'sqnr' ? 'efficiency' : 'sqnr'].map(pointJson) } }, null, 1));
  out.write('sensitivity.json', JSON.stringify({ groups: sensitivity }, null, 1));
  out.write('quantize.json', JSON.stringify({ tool: 'onnx-mpq', model: modelFile ?? null, profile: profile.name, calib: o.record?.calib ?? {}, config: 'mixed', files }, null, 2));
  out.write('model.qdq.onnx', bytes);
  lap('export', t);
  seconds.total = +((Date.now() - t0) / 1000).toFixed(2);
  const sens: Record<number, Record<string, number>> = {};
  for (const e of entries) (sens[e.group] ??= {})[candKey(e.candidate)] = e.sqnr_db;
  const report = { result, front, groups, homogeneous, selected, fronts, sens };
  out.write('report.html', renderReport(report));
  out.write('summary.md', renderSummary(report));
  out.write('run.json', JSON.stringify(result, null, 2));
  return result;
}

export type { Group };
