/**
 * The coordinator side of the queue: phase 1 of a search as BullMQ jobs of a few entries
 * each, computed by `mpq worker` processes that share one Redis. It plugs into the search as
 * a {@link Phase1Compute}: the search keeps its cache (each result lands in the same
 * `cache/sensitivity.jsonl` as a local run's, as it arrives) and runs phases 2 and 3 here.
 *
 * A chunk's job id is a hash of the session key and its entries: a rerun of a killed
 * coordinator finds the jobs still queued, running or finished (kept for a day) and takes
 * their results instead of enqueueing them again, and the cache skips what it had already
 * written. A worker killed mid-chunk loses its lock; BullMQ's stalled-job check gives the
 * chunk to another worker. A failed chunk is retried with exponential backoff.
 */
import { Job, Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { AbortError, MpqError } from '../errors';
import { candKey } from '../profiles/profile';
import { hashOf } from '../search/cache';
import { Phase1Compute, Phase1Work } from '../search/phase1';
import { Session, SessionData } from '../search/session';
import { packBatches, putBlob } from './blobs';
import { connect, Phase1JobData, Phase1JobResult, PREFIX, QUEUE } from './jobs';

export interface QueueOptions {
  /** The Redis every worker of the pool uses, e.g. redis://host:6379. */
  redis: string;
  /** Entries per job (default 8). */
  chunk?: number;
  /** A folder the workers share (each started with `--blobs` on it): model and data go there instead of into Redis. */
  blobs?: string;
  /** Queue name (default mpq-phase1; workers take `--queue`). */
  queue?: string;
  /**
   * Run the whole search as one job on a worker of the pool (see `src/queue/remote.ts`)
   * instead of only phase 1: its output files come back into `out`.
   */
  whole?: boolean;
  /** Queue of whole searches (default mpq-search; workers take `--search-queue`). */
  searchQueue?: string;
  /** Tries per chunk (default 3), with exponential backoff from `backoffMs` (default 1000). */
  attempts?: number;
  backoffMs?: number;
}

export interface Coordinator {
  compute: Phase1Compute;
  /** Entries computed per worker, for the chunks this run took from the queue. */
  counts: Record<string, number>;
  /** Jobs enqueued by this run, and jobs found already on the queue (a rerun). */
  jobs: { enqueued: number; found: number };
  close(): Promise<void>;
}

/** The inputs of the search's session as a worker rebuilds it: the model's bytes and the calibration data. */
export interface CoordinatorSession {
  session: Session;
  modelBytes: Uint8Array;
  calib: SessionData;
}

export function openCoordinator(q: QueueOptions, s: CoordinatorSession): Coordinator {
  const chunk = q.chunk ?? 8;
  if (!Number.isInteger(chunk) || chunk < 1) throw new MpqError('MPQ_BAD_INPUT', `the queue's chunk must be a positive integer, got ${q.chunk}`);
  const { session, modelBytes, calib } = s;
  const conn: Redis = connect(q.redis);
  const queue = new Queue<Phase1JobData, Phase1JobResult>(q.queue ?? QUEUE, { connection: conn, prefix: PREFIX });
  let events: QueueEvents | undefined;
  let eventsConn: Redis | undefined;
  const counts: Record<string, number> = {};
  const jobs = { enqueued: 0, found: 0 };

  const compute: Phase1Compute = async (todo, done, opts) => {
    const { key, profile } = session;
    events ??= new QueueEvents(q.queue ?? QUEUE, { connection: (eventsConn = conn.duplicate()), prefix: PREFIX });
    await events.waitUntilReady();
    // one listener per waited job
    events.setMaxListeners(0);
    queue.setMaxListeners(0);
    const [model, data] = [await putBlob(conn, PREFIX, modelBytes, q.blobs), await putBlob(conn, PREFIX, await packBatches(calib.batches), q.blobs)];
    const base: Omit<Phase1JobData, 'entries'> = {
      kind: 'phase1',
      key,
      model,
      data,
      fingerprint: calib.fingerprint,
      count: calib.count,
      profile,
      options: session.options,
    };
    const byKey = new Map<string, Phase1Work>(todo.map((w) => [`${w.group.id}/${candKey(w.cand)}`, w]));
    let finished = 0;
    const take = (r: Phase1JobResult) => {
      for (const e of r.results) {
        const w = byKey.get(`${e.group}/${e.candidate}`);
        // an entry already taken (a chunk run twice after a stall) is not written twice
        if (!w) continue;
        byKey.delete(`${e.group}/${e.candidate}`);
        done({ work: w, powers: e.powers });
        counts[r.worker] = (counts[r.worker] ?? 0) + 1;
        finished++;
      }
      opts.onProgress?.({ done: finished, total: todo.length, reused: 0 });
    };
    const waits: Promise<void>[] = [];
    for (let c0 = 0; c0 < todo.length; c0 += chunk) {
      const entries: [number, string][] = todo.slice(c0, c0 + chunk).map((w) => [w.group.id, candKey(w.cand)]);
      const jobId = `p1-${hashOf(key, JSON.stringify(entries))}`;
      let job: Job<Phase1JobData, Phase1JobResult> | undefined = await queue.getJob(jobId);
      if (job) {
        jobs.found++;
        if (await job.isFailed()) await job.retry();
      } else {
        job = await queue.add('phase1', { ...base, entries }, {
          jobId,
          attempts: q.attempts ?? 3,
          backoff: { type: 'exponential', delay: q.backoffMs ?? 1000 },
          removeOnComplete: { age: 86400 },
          removeOnFail: { age: 7 * 86400 },
        });
        jobs.enqueued++;
      }
      const j = job;
      waits.push(
        j.waitUntilFinished(events).then(
          (r: Phase1JobResult) => take(r),
          (e: Error) => {
            throw new MpqError('MPQ_INTERNAL', `phase-1 job ${j.id} failed on the queue after its retries: ${e.message}`, { cause: e });
          },
        ),
      );
    }
    const all = Promise.all(waits);
    all.catch(() => {});
    await new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new AbortError('the search was aborted'));
      if (opts.signal?.aborted) return onAbort();
      opts.signal?.addEventListener('abort', onAbort, { once: true });
      all.then(() => resolve(), reject).finally(() => opts.signal?.removeEventListener('abort', onAbort));
    });
    if (byKey.size) throw new MpqError('MPQ_INTERNAL', `the queue's workers returned no result for ${byKey.size} phase-1 entries`);
  };

  return {
    compute,
    counts,
    jobs,
    async close() {
      await events?.close();
      await queue.close();
      eventsConn?.disconnect();
      conn.disconnect();
    },
  };
}
