/**
 * Error classes with a stable `code`. Every error the package throws on purpose is an
 * {@link MpqError}; messages say what is wrong and what to do.
 */

/** Stable error codes. */
export type ErrorCode =
  | 'MPQ_BAD_MODEL' // the model file cannot be read or is not a valid ONNX model
  | 'MPQ_UNSUPPORTED_OP' // an op the engine cannot run
  | 'MPQ_BAD_NODE' // a node whose attributes or input shapes are invalid
  | 'MPQ_INPUT_SHAPE' // input data does not fit the model
  | 'MPQ_BAD_INPUT' // a bad argument or input file (npy, data folder, ...)
  | 'MPQ_BAD_PLAN' // internal plan inconsistency
  | 'MPQ_TOO_LARGE' // a tensor or plan over the size limits (MPQ_MAX_TENSOR_BYTES, MPQ_MAX_PLAN_BYTES)
  | 'MPQ_ABORTED' // cancelled through an AbortSignal
  | 'MPQ_MISSING_PEER' // an optional peer dependency (onnxruntime-node) is needed but not installed
  | 'MPQ_INTERNAL'; // a bug: please report it

export class MpqError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'MpqError';
  }
}

/**
 * The rejection of a call cancelled through its `signal` (an AbortSignal): `name` is
 * 'AbortError', as for Node's and the DOM's own cancellable calls, and `code` 'MPQ_ABORTED'.
 */
export class AbortError extends MpqError {
  constructor(message = 'the operation was aborted', options?: { cause?: unknown }) {
    super('MPQ_ABORTED', message, options);
    this.name = 'AbortError';
  }
}

/** An {@link AbortError} with this message. */
export function abortError(message: string): AbortError {
  return new AbortError(message);
}

/** Throws an {@link AbortError} if `signal` is aborted (checked between steps of long calls). */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'the operation'): void {
  if (signal?.aborted) throw new AbortError(`${what} was aborted`);
}

/**
 * `p`, or an AbortError as soon as `signal` aborts (for work that cannot itself be cancelled,
 * such as an onnxruntime session or a user's evaluation function: its result is then ignored).
 */
export function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new AbortError('the operation was aborted'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

const CODES: ReadonlySet<string> = new Set([
  'MPQ_BAD_MODEL', 'MPQ_UNSUPPORTED_OP', 'MPQ_BAD_NODE', 'MPQ_INPUT_SHAPE', 'MPQ_BAD_INPUT', 'MPQ_BAD_PLAN',
  'MPQ_TOO_LARGE', 'MPQ_ABORTED', 'MPQ_MISSING_PEER', 'MPQ_INTERNAL',
]);

/** Converts an error thrown by the native binding ("CODE: message") into an {@link MpqError}. */
export function fromNative(e: unknown): MpqError {
  if (e instanceof MpqError) return e;
  const msg = e instanceof Error ? e.message : String(e);
  const m = /^(MPQ_[A-Z_]+): ([\s\S]*)$/.exec(msg);
  if (m && m[1] === 'MPQ_ABORTED') return new AbortError(m[2], { cause: e });
  if (m && CODES.has(m[1])) return new MpqError(m[1] as ErrorCode, m[2], { cause: e });
  return new MpqError('MPQ_INTERNAL', `internal error: ${msg}`, { cause: e });
}
