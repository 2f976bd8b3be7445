/**
 * `npm run bench -- queue [--samples N] [--chunk N]`: phase 1 of MobileNetV1 on the BullMQ
 * queue (issue 14), against the same phase 1 in this process. Runs, one after the other on
 * one Redis it starts on a free port: phase 1 locally with 1 engine thread (the reference),
 * with 1 `mpq worker --threads 1`, and with 2 of them (the closest one machine comes to two).
 * Workers start cold: their seconds include loading and calibrating the model once each.
 * Prints seconds, the speed-up of 2 workers over 1, and the queue's overhead per chunk
 * ((1 worker - local - one calibration) / chunks). Numbers must match the local run exactly.
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { native } from '../src/native';
import { openCoordinator } from '../src/queue/coordinator';
import { resolveCalibration, resolveModel } from '../src/search/inputs';
import { SensitivityCache } from '../src/search/cache';
import { runPhase1 } from '../src/search/phase1';
import { openSession } from '../src/search/session';
import { loadProfile } from '../src/profiles/profile';

const ROOT = path.resolve(__dirname, '..', '..');
const MOBILENET = path.resolve(ROOT, '..', 'shared', 'models', 'mobilenet_v1_0.75_224.onnx');

function data(n: number, seed: number): Float32Array {
  let s = seed >>> 0 || 1;
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    d[i] = s / 2 ** 31 - 1;
  }
  return d;
}

const freePort = () =>
  new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(p));
    });
  });

export async function queueBench(log: (s: string) => void, argv: string[]): Promise<Record<string, number>> {
  const arg = (k: string, d: number) => (argv.includes(k) ? Number(argv[argv.indexOf(k) + 1]) : d);
  const samples = arg('--samples', 32), chunk = arg('--chunk', 8);
  if (!fs.existsSync(MOBILENET)) throw new Error('../shared/models/mobilenet_v1_0.75_224.onnx is absent');
  const redisBin = execFileSync('sh', ['-c', 'command -v redis-server || true'], { encoding: 'utf8' }).trim();
  if (!redisBin) throw new Error('no redis-server binary (apt-get install redis-server)');
  native().setThreads(1);
  const port = await freePort();
  const redis = spawn(redisBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const url = `redis://127.0.0.1:${port}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-bench-queue-'));
  const workers: ChildProcess[] = [];
  try {
    const batches = Array.from({ length: Math.ceil(samples / 8) }, (_, b) => {
      const n = Math.min(8, samples - 8 * b);
      return { input: { shape: [n, 3, 224, 224], data: data(n * 3 * 224 * 224, b + 1) } };
    });
    const { model, hash } = await resolveModel(MOBILENET);
    const calib = await resolveCalibration(batches, model);
    const profile = loadProfile('default');
    let t = Date.now();
    const session = await openSession(model, hash, calib, profile, {});
    const calSecs = (Date.now() - t) / 1000;
    const phase1 = async (name: string, compute?: ReturnType<typeof openCoordinator>['compute']) => {
      const cache = new SensitivityCache(path.join(tmp, name, 'sensitivity.jsonl'), session.key);
      const t0 = Date.now();
      try {
        const entries = await runPhase1(session.cal, session.groups, calib.batches, cache, { compute, samples: calib.count });
        return { secs: (Date.now() - t0) / 1000, entries, lines: fs.readFileSync(cache.file, 'utf8') };
      } finally {
        cache.close();
      }
    };
    const local = await phase1('local');
    log(`local, 1 thread: ${local.entries.length} entries in ${local.secs.toFixed(1)} s (calibration ${calSecs.toFixed(1)} s)`);
    const powers = (lines: string) => new Map(lines.trim().split('\n').map((l) => JSON.parse(l)).map((e) => [`${e.group}/${e.candidate}`, JSON.stringify(e.powers)]));
    const want = powers(local.lines);
    const onQueue = async (n: number) => {
      const queue = `bench${n}`;
      for (let i = 0; i < n; i++) workers.push(spawn(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), 'worker', '--redis', url, '--queue', queue, '--threads', '1', '--quiet'], { stdio: 'ignore' }));
      const co = openCoordinator({ redis: url, queue, chunk }, { session, modelBytes: fs.readFileSync(MOBILENET), calib });
      try {
        const r = await phase1(queue, co.compute);
        const got = powers(r.lines);
        const same = got.size === want.size && [...want].every(([k, v]) => got.get(k) === v);
        log(`${n} worker(s) of 1 thread: ${r.secs.toFixed(1)} s, ${co.jobs.enqueued} chunks, per worker ${JSON.stringify(co.counts)}; equal to local: ${same}`);
        if (!same) throw new Error('the queue\'s phase-1 numbers differ from the local run\'s');
        return { secs: r.secs, jobs: co.jobs.enqueued };
      } finally {
        await co.close();
        for (const w of workers.splice(0)) w.kill('SIGTERM');
      }
    };
    const one = await onQueue(1);
    const two = await onQueue(2);
    const row = {
      samples,
      entries: local.entries.length,
      chunk,
      local_s: +local.secs.toFixed(2),
      one_worker_s: +one.secs.toFixed(2),
      two_workers_s: +two.secs.toFixed(2),
      speedup_2_over_1: +(one.secs / two.secs).toFixed(2),
      one_worker_over_local: +(one.secs / local.secs).toFixed(2),
      overhead_per_chunk_s: +((one.secs - local.secs - calSecs) / one.jobs).toFixed(3),
    };
    log(`\nCPU: ${/model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? process.arch}, ${os.cpus().length} cores, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    log(`2 workers / 1 worker speed-up ${row.speedup_2_over_1}x (target >= 1.6); 1 worker / local ${row.one_worker_over_local}; queue overhead ${row.overhead_per_chunk_s} s per chunk of ${chunk}`);
    return row;
  } finally {
    for (const w of workers) w.kill('SIGTERM');
    redis.kill('SIGTERM');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
