/**
 * onnxruntime-node, an optional peer dependency: only verification (running the exported model
 * in the runtime users deploy) needs it, so it is loaded lazily and its absence is a clear error.
 */
import { MpqError } from './errors';

export type Ort = typeof import('onnxruntime-node');

let cached: Ort | undefined;

/** Whether onnxruntime-node can be loaded. */
export function hasOrt(): boolean {
  try {
    require.resolve('onnxruntime-node');
    return true;
  } catch {
    return false;
  }
}

export const ORT_INSTALL = "npm install onnxruntime-node@^1.30 (an optional peer dependency of onnx-mpq, used only to verify exports)";

/** onnxruntime-node, or an MpqError (code MPQ_MISSING_PEER) saying how to install it. */
export function loadOrt(): Ort {
  if (cached) return cached;
  try {
    cached = require('onnxruntime-node') as Ort;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'MODULE_NOT_FOUND' ? 'is not installed' : `cannot be loaded (${(e as Error).message})`;
    throw new MpqError('MPQ_MISSING_PEER', `verification runs the exported model in onnxruntime-node, which ${why}: ${ORT_INSTALL}`, { cause: e });
  }
  return cached;
}

type OrtTensor = InstanceType<Ort['Tensor']>;
type OrtSession = Awaited<ReturnType<Ort['InferenceSession']['create']>>;
type Float32Tensor = { shape: number[]; data: Float32Array };

/**
 * Feeds for `session` from engine tensors (Float32 data): each input converted to the element
 * type the model declares (int64 token ids as BigInt64Array, int32, bool, ...). Integer inputs
 * must hold integers (float32 holds every integer up to 2^24 exactly); anything else is an
 * MpqError naming the input.
 */
export function ortFeeds(ort: Ort, session: Pick<OrtSession, 'inputMetadata'>, batch: Record<string, Float32Tensor>): Record<string, OrtTensor> {
  const types = new Map<string, string>();
  for (const m of session.inputMetadata) if (m.isTensor) types.set(m.name, m.type);
  const feeds: Record<string, OrtTensor> = {};
  for (const [k, v] of Object.entries(batch)) {
    const type = types.get(k) ?? 'float32';
    const ints = (): number[] => {
      const out = new Array<number>(v.data.length);
      for (let i = 0; i < v.data.length; i++) {
        const x = v.data[i];
        if (!Number.isInteger(x)) throw new MpqError('MPQ_BAD_INPUT', `input '${k}' is ${type} in the model but holds ${x} at element ${i}`);
        out[i] = x;
      }
      return out;
    };
    switch (type) {
      case 'float32': feeds[k] = new ort.Tensor('float32', v.data, v.shape); break;
      case 'float64': feeds[k] = new ort.Tensor('float64', Float64Array.from(v.data), v.shape); break;
      case 'int64': feeds[k] = new ort.Tensor('int64', BigInt64Array.from(ints(), BigInt), v.shape); break;
      case 'uint64': feeds[k] = new ort.Tensor('uint64', BigUint64Array.from(ints(), BigInt), v.shape); break;
      case 'int32': feeds[k] = new ort.Tensor('int32', Int32Array.from(ints()), v.shape); break;
      case 'uint32': feeds[k] = new ort.Tensor('uint32', Uint32Array.from(ints()), v.shape); break;
      case 'int16': feeds[k] = new ort.Tensor('int16', Int16Array.from(ints()), v.shape); break;
      case 'uint16': feeds[k] = new ort.Tensor('uint16', Uint16Array.from(ints()), v.shape); break;
      case 'int8': feeds[k] = new ort.Tensor('int8', Int8Array.from(ints()), v.shape); break;
      case 'uint8': feeds[k] = new ort.Tensor('uint8', Uint8Array.from(ints()), v.shape); break;
      case 'bool': feeds[k] = new ort.Tensor('bool', Uint8Array.from(v.data, (x) => (x !== 0 ? 1 : 0)), v.shape); break;
      default: throw new MpqError('MPQ_BAD_MODEL', `input '${k}' has element type ${type}, which onnx-mpq cannot feed to onnxruntime`);
    }
  }
  return feeds;
}

/** An onnxruntime output as an engine tensor: Float32 data whatever its type (int64 values as numbers). */
export function fromOrt(t: OrtTensor): Float32Tensor {
  const d = t.data as ArrayLike<number | bigint>;
  const data = d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number>, (x) => Number(x));
  return { shape: [...t.dims], data };
}
