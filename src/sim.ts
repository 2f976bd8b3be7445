/**
 * The simulation of quantized configurations on one loaded plan (DESIGN.md section 8): the
 * model's folded float graph is lowered once per input shape with a quantizer slot on every
 * placed activation and weight (`crates/core/src/sim.rs`); a configuration is data (fake-quant
 * parameters per activation, an uploaded weight variant per weight), so evaluating another
 * configuration re-packs only the layers whose weights changed. The arithmetic is that of the
 * QDQ graph the quantizer exports, which onnxruntime runs with the same numbers.
 */
import * as crypto from 'crypto';
import { fromNative, MpqError } from './errors';
import { cancellable, Model, RunOptions, Runnable, SimPlan, Tensor } from './model';
import { Encodings, TensorEncoding } from './quant/encodings';
import { qrange } from './quant/scheme';
import type { Calibrated } from './quant/quantize';

export interface SimAct { value: number; scale: number; zp: number; qmin: number; qmax: number }
export interface SimConfig { acts: SimAct[]; weights: { value: number; key: string }[] }

/** Identity numbers of arrays (rounded integers, bias shifts), for weight variant keys. */
const ids = new WeakMap<object, number>();
const simulators = new WeakMap<object, Simulator>();
let nextId = 1;
const idOf = (a: object) => {
  let i = ids.get(a);
  if (i === undefined) ids.set(a, (i = nextId++));
  return i;
};

/**
 * Simulates configurations of one model's quantizers. `actSlots`: every activation a
 * configuration may quantize; `weightSlots`: every weight.
 */
export class Simulator {
  /** Why this model cannot be simulated on one plan (null when it can). */
  readonly unsupported: string | null;

  constructor(readonly model: Model, private readonly actSlots: readonly string[], private readonly weightSlots: readonly string[], shapes: Record<string, number[]>) {
    this.unsupported = this.check(shapes);
  }

  /** Weights must be constants the plan reads as they are (not folded into other values). */
  private check(shapes: Record<string, number[]>): string | null {
    const spec = this.model.specialize(shapes);
    const ws = new Set(this.weightSlots);
    for (const sn of spec.nodes) {
      if (!sn.folded) continue;
      const w = sn.node.inputs.find((i) => ws.has(i));
      if (w) return `weight '${w}' is folded into another constant by node '${sn.node.name}' (${sn.node.op})`;
    }
    return null;
  }

  /** The simulator of every quantizer `cal` placed, at its calibration shapes. */
  /** The simulator of a calibration (one per calibration: phase-1 chunks, evaluations and the export check share it). */
  static of(cal: Pick<Calibrated, 'model' | 'placement' | 'shapes'>): Simulator {
    let s = simulators.get(cal);
    if (!s) simulators.set(cal, (s = new Simulator(cal.model, cal.placement.activations.map((a) => a.tensor), cal.placement.weights.map((w) => w.tensor), cal.shapes)));
    return s;
  }

  plan(shapes: Record<string, readonly number[]>): SimPlan {
    return this.model.simPlan(shapes, this.actSlots);
  }

  /** The plan for one batch, the graph outputs it computes (not constants), their ids and the inputs. */
  private at(feeds: Record<string, Tensor>) {
    const m = this.model;
    const p = this.plan(Object.fromEntries(m.inputNames.map((n) => [n, feeds[n].shape])));
    const outputs = m.outputNames.filter((o) => !p.lowered.constOutputs.has(o));
    const ids = outputs.map((o) => p.lowered.index.get(o)!);
    const inputs = m.inputNames.map((n) => ({ shape: feeds[n].shape, data: feeds[n].data }));
    return { p, outputs, ids, inputs };
  }

  private valueOf(p: SimPlan, v: string): number | undefined {
    return p.lowered.index.get(v);
  }

  /** The configuration of `enc` on plan `p`, uploading the weight variants it needs. */
  async config(p: SimPlan, enc: Encodings): Promise<SimConfig> {
    const acts: SimAct[] = [];
    for (const [v, e] of enc.activations) {
      const id = this.valueOf(p, v);
      if (id === undefined) continue;
      const x = e.entries[0];
      acts.push({ value: id, scale: x.scale, zp: -x.offset, qmin: 0, qmax: 2 ** x.bitwidth - 1 });
    }
    const weights: { value: number; key: string }[] = [];
    const uploads: Promise<void>[] = [];
    for (const [w, e] of enc.weights) {
      const id = this.valueOf(p, w);
      if (id === undefined || !p.lowered.plan.constants.some((c) => c.value === id)) {
        throw new MpqError('MPQ_INTERNAL', `weight '${w}' is not a constant of the simulation plan`);
      }
      const key = variantKey(w, e);
      weights.push({ value: id, key });
      if (p.handle.hasVariant(key)) continue;
      const { qmin, qmax } = qrange(e.rangeBits ?? e.entries[0].bitwidth, true);
      const scales = Float32Array.from(e.entries.map((x) => x.scale));
      uploads.push(p.handle.addVariant(key, id, e.quantized ?? null, scales, e.axis ?? -1, qmin, qmax, e.biasDelta ?? null).catch((err: unknown) => Promise.reject(fromNative(err))));
    }
    await Promise.all(uploads);
    return { acts, weights };
  }

  /** Runs the model with the quantizers of `enc` (graph outputs by name). */
  async run(feeds: Record<string, Tensor>, enc: Encodings, opts: RunOptions = {}): Promise<Record<string, Tensor>> {
    const m = this.model;
    for (const n of m.inputNames) if (!feeds[n]) throw new MpqError('MPQ_BAD_INPUT', `missing input '${n}'; the model's inputs are: ${m.inputNames.join(', ')}`);
    const { p, ids, inputs } = this.at(feeds);
    const cfg = await this.config(p, enc);
    const got = await cancellable(opts, (t) => p.handle.run(inputs, cfg, ids, t));
    const out: Record<string, Tensor> = {};
    let k = 0;
    for (const o of m.outputNames) {
      const c = p.lowered.constOutputs.get(o);
      out[o] = c ? { shape: c.shape, data: Float32Array.from(c.data) } : { shape: got[k].shape, data: got[k++].data };
    }
    return out;
  }

  /** The model under the quantizers of `enc`, as something metrics and callbacks can run. */
  runnable(enc: Encodings): Runnable {
    return { inputNames: this.model.inputNames, outputNames: this.model.outputNames, run: (feeds, opts) => this.run(feeds, enc, opts) };
  }

  /**
   * Phase 1 on one batch: for each configuration, [signal, noise] power per graph output
   * (signal of the float model, noise of the configuration against it), and the seconds spent
   * in the float pass and in the configurations' own steps. Without `floatOuts` the call's
   * float pass runs to the end and returns them (`floats`), for the caller to keep.
   */
  async phase1(
    feeds: Record<string, Tensor>,
    configs: (p: SimPlan) => Promise<SimConfig[]>,
    floatOuts: Tensor[] | null,
    opts: RunOptions = {},
  ): Promise<{ outputs: string[]; signal: number[]; noise: number[][]; floatSecs: number; entrySecs: number; floats: Tensor[] | null }> {
    const { p, outputs, ids, inputs } = this.at(feeds);
    const cfgs = await configs(p);
    const { values: r, floats } = await cancellable(opts, (t) => p.handle.phase1(inputs, cfgs, ids, floatOuts, t), 'the search');
    const no = outputs.length;
    const signal = Array.from(r.subarray(0, no));
    const noise = cfgs.map((_, e) => Array.from(r.subarray(no + e * no, no + (e + 1) * no)));
    return { outputs, signal, noise, floatSecs: r[r.length - 2], entrySecs: r[r.length - 1], floats: floats ?? null };
  }
}

/** The key of a weight variant: its tensor, range, scales and (by identity) rounded integers. */
function variantKey(w: string, e: TensorEncoding): string {
  const scales = Float32Array.from(e.entries.map((x) => x.scale));
  const h = crypto.createHash('sha1').update(Buffer.from(scales.buffer)).digest('base64');
  return `${w}|${e.entries[0].bitwidth}|${e.rangeBits ?? ''}|${e.axis ?? ''}|${h}|${e.quantized ? idOf(e.quantized) : 'n'}|${e.biasDelta ? idOf(e.biasDelta) : ''}`;
}
