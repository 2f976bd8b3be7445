/**
 * What the long API calls accept as a model and as calibration data, and how it is resolved:
 * a model is a path, ONNX bytes or a loaded {@link Model}; calibration data is a data path
 * (a `.npy`, a folder, or `NAME=PATH,...` / `{ NAME: PATH }`), in-memory batches, or batches
 * produced by a function.
 */
import * as fs from 'fs';
import * as path from 'path';
import { openDataSource } from '../data';
import { DataSourceOptions, DataSpec } from '../data/source';
import { MpqError } from '../errors';
import { Graph } from '../graph/ir';
import { Model, RunOptions, Tensor } from '../model';
import { Batches } from '../quant/calibrate';
import { hashOf } from './cache';

/** A model: an ONNX file path, ONNX bytes, or a loaded {@link Model}. */
export type ModelInput = string | Uint8Array | Model;

/** Re-iterable calibration batches, with a fingerprint of the data (for the sensitivity cache) and the sample count. */
export interface CalibrationBatches {
  batches: Batches;
  /** Identifies the data in the sensitivity cache's key (default: a hash of every batch, one extra pass). */
  fingerprint?: string;
  /** Number of samples (default: counted in that pass). */
  count?: number;
}

/**
 * Calibration data: a data path as the CLI takes it (`DataSpec`: a `.npy` with a leading
 * sample axis, a folder of images or `.npy` files, `NAME=PATH,...` or `{ NAME: PATH }` for
 * several inputs; images need `data.preset` or `data.preprocess`), one batch or an array of
 * batches (`{ inputName: Tensor }`), or {@link CalibrationBatches}.
 */
export type CalibrationInput = DataSpec | Record<string, Tensor> | Record<string, Tensor>[] | CalibrationBatches;

export interface ResolvedModel {
  model: Model;
  /** Hash of the model's content (sensitivity cache key). */
  hash: string;
  /** Absolute path when the model came from a file. */
  file?: string;
}

function graphHash(g: Graph): string {
  const parts: (string | Uint8Array)[] = [JSON.stringify({ nodes: g.nodes, inputs: g.inputs, outputs: g.outputs, opset: g.opset }, (_k, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v))];
  for (const [k, t] of g.consts) parts.push(k, t.shape.join('x'), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  return hashOf(...parts);
}

/** Loads (off the JS thread) or takes the model. */
export async function resolveModel(m: ModelInput, opts: RunOptions = {}): Promise<ResolvedModel> {
  if (m instanceof Model) return { model: m, hash: graphHash(m.graph) };
  if (typeof m === 'string') {
    let bytes: Buffer;
    try {
      bytes = await fs.promises.readFile(m);
    } catch (e) {
      throw new MpqError('MPQ_BAD_MODEL', `cannot read model file '${m}': ${(e as Error).message}`);
    }
    return { model: await Model.load(m, opts), hash: hashOf(bytes), file: path.resolve(m) };
  }
  if (m instanceof Uint8Array) return { model: await Model.load(m, opts), hash: hashOf(m) };
  throw new MpqError('MPQ_BAD_INPUT', 'model must be an ONNX file path, ONNX bytes (Uint8Array) or a Model');
}

const isTensor = (v: unknown): v is Tensor => !!v && typeof v === 'object' && Array.isArray((v as Tensor).shape) && (v as Tensor).data instanceof Float32Array;
const isBatch = (v: unknown): v is Record<string, Tensor> => !!v && typeof v === 'object' && !Array.isArray(v) && Object.values(v).length > 0 && Object.values(v).every(isTensor);

/** Resolves calibration data into re-iterable batches with a fingerprint and a count. */
export async function resolveCalibration(c: CalibrationInput, model: Model, data: DataSourceOptions = {}): Promise<Required<CalibrationBatches>> {
  if (typeof c === 'string' || (c && typeof c === 'object' && !Array.isArray(c) && Object.values(c).every((v) => typeof v === 'string'))) {
    const spec = typeof c === 'string' && c.includes('=') && !fs.existsSync(c) ? Object.fromEntries(c.split(',').map((kv) => kv.split('=', 2) as [string, string])) : (c as DataSpec);
    const src = await openDataSource(spec, { inputName: model.inputNames[0], ...data });
    return { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count };
  }
  if (isBatch(c) || (Array.isArray(c) && c.every(isBatch))) {
    const list = Array.isArray(c) ? c : [c];
    if (list.length === 0) throw new MpqError('MPQ_BAD_INPUT', 'the calibration data has no batches');
    const parts: (string | Uint8Array)[] = [];
    let count = 0;
    for (const b of list) {
      for (const [k, t] of Object.entries(b)) parts.push(k, t.shape.join('x'), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      count += Object.values(b)[0].shape[0] ?? 0;
    }
    return { batches: async function* () { yield* list; }, fingerprint: hashOf(...parts), count };
  }
  if (c && typeof c === 'object' && typeof (c as CalibrationBatches).batches === 'function') {
    const cb = c as CalibrationBatches;
    if (cb.fingerprint !== undefined && cb.count !== undefined) return { batches: cb.batches, fingerprint: cb.fingerprint, count: cb.count };
    const parts: (string | Uint8Array)[] = [];
    let count = 0;
    for await (const b of cb.batches()) {
      for (const [k, t] of Object.entries(b)) parts.push(k, t.shape.join('x'), new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
      count += Object.values(b)[0]?.shape[0] ?? 0;
    }
    return { batches: cb.batches, fingerprint: cb.fingerprint ?? hashOf(...parts), count: cb.count ?? count };
  }
  throw new MpqError('MPQ_BAD_INPUT', 'calibration must be a data path (.npy, folder, NAME=PATH,...), a batch or an array of batches ({ input: { shape, data: Float32Array } }), or { batches, fingerprint?, count? }');
}

/** The model's ONNX bytes for the queue's workers (a loaded Model has none: the queue needs a file or bytes). */
export function modelBytesOf(m: ModelInput): Uint8Array {
  if (typeof m === 'string') {
    try {
      return fs.readFileSync(m);
    } catch (e) {
      throw new MpqError('MPQ_BAD_MODEL', `cannot read model file '${m}': ${(e as Error).message}`);
    }
  }
  if (m instanceof Uint8Array) return m;
  throw new MpqError('MPQ_BAD_INPUT', 'a search on a queue needs the model as an ONNX file path or bytes, not a loaded Model');
}
