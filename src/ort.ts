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
