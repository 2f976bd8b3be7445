/**
 * Phase 1, sensitivity: for each group and each of its candidates other than the highest,
 * quantize only that group (everything else float) and measure the SQNR of the model's
 * outputs against float over the calibration samples. Only the part downstream of the group
 * is recomputed, from float activations of the unchanged upstream; groups are processed in
 * chunks so that memory holds one batch of float activations at a time, and each finished
 * result goes to the cache at once.
 */
import { MpqError, throwIfAborted } from '../errors';
import { Model, RunOptions, Tensor } from '../model';
import { Batches } from '../quant/calibrate';
import { Encodings } from '../quant/encodings';
import { buildQdqGraph } from '../quant/qdq';
import { Calibrated, encodingsFor, prepareWeights } from '../quant/quantize';
import { candKey, Candidate } from '../profiles/profile';
import { SensitivityCache, sqnrOf } from './cache';
import { Simulator } from '../sim';
import { Tensor as T } from '../model';
import { configOf, Group } from './groups';
import { Downstream, downstreamOf } from './subgraph';

export interface Phase1Entry {
  group: number;
  candidate: Candidate;
  sqnr_db: number;
  cached: boolean;
}

export interface Phase1Progress {
  done: number;
  total: number;
  reused: number;
}

/** Encodings restricted to one group's quantizers. */
function groupEncodings(all: Encodings, grp: Group): Encodings {
  const weights = new Map([...all.weights].filter(([k]) => grp.weights.includes(k)));
  const activations = new Map([...all.activations].filter(([k]) => k === grp.act));
  return { weights, activations };
}

/** Lets timers and I/O callbacks run between synchronous pieces of work. */
export const yieldToLoop = () => new Promise<void>((r) => setImmediate(r));

/** One phase-1 measurement to make: a group at one of its candidates, everything else float. */
export interface Phase1Work {
  group: Group;
  cand: Candidate;
}

/** A finished measurement: per graph output, [signal power, noise power] over the samples. */
export interface Phase1Result {
  work: Phase1Work;
  powers: Record<string, [number, number]>;
}

export interface Phase1Options extends RunOptions {
  /** Entries per native call (default: a quarter of the work, 8 to 64). */
  chunk?: number;
  onProgress?: (p: Phase1Progress) => void;
  /** Number of calibration samples (progress within a chunk). */
  samples?: number;
  /**
   * Computes the measurements somewhere else (a job queue): called with the work not in the
   * cache, it calls `done` once per finished entry (in any order). Default: {@link computePhase1}.
   */
  compute?: Phase1Compute;
  /**
   * Float outputs per calibration batch, kept across calls on the same session (a queue
   * worker's chunks): filled by the first call, reused by the next (within the budget).
   */
  floatOutputs?: T[][];
  /** Filled with where the time of the local computation went. */
  timing?: Phase1Timing;
}

/**
 * Seconds of phase 1 spent in the native calls' float passes (the shared upstream, once per
 * batch and chunk), in the entries' own downstream steps (the compute phase 1 cannot avoid),
 * and in rounding the entries' weights (data-aware rounding of each layer at each width, done
 * once and cached: later evaluations and the export reuse it).
 */
export interface Phase1Timing {
  floatSecs: number;
  entrySecs: number;
  roundSecs?: number;
  calls: number;
}

/** Computes phase-1 entries, calling `done` once per finished entry (in any order). */
export type Phase1Compute = (todo: Phase1Work[], done: (r: Phase1Result) => void, opts: Phase1Options, cal: Calibrated, groups: Group[], batches: Batches) => Promise<void>;

/** The phase-1 measurements: each group at each of its candidates but the highest, in group order. */
export function phase1Work(groups: Group[]): Phase1Work[] {
  const work: Phase1Work[] = [];
  for (const grp of groups) for (const c of grp.candidates.slice(0, -1)) work.push({ group: grp, cand: c });
  return work;
}

/** The measurements of {@link phase1Work} that `cache` does not hold. */
export function pendingWork(groups: Group[], cache: SensitivityCache): Phase1Work[] {
  return phase1Work(groups).filter((w) => !cache.get(w.group.id, candKey(w.cand)));
}

/**
 * The weights of every entry of `todo`, scaled and rounded (data-aware rounding of each layer
 * at each width, once: phase 1, the evaluations and the export read the same integers), before
 * phase 1 measures anything: a session's preparation, timed apart from phase 1's own compute.
 */
export async function prepareEntries(cal: Calibrated, groups: Group[], todo: Phase1Work[], opts: RunOptions & { onProgress?: (done: number, total: number) => void } = {}): Promise<void> {
  opts.onProgress?.(0, todo.length);
  for (let i = 0; i < todo.length; i++) {
    throwIfAborted(opts.signal, 'the search');
    await entryConfigs(cal, groups, todo.slice(i, i + 1), opts);
    opts.onProgress?.(i + 1, todo.length);
  }
}

/**
 * Phase 1 with the cache: entries found in `cache` are reused, the others computed (by
 * `opts.compute`, or here) and appended to the cache as each finishes.
 */
export async function runPhase1(cal: Calibrated, groups: Group[], batches: Batches, cache: SensitivityCache, opts: Phase1Options = {}): Promise<Phase1Entry[]> {
  const work = phase1Work(groups);
  const results: Phase1Entry[] = [];
  let reused = 0;
  const todo = work.filter((w) => {
    const hit = cache.get(w.group.id, candKey(w.cand));
    if (hit) {
      results.push({ group: w.group.id, candidate: w.cand, sqnr_db: hit.sqnr_db, cached: true });
      reused++;
    }
    return !hit;
  });
  const total = work.length;
  opts.onProgress?.({ done: results.length, total, reused });
  const done = (r: Phase1Result) => {
    const sqnr = Math.min(200, sqnrOf(r.powers));
    cache.add({ group: r.work.group.id, candidate: candKey(r.work.cand), sqnr_db: sqnr, powers: r.powers });
    results.push({ group: r.work.group.id, candidate: r.work.cand, sqnr_db: sqnr, cached: false });
  };
  const progress = (p: Phase1Progress) => opts.onProgress?.({ ...p, done: +(reused + p.done).toFixed(2), total, reused });
  if (todo.length) await (opts.compute ?? computePhase1)(todo, done, { ...opts, onProgress: progress }, cal, groups, batches);
  opts.onProgress?.({ done: results.length, total, reused });
  // in work order, however the entries arrived (cache, queue): the same inputs write the same files
  const at = new Map(work.map((w, i) => [`${w.group.id}/${candKey(w.cand)}`, i]));
  const pos = (e: Phase1Entry) => at.get(`${e.group}/${candKey(e.candidate)}`)!;
  return results.sort((a, b) => pos(a) - pos(b));
}

/**
 * The bit configuration of each entry (its group at its candidate, the others at their
 * highest), with the weights it would really export rounded (data-aware rounding) first.
 */
async function entryConfigs(cal: Calibrated, groups: Group[], slice: Phase1Work[], opts: RunOptions): Promise<ReturnType<typeof configOf>[]> {
  const configs = slice.map((w) => {
    const choice = groups.map((g) => g.candidates[g.candidates.length - 1]);
    choice[w.group.id] = w.cand;
    return configOf(groups, choice);
  });
  for (const cfg of configs) await prepareWeights(cal, cfg, opts);
  return configs;
}

/** Float outputs kept per batch across chunks at most (bytes); beyond, each call recomputes them. */
const FLOAT_OUTPUTS_BUDGET = 256 * 2 ** 20;

/**
 * Computes phase-1 entries on one simulation plan: per chunk of entries and per batch, one
 * native call runs the float plan once and each entry's downstream steps from the float
 * activations, accumulating signal and noise in Rust. `opts.onProgress` gets `done` in
 * entries of `todo` (fractional within a chunk).
 */
export const computePhase1: Phase1Compute = async function computePhase1(
  todo: Phase1Work[],
  done: (r: Phase1Result) => void,
  opts: Phase1Options,
  cal: Calibrated,
  groups: Group[],
  batches: Batches,
): Promise<void> {
  const model = cal.model;
  const sim = Simulator.of(cal);
  if (sim.unsupported) return computePhase1Graphs(todo, done, opts, cal, groups, batches);
  const chunkSize = opts.chunk ?? Math.max(8, Math.min(64, Math.ceil(todo.length / 4)));
  let floats: T[][] | null = opts.floatOutputs ?? [];
  let floatBytes = floats.reduce((a, k) => a + (k ?? []).reduce((x, t) => x + t.data.byteLength, 0), 0);
  let finished = 0;
  for (let c0 = 0; c0 < todo.length; c0 += chunkSize) {
    const slice = todo.slice(c0, c0 + chunkSize);
    const tr = performance.now();
    const configs = await entryConfigs(cal, groups, slice, opts);
    if (opts.timing) opts.timing.roundSecs = (opts.timing.roundSecs ?? 0) + (performance.now() - tr) / 1000;
    throwIfAborted(opts.signal, 'the search');
    const encs = slice.map((w, i) => groupEncodings(encodingsFor(cal, configs[i]), w.group));
    const powers = slice.map(() => null as Record<string, [number, number]> | null);
    let seen = 0, bi = 0;
    for await (const b of batches()) {
      throwIfAborted(opts.signal, 'the search');
      const kept = floats?.[bi] ?? null;
      const r = await sim.phase1(b, (p) => Promise.all(encs.map((e) => sim.config(p, e))), kept, opts);
      if (floats && !kept && r.floats && (opts.floatOutputs || c0 + chunkSize < todo.length)) {
        // this batch's float outputs (computed by this call's float pass), kept for the next
        // chunks while they fit the budget
        floatBytes += r.floats.reduce((a, t) => a + t.data.byteLength, 0);
        if (floatBytes > FLOAT_OUTPUTS_BUDGET) floats = null;
        else floats[bi] = r.floats;
      }
      if (opts.timing) {
        opts.timing.floatSecs += r.floatSecs;
        opts.timing.entrySecs += r.entrySecs;
        opts.timing.calls++;
      }
      slice.forEach((_, e) => {
        const pw = (powers[e] ??= Object.fromEntries(model.outputNames.map((o) => [o, [0, 0] as [number, number]])));
        r.outputs.forEach((o, k) => {
          pw[o][0] += r.signal[k];
          pw[o][1] += r.noise[e][k];
        });
      });
      bi++;
      seen += b[model.inputNames[0]].shape[0] ?? 1;
      if (opts.samples) opts.onProgress?.({ done: finished + Math.min(1, seen / opts.samples) * slice.length, total: todo.length, reused: 0 });
    }
    slice.forEach((w, e) => done({ work: w, powers: powers[e]! }));
    finished += slice.length;
    opts.onProgress?.({ done: finished, total: todo.length, reused: 0 });
  }
};

/**
 * The same measurements on one QDQ graph per entry (each entry's downstream part as a model
 * of its own): for models whose weights the simulation plan cannot take as they are.
 */
export async function computePhase1Graphs(
  todo: Phase1Work[],
  done: (r: Phase1Result) => void,
  opts: Phase1Options,
  cal: Calibrated,
  groups: Group[],
  batches: Batches,
): Promise<void> {
  const model = cal.model;
  const spec = model.specialize(cal.shapes);
  // frontier values become inputs of the downstream graph: the batch axis stays symbolic
  const shapeOf = (v: string) => {
    const s = spec.values.get(v)?.shape;
    // axis 0 is the batch, except for scalars (a ReduceMax over everything)
    return s ? (s.length ? ['N', ...s.slice(1)] : []) : undefined;
  };
  const chunkSize = opts.chunk ?? 12;
  const outputs = model.outputNames;
  let finished = 0;
  for (let c0 = 0; c0 < todo.length; c0 += chunkSize) {
    const slice = todo.slice(c0, c0 + chunkSize);
    const configs = await entryConfigs(cal, groups, slice, opts);
    // each entry's graphs are built in JS: give the event loop a turn between entries
    const chunk: Awaited<ReturnType<typeof prepare>>[] = [];
    for (let wi = 0; wi < slice.length; wi++) {
      await yieldToLoop();
      throwIfAborted(opts.signal, 'the search');
      chunk.push(prepare(slice[wi], wi));
    }
    function prepare(w: (typeof slice)[number], wi: number) {
      const enc = groupEncodings(encodingsFor(cal, configs[wi]), w.group);
      // on the graph with the taken If branches written out: their quantizers are nodes of it
      const gq = buildQdqGraph(cal.graph, enc);
      const seeds = new Set(gq.nodes.filter((n) => /_(Quantize|Dequantize)Linear$/.test(n.name) && !cal.graph.nodes.some((m) => m.name === n.name)).map((n) => n.name));
      // the downstream part depends on the batch shape through folded shape arithmetic
      const subs = new Map<string, { ds: Downstream; sub?: Model }>();
      const subFor = (shapes: Record<string, number[]>) => {
        const k = JSON.stringify(shapes);
        let s = subs.get(k);
        if (!s) {
          const sp = k === JSON.stringify(cal.shapes) ? spec : model.specialize(shapes);
          const ds = downstreamOf(gq, seeds, shapeOf, (v) => sp.values.get(v)?.value);
          s = { ds, sub: ds.outputs.length ? Model.fromGraph(ds.graph) : undefined };
          subs.set(k, s);
        }
        return s;
      };
      const first = subFor(cal.shapes);
      const powers: Record<string, [number, number]> = Object.fromEntries(outputs.map((o) => [o, [0, 0] as [number, number]]));
      return { ...w, ds: first.ds, subFor, powers };
    }
    const want = [...new Set([...chunk.flatMap((w) => w.ds.frontier), ...outputs])];
    // progress within a chunk (with `samples`): done grows by the chunk's share of samples seen,
    // so that it moves after every entry and batch, not only when a chunk of entries completes
    let seen = 0;
    const partial = (n: number, entries: number) => {
      if (!opts.samples) return;
      const f = Math.min(1, (seen + (n * entries) / chunk.length) / opts.samples);
      opts.onProgress?.({ done: finished + f * chunk.length, total: todo.length, reused: 0 });
    };
    for await (const b of batches()) {
      throwIfAborted(opts.signal, 'the search');
      const shapes = Object.fromEntries(model.inputNames.map((n) => [n, b[n].shape]));
      const c = model.compile(shapes, want);
      const ids = want.map((v) => {
        const id = c.lowered.index.get(v);
        if (id === undefined) throw new MpqError('MPQ_INTERNAL', `value '${v}' is not in the plan`);
        return id;
      });
      const isInput = (v: string) => model.inputNames.includes(v);
      const vals = await model.exec(c, model.inputNames.map((n) => b[n]), opts, ids);
      const float = new Map<string, Tensor>(want.map((v, i) => [v, isInput(v) ? b[v] : vals[i]]));
      const bn = b[model.inputNames[0]].shape[0] ?? 1;
      for (const [ei, w] of chunk.entries()) {
        if (ei > 0) partial(bn, ei);
        for (const o of outputs) {
          const y = float.get(o)!.data;
          let s = 0;
          for (let i = 0; i < y.length; i++) s += y[i] * y[i];
          w.powers[o][0] += s;
        }
        const { ds, sub } = w.subFor(shapes);
        if (!sub) continue;
        const feeds = Object.fromEntries(ds.frontier.map((v) => [v, float.get(v)!]));
        const got = await sub.run(feeds, opts);
        for (const o of ds.outputs) {
          const y = float.get(o)!.data, q = got[o].data;
          let n = 0;
          for (let i = 0; i < y.length; i++) n += (y[i] - q[i]) ** 2;
          w.powers[o][1] += n;
        }
      }
      seen += bn;
    }
    for (const w of chunk) done({ work: { group: w.group, cand: w.cand }, powers: w.powers });
    finished += chunk.length;
    opts.onProgress?.({ done: finished, total: todo.length, reused: 0 });
  }
}
