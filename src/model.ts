/** A loaded model: the graph IR, its weights uploaded once to the engine, and plans per input shape. */
import * as crypto from 'crypto';
import { abortError, MpqError, fromNative } from './errors';
import { ConstTensor, Graph } from './graph/ir';
import { lower, Lowered } from './graph/lower';
import { checkSupported, DataValues, probeDataValues, resolveInputShapes, specialize, Specialized } from './graph/specialize';
import { native, syncLimits } from './native';
import { loadGraph, loadGraphFromFile, loadGraphOffThread } from './onnx/load';
import { foldBatchNorm } from './graph/passes/fold-bn';
import { flattenDataIfs } from './graph/flatten-if';

/** A float32 tensor: row-major data and its shape. */
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export interface RunOptions {
  /** Cancels the run; the promise rejects with an {@link AbortError} (code MPQ_ABORTED). */
  signal?: AbortSignal;
}

type PlanHandle = InstanceType<ReturnType<typeof native>['PlanHandle']>;
export type SimHandle = InstanceType<ReturnType<typeof native>['SimHandle']>;

/**
 * What runs a model on named feeds: a {@link Model}, or a quantized configuration simulated on
 * one (what phase 3 and a user's `evaluate` callback receive).
 */
export interface Runnable {
  readonly inputNames: string[];
  readonly outputNames: string[];
  run(feeds: Record<string, Tensor>, opts?: RunOptions): Promise<Record<string, Tensor>>;
}

/** A simulation plan of {@link Model.graph} at one input shape (see `src/sim.ts`). */
export interface SimPlan {
  spec: Specialized;
  lowered: Lowered;
  handle: SimHandle;
}
type StoreHandle = InstanceType<ReturnType<typeof native>['WeightStoreHandle']>;

export interface Compiled {
  spec: Specialized;
  lowered: Lowered;
  plan: PlanHandle;
}

export class Model implements Runnable {
  /** The graph with BatchNormalization folded into its Conv/Gemm (what quantization sees). */
  readonly graph: Graph;
  /**
   * The graph as the file has it, which {@link Model.run} executes: the engine fuses each
   * Conv + BatchNormalization into one step in the unfused ops' arithmetic, so float outputs
   * equal onnxruntime's with graph optimizations off (its optimizer folds BN, see CONV.md).
   */
  private readonly asWritten: Graph;
  private store: StoreHandle;
  private uploaded = new Set<string>();
  private compiled = new Map<string, Compiled>();
  /** Compiled plans kept per model (least recently used ones are dropped). */
  static MAX_PLANS = 8;

  /** `folded`: `graph` with BatchNormalization folded, when the caller folded it already. */
  private constructor(graph: Graph, folded?: Graph) {
    // If nodes that run as both branches and a Where are written out, so that their branches are quantized (flatten-if.ts)
    const base = folded ?? foldBatchNorm(graph);
    const flat = flattenDataIfs(base);
    this.graph = flat === base ? base : foldBatchNorm(flat);
    this.asWritten = graph;
    // values measured on the data, shared with the graphs derived from this one
    graph.dataValues ??= this.graph.dataValues ?? new Map();
    this.graph.dataValues = graph.dataValues;
    const n = native();
    checkSupported(this.graph, new Set(n.supportedOps()));
    this.store = new n.WeightStoreHandle();
  }

  /** Loads an ONNX model from a file (external data is read from its folder). */
  static fromFile(file: string): Model {
    return new Model(loadGraphFromFile(file));
  }

  /**
   * Loads an ONNX model from a file or from bytes without holding up the event loop: the
   * model is decoded in a worker thread. `signal` aborts the load (AbortError).
   */
  static async load(source: string | Uint8Array, opts: RunOptions = {}): Promise<Model> {
    const { graph, folded } = await loadGraphOffThread(typeof source === 'string' ? { file: source } : { bytes: source }, opts.signal);
    if (opts.signal?.aborted) throw abortError('the model load was aborted');
    return new Model(graph, folded);
  }

  /** Wraps a graph IR (for example a QDQ graph built by the quantizer). */
  static fromGraph(graph: Graph): Model {
    return new Model(graph);
  }

  /** Loads an ONNX model from bytes (models with external data must use {@link Model.fromFile}). */
  static fromBytes(bytes: Uint8Array): Model {
    return new Model(loadGraph(bytes));
  }

  get inputNames(): string[] {
    return this.graph.inputs.map((i) => i.name);
  }
  get outputNames(): string[] {
    return this.graph.outputs.map((o) => o.name);
  }

  /** Shape inference and folding for these input shapes (declared static dims fill the rest). */
  specialize(shapes: Record<string, readonly number[]> = {}): Specialized {
    return specialize(this.graph, resolveInputShapes(this.graph, shapes), this.graph.dataValues);
  }

  /** Compiled plans that compute data values (see {@link Model.measureDataValues}), least recently used first. */
  private probes = new Map<string, PlanHandle>();
  /** Input-shape keys whose specialisation depends on no data value (no measuring needed). */
  private dataFree = new Set<string>();

  /**
   * The values that the shapes depend on for these inputs (a Reshape target or Range bound
   * computed from input values, ...), computed in the engine; empty when the shapes depend on
   * none. `share`: later specialisations of this model (and of the graphs derived from it)
   * use them, each plan checking at run time that its data gives them again.
   */
  async measureDataValues(feeds: Record<string, Tensor>, opts: RunOptions & { share?: boolean; asWritten?: boolean } = {}): Promise<DataValues> {
    const graph = opts.asWritten ? this.asWritten : this.graph;
    const resolved = resolveInputShapes(graph, Object.fromEntries(graph.inputs.map((i) => [i.name, feeds[i.name]?.shape ?? []])));
    const key = `${graph === this.graph ? '' : 'w|'}${graph.inputs.map((i) => resolved[i.name].join('x')).join(';')}`;
    let known: DataValues = new Map();
    if (!this.dataFree.has(key)) {
      const inputs = graph.inputs.map((i) => feeds[i.name]);
      ({ known } = await probeDataValues(graph, resolved, async (partial, name, sofar) => {
        // the plans that compute data values, kept as compiled plans are (the first is the same on every run)
        const pkey = `${key}|probe:${name}${dataKey(sofar)}`;
        let plan = this.probes.get(pkey);
        if (plan) this.probes.delete(pkey);
        else plan = this.build(partial, []).plan;
        this.probes.set(pkey, plan);
        while (this.probes.size > Model.MAX_PLANS) this.probes.delete(this.probes.keys().next().value!);
        const [t] = await cancellable(opts, (token) => plan.run(inputs.map((x) => ({ shape: x.shape, data: x.data })), undefined, token));
        const dtype = partial.values.get(name)!.dtype;
        return { dtype, shape: t.shape, data: dtype === 'float' ? t.data : Float64Array.from(t.data), onnxType: dtype === 'float' ? 1 : dtype === 'int' ? 7 : 9 };
      }));
      if (known.size === 0) this.dataFree.add(key);
    }
    if (opts.share && (known.size || this.graph.dataValues!.size)) {
      this.graph.dataValues!.clear();
      for (const [k, v] of known) this.graph.dataValues!.set(k, v);
    }
    return known;
  }

  /**
   * The compiled plan of {@link Model.graph} for these input shapes (cached); `asWritten`:
   * of the graph as the file has it instead (BatchNormalization not folded, see
   * {@link Model.run}).
   */
  compile(shapes: Record<string, readonly number[]>, keep: readonly string[] = [], asWritten = false, known: DataValues = this.graph.dataValues!): Compiled {
    const graph = asWritten ? this.asWritten : this.graph;
    const resolved = resolveInputShapes(graph, shapes);
    const key = graph.inputs.map((i) => resolved[i.name].join('x')).join(';') + dataKey(known);
    const ckey = `${graph === this.graph ? '' : 'w|'}${keep.length ? `${key}|${keep.join('|')}` : key}`;
    let c = this.compiled.get(ckey);
    if (c) {
      // most recently used last
      this.compiled.delete(ckey);
      this.compiled.set(ckey, c);
      return c;
    }
    const spec = specialize(graph, resolved, known);
    const { lowered, plan } = this.build(spec, keep);
    c = { spec, lowered, plan };
    this.compiled.set(ckey, c);
    // plans hold packed weights: keep the few most recently used (inputs of varying shapes,
    // such as text lines of many widths, would otherwise grow memory without bound)
    while (this.compiled.size > Model.MAX_PLANS) this.compiled.delete(this.compiled.keys().next().value!);
    return c;
  }

  /** Lowers and compiles a specialisation, uploading the constants it needs. */
  private build(spec: Specialized, keep: readonly string[]): { lowered: Lowered; plan: PlanHandle } {
    const lowered = this.lowerSpec(spec);
    let plan: PlanHandle;
    const keepIds = keep.map((k) => lowered.index.get(k)).filter((i): i is number => i !== undefined);
    try {
      plan = syncLimits().PlanHandle.compile(this.store, JSON.stringify(lowered.plan), keepIds);
    } catch (e) {
      throw fromNative(e);
    }
    return { lowered, plan };
  }

  /** Lowers a specialisation, uploading the constants it needs. */
  private lowerSpec(spec: Specialized): Lowered {
    const graph = spec.graph;
    // folded values are keyed by content: the same value at another input shape is uploaded once
    const lowered = lower(spec, (name) => {
      if (graph.consts.has(name)) return `w:${name}`;
      const t = spec.values.get(name)!.value!;
      const h = crypto.createHash('sha1').update(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)).digest('hex');
      return `f:${name}:${t.shape.join('x')}:${h}`;
    });
    for (const { key: k, tensor } of lowered.consts) this.upload(k, tensor);
    return lowered;
  }

  private sims = new Map<string, SimPlan>();
  private variants?: InstanceType<ReturnType<typeof native>['VariantStoreHandle']>;
  /** Simulation plans kept per model (each holds its re-packed weight variants). */
  static MAX_SIM_PLANS = 32;

  /**
   * The simulation plan of {@link Model.graph} at these input shapes with quantizer slots on
   * the activations `actSlots` (cached per shapes and slots; see `src/sim.ts`).
   */
  simPlan(shapes: Record<string, readonly number[]>, actSlots: readonly string[]): SimPlan {
    const resolved = resolveInputShapes(this.graph, shapes);
    const known = this.graph.dataValues!;
    const key = `${this.graph.inputs.map((i) => resolved[i.name].join('x')).join(';')}${dataKey(known)}|${actSlots.join('|')}`;
    let p = this.sims.get(key);
    if (p) {
      this.sims.delete(key);
      this.sims.set(key, p);
      return p;
    }
    const spec = specialize(this.graph, resolved, known);
    const lowered = this.lowerSpec(spec);
    const slots = actSlots.map((v) => lowered.index.get(v)).filter((i): i is number => i !== undefined);
    let handle: SimHandle;
    try {
      this.variants ??= new (native().VariantStoreHandle)();
      handle = syncLimits().SimHandle.compile(this.store, this.variants, JSON.stringify(lowered.plan), slots);
    } catch (e) {
      throw fromNative(e);
    }
    p = { spec, lowered, handle };
    this.sims.set(key, p);
    while (this.sims.size > Model.MAX_SIM_PLANS) this.sims.delete(this.sims.keys().next().value!);
    return p;
  }

  private upload(key: string, t: ConstTensor): void {
    if (this.uploaded.has(key)) return;
    const data = t.data instanceof Float32Array ? t.data : Float32Array.from(t.data);
    this.store.set(key, t.shape, data);
    this.uploaded.add(key);
  }

  /**
   * Runs the model in the engine (off the JS thread), as the file has it: the float outputs
   * equal onnxruntime's with graph optimizations off. Returns outputs by name.
   */
  async run(feeds: Record<string, Tensor>, opts: RunOptions = {}): Promise<Record<string, Tensor>> {
    for (const name of this.inputNames) {
      if (!feeds[name]) throw new MpqError('MPQ_BAD_INPUT', `missing input '${name}'; the model's inputs are: ${this.inputNames.join(', ')}`);
    }
    const shapes: Record<string, number[]> = {};
    for (const [name, t] of Object.entries(feeds)) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (n !== t.data.length) throw new MpqError('MPQ_INPUT_SHAPE', `input '${name}': shape [${t.shape}] needs ${n} values, got ${t.data.length}`);
      shapes[name] = t.shape;
    }
    // shapes that depend on the data are measured on these inputs
    const known = await this.measureDataValues(feeds, { ...opts, asWritten: true });
    const c = this.compile(shapes, [], true, known);
    const results = await this.exec(c, this.inputNames.map((n) => feeds[n]), opts);
    const out: Record<string, Tensor> = {};
    let k = 0;
    for (const o of this.graph.outputs) {
      const constOut = c.lowered.constOutputs.get(o.name);
      out[o.name] = constOut
        ? { shape: constOut.shape, data: Float32Array.from(constOut.data) }
        : { shape: results[k].shape, data: results[k++].data };
    }
    return out;
  }

  /**
   * Runs a compiled plan and returns statistics of `values` (plan value indices kept at
   * compile time): [min, max] pairs, or histograms when `ranges` and `bins` are given.
   */
  async observe(c: Compiled, inputs: Tensor[], values: number[], hist?: { ranges: Float64Array; bins: number }, opts: RunOptions = {}): Promise<Float64Array> {
    return cancellable(opts, (token) => c.plan.observe(inputs.map((t) => ({ shape: t.shape, data: t.data })), values, hist?.ranges, hist?.bins, token));
  }

  /** Runs a compiled plan; `want` lists plan value indices to return instead of the outputs. */
  async exec(c: Compiled, inputs: Tensor[], opts: RunOptions = {}, want?: number[]): Promise<Tensor[]> {
    return cancellable(opts, (token) => c.plan.run(inputs.map((t) => ({ shape: t.shape, data: t.data })), want, token));
  }
}

/** The part of a plan cache key that the measured data values make. */
function dataKey(known: DataValues): string {
  if (known.size === 0) return '';
  return '|data:' + crypto.createHash('sha1').update(JSON.stringify([...known].map(([k, t]) => [k, t.shape, Array.from(t.data)]))).digest('hex');
}

type CancelToken = InstanceType<ReturnType<typeof native>['CancelToken']>;

/**
 * Runs a native task with a cancel token wired to `opts.signal`; native errors become
 * MpqErrors. `what` names the work in the abort message.
 */
export async function cancellable<T>(opts: RunOptions, f: (token: CancelToken) => Promise<T>, what = 'the run'): Promise<T> {
  if (opts.signal?.aborted) throw abortError(`${what} was aborted before it started`);
  const token = new (native().CancelToken)();
  const onAbort = () => token.cancel();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await f(token);
  } catch (e) {
    throw fromNative(e);
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}
