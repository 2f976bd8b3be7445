/**
 * The accuracy/cost trade-off on real models (issue 13): float, every homogeneous configuration
 * the default profile allows, and the mixed-precision front at budgets of W8A8's BOPs, plus the
 * max-drop answers; every exported model measured in onnxruntime-node with graph
 * optimizations off, on evaluation data disjoint from the calibration data.
 *
 *   npm run bench -- tradeoff [MODEL...] [--json] [--compare] [--robust] [--eval N]
 *
 * MODEL: mobilenet, cls, det, rec, minilm (default: all, in that order). Writes
 * bench/results/<model>.json and .svg, then regenerates bench/RESULTS.md from every
 * bench/results/*.json (with bench/results/notes.md appended). Work folders (phase-1 caches)
 * go to bench/.work/<model>/ (ignored by git); a rerun reuses their phase-1 cache.
 *
 * How the points are made:
 * - homogeneous: as `quantize()` with the named configuration (calibrate once with quantize()'s
 *   defaults, then quantizeCalibrated + exportQdq per configuration, which is what quantize() does);
 * - mixed: the search's own session (openSession), phase 1 into the search's cache file
 *   (`search({ out })` into the same folder reuses it), the front of phase 2 (buildFront); the
 *   point for a BOPs budget is the costliest front point within it, exported as the search
 *   exports its selection; the max-drop answer is the search's binary search over the front
 *   with the metric measured on the evaluation data (as `search({ eval })` does).
 */
import * as fs from 'fs';
import * as path from 'path';
import type * as OrtT from 'onnxruntime-node';
import { calibrate, quantizeCalibrated, exportQdq, openDataSource } from '../index';
import type { DataSource } from '../index';
import { loadOrt } from '../src/ort';
import { loadBitConfig } from '../src/quant/config';
import { loadProfile, candKey, Candidate } from '../src/profiles/profile';
import { openSession, Session } from '../src/search/session';
import { runPhase1 } from '../src/search/phase1';
import { SensitivityCache } from '../src/search/cache';
import { buildFront, FrontOrder, FrontPoint, frontQuality } from '../src/search/pareto';
import { configOf } from '../src/search/groups';
import { resolveModel } from '../src/search/inputs';
import type { RangeMethod } from '../src/quant/ranges';
import { recData } from './search-rec';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');
const RESULTS = path.join(ROOT, 'bench', 'results');
const WORK = path.join(ROOT, 'bench', '.work');

export const BUDGETS = [0.5, 0.625, 0.75, 0.875, 1.0, 1.5, 2.0];
export const DROPS = [0.005, 0.01, 0.02];
const THREADS = 2;

type Ort = typeof OrtT;
type Feeds = Record<string, OrtT.Tensor>;
interface EvalBatch { feeds: Feeds; names: string[]; indices: number[] }
interface Measured { metric: number; noise: number }
interface Calib { batches: () => AsyncIterable<Record<string, { shape: number[]; data: Float32Array }>>; fingerprint: string; count: number }

interface Task {
  model: string;
  file: string;
  task: string;
  metric_name: string;
  /** Calibration data: the issue's set, or (robustness) `count` samples from offset `offset` of the calibration pool. */
  calib(opt?: { offset?: number; count?: number }): Promise<Calib>;
  /** Sizes of the calibration pool (robustness: disjoint sets and sample counts). */
  pool?: number;
  /** The metric of a model in ORT (with the float session's outputs when the metric compares with float). */
  measure(s: OrtT.InferenceSession): Promise<Measured>;
  /** Called once with the float session before any measure (float references). */
  prepare?(s: OrtT.InferenceSession): Promise<void>;
}

export interface Point { label: string; kind: 'fp32' | 'homogeneous' | 'mixed'; rel_bops: number; size_bytes: number; metric: number; seconds: number; noise?: number; budget?: number; max_drop?: number; front_index?: number; predicted_sqnr_db?: number }

function cpuName(): string {
  try {
    return /model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? process.arch;
  } catch {
    return process.arch;
  }
}
const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function toFeeds(ort: Ort, inputs: Record<string, { shape: number[]; data: Float32Array | BigInt64Array }>): Feeds {
  const f: Feeds = {};
  for (const [k, t] of Object.entries(inputs)) f[k] = t.data instanceof BigInt64Array ? new ort.Tensor('int64', t.data, t.shape) : new ort.Tensor('float32', t.data, t.shape);
  return f;
}

async function preload(ort: Ort, src: DataSource, batch = 16, transform?: (x: { shape: number[]; data: Float32Array }, indices: number[]) => void): Promise<EvalBatch[]> {
  const out: EvalBatch[] = [];
  for await (const b of src.batchesWithInfo(batch)) {
    if (transform) for (const t of Object.values(b.inputs)) transform(t, b.indices);
    out.push({ feeds: toFeeds(ort, b.inputs), names: b.names, indices: b.indices });
  }
  return out;
}

const meanSe = (xs: number[]): Measured => {
  const n = xs.length;
  const m = xs.reduce((a, b) => a + b, 0) / n;
  const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, n - 1);
  return { metric: m, noise: Math.sqrt(v / n) };
};

function argmaxRows(t: OrtT.Tensor): number[] {
  const d = t.data as Float32Array;
  const n = t.dims[0];
  const k = d.length / n;
  const r: number[] = [];
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (d[i * k + j] > d[i * k + best]) best = j;
    r.push(best);
  }
  return r;
}

/** Rotates each sample of an NCHW text-line tensor by 180 degrees within its content width (the right padding, exactly 0, stays on the right). */
function rotate180(t: { shape: number[]; data: Float32Array }, i: number): void {
  const [, c, h, w] = t.shape;
  const base = i * c * h * w;
  let width = 0;
  for (let x = w - 1; x >= 0 && !width; x--) for (let ch = 0; ch < c && !width; ch++) for (let y = 0; y < h; y++) if (t.data[base + (ch * h + y) * w + x] !== 0) {
    width = x + 1;
    break;
  }
  for (let ch = 0; ch < c; ch++) {
    const plane = t.data.subarray(base + ch * h * w, base + (ch + 1) * h * w);
    const copy = plane.slice();
    for (let y = 0; y < h; y++) for (let x = 0; x < width; x++) plane[y * w + x] = copy[(h - 1 - y) * w + (width - 1 - x)];
  }
}

/** A batches() that rotates the odd-index samples (the cls labels: class 1 = rotated). */
function rotatedOdd(src: DataSource): Calib['batches'] {
  return async function* () {
    for await (const b of src.batchesWithInfo()) {
      for (const t of Object.values(b.inputs)) b.indices.forEach((idx, i) => idx % 2 === 1 && rotate180(t, i));
      yield b.inputs;
    }
  };
}

async function run(s: OrtT.InferenceSession, data: EvalBatch[], f: (out: OrtT.InferenceSession.OnnxValueMapType, b: EvalBatch, k: number) => void): Promise<void> {
  let k = 0;
  for (const b of data) f(await s.run(b.feeds), b, k++);
}

function imagenetTask(ort: Ort, evalLimit?: number): Task {
  const dir = path.join(SHARED, 'data', 'imagenet-samples');
  const images = path.join(dir, 'images');
  const classOf = (name: string) => Number(/^(\d+)_/.exec(path.basename(name))![1]);
  let data: EvalBatch[] | undefined;
  return {
    model: 'mobilenet_v1_0.75',
    file: path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx'),
    task: 'ImageNet classification: top-1 on the 500 odd-class images of data/imagenet-samples, calibrated on 128 even-class images',
    metric_name: 'top1',
    pool: 500,
    async calib(o = {}) {
      const src = await openDataSource(images, { preset: 'imagenet-tf', select: 'even', offset: o.offset ?? 0, limit: o.count ?? 128, batchSize: 32 });
      return { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count };
    },
    async measure(s) {
      data ??= await preload(ort, await openDataSource(images, { preset: 'imagenet-tf', select: 'odd', limit: evalLimit }), 25);
      const hits: number[] = [];
      await run(s, data, (out, b) => argmaxRows(out[s.outputNames[0]]).forEach((p, i) => hits.push(p === classOf(b.names[i]) ? 1 : 0)));
      return meanSe(hits);
    },
  };
}

function textlines(): string {
  return path.join(SHARED, 'data', 'textlines', 'images');
}

function clsTask(ort: Ort, evalLimit?: number): Task {
  let data: EvalBatch[] | undefined;
  return {
    model: 'ppocr_cls',
    file: path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'),
    task: 'text direction: accuracy on text lines 0200-0599 of data/textlines, odd lines rotated by 180 degrees as class 1; calibrated on lines 0000-0199 (odd ones rotated too)',
    metric_name: 'accuracy',
    pool: 200,
    async calib(o = {}) {
      const start = o.offset ?? 0;
      const src = await openDataSource(textlines(), { preset: 'paddleocr-cls', inputName: 'x', range: [start, start + (o.count ?? 200)], batchSize: 32 });
      return { batches: rotatedOdd(src), fingerprint: src.fingerprint() + ':rot180-odd', count: src.count };
    },
    async measure(s) {
      if (!data) {
        const src = await openDataSource(textlines(), { preset: 'paddleocr-cls', inputName: 'x', range: [200, 200 + (evalLimit ?? 400)] });
        data = await preload(ort, src, 32, (t, idx) => idx.forEach((j, i) => j % 2 === 1 && rotate180(t, i)));
      }
      const hits: number[] = [];
      await run(s, data, (out, b) => argmaxRows(out[s.outputNames[0]]).forEach((p, i) => hits.push(p === b.indices[i] % 2 ? 1 : 0)));
      return meanSe(hits);
    },
  };
}

/** PP-OCRv4 det on text lines: height 48 (width in ratio, up to 320) padded to 64x320, BGR, ImageNet mean/std (PaddleOCR's det normalisation). */
const DET_PRE = { resize: { height: 48, maxWidth: 320 }, resizeMode: 'bilinear' as const, pad: [64, 320] as [number, number], padValue: 0, channelOrder: 'bgr' as const, layout: 'nchw' as const, scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const DET_THRESH = 0.3;

function detTask(ort: Ort, evalLimit?: number): Task {
  let data: EvalBatch[] | undefined;
  let ref: Uint8Array[][] = [];
  const binarise = (t: OrtT.Tensor): Uint8Array[] => {
    const d = t.data as Float32Array;
    const n = t.dims[0];
    const k = d.length / n;
    return Array.from({ length: n }, (_, i) => Uint8Array.from(d.subarray(i * k, (i + 1) * k), (v) => (v > DET_THRESH ? 1 : 0)));
  };
  const load = async () => (data ??= await preload(ort, await openDataSource(textlines(), { preprocess: DET_PRE, inputName: 'x', range: [200, 200 + (evalLimit ?? 400)] }), 16));
  return {
    model: 'ppocrv4_det',
    file: path.join(OCR, 'ch_PP-OCRv4_det_infer.onnx'),
    task: `text detection: mean IoU of the text pixels (probability > ${DET_THRESH}) with the float model's, on text lines 0200-0599 (64x320 canvas), calibrated on lines 0000-0199`,
    metric_name: 'iou_vs_float',
    pool: 200,
    async calib(o = {}) {
      const start = o.offset ?? 0;
      const src = await openDataSource(textlines(), { preprocess: DET_PRE, inputName: 'x', range: [start, start + (o.count ?? 200)], batchSize: 16 });
      return { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count };
    },
    async prepare(s) {
      ref = [];
      await run(s, await load(), (out) => ref.push(binarise(out[s.outputNames[0]])));
    },
    async measure(s) {
      const ious: number[] = [];
      await run(s, await load(), (out, _b, k) =>
        binarise(out[s.outputNames[0]]).forEach((m, i) => {
          const r = ref[k][i];
          let inter = 0, union = 0;
          for (let j = 0; j < m.length; j++) {
            inter += m[j] & r[j];
            union += m[j] | r[j];
          }
          ious.push(union ? inter / union : 1);
        }),
      );
      return meanSe(ious);
    },
  };
}

function recTask(ort: Ort, evalLimit?: number): Task {
  let data: EvalBatch[] | undefined;
  let score: ((out: { shape: number[]; data: Float32Array }, names: string[]) => number[]) | undefined;
  return {
    model: 'ppocrv4_rec',
    file: path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'),
    task: 'text-line recognition: exact match of greedy CTC decoding on lines 0200-0599 of data/textlines, calibrated on lines 0000-0199',
    metric_name: 'exact_match',
    pool: 200,
    async calib(o = {}) {
      const { calib } = await recData(o.count ?? 200, 1, o.offset ?? 0);
      return { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count };
    },
    async measure(s) {
      if (!data) {
        const r = await recData(1, evalLimit ?? 400);
        score = r.score;
        data = await preload(ort, r.evalSrc, 16);
      }
      const hits: number[] = [];
      await run(s, data, (out, b) => {
        const t = out[s.outputNames[0]];
        hits.push(...score!({ shape: [...t.dims], data: t.data as Float32Array }, b.names));
      });
      return meanSe(hits);
    },
  };
}

/** Reads an int64 .npy file (little-endian, C order). */
function readInt64Npy(file: string): { shape: number[]; data: BigInt64Array } {
  const b = fs.readFileSync(file);
  const v = b.readUInt8(6);
  const headerLen = v === 1 ? b.readUInt16LE(8) : b.readUInt32LE(8);
  const start = (v === 1 ? 10 : 12) + headerLen;
  const header = b.subarray(v === 1 ? 10 : 12, start).toString('latin1');
  if (!/'descr':\s*'<i8'/.test(header)) throw new Error(`${file}: expected int64 (<i8), header ${header}`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)![1].split(',').filter((x) => x.trim()).map(Number);
  const data = new BigInt64Array(b.buffer.slice(b.byteOffset + start, b.byteOffset + b.length));
  return { shape, data };
}

function minilmTask(ort: Ort, evalLimit?: number): Task {
  const dir = path.join(SHARED, 'data', 'textpairs');
  const rows = (prefix: string, n: number) => {
    const ids = readInt64Npy(path.join(dir, `${prefix}_input_ids.npy`));
    const mask = readInt64Npy(path.join(dir, `${prefix}_attention_mask.npy`));
    const L = ids.shape[1];
    const N = Math.min(n, ids.shape[0]);
    const out: { ids: BigInt64Array; mask: BigInt64Array; n: number; L: number }[] = [];
    for (let i = 0; i < N; i += 32) {
      const m = Math.min(32, N - i);
      out.push({ ids: ids.data.slice(i * L, (i + m) * L), mask: mask.data.slice(i * L, (i + m) * L), n: m, L });
    }
    return out;
  };
  const embed = async (s: OrtT.InferenceSession, prefix: string, n: number): Promise<Float32Array[]> => {
    const e: Float32Array[] = [];
    for (const b of rows(prefix, n)) {
      const out = await s.run({ input_ids: new ort.Tensor('int64', b.ids, [b.n, b.L]), attention_mask: new ort.Tensor('int64', b.mask, [b.n, b.L]) });
      const h = Object.values(out).find((t) => t.dims.length === 3 && t.dims[2] === 384) ?? out[s.outputNames[0]];
      const d = h.data as Float32Array;
      const H = h.dims[2];
      for (let i = 0; i < b.n; i++) {
        const v = new Float32Array(H);
        let cnt = 0;
        for (let t = 0; t < b.L; t++) {
          if (!b.mask[i * b.L + t]) continue;
          cnt++;
          for (let j = 0; j < H; j++) v[j] += d[(i * b.L + t) * H + j];
        }
        let norm = 0;
        for (let j = 0; j < H; j++) norm += (v[j] /= Math.max(1, cnt)) ** 2;
        norm = Math.sqrt(norm) || 1;
        for (let j = 0; j < H; j++) v[j] /= norm;
        e.push(v);
      }
    }
    return e;
  };
  return {
    model: 'minilm_l3',
    file: path.join(SHARED, 'models', 'paraphrase-MiniLM-L3-v2.onnx'),
    task: 'sentence retrieval: top-1 of each of the 500 evaluation summaries finding its own description (mean-pooled, L2-normalised last hidden state, cosine) on data/textpairs, calibrated on calib_*',
    metric_name: 'retrieval_top1',
    pool: 128,
    async calib(o = {}) {
      const spec = { input_ids: path.join(dir, 'calib_input_ids.npy'), attention_mask: path.join(dir, 'calib_attention_mask.npy') };
      const src = await openDataSource(spec, { offset: o.offset ?? 0, limit: o.count ?? 128, batchSize: 32 });
      return { batches: () => src.batches(), fingerprint: src.fingerprint(), count: src.count };
    },
    async measure(s) {
      const n = evalLimit ?? 500;
      const q = await embed(s, 'eval_query', n);
      const d = await embed(s, 'eval_doc', n);
      const hits = q.map((v, i) => {
        let best = -1, bi = -1;
        d.forEach((w, j) => {
          let c = 0;
          for (let k = 0; k < v.length; k++) c += v[k] * w[k];
          if (c > best) [best, bi] = [c, j];
        });
        return bi === i ? 1 : 0;
      });
      return meanSe(hits);
    },
  };
}

const TASKS: Record<string, (ort: Ort, evalLimit?: number) => Task> = { mobilenet: imagenetTask, cls: clsTask, det: detTask, rec: recTask, minilm: minilmTask };

/** One model's bench. */
async function benchModel(ort: Ort, t: Task, log: (s: string) => void, o: { compare: false | 'order' | 'all'; robust: boolean; prev?: () => Promise<Record<string, any>> }): Promise<Record<string, unknown>> {
  const started = Date.now();
  const sec = (since: number) => +((Date.now() - since) / 1000).toFixed(1);
  const opts = { graphOptimizationLevel: 'disabled' as const, intraOpNumThreads: THREADS, interOpNumThreads: 1 };
  const measureBytes = async (bytes: Uint8Array | string): Promise<Measured> => {
    const s = await ort.InferenceSession.create(bytes as Uint8Array, opts);
    try {
      return await t.measure(s);
    } finally {
      await s.release();
    }
  };
  const loadAvg = [load()];
  // float
  let t0 = Date.now();
  const fs0 = await ort.InferenceSession.create(t.file, opts);
  await t.prepare?.(fs0);
  const fl = await t.measure(fs0);
  await fs0.release();
  const points: Point[] = [{ label: 'fp32', kind: 'fp32', rel_bops: 16, size_bytes: 0, metric: fl.metric, noise: fl.noise, seconds: sec(t0) }];
  log(`${t.model}: float ${t.metric_name} ${fl.metric.toFixed(4)} +- ${fl.noise.toFixed(4)} (${points[0].seconds} s)`);
  const { model, hash } = await resolveModel(t.file);
  const profile = loadProfile('default');

  // the mixed session (the search's) with its phase 1 and both fronts
  const sessionOf = async (calib: Calib, ranges: { actRange?: RangeMethod; weightRange?: RangeMethod }, dir: string) => {
    let ts = Date.now();
    const session = await openSession(model, hash, calib, profile, ranges);
    const calibSec = sec(ts);
    ts = Date.now();
    const cache = new SensitivityCache(path.join(dir, 'cache', 'sensitivity.jsonl'), session.key);
    let entries;
    let shown = 0;
    try {
      entries = await runPhase1(session.cal, session.groups, calib.batches, cache, { samples: calib.count, onProgress: (p) => {
        const step = Math.floor((10 * p.done) / Math.max(1, p.total));
        if (step > shown) process.stderr.write(`  phase 1 ${Math.round(p.done)}/${p.total} (${sec(ts)} s)\n`), (shown = step);
      } });
    } finally {
      cache.close();
    }
    const phase1Sec = sec(ts);
    const fronts = { sqnr: buildFront(entries, session.groups, session.cost, 'sqnr'), efficiency: buildFront(entries, session.groups, session.cost, 'efficiency') };
    return { session, fronts, timing: { calibration_s: calibSec, phase1_s: phase1Sec, phase1_entries: entries.length, phase1_reused: entries.filter((e) => e.cached).length } };
  };
  const mixedCache = new Map<string, Measured & { seconds: number }>();
  const measurePoint = async (session: Session, p: FrontPoint) => {
    const k = session.key + ':' + p.choice.map(candKey).join(',');
    let m = mixedCache.get(k);
    if (!m) {
      const ts = Date.now();
      const q = await quantizeCalibrated(session.cal, configOf(session.groups, p.choice));
      const bytes = exportQdq(q, session.cal);
      const r = await measureBytes(bytes);
      m = { ...r, seconds: sec(ts) };
      mixedCache.set(k, m);
    }
    return m;
  };
  const budgetPoints = async (session: Session, front: FrontPoint[], tag: string): Promise<Point[]> => {
    const r: Point[] = [];
    for (const b of BUDGETS) {
      const p = front.find((x) => x.rel_cost <= b + 1e-12);
      if (!p) {
        log(`  budget ${b}: no front point (cheapest ${front[front.length - 1].rel_cost.toFixed(3)})`);
        continue;
      }
      const m = await measurePoint(session, p);
      r.push({ label: `mixed@${b}`, kind: 'mixed', budget: b, rel_bops: +p.rel_bops.toFixed(4), size_bytes: p.size_bytes, metric: m.metric, noise: m.noise, seconds: m.seconds, front_index: p.index, predicted_sqnr_db: +p.predicted_sqnr_db.toFixed(2) });
      log(`  ${tag} budget ${b}: rel_bops ${p.rel_bops.toFixed(3)} ${t.metric_name} ${m.metric.toFixed(4)} (${m.seconds} s, load ${load()})`);
    }
    r.push(...(await endPoints(session, front, tag, r)));
    return r;
  };
  // the front's two ends (every group at its cheapest candidate; every group at its costliest)
  // when no budget took them: a budget grid can fall just short of the cheapest (rec's all-W4A8
  // point costs 0.5005 x) and stops below the costliest (all-W16A16 costs 4 x)
  const endPoints = async (session: Session, front: FrontPoint[], tag: string, have: Point[]): Promise<Point[]> => {
    const r: Point[] = [];
    for (const [label, p] of [['mixed@cheapest', front[front.length - 1]], ['mixed@costliest', front[0]]] as const) {
      if (have.some((x) => x.front_index === p.index || x.label === label)) continue;
      const m = await measurePoint(session, p);
      log(`  ${tag} front's ${label.slice(6)} end: rel_bops ${p.rel_bops.toFixed(4)} ${t.metric_name} ${m.metric.toFixed(4)} (${m.seconds} s)`);
      r.push({ label, kind: 'mixed', budget: +p.rel_cost.toFixed(4), rel_bops: +p.rel_bops.toFixed(4), size_bytes: p.size_bytes, metric: m.metric, noise: m.noise, seconds: m.seconds, front_index: p.index, predicted_sqnr_db: +p.predicted_sqnr_db.toFixed(2) });
    }
    return r;
  };
  const dropPoints = async (session: Session, front: FrontPoint[], tag: string, drops = DROPS): Promise<Point[]> => {
    const r: Point[] = [];
    for (const d of drops) {
      const goal = fl.metric - d;
      let lo = 0, hi = front.length - 1, best = -1;
      while (lo <= hi) {
        const mid = (lo + hi) >> 1;
        if ((await measurePoint(session, front[mid])).metric >= goal) {
          best = mid;
          lo = mid + 1;
        } else hi = mid - 1;
      }
      const p = front[best >= 0 ? best : 0];
      const m = await measurePoint(session, p);
      r.push({ label: `max-drop ${+(d * 100).toFixed(2)}`, kind: 'mixed', max_drop: d, rel_bops: +p.rel_bops.toFixed(4), size_bytes: p.size_bytes, metric: m.metric, noise: m.noise, seconds: m.seconds, front_index: p.index, predicted_sqnr_db: +p.predicted_sqnr_db.toFixed(2) });
      log(`  ${tag} max-drop ${d}: rel_bops ${p.rel_bops.toFixed(3)} ${t.metric_name} ${m.metric.toFixed(4)}${best < 0 ? ' (no front point meets it: the costliest)' : ''}`);
    }
    return r;
  };

  // homogeneous, as quantize() makes them
  t0 = Date.now();
  const calib = await t.calib();
  const homoCal = o.prev ? undefined : await calibrate(model, calib.batches);
  if (homoCal) homoCal.batches = calib.batches;
  const homoCalSec = sec(t0);
  if (homoCal) log(`  quantize() calibration ${homoCalSec} s on ${calib.count} samples`);
  const main = await sessionOf(calib, {}, path.join(WORK, t.model));
  const { session, fronts } = main;
  log(`  search session: calibration ${main.timing.calibration_s} s, phase 1 ${main.timing.phase1_s} s (${main.timing.phase1_reused}/${main.timing.phase1_entries} reused), ${session.groups.length} groups, front ${fronts.sqnr.length} points`);
  const homogeneous = profile.candidates.filter((c: Candidate) => session.groups.every((g) => g.candidates.some((x) => candKey(x) === candKey(c))));
  for (const c of homoCal ? homogeneous : []) {
    const name = `W${c.w}A${c.a}`;
    const ts = Date.now();
    const q = await quantizeCalibrated(homoCal!, loadBitConfig(name));
    const bytes = exportQdq(q, homoCal!);
    const m = await measureBytes(bytes);
    const choice = session.groups.map(() => c);
    points.push({ label: name, kind: 'homogeneous', rel_bops: +session.cost.relBops(choice).toFixed(4), size_bytes: session.cost.sizeBytes(choice), metric: m.metric, noise: m.noise, seconds: sec(ts) });
    log(`  ${name}: ${t.metric_name} ${m.metric.toFixed(4)} (${sec(ts)} s, load ${load()})`);
  }
  points[0].size_bytes = 2 * (points.find((p) => p.label === 'W16A16')?.size_bytes ?? 0) || 0;
  // the search's front (its default order) at the budgets, and the max-drop answers
  const order: FrontOrder = 'sqnr';
  // --add: the other order's budget points first, then the earlier run's results (read now, so that both can run at once)
  const early = o.prev && o.compare === 'order' ? await budgetPoints(session, fronts.efficiency, 'efficiency') : undefined;
  const prev = await o.prev?.();
  if (prev) {
    points.splice(0, points.length, ...(prev.points as Point[]));
    // results from before the front's ends were points of their own: add them
    points.push(...(await endPoints(session, fronts[order], order, points.filter((p) => p.budget !== undefined))));
  } else {
    points.push(...(await budgetPoints(session, fronts[order], order)));
    points.push(...(await dropPoints(session, fronts[order], order)));
  }
  const mixed = points.filter((p) => p.budget !== undefined);
  loadAvg.push(load());
  const result: Record<string, unknown> = prev ? { ...prev, points } : {
    model: t.model,
    task: t.task,
    metric_name: t.metric_name,
    metric_noise: +fl.noise.toFixed(4),
    points,
    front_order: order,
    calib_samples: calib.count,
    timing: { quantize_calibration_s: homoCalSec, ...main.timing },
  };
  const dominance = points
    .filter((p) => p.kind === 'homogeneous')
    .map((h) => {
      const best = points.filter((p) => p.kind === 'mixed' && p.rel_bops <= h.rel_bops + 1e-9).reduce<Point | undefined>((a, b) => (!a || b.metric > a.metric ? b : a), undefined);
      return { homogeneous: h.label, rel_bops: h.rel_bops, metric: h.metric, best_mixed: best?.label ?? null, best_mixed_rel_bops: best?.rel_bops ?? null, best_mixed_metric: best?.metric ?? null, matched: !!best && best.metric >= h.metric - fl.noise };
    });
  result.dominance = dominance;
  // what the search's default order ('auto': the front with the better predicted SQNR over budgets 0.5-1) picks on this model
  result.auto_order = frontQuality(fronts.efficiency) > frontQuality(fronts.sqnr) ? 'efficiency' : 'sqnr';
  for (const d of dominance) log(`  ${d.homogeneous} (${d.rel_bops}, ${d.metric.toFixed(4)}): best mixed at no more BOPs ${d.best_mixed ?? '-'} ${d.best_mixed_metric?.toFixed(4) ?? ''} -> ${d.matched ? 'matched' : 'NOT matched'}`);
  if (o.compare === 'order') {
    // the other phase-2 order on the same phase 1 (budgets only)
    const other = early ?? (await budgetPoints(session, fronts.efficiency, 'efficiency'));
    result.compare = { order: { sqnr: mixed, efficiency: other } };
    loadAvg.push(load());
  }
  if (o.compare === 'all') {
    // the other phase-2 order on the same phase 1, then min/max ranges (a second session)
    const other = await budgetPoints(session, fronts.efficiency, 'efficiency');
    const otherDrop = await dropPoints(session, fronts.efficiency, 'efficiency', [0.01]);
    const mm = await sessionOf(calib, { actRange: 'minmax', weightRange: 'minmax' }, path.join(WORK, `${t.model}-minmax`));
    const mmPoints = await budgetPoints(mm.session, mm.fronts.sqnr, 'minmax');
    const mmDrop = await dropPoints(mm.session, mm.fronts.sqnr, 'minmax', [0.01]);
    result.compare = {
      order: { sqnr: [...mixed, ...points.filter((p) => p.max_drop === 0.01)], efficiency: [...other, ...otherDrop] },
      ranges: { mse: [...mixed, ...points.filter((p) => p.max_drop === 0.01)], minmax: [...mmPoints, ...mmDrop], minmax_timing: mm.timing },
    };
    loadAvg.push(load());
  }
  if (o.robust && t.pool) {
    const n = t.pool >= 3 * 128 ? 128 : Math.floor(t.pool / 3);
    const sets: Record<string, unknown>[] = [];
    const runSet = async (label: string, offset: number, count: number) => {
      const c = await t.calib({ offset, count });
      const s = await sessionOf(c, {}, path.join(WORK, `${t.model}-robust-${label}`));
      const pts = await budgetPoints(s.session, s.fronts.sqnr, `robust ${label}`);
      const dp = await dropPoints(s.session, s.fronts.sqnr, `robust ${label}`, [0.01]);
      sets.push({ label, offset, count: c.count, points: [...pts, ...dp], timing: s.timing });
    };
    for (let k = 0; k < 3; k++) await runSet(`disjoint-${k}`, k * n, n);
    for (const count of [32, 512]) if (count !== n) await runSet(`n${Math.min(count, t.pool)}`, 0, Math.min(count, t.pool));
    result.robustness = { set_size: n, sets };
    loadAvg.push(load());
  }
  if (prev) result.environment_first = prev.environment;
  result.environment = { cpu: cpuName(), node: process.version, ort_threads: THREADS, load_average: loadAvg, seconds_total: sec(started), date: new Date().toISOString() };
  return result;
}

// ---------------------------------------------------------------- report

const fmt = (x: number, d = 4) => x.toFixed(d);
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

/** A self-contained SVG: x = relative BOPs (log2), y = metric; front, homogeneous points, float line. */
export function plotSvg(r: { model: string; metric_name: string; points: Point[] }): string {
  const W = 560, H = 360, L = 60, R = 20, T = 30, B = 45;
  const pts = r.points.filter((p) => p.kind !== 'fp32');
  const fl = r.points.find((p) => p.kind === 'fp32')!;
  const xs = pts.map((p) => Math.log2(p.rel_bops));
  const x0 = Math.floor(Math.min(...xs, -1)), x1 = Math.ceil(Math.max(...xs, 2));
  const ys = [...pts.map((p) => p.metric), fl.metric];
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  const pad = Math.max(0.01, (y1 - y0) * 0.08);
  y0 = Math.max(0, y0 - pad);
  y1 = Math.min(1, y1 + pad);
  if (y1 <= y0) y1 = y0 + 0.01;
  const X = (v: number) => L + ((Math.log2(v) - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v: number) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const o: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  o.push(`<text x="${W / 2}" y="16" text-anchor="middle" font-size="13">${esc(r.model)}: ${esc(r.metric_name)} against relative BOPs (W8A8 = 1)</text>`);
  for (let e = x0; e <= x1; e++) {
    const x = X(2 ** e);
    o.push(`<line x1="${x}" y1="${T}" x2="${x}" y2="${H - B}" stroke="#ddd"/><text x="${x}" y="${H - B + 14}" text-anchor="middle">${2 ** e}</text>`);
  }
  for (let k = 0; k <= 5; k++) {
    const v = y0 + ((y1 - y0) * k) / 5;
    o.push(`<line x1="${L}" y1="${Y(v)}" x2="${W - R}" y2="${Y(v)}" stroke="#eee"/><text x="${L - 4}" y="${Y(v) + 4}" text-anchor="end">${v.toFixed(3)}</text>`);
  }
  o.push(`<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle">relative BOPs (log scale)</text>`);
  o.push(`<line x1="${L}" y1="${Y(fl.metric)}" x2="${W - R}" y2="${Y(fl.metric)}" stroke="#888" stroke-dasharray="5,4"/><text x="${W - R - 2}" y="${Y(fl.metric) - 4}" text-anchor="end" fill="#555">float ${fl.metric.toFixed(3)}</text>`);
  const front = pts.filter((p) => p.kind === 'mixed' && p.budget !== undefined).sort((a, b) => a.rel_bops - b.rel_bops);
  if (front.length) o.push(`<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="${front.map((p) => `${X(p.rel_bops).toFixed(1)},${Y(p.metric).toFixed(1)}`).join(' ')}"/>`);
  for (const p of front) o.push(`<circle cx="${X(p.rel_bops).toFixed(1)}" cy="${Y(p.metric).toFixed(1)}" r="4" fill="#1f77b4"/>`);
  for (const p of pts.filter((q) => q.max_drop !== undefined)) o.push(`<path d="M${X(p.rel_bops).toFixed(1)},${(Y(p.metric) - 6).toFixed(1)} l5,9 l-10,0 z" fill="none" stroke="#2ca02c" stroke-width="1.5"/>`);
  for (const p of pts.filter((q) => q.kind === 'homogeneous')) {
    const x = X(p.rel_bops), y = Y(p.metric);
    o.push(`<rect x="${(x - 5).toFixed(1)}" y="${(y - 5).toFixed(1)}" width="10" height="10" fill="#d62728"/><text x="${(x + 8).toFixed(1)}" y="${(y + 12).toFixed(1)}" fill="#d62728">${p.label}</text>`);
  }
  o.push(`<g transform="translate(${L + 8},${T + 8})"><circle cx="5" cy="0" r="4" fill="#1f77b4"/><text x="14" y="4">mixed front (budget points)</text><rect x="0" y="10" width="10" height="10" fill="#d62728"/><text x="14" y="19">homogeneous</text><path d="M5,26 l5,9 l-10,0 z" fill="none" stroke="#2ca02c"/><text x="14" y="35">max-drop answers</text></g>`);
  o.push('</svg>');
  return o.join('\n') + '\n';
}

const MODEL_ARG: Record<string, string> = { mobilenet_v1_0: 'mobilenet', 'mobilenet_v1_0.75': 'mobilenet', ppocr_cls: 'cls', ppocrv4_det: 'det', ppocrv4_rec: 'rec', minilm_l3: 'minilm' };

function pointRows(points: Point[], name: string): string[] {
  const rows = [`| point | kind | rel. BOPs | weights (bytes) | ${name} | std. error | seconds |`, '|---|---|---:|---:|---:|---:|---:|'];
  for (const p of points) rows.push(`| ${p.label} | ${p.kind} | ${p.kind === 'fp32' ? '-' : fmt(p.rel_bops, 3)} | ${p.size_bytes || '-'} | ${fmt(p.metric)} | ${p.noise !== undefined ? fmt(p.noise) : ''} | ${p.seconds} |`);
  return rows;
}

export function renderResults(): string {
  const files = fs.existsSync(RESULTS) ? fs.readdirSync(RESULTS).filter((f) => f.endsWith('.json')).sort() : [];
  const order = ['mobilenet_v1_0.75', 'ppocr_cls', 'ppocrv4_det', 'ppocrv4_rec', 'minilm_l3'];
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const rs = files.map((f) => JSON.parse(fs.readFileSync(path.join(RESULTS, f), 'utf8'))).sort((a: any, b: any) => order.indexOf(a.model) - order.indexOf(b.model));
  const o: string[] = ['# Trade-off benchmark: mixed precision against every homogeneous configuration', ''];
  o.push('Generated by `npm run bench -- tradeoff` (bench/tradeoff.ts) from `bench/results/*.json`; do not edit by hand (notes: `bench/results/notes.md`, appended below).');
  o.push('');
  o.push('Every metric is the exported `model.qdq.onnx` (or the float model) run in onnxruntime-node with `graphOptimizationLevel: \'disabled\'`, on evaluation data disjoint from the calibration data. Relative BOPs: the default profile\'s cost model, all-W8A8 = 1 (the float line is drawn at the top, it has no BOPs on this scale). Homogeneous points are what `quantize()` exports for the named configuration (its default data-aware rounding, each layer on its own, as the search rounds); mixed points are the search\'s front (its session: per-layer data-aware rounding, phase 1, phase 2 in the paper\'s SQNR order) at each budget of W8A8\'s BOPs (the costliest front point within the budget), and the max-drop answers are the search\'s binary search over that front with the metric measured on the evaluation data. "std. error" is the standard error of the mean metric over the evaluation samples; differences below about two of them are noise.');
  o.push('');
  for (const r of rs) {
    const env = r.environment ?? {};
    const arg = MODEL_ARG[r.model] ?? r.model;
    o.push(`## ${r.model}`, '', `Task: ${r.task}. Metric \`${r.metric_name}\`, metric_noise (std. error of the float metric) ${r.metric_noise}.`, '');
    o.push(`Reproduce: \`npm run build:ts && npm run bench -- tradeoff ${arg}\`${r.compare ? `, then \`npm run bench -- tradeoff ${arg} --add ${r.compare.ranges ? '--compare' : '--compare-order'}\`` : ''}${r.robustness ? ` and \`... ${arg} --add --robust\`` : ''} (writes bench/results/${r.model}.json). Ran ${env.date ?? '?'} on ${env.cpu ?? '?'} (2 cores shared with other jobs), load average ${(env.load_average ?? []).join(' / ')}; ${env.seconds_total ?? '?'} s in all; phase 1 ${r.timing?.phase1_s} s (${r.timing?.phase1_entries} entries, ${r.timing?.phase1_reused} reused from the cache), the search's calibration ${r.timing?.calibration_s} s, quantize()'s ${r.timing?.quantize_calibration_s} s, on ${r.calib_samples} calibration samples. "seconds" per point: export and ORT evaluation.`, '');
    o.push(...pointRows(r.points, r.metric_name), '');
    o.push(`![${r.model}](results/${r.model}.svg)`, '');
    if (r.dominance) {
      o.push('Is every homogeneous point matched (within metric_noise) or beaten by a mixed point at no more BOPs?', '', '| homogeneous | rel. BOPs | metric | best mixed at <= BOPs | its rel. BOPs | its metric | matched |', '|---|---:|---:|---|---:|---:|---|');
      for (const d of r.dominance) o.push(`| ${d.homogeneous} | ${fmt(d.rel_bops, 3)} | ${fmt(d.metric)} | ${d.best_mixed ?? '-'} | ${d.best_mixed_rel_bops !== null ? fmt(d.best_mixed_rel_bops, 3) : '-'} | ${d.best_mixed_metric !== null ? fmt(d.best_mixed_metric) : '-'} | ${d.matched ? 'yes' : '**no**'} |`);
      o.push('');
    }
    if (r.compare) {
      const table = (title: string, a: string, pa: Point[], b: string, pb: Point[]) => {
        o.push(`${title}:`, '', `| point | ${a} rel. BOPs | ${a} ${r.metric_name} | ${b} rel. BOPs | ${b} ${r.metric_name} |`, '|---|---:|---:|---:|---:|');
        for (const p of pa) {
          const q = pb.find((x) => x.label === p.label);
          o.push(`| ${p.label} | ${fmt(p.rel_bops, 3)} | ${fmt(p.metric)} | ${q ? fmt(q.rel_bops, 3) : '-'} | ${q ? fmt(q.metric) : '-'} |`);
        }
        const wins = pa.filter((p) => p.budget !== undefined).map((p) => [p, pb.find((x) => x.label === p.label)] as const).filter(([, q]) => q);
        const aw = wins.filter(([p, q]) => p.metric > q!.metric + r.metric_noise).length, bw = wins.filter(([p, q]) => q!.metric > p.metric + r.metric_noise).length;
        o.push('', `Budgets where one is better by more than metric_noise: ${a} ${aw}, ${b} ${bw}, of ${wins.length}.`, '');
      };
      table('Phase-2 order (same phase 1)', 'sqnr', r.compare.order.sqnr, 'efficiency', r.compare.order.efficiency);
      if (r.auto_order) o.push(`The search's default order (\`auto\`: the front with the better predicted SQNR) picks **${r.auto_order}** on this model.`, '');
      if (r.compare.ranges) table('Range setting (weights and activations; own calibration and phase 1)', 'mse', r.compare.ranges.mse, 'minmax', r.compare.ranges.minmax);
      else o.push('Range setting: not run for this model (see the notes).', '');
    }
    if (r.robustness) {
      o.push(`Robustness to the calibration data (front at the budgets and the max-drop 1 answer; disjoint sets of ${r.robustness.set_size} samples, and other sample counts from offset 0):`, '');
      const labels: string[] = r.robustness.sets[0].points.map((p: Point) => p.label);
      o.push(`| set | samples | ${labels.join(' | ')} |`, `|---|---:|${labels.map(() => '---:').join('|')}|`);
      for (const s of r.robustness.sets) o.push(`| ${s.label} | ${s.count} | ${labels.map((l) => { const p = s.points.find((x: Point) => x.label === l); return p ? `${fmt(p.metric, 3)} @${fmt(p.rel_bops, 3)}` : '-'; }).join(' | ')} |`);
      o.push('');
    }
  }
  const notes = path.join(RESULTS, 'notes.md');
  if (fs.existsSync(notes)) o.push(fs.readFileSync(notes, 'utf8'));
  return o.join('\n') + '\n';
}

export async function tradeoffBench(argv: string[], log: (s: string) => void): Promise<Record<string, unknown>[]> {
  const flag = (k: string) => argv.includes(k);
  const ei = argv.indexOf('--eval');
  const evalLimit = ei >= 0 ? Number(argv[ei + 1]) : undefined;
  const names = argv.filter((a, i) => !a.startsWith('--') && argv[i - 1] !== '--eval');
  const which = names.length ? names : Object.keys(TASKS);
  for (const w of which) if (!TASKS[w]) throw new Error(`unknown model '${w}' (available: ${Object.keys(TASKS).join(', ')})`);
  if (!fs.existsSync(SHARED)) {
    log(`tradeoff: ${SHARED} is absent: skipping (the models and data of ../shared/ are needed)`);
    return [];
  }
  const ort = loadOrt();
  fs.mkdirSync(RESULTS, { recursive: true });
  const out: Record<string, unknown>[] = [];
  // MiniLM last (int64 inputs)
  for (const w of [...which].sort((a, b) => (a === 'minilm' ? 1 : 0) - (b === 'minilm' ? 1 : 0))) {
    const t = TASKS[w](ort, evalLimit);
    if (!fs.existsSync(t.file)) throw new Error(`${t.file} is missing (../shared/ is present, so it should be there)`);
    const file = path.join(RESULTS, `${t.model}.json`);
    const since = Date.now();
    // --add --wait: the main run of this model is still running; wait for its results file
    const prev = flag('--add')
      ? async () => {
          while (flag('--wait') && (!fs.existsSync(file) || fs.statSync(file).mtimeMs < since)) await new Promise((res) => setTimeout(res, 10000));
          return JSON.parse(fs.readFileSync(file, 'utf8'));
        }
      : undefined;
    const r = await benchModel(ort, t, log, { compare: flag('--compare') ? 'all' : flag('--compare-order') ? 'order' : false, robust: flag('--robust'), prev });
    if (evalLimit !== undefined) r.eval_limit = evalLimit;
    if (evalLimit !== undefined && !flag('--write')) log(`  (--eval ${evalLimit}: a development run, not written to ${file}; --write to write it)`);
    else {
      fs.writeFileSync(file, JSON.stringify(r, null, 1) + '\n');
      fs.writeFileSync(path.join(RESULTS, `${t.model}.svg`), plotSvg(r as never));
      fs.writeFileSync(path.join(ROOT, 'bench', 'RESULTS.md'), renderResults());
      log(`  wrote ${path.relative(ROOT, file)} and bench/RESULTS.md`);
    }
    out.push(r);
  }
  return out;
}

if (require.main === module) {
  const argv = process.argv.slice(2);
  const json = argv.includes('--json');
  tradeoffBench(argv, json ? (s) => process.stderr.write(s + '\n') : (s) => process.stdout.write(s + '\n'))
    .then((r) => json && process.stdout.write(JSON.stringify(r) + '\n'))
    .catch((e) => {
      console.error(e);
      process.exitCode = 1;
    });
}
