/**
 * onnxruntime-node sessions in a worker thread, for the verification of exports
 * (`eval/verify.ts`): loading its native library and running it would otherwise hold up the
 * caller's event loop.
 */
import * as path from 'path';
import { Worker } from 'worker_threads';
import { abortError, ErrorCode, MpqError } from './errors';
import type { Tensor } from './model';

/** onnxruntime sessions in a worker thread (see ort-worker.ts); an abort terminates the worker. */
export class OrtWorker {
  private pending?: { resolve: (v: Record<string, Tensor>[]) => void; reject: (e: Error) => void };
  private failed?: Error;
  /** Element type of each output of the model as onnxruntime declares it ('float32', 'int64', ...). */
  outputTypes: Record<string, string> = {};

  private constructor(private readonly w: Worker, private readonly signal?: AbortSignal) {
    const fail = (e: Error) => {
      this.failed ??= e;
      this.pending?.reject(e);
      this.pending = undefined;
    };
    w.on('message', (m: { results?: Record<string, Tensor>[]; error?: { code: ErrorCode; message: string } }) => {
      if (m.error) fail(new MpqError(m.error.code, m.error.message));
      else if (m.results) {
        this.pending?.resolve(m.results);
        this.pending = undefined;
      }
    });
    w.on('error', (e) => fail(new MpqError('MPQ_INTERNAL', `internal error: the onnxruntime worker stopped: ${e.message}`, { cause: e })));
    signal?.addEventListener('abort', () => {
      fail(abortError('the verification was aborted'));
      void w.terminate();
    }, { once: true });
  }

  static start(model: Uint8Array | string, levels: ('disabled' | 'all')[], signal?: AbortSignal): Promise<OrtWorker> {
    if (signal?.aborted) return Promise.reject(abortError('the verification was aborted'));
    const w = new Worker(path.join(__dirname, 'ort-worker.js'), { workerData: { model, levels, threads: 2 } });
    const o = new OrtWorker(w, signal);
    return new Promise((resolve, reject) => {
      o.pending = { resolve: () => resolve(o), reject };
      w.once('message', (m: { ready?: boolean; outputTypes?: Record<string, string> }) => {
        if (m.ready && o.pending) {
          o.outputTypes = m.outputTypes ?? {};
          o.pending = undefined;
          resolve(o);
        }
      });
    });
  }

  run(batch: Record<string, Tensor>, outputs: string[]): Promise<Record<string, Tensor>[]> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.w.postMessage({ batch, outputs });
    });
  }

  close(): void {
    if (!this.failed) this.w.postMessage({ done: true });
    else void this.w.terminate();
  }
}
