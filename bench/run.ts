/**
 * Benchmarks. `npm run bench -- [--json] engine [--runs N] [--isa scalar|avx2|avx512]`
 *
 * engine: float forward time of the engine and of onnxruntime-node, both in this process with
 * 2 threads, medians of several runs after a warm-up. Prints ratios (ort_ms / mpq_ms: above 1
 * means we are faster) and the engine path that ran (`--isa` picks a lower one).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Model, engineInfo, setEngineLevel } from '../index';
import type { EngineLevel } from '../index';
import { native } from '../src/native';
import { quantBench } from './quant';
import { searchBench } from './search';
import { roundingBench } from './rounding';
import { queueBench } from './queue';
import { tradeoffBench } from './tradeoff';
import { minilmBench } from './minilm';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');

interface Row { model: string; batch: number; threads: number; isa: string; cpu: string; mpq_ms: number; ort_ms: number; ratio: number }

/** The CPU's model name (from /proc/cpuinfo where there is one). */
function cpuName(): string {
  try {
    return /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? process.arch;
  } catch {
    return process.arch;
  }
}

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

function data(n: number): Float32Array {
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = Math.sin(i * 0.731) * 0.9;
  return d;
}

async function timeIt(f: () => Promise<unknown>, runs: number): Promise<number> {
  await f();
  const t: number[] = [];
  for (let i = 0; i < runs; i++) {
    const s = process.hrtime.bigint();
    await f();
    t.push(Number(process.hrtime.bigint() - s) / 1e6);
  }
  return median(t);
}

async function engine(runs: number, log: (s: string) => void, isa?: string): Promise<Row[]> {
  const threads = 2;
  native().setThreads(threads);
  if (isa) setEngineLevel(isa as EngineLevel);
  const level = engineInfo().level;
  const cpu = cpuName();
  log(`engine path ${level} (CPU ${cpu}: ${engineInfo().available.join(', ')})`);
  const cases: { model: string; file: string; shape: number[] }[] = [];
  const mobilenet = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');
  if (fs.existsSync(mobilenet)) {
    cases.push({ model: 'mobilenet_v1_0.75', file: mobilenet, shape: [1, 3, 224, 224] });
    cases.push({ model: 'mobilenet_v1_0.75', file: mobilenet, shape: [32, 3, 224, 224] });
  } else log('../shared/ is absent: skipping MobileNetV1');
  cases.push({ model: 'ppocr_cls', file: path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), shape: [8, 3, 48, 192] });
  cases.push({ model: 'ppocrv4_rec', file: path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'), shape: [4, 3, 48, 320] });
  cases.push({ model: 'ppocrv4_det', file: path.join(OCR, 'ch_PP-OCRv4_det_infer.onnx'), shape: [1, 3, 320, 640] });
  const rows: Row[] = [];
  for (const c of cases) {
    const m = Model.fromFile(c.file);
    const name = m.inputNames[0];
    const x = data(c.shape.reduce((a, b) => a * b, 1));
    const s = await ort.InferenceSession.create(c.file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' });
    const ot = new ort.Tensor('float32', x, c.shape);
    const n = c.shape[0] >= 32 ? Math.max(3, Math.ceil(runs / 2)) : runs;
    // interleave so that machine noise hits both engines alike
    const a: number[] = [], b: number[] = [];
    for (let r = 0; r < 2; r++) {
      a.push(await timeIt(() => m.run({ [name]: { shape: c.shape, data: x } }), n));
      b.push(await timeIt(() => s.run({ [name]: ot }), n));
    }
    await s.release();
    const row: Row = { model: c.model, batch: c.shape[0], threads, isa: level, cpu, mpq_ms: +Math.min(...a).toFixed(2), ort_ms: +Math.min(...b).toFixed(2), ratio: 0 };
    row.ratio = +(row.ort_ms / row.mpq_ms).toFixed(3);
    rows.push(row);
    log(`${row.model} batch ${row.batch} [${level}]: mpq ${row.mpq_ms} ms, ort ${row.ort_ms} ms, ort/mpq ${row.ratio}`);
  }
  return rows;
}

async function main(argv: string[]): Promise<void> {
  const json = argv.includes('--json');
  const runsIdx = argv.indexOf('--runs');
  const runs = runsIdx >= 0 ? Number(argv[runsIdx + 1]) : 7;
  const isaIdx = argv.indexOf('--isa');
  const isa = isaIdx >= 0 ? argv[isaIdx + 1] : undefined;
  const which = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--runs' && argv[i - 1] !== '--configs' && argv[i - 1] !== '--isa' && argv[i - 1] !== '--calib' && argv[i - 1] !== '--samples' && argv[i - 1] !== '--chunk');
  const log = json ? (s: string) => process.stderr.write(s + '\n') : (s: string) => process.stdout.write(s + '\n');
  const name = which[0] ?? 'engine';
  if (name === 'quant') {
    const ci = argv.indexOf('--configs');
    const only = ci >= 0 ? argv[ci + 1].split(',') : undefined;
    const models = which.slice(1).filter((w) => !only?.includes(w) && w !== argv[ci + 1]);
    const rows = await quantBench(log, models.length ? models : undefined, only);
    if (json) process.stdout.write(JSON.stringify(rows) + '\n');
    return;
  }
  if (name === 'search') {
    const ci = argv.indexOf('--calib');
    const rows = await searchBench(log, which.length > 1 ? which.slice(1).filter((w) => w !== argv[ci + 1]) : undefined, ci >= 0 ? Number(argv[ci + 1]) : 128);
    if (json) process.stdout.write(JSON.stringify(rows) + '\n');
    return;
  }
  if (name === 'rounding') {
    const rows = await roundingBench(log, which.slice(1).filter((w) => argv[argv.indexOf(w) - 1] !== '--eval'), argv);
    if (json) process.stdout.write(JSON.stringify(rows) + '\n');
    return;
  }
  if (name === 'queue') {
    const row = await queueBench(log, argv);
    if (json) process.stdout.write(JSON.stringify(row) + '\n');
    return;
  }
  if (name === 'tradeoff') {
    const rows = await tradeoffBench(argv.filter((a) => a !== 'tradeoff' && a !== '--json'), log);
    if (json) process.stdout.write(JSON.stringify(rows) + '\n');
    return;
  }
  if (name === 'minilm') {
    const rows = await minilmBench(log, argv);
    if (json) process.stdout.write(JSON.stringify(rows) + '\n');
    return;
  }
  if (name !== 'engine') throw new Error(`unknown benchmark '${name}' (available: engine, quant [mobilenet] [rec], rounding [mobilenet] [cls] [minilm] [--ranges] [--eval N], search [mobilenet] [cls] [--calib N], queue [--samples N] [--chunk N], tradeoff [mobilenet] [cls] [det] [rec] [minilm], minilm)`);
  const rows = await engine(runs, log, isa);
  if (json) process.stdout.write(JSON.stringify(rows) + '\n');
  else {
    console.log(`\nCPU: ${rows[0]?.cpu ?? cpuName()}`);
    console.log('model               batch  path      mpq_ms   ort_ms   ort/mpq');
    for (const r of rows) console.log(`${r.model.padEnd(20)}${String(r.batch).padStart(5)}  ${r.isa.padEnd(7)}${r.mpq_ms.toFixed(1).padStart(9)}${r.ort_ms.toFixed(1).padStart(9)}${r.ratio.toFixed(2).padStart(9)}`);
  }
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
