/** A loaded model: the graph IR, its weights uploaded once to the engine, and plans per input shape. */
import * as crypto from 'crypto';
import { abortError, MpqError, fromNative } from './errors';
import { ConstTensor, Graph } from './graph/ir';
import { lower, Lowered } from './graph/lower';
import { checkSupported, resolveInputShapes, specialize, Specialized } from './graph/specialize';
import { native, syncLimits } from './native';
import { loadGraph, loadGraphFromFile, loadGraphOffThread } from './onnx/load';
import { foldBatchNorm } from './graph/passes/fold-bn';

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
    this.graph = folded ?? foldBatchNorm(graph);
    this.asWritten = graph;
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
    return specialize(this.graph, resolveInputShapes(this.graph, shapes));
  }

  /**
   * The compiled plan of {@link Model.graph} for these input shapes (cached); `asWritten`:
   * of the graph as the file has it instead (BatchNormalization not folded, see
   * {@link Model.run}).
   */
  compile(shapes: Record<string, readonly number[]>, keep: readonly string[] = [], asWritten = false): Compiled {
    const graph = asWritten ? this.asWritten : this.graph;
    const resolved = resolveInputShapes(graph, shapes);
    const key = graph.inputs.map((i) => resolved[i.name].join('x')).join(';');
    const ckey = `${graph === this.graph ? '' : 'w|'}${keep.length ? `${key}|${keep.join('|')}` : key}`;
    let c = this.compiled.get(ckey);
    if (c) {
      // most recently used last
      this.compiled.delete(ckey);
      this.compiled.set(ckey, c);
      return c;
    }
    const { spec, lowered } = this.lowerAt(graph, resolved);
    let plan: PlanHandle;
    const keepIds = keep.map((k) => lowered.index.get(k)).filter((i): i is number => i !== undefined);
    try {
      plan = syncLimits().PlanHandle.compile(this.store, JSON.stringify(lowered.plan), keepIds);
    } catch (e) {
      throw fromNative(e);
    }
    c = { spec, lowered, plan };
    this.compiled.set(ckey, c);
    // plans hold packed weights: keep the few most recently used (inputs of varying shapes,
    // such as text lines of many widths, would otherwise grow memory without bound)
    while (this.compiled.size > Model.MAX_PLANS) this.compiled.delete(this.compiled.keys().next().value!);
    return c;
  }

  /** Specializes and lowers `graph` at `resolved` input shapes, uploading its constants. */
  private lowerAt(graph: Graph, resolved: Record<string, number[]>): { spec: Specialized; lowered: Lowered } {
    const spec = specialize(graph, resolved);
    // folded values are keyed by content: the same value at another input shape is uploaded once
    const lowered = lower(spec, (name) => {
      if (graph.consts.has(name)) return `w:${name}`;
      const t = spec.values.get(name)!.value!;
      const h = crypto.createHash('sha1').update(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)).digest('hex');
      return `f:${name}:${t.shape.join('x')}:${h}`;
    });
    for (const { key: k, tensor } of lowered.consts) this.upload(k, tensor);
    return { spec, lowered };
  }

  private sims = new Map<string, SimPlan>();

  /**
   * The simulation plan of {@link Model.graph} at these input shapes with quantizer slots on
   * the activations `actSlots` (cached per shapes and slots; see `src/sim.ts`).
   */
  simPlan(shapes: Record<string, readonly number[]>, actSlots: readonly string[]): SimPlan {
    const resolved = resolveInputShapes(this.graph, shapes);
    const key = `${this.graph.inputs.map((i) => resolved[i.name].join('x')).join(';')}|${actSlots.join('|')}`;
    let p = this.sims.get(key);
    if (p) {
      this.sims.delete(key);
      this.sims.set(key, p);
      return p;
    }
    const { spec, lowered } = this.lowerAt(this.graph, resolved);
    const slots = actSlots.map((v) => lowered.index.get(v)).filter((i): i is number => i !== undefined);
    let handle: SimHandle;
    try {
      handle = syncLimits().SimHandle.compile(this.store, JSON.stringify(lowered.plan), slots);
    } catch (e) {
      throw fromNative(e);
    }
    p = { spec, lowered, handle };
    this.sims.set(key, p);
    while (this.sims.size > Model.MAX_PLANS) this.sims.delete(this.sims.keys().next().value!);
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
    const c = this.compile(shapes, [], true);
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

type CancelToken = InstanceType<ReturnType<typeof native>['CancelToken']>;

/** Runs a native task with a cancel token wired to `opts.signal`; native errors become MpqErrors. */
async function cancellable<T>(opts: RunOptions, f: (token: CancelToken) => Promise<T>): Promise<T> {
  if (opts.signal?.aborted) throw abortError('the run was aborted before it started');
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
