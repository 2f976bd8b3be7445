/**
 * A whole search as one job on the worker pool (`mpq search --redis URL --whole-job`, API
 * `queue: { redis, whole: true }`): the model and the calibration data go up as blobs, one
 * `mpq worker` runs the search from start to end, and its output files come back into `out`
 * (all or none, as a local run writes them). For calibration services that quantize many
 * models: each search takes one worker, and the pool runs as many at once as it has workers.
 * The job id is a hash of everything the search depends on: a rerun of the same command
 * takes the finished job's files instead of searching again.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Queue, QueueEvents } from 'bullmq';
import type { Redis } from 'ioredis';
import { AbortError, MpqError, throwIfAborted } from '../errors';
import { OutputDir } from '../fsutil';
import { Profile } from '../profiles/profile';
import { hashOf } from '../search/cache';
import { modelBytesOf, resolveCalibration, resolveModel } from '../search/inputs';
import type { SearchOptions, SearchResult } from '../search/search';
import { Phase, progressReporter } from '../search/progress';
import { getBlob, packBatches, putBlob } from './blobs';
import { CACHE_FILE, connect, PREFIX, RemoteSearchOptions, SEARCH_QUEUE, SearchJobData, SearchJobResult } from './jobs';

export async function submitSearch(o: SearchOptions, profile: Profile): Promise<SearchResult> {
  const q = o.queue!;
  if (o.evaluate || o.eval || o.phase1Compute) {
    throw new MpqError('MPQ_BAD_INPUT', 'a whole-search job evaluates on its calibration data on the worker: evaluate, eval and phase1Compute cannot travel to it (drop them, or queue phase 1 only: without whole)');
  }
  if (!o.calibration && !o.calib) throw new MpqError('MPQ_BAD_INPUT', 'give the calibration data (calibration: a data path, batches, or { batches })');
  const modelBytes = modelBytesOf(o.model);
  const progress = progressReporter(o.onProgress);
  const out = OutputDir.open(o.out);
  const conn: Redis = connect(q.redis);
  const queue = new Queue<SearchJobData, SearchJobResult>(q.searchQueue ?? SEARCH_QUEUE, { connection: conn, prefix: PREFIX });
  const eventsConn = conn.duplicate();
  const events = new QueueEvents(q.searchQueue ?? SEARCH_QUEUE, { connection: eventsConn, prefix: PREFIX });
  try {
    progress('load', 0, 1);
    const { model } = await resolveModel(modelBytes, { signal: o.signal });
    const calib = await resolveCalibration(o.calibration ?? o.calib!, model, o.data);
    const options: RemoteSearchOptions = { weightRange: o.weightRange, actRange: o.actRange, rounding: o.rounding, roundingOptions: o.roundingOptions, order: o.order, task: o.task, targetSearch: o.targetSearch, record: o.record };
    const data: SearchJobData = {
      kind: 'search',
      model: await putBlob(conn, PREFIX, modelBytes, q.blobs),
      data: await putBlob(conn, PREFIX, await packBatches(calib.batches), q.blobs),
      fingerprint: calib.fingerprint,
      count: calib.count,
      profile,
      target: o.target,
      options: JSON.parse(JSON.stringify(options)),
    };
    progress('load', 1, 1);
    throwIfAborted(o.signal, 'the search');
    await events.waitUntilReady();
    const jobId = `search-${hashOf(JSON.stringify(data))}`;
    let job = await queue.getJob(jobId);
    if (job && (await job.isFailed())) await job.retry();
    job ??= await queue.add('search', data, {
      jobId,
      attempts: q.attempts ?? 3,
      backoff: { type: 'exponential', delay: q.backoffMs ?? 1000 },
      removeOnComplete: { age: 86400 },
      removeOnFail: { age: 7 * 86400 },
    });
    const onJobProgress = ({ jobId: id, data: p }: { jobId: string; data: unknown }) => {
      const pr = p as { phase?: Phase; done?: number; total?: number };
      if (id === jobId && pr && typeof pr.phase === 'string') progress(pr.phase, pr.done ?? 0, pr.total ?? 0);
    };
    events.on('progress', onJobProgress);
    const finished = job.waitUntilFinished(events).catch((e: Error) => {
      throw new MpqError('MPQ_INTERNAL', `search job ${jobId} failed on the queue after its retries: ${e.message}`, { cause: e });
    });
    finished.catch(() => {});
    // an abort stops waiting; the job itself finishes on its worker (a rerun takes its files)
    const r: SearchJobResult = await new Promise((resolve, reject) => {
      const onAbort = () => reject(new AbortError('the search was aborted'));
      if (o.signal?.aborted) return onAbort();
      o.signal?.addEventListener('abort', onAbort, { once: true });
      finished.then(resolve, reject).finally(() => o.signal?.removeEventListener('abort', onAbort));
    });
    events.off('progress', onJobProgress);
    const run = JSON.parse((await getBlob(conn, PREFIX, r.files['run.json'] ?? '', [])).toString('utf8')) as SearchResult & { remote?: unknown };
    // the files' paths in this folder, and who ran it
    for (const k of Object.keys(run.files) as (keyof SearchResult['files'])[]) run.files[k] = path.join(o.out, k === 'cache' ? 'cache' : '', path.basename(run.files[k]));
    run.remote = { worker: r.worker, job: jobId };
    for (const [name, hash] of Object.entries(r.files)) {
      const bytes = await getBlob(conn, PREFIX, hash, []);
      if (name === CACHE_FILE) {
        // the cache is written in place, as a local run does: a local rerun reuses it
        fs.mkdirSync(path.dirname(run.files.cache), { recursive: true });
        fs.writeFileSync(run.files.cache, bytes);
      } else if (name !== 'run.json') out.write(name, bytes);
    }
    out.write('run.json', JSON.stringify(run, null, 2));
    await out.commitAsync(o.signal, 'the search');
    return run;
  } finally {
    out.abort();
    await events.close();
    await queue.close();
    eventsConn.disconnect();
    conn.disconnect();
  }
}
