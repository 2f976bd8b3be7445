/**
 * `mpq worker`: takes phase-1 chunks from the queue and computes them with the same engine
 * path as a local run ({@link computePhase1} on the session's simulation plan). The model and
 * the calibration data come as content-addressed blobs, from the worker's own `--blobs`
 * folders or from Redis, never from a path in a job; each session (model loaded, calibrated
 * and compiled) is kept for the following chunks of the same search. It also takes whole
 * searches (`mpq search --redis URL --whole-job`): run here from start to end, into a
 * temporary folder whose files go back as blobs.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Job, UnrecoverableError, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import { MpqError } from '../errors';
import { Model, Tensor } from '../model';
import { candKey } from '../profiles/profile';
import { hashOf } from '../search/cache';
import { computePhase1, Phase1Work } from '../search/phase1';
import { openSession, Session } from '../search/session';
import { search } from '../search/search';
import { getBlob, putBlob, unpackBatches } from './blobs';
import { CACHE_FILE, connect, Phase1JobData, Phase1JobResult, PREFIX, QUEUE, SEARCH_QUEUE, SearchJobData, SearchJobResult } from './jobs';

export interface WorkerOptions {
  redis: string;
  /** Jobs at once in this process (default 1). */
  concurrency?: number;
  /** Folders to look blobs up in (besides Redis). */
  blobs?: string[];
  /** Name in results and run.json (default host:pid). */
  name?: string;
  queue?: string;
  /** Take whole searches too (default true), from this queue (default mpq-search). */
  searches?: boolean;
  searchQueue?: string;
  /** BullMQ lock of a running job (ms, default 30000): a killed worker's chunk goes to another this long after. */
  lockDurationMs?: number;
  /** How often stalled jobs are looked for (ms, default 30000). */
  stalledIntervalMs?: number;
  /** Sessions kept (default 2). */
  sessions?: number;
  /** One line per finished chunk. */
  log?: (line: string) => void;
}

export interface RunningWorker {
  name: string;
  /** Entries computed so far. */
  computed: () => number;
  close(): Promise<void>;
}

function checkJob(d: Phase1JobData): void {
  const ok =
    d && d.kind === 'phase1' && typeof d.key === 'string' && typeof d.model === 'string' && typeof d.data === 'string' && typeof d.fingerprint === 'string' &&
    Number.isInteger(d.count) && d.profile && typeof d.profile === 'object' && d.options && typeof d.options === 'object' &&
    Array.isArray(d.entries) && d.entries.every((e) => Array.isArray(e) && Number.isInteger(e[0]) && typeof e[1] === 'string');
  if (!ok) throw new UnrecoverableError('MPQ_BAD_INPUT: not a phase-1 job of this version of mpq');
}

function checkSearchJob(d: SearchJobData): void {
  const ok =
    d && d.kind === 'search' && typeof d.model === 'string' && typeof d.data === 'string' && typeof d.fingerprint === 'string' && Number.isInteger(d.count) &&
    d.profile && typeof d.profile === 'object' && d.target && typeof d.target === 'object' && d.options && typeof d.options === 'object';
  if (!ok) throw new UnrecoverableError('MPQ_BAD_INPUT: not a search job of this version of mpq');
}

export async function startWorker(o: WorkerOptions): Promise<RunningWorker> {
  const name = o.name ?? `${os.hostname()}:${process.pid}`;
  const conn: Redis = connect(o.redis);
  const sessions = new Map<string, Promise<Session>>();
  // float outputs per batch of each session, computed by its first chunk
  const floats = new WeakMap<Session, Tensor[][]>();
  const keep = o.sessions ?? 2;
  let computed = 0;

  const sessionFor = (d: Phase1JobData): Promise<Session> => {
    const id = hashOf(d.model, d.data, d.fingerprint, String(d.count), JSON.stringify(d.profile), JSON.stringify(d.options));
    let s = sessions.get(id);
    if (!s) {
      s = (async () => {
        const bytes = await getBlob(conn, PREFIX, d.model, o.blobs ?? []);
        const batches = unpackBatches(await getBlob(conn, PREFIX, d.data, o.blobs ?? []));
        const model = await Model.load(bytes);
        return openSession(model, hashOf(bytes), { batches: async function* () { yield* batches; }, fingerprint: d.fingerprint, count: d.count }, d.profile, d.options);
      })();
      sessions.set(id, s);
      s.catch(() => sessions.delete(id));
      while (sessions.size > keep) sessions.delete(sessions.keys().next().value!);
    }
    return s;
  };

  const processor = async (job: Job<Phase1JobData, Phase1JobResult>): Promise<Phase1JobResult> => {
    const t0 = Date.now();
    const d = job.data;
    checkJob(d);
    let s: Session;
    try {
      s = await sessionFor(d);
    } catch (e) {
      // a bad blob or model fails the same way on every try
      if (e instanceof MpqError && e.code !== 'MPQ_INTERNAL') throw new UnrecoverableError(`${e.code}: ${e.message}`);
      throw e;
    }
    if (s.key !== d.key) throw new UnrecoverableError(`MPQ_BAD_INPUT: this worker's session key ${s.key} differs from the coordinator's ${d.key} (another version of mpq?)`);
    const todo: Phase1Work[] = d.entries.map(([g, c]) => {
      const group = s.groups[g];
      const cand = group?.candidates.find((x) => candKey(x) === c);
      if (!cand) throw new UnrecoverableError(`MPQ_BAD_INPUT: the session has no group ${g} with candidate ${c}`);
      return { group, cand };
    });
    const results: Phase1JobResult['results'] = [];
    await computePhase1(todo, (r) => results.push({ group: r.work.group.id, candidate: candKey(r.work.cand), powers: r.powers }), { chunk: todo.length, floatOutputs: floats.get(s) ?? floats.set(s, []).get(s) }, s.cal, s.groups, s.cal.batches!); // openSession sets cal.batches
    computed += results.length;
    o.log?.(`${name}: job ${job.id}: ${results.length} entries in ${((Date.now() - t0) / 1000).toFixed(2)} s`);
    return { worker: name, results };
  };

  // a whole search, from its blobs, into a folder of its own; the files go back as blobs
  const processSearch = async (job: Job<SearchJobData, SearchJobResult>): Promise<SearchJobResult> => {
    const t0 = Date.now();
    const d = job.data;
    checkSearchJob(d);
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-search-job-'));
    try {
      const bytes = await getBlob(conn, PREFIX, d.model, o.blobs ?? []);
      const batches = unpackBatches(await getBlob(conn, PREFIX, d.data, o.blobs ?? []));
      let last = 0;
      try {
        await search({
          ...d.options,
          model: bytes,
          calib: { batches: async function* () { yield* batches; }, fingerprint: d.fingerprint, count: d.count },
          profile: d.profile,
          target: d.target,
          out,
          onProgress: (p) => {
            // a few updates a second at most (each is a Redis round trip)
            if (Date.now() - last < 250 && p.done < p.total) return;
            last = Date.now();
            void job.updateProgress({ phase: p.phase, done: p.done, total: p.total }).catch(() => {});
          },
        });
      } catch (e) {
        // bad input fails the same way on every try
        if (e instanceof MpqError && e.code !== 'MPQ_INTERNAL' && e.code !== 'MPQ_ABORTED') throw new UnrecoverableError(`${e.code}: ${e.message}`);
        throw e;
      }
      const files: Record<string, string> = {};
      for (const f of fs.readdirSync(out)) {
        const at = path.join(out, f);
        if (f.startsWith('.') || !fs.statSync(at).isFile()) continue; // the cache folder, the generation links' targets
        files[f] = await putBlob(conn, PREFIX, fs.readFileSync(at));
      }
      const cache = path.join(out, CACHE_FILE);
      if (fs.existsSync(cache)) files[CACHE_FILE] = await putBlob(conn, PREFIX, fs.readFileSync(cache));
      o.log?.(`${name}: search job ${job.id}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
      return { worker: name, files };
    } finally {
      fs.rmSync(out, { recursive: true, force: true });
    }
  };

  const opts = {
    connection: conn,
    prefix: PREFIX,
    lockDuration: o.lockDurationMs ?? 30000,
    stalledInterval: o.stalledIntervalMs ?? 30000,
    // a job whose worker died goes back to the queue a few times before it counts as failed
    maxStalledCount: 3,
  };
  const worker = new Worker<Phase1JobData, Phase1JobResult>(o.queue ?? QUEUE, processor, { ...opts, concurrency: o.concurrency ?? 1 });
  // one search at a time: it uses every engine thread
  const searches = o.searches === false ? undefined : new Worker<SearchJobData, SearchJobResult>(o.searchQueue ?? SEARCH_QUEUE, processSearch, { ...opts, concurrency: 1 });
  for (const w of [worker, searches]) {
    w?.on('error', (e) => o.log?.(`${name}: ${e.message}`));
    w?.on('failed', (job, e) => o.log?.(`${name}: job ${job?.id} failed: ${e.message}`));
  }
  await Promise.all([worker.waitUntilReady(), searches?.waitUntilReady()]);
  return {
    name,
    computed: () => computed,
    async close() {
      await Promise.all([worker.close(), searches?.close()]);
      conn.disconnect();
    },
  };
}
