/** `mpq worker`: a phase-1 worker of a pool that shares one Redis (see src/queue/worker.ts). */
import * as path from 'path';
import { MpqError } from '../errors';
import { native } from '../native';
import { startWorker } from '../queue/worker';

export interface WorkerFlags {
  redis: string;
  concurrency?: string;
  threads?: string;
  blobs: string[];
  name?: string;
  queue?: string;
  searchQueue?: string;
  searches?: boolean;
  lockDuration?: string;
  stalledInterval?: string;
  quiet?: boolean;
}

const int = (v: string | undefined, flag: string, min: number): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new MpqError('MPQ_BAD_INPUT', `--${flag} must be an integer of at least ${min}, got '${v}'`);
  return n;
};

export async function workerCommand(f: WorkerFlags): Promise<void> {
  const threads = int(f.threads, 'threads', 1);
  // the engine's thread pool is sized once, before the first run
  if (threads !== undefined) native().setThreads(threads);
  const log = f.quiet ? undefined : (s: string) => process.stderr.write(`mpq worker: ${s}\n`);
  const w = await startWorker({
    redis: f.redis,
    concurrency: int(f.concurrency, 'concurrency', 1),
    blobs: f.blobs.map((d) => path.resolve(d)),
    name: f.name,
    queue: f.queue,
    searchQueue: f.searchQueue,
    searches: f.searches !== false,
    lockDurationMs: int(f.lockDuration, 'lock-duration', 1000),
    stalledIntervalMs: int(f.stalledInterval, 'stalled-interval', 500),
    log,
  });
  log?.(`${w.name} ready (${native().numThreads()} engine threads), waiting for jobs`);
  // until SIGINT or SIGTERM: the job in hand is finished first
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log?.(`${w.name} stopping after ${w.computed()} entries`);
  await w.close();
}
