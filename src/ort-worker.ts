/**
 * Worker side of {@link ortRunOffThread}: loads onnxruntime-node (its native library takes
 * seconds to load on a busy machine), creates one session per optimization level, and runs
 * every batch it is sent, so that none of it holds up the caller's event loop.
 */
import { parentPort, workerData } from 'worker_threads';
import type { Tensor } from './model';
import { loadOrt } from './ort';

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
  parentPort!.postMessage({ ready: true });
  parentPort!.on('message', async (m: Msg) => {
    try {
      if ('done' in m) {
        for (const s of sessions) await s.release();
        parentPort!.close();
        return;
      }
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
      // the engine's data is float32; integer and boolean inputs (a sample rate, token ids) get their declared type
      const types = new Map(sessions[0].inputMetadata.map((i) => [i.name, i.isTensor ? i.type : 'float32']));
      for (const [k, v] of Object.entries(m.batch)) {
        const t = types.get(k);
        feeds[k] = t === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(v.data, (x) => BigInt(Math.round(x))), v.shape)
          : t === 'int32' ? new ort.Tensor('int32', Int32Array.from(v.data), v.shape)
          : t === 'bool' ? new ort.Tensor('bool', Uint8Array.from(v.data, (x) => (x ? 1 : 0)), v.shape)
          : new ort.Tensor('float32', v.data, v.shape);
      }
      const results: Record<string, Tensor>[] = [];
      for (const s of sessions) {
        const r = await s.run(feeds);
        const f32 = (d: unknown) => (d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number | bigint>, Number));
        results.push(Object.fromEntries(m.outputs.map((o) => [o, { shape: [...r[o].dims], data: f32(r[o].data) }])));
      }
      parentPort!.postMessage({ results }, results.flatMap((r) => Object.values(r).map((t) => t.data.buffer as ArrayBuffer)));
    } catch (e) {
      parentPort!.postMessage({ error: { code: (e as { code?: string }).code ?? 'MPQ_INTERNAL', message: (e as Error).message } });
    }
  });
}

main().catch((e) => parentPort!.postMessage({ error: { code: (e as { code?: string }).code ?? 'MPQ_INTERNAL', message: (e as Error).message } }));
