/**
 * One job in a worker thread, as a promise: the worker posts one message, `{ result }` or
 * `{ error: { code, message } }`. An abort through `signal` terminates the worker and rejects
 * with an AbortError; a worker that dies rejects with MPQ_INTERNAL naming `what`.
 */
import { Worker } from 'worker_threads';
import { abortError, ErrorCode, MpqError } from './errors';

export function runInWorker<T>(file: string, data: unknown, what: string, signal?: AbortSignal, transfer: ArrayBuffer[] = []): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(`${what} was aborted`));
    const w = new Worker(file, { workerData: data, transferList: transfer });
    let settled = false;
    const settle = (f: () => void) => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      f();
    };
    const onAbort = () => settle(() => {
      void w.terminate();
      reject(abortError(`${what} was aborted`));
    });
    signal?.addEventListener('abort', onAbort, { once: true });
    w.once('message', (m: { result?: T; error?: { code: ErrorCode; message: string } }) =>
      settle(() => (m.error ? reject(new MpqError(m.error.code, m.error.message)) : resolve(m.result as T))),
    );
    w.once('error', (e) => settle(() => reject(new MpqError('MPQ_INTERNAL', `internal error: ${what} stopped: ${e.message}`, { cause: e }))));
    w.once('exit', (code) => settle(() => reject(new MpqError('MPQ_INTERNAL', `internal error: ${what} exited with code ${code}`))));
  });
}

/** The message a worker posts for an error `e`. */
export function workerError(e: unknown): { error: { code: ErrorCode; message: string } } {
  return { error: { code: e instanceof MpqError ? e.code : 'MPQ_INTERNAL', message: (e as Error).message } };
}
