/** The native addon, loaded once. */
import * as path from 'path';
import { MpqError } from './errors';
import { limits } from './limits';

export type Binding = typeof import('../binding');

let cached: Binding | undefined;

export function native(): Binding {
  if (cached) return cached;
  try {
    // binding.js sits at the package root: ../../binding.js from dist/src/
    cached = require(path.join(__dirname, '..', '..', 'binding.js')) as Binding;
  } catch (e) {
    // the prebuilt addon comes as an optional dependency per platform (npm/<triple>/)
    const triple = `${process.platform}-${process.arch}${process.platform === 'linux' ? '-gnu' : ''}`;
    throw new MpqError(
      'MPQ_INTERNAL',
      `cannot load the native addon (${(e as Error).message}). The prebuilt one for ${triple} is the package onnx-mpq-${triple}, an optional dependency of onnx-mpq: reinstall without --omit=optional / --no-optional (an Electron app must unpack *.node files from its asar archive); from a source checkout, run 'npm run build'`,
      { cause: e },
    );
  }
  return cached;
}

/** Hands the size limits in force (see src/limits.ts) to the engine; called before native work that allocates by size. */
export function syncLimits(): Binding {
  const n = native();
  const l = limits();
  n.setLimits(l.maxTensorBytes, l.maxPlanBytes);
  return n;
}
