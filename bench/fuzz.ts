/**
 * The long fuzz run (issue 11): crafted hostile models plus mutated small and real models,
 * each given to `mpq inspect --json` and `mpq run` in a child process with a time limit and a
 * memory cap. Reports outcomes (exit code and error code), crashes, hangs, memory kills,
 * internal errors and the peak RSS.
 *
 *   node dist/bench/fuzz.js [--cases 300] [--seed 1] [--timeout 30] [--mem-gb 4] [--mpq bin/mpq.js] [--keep DIR]
 *
 * `--mpq` may point at another checkout's bin/mpq.js (to measure an older build on the same
 * files). Cases that fail are kept in --keep (default a temporary folder) for replay.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from '../src/onnx/proto/onnx';
import { encodeNpy } from '../src/npy';
import { hostileModels, mutate, Rng, seedModels } from './mutate';

const ROOT = path.resolve(__dirname, '..', '..');
const arg = (k: string, d: string) => {
  const i = process.argv.indexOf(`--${k}`);
  return i > 0 ? process.argv[i + 1] : d;
};
const CASES = Number(arg('cases', '300'));
const SEED = Number(arg('seed', '1'));
const TIMEOUT_S = Number(arg('timeout', '30'));
const MEM = Number(arg('mem-gb', '4')) * 2 ** 30;
const MPQ = path.resolve(arg('mpq', path.join(ROOT, 'bin', 'mpq.js')));
const KEEP = arg('keep', fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-fuzz-')));

interface Outcome {
  kind: 'ok' | 'error' | 'internal' | 'crash' | 'hang' | 'oom';
  code?: string;
  rssMb: number;
  line: string;
}

/** Runs `mpq args` with the time limit, killing it when its RSS passes the cap. */
function runMpq(args: string[]): Promise<Outcome> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MPQ, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let peak = 0;
    let killed: 'hang' | 'oom' | undefined;
    child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
    child.stdout.resume();
    const poll = setInterval(() => {
      try {
        const st = fs.readFileSync(`/proc/${child.pid}/status`, 'utf8');
        const hwm = Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0) * 1024;
        peak = Math.max(peak, hwm);
        if (hwm > MEM && !killed) {
          killed = 'oom';
          child.kill('SIGKILL');
        }
      } catch {
        /* exited */
      }
    }, 20);
    const timer = setTimeout(() => {
      killed = 'hang';
      child.kill('SIGKILL');
    }, TIMEOUT_S * 1000);
    child.on('close', (code, signal) => {
      clearInterval(poll);
      clearTimeout(timer);
      const last = stderr.trim().split('\n').pop() ?? '';
      const rssMb = Math.round(peak / 2 ** 20);
      if (killed) return resolve({ kind: killed, rssMb, line: last });
      if (signal || (code !== 0 && code !== 1 && code !== 2)) return resolve({ kind: 'crash', code: signal ?? String(code), rssMb, line: last });
      if (code === 0) return resolve({ kind: 'ok', rssMb, line: '' });
      const m = /mpq: error \[(MPQ_[A-Z_]+)\]/.exec(stderr);
      if (!m || m[1] === 'MPQ_INTERNAL' || /internal error/.test(stderr)) return resolve({ kind: 'internal', rssMb, line: last });
      resolve({ kind: 'error', code: m[1], rssMb, line: last });
    });
  });
}

/** Inputs of the declared shapes (dynamic dims from `dynamic`, else 1), as .npy files. */
function inputsFor(bytes: Uint8Array, dir: string, dynamic: number[] = []): string[] {
  let inputs: onnx.IValueInfoProto[] = [];
  try {
    const m = onnx.ModelProto.decode(bytes);
    const inits = new Set((m.graph?.initializer ?? []).map((t) => t.name));
    inputs = (m.graph?.input ?? []).filter((i) => !inits.has(i.name));
  } catch {
    /* undecodable: one dummy input */
  }
  if (inputs.length === 0) inputs = [{ name: 'x' }];
  return inputs.map((inp, k) => {
    const dims = (inp.type?.tensorType?.shape?.dim ?? [{ dimValue: 1 }]).map((d, i) => {
      const v = d.dimValue == null ? 0 : Number(d.dimValue);
      return v > 0 && v <= 4096 ? v : dynamic[i] ?? 1;
    });
    const n = dims.reduce((a, b) => a * b, 1);
    const f = path.join(dir, `in${k}.npy`);
    fs.writeFileSync(f, encodeNpy(dims, new Float32Array(Math.min(n, 2 ** 26)).fill(0.25).subarray(0, n > 2 ** 26 ? 0 : n)));
    return `${inp.name}=${f}`;
  });
}

async function main() {
  const seeds: { name: string; bytes: Uint8Array; dynamic?: number[] }[] = seedModels();
  const real: [string, string, number[]?][] = [
    ['ppocr-cls', path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets', 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), [1, 3, 48, 192]],
    ['mobilenet', path.join(ROOT, '..', 'shared', 'models', 'mobilenet_v1_0.75_224.onnx'), [1, 224, 224, 3]],
  ];
  for (const [name, f, dynamic] of real) if (fs.existsSync(f)) seeds.push({ name, bytes: fs.readFileSync(f), dynamic });
  const fixed = [...hostileModels(), ...seeds];
  const rng = new Rng(SEED);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-fuzz-work-'));
  const tally: Record<string, number> = {};
  const failures: string[] = [];
  let peak = { mb: 0, what: '' };
  const t0 = Date.now();
  for (let i = 0; i < CASES; i++) {
    // the crafted cases and every seed once as they are, then mutations of the seeds
    const s: { name: string; bytes: Uint8Array; dynamic?: number[] } = i < fixed.length ? fixed[i] : seeds[i % seeds.length];
    const m = i < fixed.length ? { bytes: s.bytes, what: 'as built' } : mutate(s.bytes, rng);
    const dir = path.join(work, String(i));
    fs.mkdirSync(dir);
    const file = path.join(dir, 'model.onnx');
    fs.writeFileSync(file, m.bytes);
    const ins = inputsFor(m.bytes, dir, s.dynamic);
    const dyn = s.dynamic ? ['--shape', `${ins[0].split('=')[0]}=${s.dynamic.join(',')}`] : [];
    for (const [cmd, args] of [['inspect', ['inspect', file, '--json', ...dyn]], ['run', ['run', file, ...ins.flatMap((x) => ['--input', x]), '--out', path.join(dir, 'out')]]] as const) {
      const o = await runMpq([...args]);
      const key = `${cmd} ${o.kind}${o.code ? ` ${o.code}` : ''}`;
      tally[key] = (tally[key] ?? 0) + 1;
      if (o.rssMb > peak.mb) peak = { mb: o.rssMb, what: `case ${i} ${cmd} (${s.name}: ${m.what})` };
      if (o.kind !== 'ok' && o.kind !== 'error') {
        const keep = path.join(KEEP, `case-${i}.onnx`);
        fs.copyFileSync(file, keep);
        failures.push(`case ${i} ${cmd} ${o.kind} (${s.name}: ${m.what}) rss ${o.rssMb} MB: ${o.line.slice(0, 300)} [${keep}]`);
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
    if ((i + 1) % 25 === 0) process.stderr.write(`${i + 1}/${CASES} cases, ${failures.length} failures, ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
  }
  fs.rmSync(work, { recursive: true, force: true });
  const bad = failures.length;
  process.stdout.write(
    JSON.stringify({ mpq: MPQ, cases: CASES, seed: SEED, timeout_s: TIMEOUT_S, mem_gb: MEM / 2 ** 30, seconds: (Date.now() - t0) / 1000, peak_rss_mb: peak.mb, peak_case: peak.what, outcomes: tally, failures }, null, 1) + '\n',
  );
  process.exitCode = bad ? 1 : 0;
}

main();
