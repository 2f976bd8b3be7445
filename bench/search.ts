/**
 * `npm run bench -- search [mobilenet] [cls] [--calib N]`: the whole search per model, seconds
 * per phase, and phase 1 per entry beside the compute of the entries' downstream steps alone
 * (measured inside the same native calls): their ratio is what phase 1 costs beyond its
 * compute (the shared float passes, configuration upload, JS); and phase 1 over all of its
 * compute (downstream steps and float passes). The rounding of the entries' weights is a stage
 * of its own before phase 1 (`seconds.rounding`), printed beside it.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { openDataSource, search } from '../index';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');

export interface SearchRow {
  model: string;
  samples: number;
  entries: number;
  seconds: Record<string, number>;
  phase1_per_entry_s: number;
  downstream_per_entry_s: number;
  float_pass_s: number;
  /** phase-1 wall time over the entries' downstream compute (1 = no overhead). */
  overhead: number;
  /** Rounding the entries' weights (data-aware, once per layer and width; reused by phase 3 and the export). */
  rounding_s: number;
  /** phase-1 wall time over all its compute: downstream steps and shared float passes (and any rounding left inside phase 1). */
  overhead_beyond_compute: number;
  selected_rel_bops: number;
  load: string;
  cpu: string;
}

export async function searchBench(log: (s: string) => void, which: string[] = ['mobilenet', 'cls'], samples = 128): Promise<SearchRow[]> {
  const cpu = /model name\s*:\s*(.*)/.exec(fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '')?.[1] ?? process.arch;
  const cases: { model: string; file: string; data: () => ReturnType<typeof openDataSource> }[] = [];
  const mobilenet = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');
  if (which.includes('mobilenet')) {
    if (fs.existsSync(mobilenet)) {
      cases.push({ model: 'mobilenet_v1_0.75', file: mobilenet, data: () => openDataSource(path.join(SHARED, 'data', 'imagenet-samples', 'images'), { preset: 'imagenet-tf', select: 'even', limit: samples, batchSize: 32 }) });
    } else log('../shared/ is absent: skipping MobileNetV1');
  }
  if (which.includes('cls')) {
    if (fs.existsSync(path.join(SHARED, 'data', 'textlines'))) {
      cases.push({ model: 'ppocr_cls', file: path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), data: () => openDataSource(path.join(SHARED, 'data', 'textlines', 'images'), { preset: 'paddleocr-cls', inputName: 'x', range: [0, Math.min(200, samples)], batchSize: 32 }) });
    } else log('../shared/ is absent: skipping PP-OCR cls');
  }
  const rows: SearchRow[] = [];
  for (const c of cases) {
    const src = await c.data();
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-bench-search-'));
    const load = os.loadavg()[0].toFixed(1);
    const r = await search({ model: c.file, calib: { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count }, target: { maxBops: 0.75 }, out });
    fs.rmSync(out, { recursive: true, force: true });
    const n = r.phase1.computed;
    const row: SearchRow = {
      model: c.model,
      samples: src.count,
      entries: n,
      seconds: r.seconds,
      phase1_per_entry_s: +(r.seconds.phase1 / n).toFixed(3),
      downstream_per_entry_s: +((r.phase1.entry_seconds ?? 0) / n).toFixed(3),
      float_pass_s: r.phase1.float_seconds ?? 0,
      overhead: +(r.seconds.phase1 / (r.phase1.entry_seconds ?? NaN)).toFixed(3),
      rounding_s: +((r.seconds.rounding ?? 0) + (r.phase1.rounding_seconds ?? 0)).toFixed(2),
      overhead_beyond_compute: +(r.seconds.phase1 / ((r.phase1.entry_seconds ?? NaN) + (r.phase1.float_seconds ?? 0) + (r.phase1.rounding_seconds ?? 0))).toFixed(3),
      selected_rel_bops: r.selected.rel_bops,
      load: `${load} -> ${os.loadavg()[0].toFixed(1)}`,
      cpu,
    };
    rows.push(row);
    log(`${row.model} (${row.samples} samples, ${n} entries): total ${r.seconds.total} s (calibration ${r.seconds.calibration}, rounding ${r.seconds.rounding ?? 0}, phase1 ${r.seconds.phase1}, phase3 ${r.seconds.phase3}, verify ${r.seconds.verify}); phase 1 per entry ${row.phase1_per_entry_s} s vs downstream compute ${row.downstream_per_entry_s} s: ratio ${row.overhead}; float passes ${row.float_pass_s} s, rounding ${row.rounding_s} s (its own stage before phase 1, ${r.phase1.rounding_seconds ?? 0} s left inside): phase 1 / all its compute ${row.overhead_beyond_compute} (load ${row.load}, ${cpu})`);
  }
  return rows;
}
