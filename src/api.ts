/**
 * The high-level API: every call takes paths or in-memory data, returns a promise, does its
 * heavy work off the JS thread and takes an AbortSignal (`signal`), rejecting with an
 * {@link AbortError} (code `MPQ_ABORTED`) when it is aborted.
 */
import { DataSourceOptions } from './data/source';
import { EvalResult, evaluateModels } from './eval/evaluate';
import { SampleLabels, loadSampleLabels } from './eval/labels';
import { throwIfAborted } from './errors';
import { inspectModel, InspectReport } from './inspect';
import { Model, RunOptions, Tensor } from './model';
import { BitConfig, loadBitConfig } from './quant/config';
import { encodingsFromJson, EncodingsJson, encodingsToJson } from './quant/encodings';
import { calibrate, encodingsOf, exportQdqOffThread, QuantizeOptions as CalibrateOptions } from './quant/quantize';
import { buildQdqGraph } from './quant/qdq';
import { readEncodings } from './quant/simulate';
import { CalibrationInput, ModelInput, resolveCalibration, resolveModel } from './search/inputs';
import { OnProgress, progressReporter } from './search/progress';
import { Verification, verifyExport, VERIFY_SAMPLES } from './eval/verify';

/** Loads an ONNX model (a file path or bytes), decoding it in a worker thread. */
export function loadModel(source: string | Uint8Array, opts: RunOptions = {}): Promise<Model> {
  return Model.load(source, opts);
}

/** What a model is made of (ops, inputs, outputs, parameters) and its MACs at `shapes` (or its declared shapes). */
export async function inspect(model: ModelInput, opts: RunOptions & { shapes?: Record<string, number[]> } = {}): Promise<InspectReport> {
  const { model: m } = await resolveModel(model, opts);
  return inspectModel(m, opts.shapes);
}

/** Encodings as a file path, the JSON object of an encodings.json, or absent (float). */
export type EncodingsInput = string | EncodingsJson;

function quantizedOf(m: Model, enc: EncodingsInput): Model {
  const j = typeof enc === 'string' ? readEncodings(enc) : enc;
  return Model.fromGraph(buildQdqGraph(m.graph, encodingsFromJson(j)));
}

/**
 * Runs a model in the engine on `feeds` (`{ inputName: { shape, data: Float32Array } }`); with
 * `encodings`, the simulated quantized model (the QDQ graph those encodings describe).
 */
export async function run(model: ModelInput, feeds: Record<string, Tensor>, opts: RunOptions & { encodings?: EncodingsInput } = {}): Promise<Record<string, Tensor>> {
  const { model: m } = await resolveModel(model, opts);
  return (opts.encodings ? quantizedOf(m, opts.encodings) : m).run(feeds, opts);
}

export interface QuantizeOptions extends CalibrateOptions {
  model: ModelInput;
  calibration: CalibrationInput;
  /** How a calibration path is read (preset, preprocessing, selection, batch size). */
  data?: DataSourceOptions;
  /** `W8A8`, `W4A8`, `W8A16`, `W16A16`, a config file path, or a {@link BitConfig}. */
  config: string | BitConfig;
  /** Progress in phases 'load' and 'calibration' (in samples), then 'export'. */
  onProgress?: OnProgress;
}

export interface QuantizeResult {
  /** The exported QDQ ONNX model. */
  model: Uint8Array;
  /** encodings.json's content (AIMET/QNN-like; `mpq run/eval/verify --encodings` read it). */
  encodings: EncodingsJson;
  config: BitConfig;
  quantizers: { weights: number; activations: number };
  /** What stays float and why (If branches the calibration data did not take, Loop bodies, ...), as in quantize.json. */
  notes: string[];
}

/**
 * Quantizes a model at one configuration: calibration (ranges, data-aware rounding), then
 * the QDQ export. Returns the model's bytes and the encodings; writing them is the caller's.
 */
export async function quantize(o: QuantizeOptions): Promise<QuantizeResult> {
  const progress = progressReporter(o.onProgress);
  progress('load', 0, 1);
  const { model } = await resolveModel(o.model, o);
  const data = await resolveCalibration(o.calibration, model, o.data);
  progress('load', 1, 1);
  const config = typeof o.config === 'string' ? loadBitConfig(o.config) : o.config;
  throwIfAborted(o.signal, 'the quantization');
  let done = 0;
  const total = 3 * data.count;
  const batches = async function* () {
    for await (const b of data.batches()) {
      yield b;
      progress('calibration', Math.min(total, (done += Object.values(b)[0]?.shape[0] ?? 0)), total);
    }
  };
  progress('calibration', 0, total);
  const cal = await calibrate(model, batches, o);
  cal.batches = data.batches;
  progress('calibration', total, total);
  progress('export', 0, 1);
  const q = { encodings: await encodingsOf(cal, config, o) };
  throwIfAborted(o.signal, 'the quantization');
  const bytes = await exportQdqOffThread(cal, q.encodings, o.signal);
  progress('export', 1, 1);
  return { model: bytes, encodings: encodingsToJson(q.encodings), config, quantizers: { weights: q.encodings.weights.size, activations: q.encodings.activations.size }, notes: cal.notes };
}

export interface EvaluateOptions extends RunOptions {
  model: ModelInput;
  /** Evaluation data (as `calibration` elsewhere: a path, batches, or `{ batches }`). */
  data: CalibrationInput;
  /** How a data path is read (preset, preprocessing, selection). */
  dataOptions?: DataSourceOptions;
  /** Labels: a labels.tsv / .txt / .npy path, or a function of (sample name, index). */
  labels?: string | SampleLabels;
  /** Also evaluate the model quantized with these encodings (top-1, agreement and SQNR against float). */
  encodings?: EncodingsInput;
  task?: 'classification';
}

/** Top-1 against labels, and with `encodings` the quantized model's top-1, agreement and SQNR against float. */
export async function evaluate(o: EvaluateOptions): Promise<EvalResult> {
  const { model } = await resolveModel(o.model, o);
  const data = await resolveCalibration(o.data, model, o.dataOptions);
  const labels = typeof o.labels === 'string' ? loadSampleLabels(o.labels) : o.labels;
  const q = o.encodings ? quantizedOf(model, o.encodings) : undefined;
  const batches = async function* () {
    let i = 0;
    for await (const inputs of data.batches()) {
      const n = Object.values(inputs)[0].shape[0];
      yield { inputs, names: Array.from({ length: n }, (_, k) => String(i + k)), indices: Array.from({ length: n }, (_, k) => i + k) };
      i += n;
    }
  };
  return evaluateModels(model, q, batches(), labels, o);
}

export interface VerifyOptions extends RunOptions {
  /** The float model the export was made from. */
  model: ModelInput;
  /** The exported QDQ model: a file path or bytes. */
  qdq: string | Uint8Array;
  /** The encodings it was exported with (file path or JSON). */
  encodings: EncodingsInput;
  /** Samples to compare on (as `calibration` elsewhere). */
  data: CalibrationInput;
  dataOptions?: DataSourceOptions;
  /** At most this many samples (default {@link VERIFY_SAMPLES}). */
  limit?: number;
  /** The profile the export was made with (it changes the advice when the export is not faithful). */
  profile?: string;
}

/**
 * Runs the exported model in onnxruntime-node (an optional peer dependency: `npm install
 * onnxruntime-node`; without it this rejects with code MPQ_MISSING_PEER) and compares it with
 * the simulation: SQNR and argmax agreement with ORT's optimizations off and on.
 */
export async function verify(o: VerifyOptions): Promise<Verification | undefined> {
  const { model } = await resolveModel(o.model, o);
  const data = await resolveCalibration(o.data, model, o.dataOptions);
  return verifyExport(o.qdq, quantizedOf(model, o.encodings), data.batches(), { limit: o.limit ?? VERIFY_SAMPLES, profile: o.profile, signal: o.signal });
}
