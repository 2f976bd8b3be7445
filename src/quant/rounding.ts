/**
 * Data-aware weight rounding (GPTQ) and bias correction.
 *
 * The float model runs once over the calibration data while the engine accumulates, for
 * every weighted layer, the second moment `H = E[x x^T]` and the mean of the vectors that the
 * weight rows are dotted with (im2col patches for Conv). Those statistics do not depend on
 * bit-widths, so every bit-width (and every candidate of the search) reuses them. Rounding a
 * weight at a bit-width is done once per run and cached: the integers that are simulated are
 * the integers that are exported.
 */
import * as fs from 'fs';
import * as path from 'path';
import { fromNative, MpqError, throwIfAborted } from '../errors';
import { Graph, Node } from '../graph/ir';
import { Model, RunOptions, Tensor } from '../model';
import { syncLimits } from '../native';
import { Batches } from './calibrate';
import { Encodings } from './encodings';
import { Placement, WEIGHTED } from './placement';
import { buildQdqGraph } from './qdq';

/** `nearest`: round to nearest everywhere; `gptq`: data-aware everywhere; `auto`: data-aware at 8 bits and below. */
export type Rounding = 'nearest' | 'gptq' | 'auto';
export const ROUNDINGS: Rounding[] = ['nearest', 'gptq', 'auto'];

/** The method used for a weight at `bits` under `mode`. */
export function methodFor(mode: Rounding, bits: number): 'nearest' | 'gptq' {
  if (mode === 'auto') return bits <= 8 ? 'gptq' : 'nearest';
  return mode;
}

export interface RoundingOptions {
  /** Diagonal dampening as a fraction of the mean diagonal of H (default 0.01; sequential: 0.001, `SEQUENTIAL_DAMP`). */
  damp?: number;
  /** Quantize columns by decreasing H diagonal (default true). */
  actOrder?: boolean;
  /** Re-choose each output channel's scale by the layer output error (default false: measured worse on MobileNetV1). */
  scaleSearch?: boolean;
  /**
   * Sequential rounding for exported configurations (default false, `DEFAULT_SEQUENTIAL` in
   * quantize.ts): each layer's statistics are taken in the network whose upstream layers (and
   * activations) are already quantized, and rounding aims at the float layer's output, so each
   * layer compensates upstream error. It costs a pass over the calibration data per layer and
   * configuration and cannot be cached per layer; per-layer rounding (the default) is the
   * same in the search, `quantize` and the export (bench/ROUNDING.md has the measurements).
   */
  sequential?: boolean;
  /** Sequential only: aim at the float output when a layer saw this many input vectors per weight column (default 4). */
  crossMinRatio?: number;
  /**
   * Round a layer data-aware only when it saw at least this many input vectors per weight
   * column (default {@link MIN_SAMPLES_PER_COLUMN}); with fewer, the Hessian describes the
   * calibration samples rather than the layer's inputs, and the rounding overfits them.
   */
  minSamplesPerColumn?: number;
  /** Groups of at most this many columns (depthwise 3x3: 9) are rounded exactly, with a per-channel scale search (default 10; 0 turns it off). */
  exhaustive?: number;
  exhaustiveScales?: boolean;
}

/**
 * Default of {@link RoundingOptions.minSamplesPerColumn}: off. At 4 it left PP-OCR cls W8A8
 * unchanged (21.68 against 21.60 dB, nearest 27.11) and W4A8 18.30 against 17.38 dB; it is not
 * measured on MobileNetV1, whose classifier (128 vectors for 768 columns) it would turn off.
 */
export const MIN_SAMPLES_PER_COLUMN = 0;

/** Default dampening of sequential rounding. */
export const SEQUENTIAL_DAMP = 0.001;

/** A weight to round sequentially, in the order of the graph. */
export interface SequentialJob {
  tensor: string;
  w: Float32Array;
  shape: number[];
  scales: Float32Array;
  bits: number;
}

export interface RoundedWeight {
  /** Integers in the weight's layout. */
  q: Float32Array;
  /** Mean output shift per output channel caused by the rounding: to add to the bias. */
  biasDelta: Float32Array;
  /** Scale per output channel that goes with `q`. */
  scales: Float32Array;
}

/**
 * Which rounding a weight kept at a bit-width: per output channel, the data-aware result is
 * kept only where its output error on the calibration statistics (the Hessian quadratic form,
 * after bias correction where the layer takes it) is lower than round-to-nearest's.
 */
export interface RoundingChoice {
  tensor: string;
  bits: number;
  /** 'gptq' (every channel), 'nearest' (none) or 'mixed'. */
  kept: 'gptq' | 'nearest' | 'mixed';
  dataAwareChannels: number;
  channels: number;
  /** Output error of the result over that of round-to-nearest (at most 1; null with a reference stream, where only differences are defined). */
  errorRatio: number | null;
  sequential: boolean;
}

interface NativeRounded {
  q: Float32Array;
  biasDelta: Float32Array;
  scales: Float32Array;
  dataAware: number;
  channels: number;
  loss: number;
  nearestLoss: number;
}

function choiceOf(tensor: string, bits: number, r: NativeRounded, sequential: boolean): RoundingChoice {
  const kept = r.dataAware === r.channels ? 'gptq' : r.dataAware === 0 ? 'nearest' : 'mixed';
  const errorRatio = sequential ? null : r.nearestLoss > 0 ? r.loss / r.nearestLoss : 1;
  return { tensor, bits, kept, dataAwareChannels: r.dataAware, channels: r.channels, errorRatio, sequential };
}

/** File format version of persisted rounding results. */
const PERSIST_VERSION = 1;

type Stats = InstanceType<ReturnType<typeof syncLimits>['RoundingStats']>;

interface Layer {
  tensor: string;
  /** Name of the input value the weight rows see. */
  input: string;
  /** Columns of the weight matrix a group's rows are (the length of one input vector). */
  dim: number;
  spec: Record<string, unknown>;
}

/** Layer statistics of a model on calibration data, and the rounded weights computed from them. */
export class WeightRounder {
  private readonly index = new Map<string, number>();
  private readonly done = new Map<string, RoundedWeight>();
  private readonly pending = new Map<string, Promise<RoundedWeight>>();
  private readonly choice = new Map<string, RoundingChoice>();
  /** Wall-clock seconds spent rounding so far (time with at least one rounding under way, not the sum over weights rounded side by side). */
  seconds = 0;
  /** When the roundings now under way started (while `pending` is not empty). */
  private busySince = 0;
  /** Weights rounded in this process (not loaded from a persisted file). */
  computed = 0;
  /** Results loaded from a persisted file. */
  loaded = 0;
  private persistFile?: string;
  private persistKey?: string;

  constructor(
    private readonly stats: Stats,
    readonly layers: Layer[],
    readonly options: RoundingOptions,
    /** Seconds spent gathering statistics. */
    readonly statsSeconds: number,
  ) {
    layers.forEach((l, i) => this.index.set(l.tensor, i));
  }

  /** Sequential results by configuration key. */
  private readonly seq = new Map<string, Map<string, RoundedWeight>>();

  /** The sequentially rounded weights of a configuration, if computed. */
  sequentialFor(key: string): Map<string, RoundedWeight> | undefined {
    return this.seq.get(key);
  }

  /** Whether `tensor` has statistics (weights shared by several nodes, or of unsupported layouts, do not). */
  has(tensor: string): boolean {
    const i = this.index.get(tensor);
    if (i === undefined) return false;
    const n = this.stats.count(i);
    return n > 0 && n >= (this.options.minSamplesPerColumn ?? MIN_SAMPLES_PER_COLUMN) * this.layers[i].dim;
  }

  private key(tensor: string, bits: number, scales: Float32Array): string {
    // scales are a function of (tensor, bits, range method): the first few pin them
    return `${tensor}@${bits}@${scales.length}:${scales[0]}:${scales[scales.length - 1]}`;
  }

  /** The rounded weight if it was computed already. */
  cached(tensor: string, bits: number, scales: Float32Array): RoundedWeight | undefined {
    return this.done.get(this.key(tensor, bits, scales));
  }

  /**
   * Which rounding each weight kept, per bit-width: the per-layer results computed or loaded
   * so far, then those of each sequentially rounded configuration (`sequential: true`).
   */
  choices(): RoundingChoice[] {
    return [...this.choice.values(), ...[...this.seqChoice.values()].flat()];
  }

  /** The choices of a configuration's sequential rounding, if computed. */
  sequentialChoices(key: string): RoundingChoice[] | undefined {
    return this.seqChoice.get(key);
  }

  private readonly seqChoice = new Map<string, RoundingChoice[]>();

  /**
   * Keeps the per-layer rounding results in `dir/rounding-<key>.bin`: results already there
   * under the same `key` (a hash of model, data and every option that changes the rounding, as
   * the sensitivity cache's) are loaded, so they are not recomputed, and each new result is
   * appended as soon as it is known. A record cut short by a kill is ignored on the next load.
   */
  persist(dir: string, key: string): void {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `rounding-${key}.bin`);
    let good = 0;
    if (fs.existsSync(file)) {
      const buf = fs.readFileSync(file);
      let off = 0;
      while (off + 8 <= buf.length) {
        const hlen = buf.readUInt32LE(off);
        const dlen = buf.readUInt32LE(off + 4);
        if (off + 8 + hlen + dlen * 4 > buf.length) break;
        let h: { v: number; key: string; entry: string; n: [number, number, number]; choice: RoundingChoice };
        try {
          h = JSON.parse(buf.toString('utf8', off + 8, off + 8 + hlen));
        } catch {
          break;
        }
        const start = off + 8 + hlen;
        const data = new Float32Array(buf.buffer.slice(buf.byteOffset + start, buf.byteOffset + start + dlen * 4));
        off = start + dlen * 4;
        good = off;
        if (h.v !== PERSIST_VERSION || h.key !== key || h.n[0] + h.n[1] + h.n[2] !== dlen) continue;
        if (!this.done.has(h.entry)) {
          this.done.set(h.entry, { q: data.subarray(0, h.n[0]), biasDelta: data.subarray(h.n[0], h.n[0] + h.n[1]), scales: data.subarray(h.n[0] + h.n[1]) });
          this.choice.set(h.entry, h.choice);
          this.loaded++;
        }
      }
      // drop a record cut short by a kill, so that appends start on a record boundary
      if (good < buf.length) fs.truncateSync(file, good);
    }
    this.persistFile = file;
    this.persistKey = key;
  }

  private append(entry: string, r: RoundedWeight, choice: RoundingChoice): void {
    if (this.persistFile === undefined) return;
    const header = Buffer.from(JSON.stringify({ v: PERSIST_VERSION, key: this.persistKey, entry, n: [r.q.length, r.biasDelta.length, r.scales.length], choice }), 'utf8');
    const data = new Float32Array(r.q.length + r.biasDelta.length + r.scales.length);
    data.set(r.q, 0);
    data.set(r.biasDelta, r.q.length);
    data.set(r.scales, r.q.length + r.biasDelta.length);
    const head = Buffer.alloc(8);
    head.writeUInt32LE(header.length, 0);
    head.writeUInt32LE(data.length, 4);
    fs.appendFileSync(this.persistFile, Buffer.concat([head, header, Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
  }

  /** Rounds `tensor` (data `w`, ONNX layout) at `bits` with per-output-channel `scales` (cached). */
  round(tensor: string, w: Float32Array, shape: number[], scales: Float32Array, bits: number): Promise<RoundedWeight> {
    const key = this.key(tensor, bits, scales);
    const hit = this.done.get(key);
    if (hit) return Promise.resolve(hit);
    let p = this.pending.get(key);
    if (p) return p;
    const i = this.index.get(tensor);
    if (i === undefined) return Promise.reject(new MpqError('MPQ_INTERNAL', `no rounding statistics for weight '${tensor}'`));
    if (this.pending.size === 0) this.busySince = Date.now();
    p = (async () => {
      try {
        const r = (await this.stats.round(i, w, shape, scales, bits, 'gptq', JSON.stringify(this.options))) as NativeRounded;
        const out = { q: r.q, biasDelta: r.biasDelta, scales: r.scales };
        const c = choiceOf(tensor, bits, r, false);
        this.done.set(key, out);
        this.choice.set(key, c);
        this.append(key, out, c);
        this.computed++;
        return out;
      } catch (e) {
        throw fromNative(e);
      } finally {
        this.pending.delete(key);
        if (this.pending.size === 0) this.seconds += (Date.now() - this.busySince) / 1000;
      }
    })();
    this.pending.set(key, p);
    return p;
  }

  /**
   * Sequential rounding of `jobs` (in graph order): for each layer, the calibration batches
   * run through the network whose earlier layers are rounded already (the QDQ graph of
   * `encodingsWith(done)`: done weights with their integers, weights still to do left float)
   * and through the float network; the layer's statistics pair the two inputs, and its weight
   * is rounded to reproduce the float layer's output. Values on the cut between layers are
   * kept for all batches, so each part of the network runs once per stream.
   */
  async roundSequential(
    key: string,
    model: Model,
    g: Graph,
    batches: Batches,
    jobs: SequentialJob[],
    encodingsWith: (done: Map<string, RoundedWeight>, pending: Set<string>) => Encodings,
    opts: RunOptions = {},
  ): Promise<Map<string, RoundedWeight>> {
    const hit = this.seq.get(key);
    if (hit) return hit;
    const t0 = Date.now();
    const n = syncLimits();
    let stats: Stats;
    try {
      stats = new n.RoundingStats(JSON.stringify(this.layers.map((l) => l.spec)));
    } catch (e) {
      throw fromNative(e);
    }
    const feeds: Record<string, Tensor>[] = [];
    for await (const b of batches()) feeds.push(b);
    const spec = model.specialize(Object.fromEntries(model.inputNames.map((k) => [k, feeds[0][k].shape])));
    const isFloat = (v: string) => spec.values.get(v)?.dtype === 'float';
    const fStream = new Stream(g, feeds, model.inputNames, isFloat);
    const qStream = new Stream(g, feeds, model.inputNames, (v) => !v.endsWith('_quantized') && isFloat(v.replace(/_(dequantized|float)$/, '')));
    const done = new Map<string, RoundedWeight>();
    const choices: RoundingChoice[] = [];
    const pending = new Set(jobs.map((j) => j.tensor));
    // less dampening than per-layer GPTQ: it also keeps the regression towards the float output
    // near W (measured on MobileNetV1 W4A8, 200 images: damp 0.01 0.81, 0.001 0.845, 0.0001 0.825)
    const options = JSON.stringify({ damp: SEQUENTIAL_DAMP, ...this.options });
    for (const job of jobs) {
      throwIfAborted(opts.signal, 'the rounding');
      const li = this.index.get(job.tensor)!;
      const input = this.layers[li].input;
      const qg = buildQdqGraph(g, encodingsWith(done, pending));
      const qNode = qg.nodes.find((m) => WEIGHTED.has(m.op) && m.inputs[1] === job.tensor);
      if (!qNode) throw new MpqError('MPQ_INTERNAL', `sequential rounding: no node reads '${job.tensor}'`);
      const xq = await qStream.values(qg, qNode.inputs[0], opts);
      const xf = await fStream.values(g, input, opts);
      for (let b = 0; b < feeds.length; b++) {
        try {
          await stats.addInputs(li, xq[b], xf[b]);
        } catch (e) {
          throw fromNative(e);
        }
      }
      let r: NativeRounded;
      try {
        r = (await stats.round(li, job.w, job.shape, job.scales, job.bits, 'gptq', options)) as NativeRounded;
      } catch (e) {
        throw fromNative(e);
      }
      stats.reset(li);
      choices.push(choiceOf(job.tensor, job.bits, r, true));
      done.set(job.tensor, { q: r.q, biasDelta: r.biasDelta, scales: r.scales });
      pending.delete(job.tensor);
    }
    this.seq.set(key, done);
    this.seqChoice.set(key, choices);
    this.seconds += (Date.now() - t0) / 1000;
    return done;
  }
}

/**
 * One stream of sequential rounding: values on the cut of the network, for every batch.
 * `values(graph, v)` runs the nodes needed to compute `v` from what is kept (graph inputs are
 * always kept), keeps every computed value that a node not yet run will read, and drops kept
 * values whose readers have all run. Graphs passed in turn may differ only in nodes not yet run.
 */
class Stream {
  private readonly kept = new Map<string, Tensor[]>();
  private readonly ran = new Set<string>();

  constructor(_g: Graph, feeds: Record<string, Tensor>[], private readonly inputs: string[], private readonly keepable: (v: string) => boolean) {
    for (const k of inputs) this.kept.set(k, feeds.map((f) => f[k]));
  }

  async values(g: Graph, target: string, opts: RunOptions): Promise<Tensor[]> {
    const have = this.kept.get(target);
    if (have) return have;
    const producer = new Map<string, number>();
    g.nodes.forEach((m, i) => m.outputs.forEach((o) => o && producer.set(o, i)));
    // backward closure from the target, stopping at kept values and constants
    const need = new Set<number>();
    const used = new Set<string>();
    const stack = [target];
    const seen = new Set<string>();
    while (stack.length) {
      const v = stack.pop()!;
      if (!v || seen.has(v)) continue;
      seen.add(v);
      if (this.kept.has(v)) {
        used.add(v);
        continue;
      }
      if (g.consts.has(v)) continue;
      const p = producer.get(v);
      if (p === undefined) throw new MpqError('MPQ_INTERNAL', `sequential rounding: no producer of '${v}'`);
      if (need.has(p)) continue;
      need.add(p);
      for (const i of g.nodes[p].inputs) stack.push(i);
    }
    const nodes = [...need].sort((a, b) => a - b).map((i) => g.nodes[i]);
    const inSeg = new Set(nodes.map(nodeKey));
    const readers = new Map<string, Node[]>();
    for (const m of g.nodes) for (const i of m.inputs) if (i) (readers.get(i) ?? readers.set(i, []).get(i)!).push(m);
    const keepOut = new Set<string>([target]);
    for (const m of nodes) {
      for (const o of m.outputs) {
        if (o && this.keepable(o) && (readers.get(o) ?? []).some((r) => !inSeg.has(nodeKey(r)) && !this.ran.has(nodeKey(r)))) keepOut.add(o);
      }
    }
    const ins = [...used];
    const consts = new Map<string, Graph['consts'] extends Map<string, infer T> ? T : never>();
    for (const m of nodes) for (const i of m.inputs) if (i && g.consts.has(i)) consts.set(i, g.consts.get(i)!);
    const first = this.kept.get(ins[0] ?? this.inputs[0])!;
    const sub: Graph = {
      ...g,
      nodes,
      consts,
      // rank only: batches may differ in shape (text lines of their own widths)
      inputs: ins.map((name) => ({ name, dtype: 'float' as const, onnxType: 1, dims: this.kept.get(name)![0].shape.map(() => null) })),
      outputs: [...keepOut].map((name) => ({ name, dtype: 'float' as const, onnxType: 1, dims: null })),
    };
    const m = Model.fromGraph(sub);
    const outs: Record<string, Tensor[]> = {};
    for (const o of keepOut) outs[o] = [];
    for (let b = 0; b < first.length; b++) {
      const r = await m.run(Object.fromEntries(ins.map((k) => [k, this.kept.get(k)![b]])), opts);
      for (const o of keepOut) outs[o].push(r[o]);
    }
    for (const k of inSeg) this.ran.add(k);
    for (const o of keepOut) this.kept.set(o, outs[o]);
    // drop kept values whose readers have all run
    for (const k of [...this.kept.keys()]) {
      if (this.inputs.includes(k) || keepOut.has(k)) continue;
      if ((readers.get(k) ?? []).every((r) => this.ran.has(nodeKey(r)))) this.kept.delete(k);
    }
    return outs[target];
  }
}

function nodeKey(n: Node): string {
  return n.outputs[0] ?? n.name;
}

function prod(a: number[]): number {
  return a.reduce((x, y) => x * y, 1);
}

/**
 * Gathers the layer-input statistics of every weight quantizer in `placement` over the
 * calibration batches (one run of the float model per batch).
 */
export async function gatherRoundingStats(model: Model, g: Graph, placement: Placement, batches: Batches, options: RoundingOptions = {}, opts: RunOptions = {}): Promise<WeightRounder> {
  const t0 = Date.now();
  const uses = new Map<string, number>();
  for (const n of g.nodes) for (const i of n.inputs) if (i) uses.set(i, (uses.get(i) ?? 0) + 1);
  const layers: Layer[] = [];
  let plans: Map<string, { c: ReturnType<Model['compile']>; values: number[] }> | undefined;
  const n = syncLimits();
  let stats: Stats | undefined;

  const describe = (c: ReturnType<Model['compile']>) => {
    const out: Layer[] = [];
    for (const w of placement.weights) {
      if (uses.get(w.tensor) !== 1) continue; // shared weight: one rounding cannot serve two layers
      const node = g.nodes.find((m) => WEIGHTED.has(m.op) && m.inputs[1] === w.tensor);
      const wi = c.lowered.index.get(w.tensor);
      const pn = c.lowered.plan.nodes.find((m) => m.op === node?.op && wi !== undefined && m.inputs[1] === wi);
      if (!node || !pn || pn.inputs[0] === null) continue;
      const xv = c.lowered.plan.values[pn.inputs[0]];
      const wt = g.consts.get(w.tensor)!;
      const a = pn.attrs as Record<string, number | number[]>;
      let spec: Record<string, unknown> | undefined;
      if (node.op === 'Conv' && (xv.shape.length === 3 || xv.shape.length === 4)) {
        spec = { kind: 'conv', kernel: wt.shape.slice(2), strides: a.strides, pads: a.pads, dilations: a.dilations, group: a.group ?? 1 };
      } else if (node.op === 'ConvTranspose' && xv.shape.length >= 3) {
        const out = c.lowered.plan.values[pn.outputs[0]].shape;
        spec = { kind: 'convtranspose', group: a.group ?? 1, bias_factor: prod(xv.shape.slice(2)) / prod(out.slice(2)) };
      } else if (node.op === 'Gemm' && wt.shape.length === 2) {
        spec = { kind: 'rows', trans: (a.transA ?? 0) === 1, w_trans: (a.transB ?? 0) === 1 };
      } else if (node.op === 'MatMul' && wt.shape.length === 2) {
        // MatMul has no bias input: the export adds no bias correction, so rounding must not count on one
        spec = { kind: 'rows', trans: false, w_trans: false, bias: false };
      }
      const dim = spec?.kind === 'conv' ? prod(wt.shape.slice(1)) : spec?.kind === 'convtranspose' ? wt.shape[0] / Number(spec.group) : spec?.w_trans ? wt.shape[1] : wt.shape[0];
      if (spec) out.push({ tensor: w.tensor, input: node.inputs[0], spec, dim });
    }
    return out;
  };

  for await (const batch of batches()) {
    const shapes = Object.fromEntries(model.inputNames.map((k) => [k, batch[k].shape]));
    const key = model.inputNames.map((k) => batch[k].shape.join('x')).join(';');
    if (!plans) {
      plans = new Map();
      const probe = model.compile(shapes);
      layers.push(...describe(probe));
      try {
        stats = new n.RoundingStats(JSON.stringify(layers.map((l) => l.spec)));
      } catch (e) {
        throw fromNative(e);
      }
    }
    let p = plans.get(key);
    if (!p) {
      const c = model.compile(shapes, [...new Set(layers.map((l) => l.input))]);
      p = { c, values: layers.map((l) => c.lowered.index.get(l.input)!) };
      plans.set(key, p);
    }
    throwIfAborted(opts.signal, 'the rounding');
    const token = new n.CancelToken();
    const onAbort = () => token.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await stats!.accumulate(p.c.plan, model.inputNames.map((k) => batch[k] as Tensor).map((t) => ({ shape: t.shape, data: t.data })), p.values, token);
    } catch (e) {
      throw fromNative(e);
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
    }
  }
  if (!stats) throw new MpqError('MPQ_BAD_INPUT', 'the calibration data has no samples');
  return new WeightRounder(stats, layers, options, (Date.now() - t0) / 1000);
}
