/**
 * Worker side of {@link ortRunOffThread}: loads onnxruntime-node (its native library takes
 * seconds to load on a busy machine), creates one session per optimization level, and runs
 * every batch it is sent, so that none of it holds up the caller's event loop.
 */
import { parentPort, workerData } from 'worker_threads';
import type { Tensor } from './model';
import { fromOrt, loadOrt, ortFeeds } from './ort';

type Job = { model: string | Uint8Array; levels: ('disabled' | 'all')[]; threads: number };
type Msg = { batch: Record<string, Tensor>; outputs: string[] } | { done: true };

async function main(): Promise<void> {
  const job = workerData as Job;
  const ort = loadOrt();
  const sessions: Awaited<ReturnType<typeof ort.InferenceSession.create>>[] = [];
  for (const level of job.levels) {
    // errors only: ORT's warnings about initializers it removes while optimizing are noise here
    const so = { graphOptimizationLevel: level, intraOpNumThreads: job.threads, logSeverityLevel: 3 as const };
    sessions.push(typeof job.model === 'string' ? await ort.InferenceSession.create(job.model, so) : await ort.InferenceSession.create(job.model, so));
  }
  // the element type of each output (integer outputs are left out of the comparison)
  const outputTypes = Object.fromEntries(sessions[0].outputMetadata.map((m) => [m.name, m.isTensor ? m.type : 'other']));
  parentPort!.postMessage({ ready: true, outputTypes });
  parentPort!.on('message', async (m: Msg) => {
    try {
      if ('done' in m) {
        for (const s of sessions) await s.release();
        parentPort!.close();
        return;
      }
      // the model's declared input types (int64 token ids, ...): the engine's data are Float32
      const feeds = ortFeeds(ort, sessions[0], m.batch);
      const results: Record<string, Tensor>[] = [];
      for (const s of sessions) {
        const r = await s.run(feeds);
        results.push(Object.fromEntries(m.outputs.map((o) => [o, fromOrt(r[o])])));
      }
      parentPort!.postMessage({ results }, results.flatMap((r) => Object.values(r).map((t) => t.data.buffer as ArrayBuffer)));
    } catch (e) {
      parentPort!.postMessage({ error: { code: (e as { code?: string }).code ?? 'MPQ_INTERNAL', message: (e as Error).message } });
    }
  });
}

main().catch((e) => parentPort!.postMessage({ error: { code: (e as { code?: string }).code ?? 'MPQ_INTERNAL', message: (e as Error).message } }));
