/**
 * Verification: the exported QDQ model run in onnxruntime-node against the simulation (the
 * same QDQ graph in the engine), with ORT's graph optimizations off (QDQ semantics: should be
 * exact) and on (what a default deployment runs).
 */
import * as path from 'path';
import { Worker } from 'worker_threads';
import { abortError, ErrorCode, MpqError } from './errors';
import { argmaxRows, SqnrMeter, Top1Meter } from './eval/metrics';
import { Model, RunOptions, Tensor } from './model';
import { loadOrt } from './ort';
import { Batches } from './quant/calibrate';

export interface VerifyResult {
  samples: number;
  /** ORT with graph optimizations disabled: must reproduce the simulation. */
  qdq: { sqnr_db: number; agreement: number };
  /** ORT with default optimizations (fused int8 kernels): what a default deployment runs. */
  optimized: { sqnr_db: number; agreement: number };
}

/**
 * Runs `qdq` (an exported model's bytes or file) in onnxruntime-node and `sim` in the engine
 * over `batches` (at most `maxBatches` of them) and compares their outputs. Needs the optional
 * peer onnxruntime-node (MPQ_MISSING_PEER otherwise).
 */
export async function verifyQdq(qdq: Uint8Array | string, sim: Model, batches: Batches, outputs: string[], opts: RunOptions & { maxBatches?: number } = {}): Promise<VerifyResult | undefined> {
  loadOrt(); // fails here, with how to install it, when onnxruntime-node is absent
  const ort = await OrtWorker.start(qdq, ['disabled', 'all'], opts.signal);
  const meters = [0, 1].map(() => ({ s: new SqnrMeter(), t: new Top1Meter() }));
  let samples = 0, seen = 0;
  try {
    for await (const batch of batches()) {
      if (opts.maxBatches !== undefined && seen >= opts.maxBatches) break;
      seen++;
      const want = await sim.run(batch, opts);
      const wantTop = argmaxRows(want[outputs[0]]);
      samples += wantTop.length;
      const got = await ort.run(batch, outputs);
      got.forEach((g, i) => {
        meters[i].s.add(want, g);
        meters[i].t.addAgreement(argmaxRows(g[outputs[0]]), wantTop);
      });
    }
  } finally {
    ort.close();
  }
  if (!seen) return undefined;
  const res = (i: number) => ({ sqnr_db: +Math.min(200, meters[i].s.db()).toFixed(2), agreement: meters[i].t.agreement ?? 0 });
  return { samples, qdq: res(0), optimized: res(1) };
}

/** onnxruntime sessions in a worker thread (see ort-worker.ts); an abort terminates the worker. */
class OrtWorker {
  private pending?: { resolve: (v: Record<string, Tensor>[]) => void; reject: (e: Error) => void };
  private failed?: Error;

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
      w.once('message', (m: { ready?: boolean }) => {
        if (m.ready && o.pending) {
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
