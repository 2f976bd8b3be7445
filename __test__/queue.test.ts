/**
 * Phase 1 on a BullMQ queue (issue 14): a coordinator and two `mpq worker` processes on a
 * Redis this file starts on a free port. The queue's sensitivities, cache lines and selection
 * equal a local run's exactly; a worker killed with SIGKILL mid phase 1 loses nothing and no
 * entry reaches the cache twice; blobs are checked against their hash.
 */
import test from 'ava';
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { MpqError } from '../src/errors';
import { search, SearchResult } from '../src/search/search';
import { getBlob, packBatches, putBlob, sha256, unpackBatches } from '../src/queue/blobs';
import { connect } from '../src/queue/jobs';
import { HAS_SHARED, MOBILENET, randomData, ROOT, SKIP_SHARED_MSG } from './helpers';

const redisBin = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim() || null;
  } catch {
    return null;
  }
})();
const SKIP_REDIS = 'no redis-server binary (apt-get install redis-server; .ci/run installs it): skipping the queue tests';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

let redis: ChildProcess | undefined;
let url = '';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-queue-'));

test.before(async () => {
  if (!redisBin) return;
  const port = await freePort();
  redis = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  url = `redis://127.0.0.1:${port}`;
  const c = connect(url);
  await c.ping();
  c.disconnect();
});

test.after.always(() => {
  redis?.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** An `mpq worker` of one engine thread, with a short lock so that a killed one's chunk moves on fast. */
function startWorker(name: string, queue: string): { proc: ChildProcess; log: () => string } {
  let log = '';
  const proc = spawn(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), 'worker', '--redis', url, '--queue', queue, '--search-queue', `${queue}s`, '--threads', '1', '--name', name, '--lock-duration', '3000', '--stalled-interval', '1000'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  proc.stderr!.on('data', (d) => (log += d));
  return { proc, log: () => log };
}
const stop = (p: ChildProcess) => new Promise<void>((r) => (p.exitCode !== null || p.signalCode !== null ? r() : (p.once('exit', () => r()), p.kill('SIGTERM'))));

// 8 samples, one batch: short enough for a test (the bench runs 32 and more)
const calibration = () => [{ input: { shape: [8, 3, 224, 224], data: randomData(8 * 3 * 224 * 224, 7) } }];
const base = () => ({ model: MOBILENET, calibration: calibration(), target: { maxBops: 0.6 }, order: 'sqnr' as const });
const read = (dir: string, f: string) => fs.readFileSync(path.join(dir, f), 'utf8');
const cacheLines = (dir: string) => read(dir, 'cache/sensitivity.jsonl').trim().split('\n').map((l) => JSON.parse(l) as { group: number; candidate: string; powers: unknown });

let local: Promise<SearchResult> | undefined;
const localRun = () => (local ??= search({ ...base(), out: path.join(tmp, 'local') }));

/** Checks a queued run's outputs against the local run's: the same bits in every file phase 1 feeds. */
async function sameAsLocal(t: import('ava').ExecutionContext, dir: string, r: SearchResult) {
  const l = await localRun();
  const ldir = path.join(tmp, 'local');
  t.is(read(dir, 'sensitivity.json'), read(ldir, 'sensitivity.json'));
  t.is(read(dir, 'config.json'), read(ldir, 'config.json'));
  t.deepEqual(r.selected, l.selected);
  // every entry once in the cache, with powers equal to the local run's
  const lines = cacheLines(dir);
  const keys = lines.map((e) => `${e.group}/${e.candidate}`);
  t.is(new Set(keys).size, keys.length, 'an entry reached the cache twice');
  t.is(lines.length, l.phase1.total);
  const want = new Map(cacheLines(ldir).map((e) => [`${e.group}/${e.candidate}`, JSON.stringify(e.powers)]));
  for (const e of lines) t.is(want.get(`${e.group}/${e.candidate}`), JSON.stringify(e.powers));
}

test.serial('two workers give the local run\'s sensitivities exactly, and run.json counts entries per worker', async (t) => {
  if (!redisBin) return t.pass(SKIP_REDIS);
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const ws = [startWorker('wa', 'q1'), startWorker('wb', 'q1')];
  try {
    const dir = path.join(tmp, 'queue');
    const r = await search({ ...base(), out: dir, queue: { redis: url, queue: 'q1', chunk: 4 } });
    await sameAsLocal(t, dir, r);
    const counts = r.phase1.workers!;
    t.deepEqual(Object.keys(counts).sort(), ['wa', 'wb']);
    t.is(counts.wa + counts.wb, r.phase1.total);
    t.deepEqual(JSON.parse(read(dir, 'run.json')).phase1.workers, counts);
    // a rerun reuses the cache: nothing goes to the queue
    const again = await search({ ...base(), out: dir, queue: { redis: url, queue: 'q1', chunk: 4 } });
    t.is(again.phase1.computed, 0);
    t.deepEqual(again.phase1.workers, {});
  } finally {
    await Promise.all(ws.map((w) => stop(w.proc)));
  }
});

test.serial('a worker killed with SIGKILL mid phase 1: its chunk goes to the other, nothing is lost or written twice', async (t) => {
  if (!redisBin) return t.pass(SKIP_REDIS);
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const a = startWorker('wa', 'q2'), b = startWorker('wb', 'q2');
  try {
    const dir = path.join(tmp, 'killed');
    let killed = false;
    const r = await search({
      ...base(),
      out: dir,
      queue: { redis: url, queue: 'q2', chunk: 4 },
      onProgress: (p) => {
        // once wa has finished a chunk it is in the middle of its next one
        if (!killed && p.phase === 'phase1' && /wa: job .* entries/.test(a.log())) {
          killed = true;
          a.proc.kill('SIGKILL');
        }
      },
    });
    t.true(killed);
    await sameAsLocal(t, dir, r);
    const counts = r.phase1.workers!;
    t.is((counts.wa ?? 0) + counts.wb, r.phase1.total);
    t.true(counts.wb > (counts.wa ?? 0));
  } finally {
    await Promise.all([stop(a.proc), stop(b.proc)]);
  }
});

test.serial('a whole search as one job on a worker: the same files as the local run, in --out', async (t) => {
  if (!redisBin) return t.pass(SKIP_REDIS);
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const w = startWorker('ws', 'q3');
  try {
    const dir = path.join(tmp, 'whole');
    const phases = new Set<string>();
    const r = await search({ ...base(), out: dir, queue: { redis: url, whole: true, searchQueue: 'q3s' }, onProgress: (p) => phases.add(p.phase) });
    await sameAsLocal(t, dir, r);
    const ldir = path.join(tmp, 'local');
    t.true(fs.readFileSync(path.join(dir, 'model.qdq.onnx')).equals(fs.readFileSync(path.join(ldir, 'model.qdq.onnx'))), 'the exported model differs from the local run\'s');
    t.is(read(dir, 'encodings.json'), read(ldir, 'encodings.json'));
    const run = JSON.parse(read(dir, 'run.json'));
    t.is(run.remote.worker, 'ws');
    t.is(run.files.model, path.join(dir, 'model.qdq.onnx'));
    // the worker's progress reached the caller
    t.true(phases.has('phase1') && phases.has('phase3'), [...phases].join(','));
    // a local rerun into the same folder reuses the job's cache
    const again = await search({ ...base(), out: dir });
    t.is(again.phase1.computed, 0);
  } finally {
    await stop(w.proc);
  }
});

test.serial('blobs: content-addressed, checked on the way in, only from the worker\'s own folders or Redis', async (t) => {
  if (!redisBin) return t.pass(SKIP_REDIS);
  const c = connect(url);
  try {
    const bytes = new Uint8Array([1, 2, 3, 4]);
    const h = await putBlob(c, 'mpqtest', bytes);
    t.is(h, sha256(bytes));
    t.deepEqual(new Uint8Array(await getBlob(c, 'mpqtest', h, [])), bytes);
    // a folder blob is found only by a worker started with that folder
    const dir = path.join(tmp, 'blobs');
    const other = new Uint8Array([9, 9]);
    const h2 = await putBlob(c, 'mpqtest', other, dir);
    await t.throwsAsync(getBlob(c, 'mpqtest', h2, []), { instanceOf: MpqError, message: /neither in Redis/ });
    t.deepEqual(new Uint8Array(await getBlob(c, 'mpqtest', h2, [dir])), other);
    // a path in place of a hash, and bytes that do not match their name, are refused
    await t.throwsAsync(getBlob(c, 'mpqtest', '../../etc/passwd', [dir]), { instanceOf: MpqError, message: /not a blob hash/ });
    fs.writeFileSync(path.join(dir, h), 'tampered');
    await t.throwsAsync(getBlob(c, 'mpqtest', h, [dir]), { instanceOf: MpqError, message: /does not hash/ });
    // calibration batches round-trip bit for bit, batch boundaries kept
    const batches = [{ x: { shape: [2, 3], data: randomData(6, 1) } }, { x: { shape: [1, 3], data: randomData(3, 2) } }];
    const back = unpackBatches(await packBatches(async function* () { yield* batches; }));
    t.deepEqual(back, batches);
    t.throws(() => unpackBatches(new Uint8Array([200, 0, 0, 0, 1])), { instanceOf: MpqError, message: /malformed/ });
  } finally {
    c.disconnect();
  }
});

test.serial('a bad --redis URL is a typed error', async (t) => {
  const e = t.throws(() => connect('localhost:6379'), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_INPUT');
});
