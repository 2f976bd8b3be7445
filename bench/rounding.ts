/**
 * Weight rounding and range-setting benchmark:
 * `npm run bench -- rounding [mobilenet] [cls] [minilm] [--eval N] [--ranges] [--no-sequential]`
 *
 * For each model, calibrated on its calibration split and measured on held-out data against
 * the float model (SQNR of the output in dB; MiniLM: cosine of the mean-pooled sentence
 * embedding), side by side:
 * - round-to-nearest (the reference), per-layer data-aware rounding (the default: GPTQ with
 *   bias correction, kept per output channel only where it measured a lower output error on
 *   the calibration statistics than nearest) and sequential data-aware rounding (`--sequential`);
 *   printed as differences to nearest, with how many weights kept the data-aware result;
 * - the time of the layer statistics and of all rounding per bit-width;
 * - with `--ranges` (MobileNetV1 and PP-OCR cls): activation ranges min-max against MSE per
 *   bit-width, nearest rounding, to choose the range method per bit-width.
 *
 * MobileNetV1: 128 even-class ImageNet samples, evaluated on the first N (default 200)
 * odd-class ones (also top-1). PP-OCR cls: text lines 0-199, evaluated on 200-(200+N).
 * MiniLM: the 128 `calib_*` rows, evaluated on the first N `eval_doc_*` rows.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Model, Tensor } from '../src/model';
import { native } from '../src/native';
import { openDataSource, readLabels } from '../src/data';
import { argmaxRows } from '../src/eval/metrics';
import { readNpy } from '../src/npy';
import { loadBitConfig } from '../src/quant/config';
import { Batches, rangePolicy } from '../src/quant/calibrate';
import { buildQdqGraph } from '../src/quant/qdq';
import { Calibrated, calibrate, encodingsFor, prepareWeights, quantize, QuantizeOptions } from '../src/quant/quantize';
import { RoundingOptions } from '../src/quant/rounding';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');

type Feed = Record<string, Tensor>;

interface Setup {
  name: string;
  model: Model;
  calib: Batches;
  eval: Feed[];
  /** Agreement of a quantized model's outputs with the float model's on the eval feeds. */
  agreement: (m: Model) => Promise<number>;
  unit: string;
  top1?: (m: Model) => Promise<number>;
}

export interface RoundingRow {
  model: string;
  config: string;
  variant: string;
  value: number;
  unit: string;
  vs_nearest: number;
  kept_data_aware?: string;
  rounding_s?: number;
  /** `rounding_s` over the float forward pass over the same calibration data. */
  rounding_x_forward?: number;
  top1?: number;
}

/**
 * Seconds of the float forward pass over the calibration batches (the faster of two runs), and
 * of reading the batches once (decoding images: the layer statistics' pass includes it).
 */
async function forwardSeconds(s: Setup): Promise<{ fwd: number; load: number }> {
  const tl = Date.now();
  const feeds = await collect(s.calib);
  const load = (Date.now() - tl) / 1000;
  let best = Infinity;
  for (let k = 0; k < 2; k++) {
    const t0 = Date.now();
    for (const f of feeds) await s.model.run(f);
    best = Math.min(best, (Date.now() - t0) / 1000);
  }
  return { fwd: best, load };
}

function sqnrOver(ref: Tensor[], got: Tensor[]): number {
  let s = 0, n = 0;
  ref.forEach((r, b) => {
    for (let i = 0; i < r.data.length; i++) {
      s += r.data[i] * r.data[i];
      n += (r.data[i] - got[b].data[i]) ** 2;
    }
  });
  return n === 0 ? 200 : 10 * Math.log10(s / n);
}

async function collect(b: Batches, limit = Infinity): Promise<Feed[]> {
  const out: Feed[] = [];
  let n = 0;
  for await (const x of b()) {
    if (n >= limit) break;
    out.push(x);
    n += Object.values(x)[0].shape[0];
  }
  return out;
}

async function outputs(m: Model, feeds: Feed[], name: string): Promise<Tensor[]> {
  const r: Tensor[] = [];
  for (const f of feeds) r.push((await m.run(f))[name]);
  return r;
}

async function mobilenet(nEval: number): Promise<Setup> {
  const images = path.join(SHARED, 'data', 'imagenet-samples', 'images');
  const labels = readLabels(path.join(SHARED, 'data', 'imagenet-samples', 'labels.tsv'));
  if (labels.kind !== 'class') throw new Error('labels.tsv: expected classes');
  const calib = await openDataSource(images, { preset: 'imagenet-tf', select: 'even', limit: 128, batchSize: 32 });
  const ev = await openDataSource(images, { preset: 'imagenet-tf', select: 'odd', limit: nEval, batchSize: 50 });
  const evalFeeds: Feed[] = [];
  const truth: number[] = [];
  for await (const b of ev.batchesWithInfo()) {
    evalFeeds.push(b.inputs);
    for (const f of b.names) truth.push(labels.byFile.get(f) as number);
  }
  const model = Model.fromFile(path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx'));
  const out = model.outputNames[0];
  const ref = await outputs(model, evalFeeds, out);
  return {
    name: 'mobilenet_v1_0.75',
    model,
    calib: () => calib.batches(),
    eval: evalFeeds,
    unit: 'dB',
    agreement: async (m) => sqnrOver(ref, await outputs(m, evalFeeds, out)),
    top1: async (m) => {
      let hit = 0, i = 0;
      for (const t of await outputs(m, evalFeeds, out)) for (const p of argmaxRows(t)) hit += +(p === truth[i++]);
      return hit / i;
    },
  };
}

async function cls(nEval: number): Promise<Setup> {
  const dir = path.join(SHARED, 'data', 'textlines', 'images');
  const o = { preset: 'paddleocr-cls' as const, inputName: 'x', batchSize: 32 };
  const calib = await openDataSource(dir, { ...o, range: [0, 200] as [number, number] });
  const ev = await openDataSource(dir, { ...o, range: [200, 200 + nEval] as [number, number] });
  const model = Model.fromFile(path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
  const evalFeeds = await collect(() => ev.batches());
  const out = model.outputNames[0];
  const ref = await outputs(model, evalFeeds, out);
  return { name: 'ppocr_cls', model, calib: () => calib.batches(), eval: evalFeeds, unit: 'dB', agreement: async (m) => sqnrOver(ref, await outputs(m, evalFeeds, out)) };
}

async function minilm(nEval: number): Promise<Setup> {
  const dir = path.join(SHARED, 'data', 'textpairs');
  const load = (f: string) => {
    const t = readNpy(path.join(dir, f));
    return { shape: t.shape, data: Float32Array.from(t.data as ArrayLike<number>) };
  };
  const split = (ids: Tensor, mask: Tensor, rows: number, b: number): Feed[] => {
    const L = ids.shape[1];
    const out: Feed[] = [];
    for (let i = 0; i < rows; i += b) {
      const n = Math.min(b, rows - i);
      out.push({ input_ids: { shape: [n, L], data: ids.data.subarray(i * L, (i + n) * L) }, attention_mask: { shape: [n, L], data: mask.data.subarray(i * L, (i + n) * L) } });
    }
    return out;
  };
  const cIds = load('calib_input_ids.npy'), cMask = load('calib_attention_mask.npy');
  const eIds = load('eval_doc_input_ids.npy'), eMask = load('eval_doc_attention_mask.npy');
  const calibFeeds = split(cIds, cMask, cIds.shape[0], 32);
  const evalFeeds = split(eIds, eMask, Math.min(nEval, eIds.shape[0]), 50);
  const model = Model.fromFile(path.join(SHARED, 'models', 'paraphrase-MiniLM-L3-v2.onnx'));
  const out = 'onnx::Shape_422';
  // mean of the last hidden state over the attention mask
  const embed = async (m: Model): Promise<Float64Array[]> => {
    const e: Float64Array[] = [];
    for (const f of evalFeeds) {
      const h = (await m.run(f))[out];
      const [n, L, H] = h.shape;
      for (let r = 0; r < n; r++) {
        const v = new Float64Array(H);
        for (let t = 0; t < L; t++) if (f.attention_mask.data[r * L + t]) for (let j = 0; j < H; j++) v[j] += h.data[(r * L + t) * H + j];
        e.push(v);
      }
    }
    return e;
  };
  const ref = await embed(model);
  return {
    name: 'minilm_l3',
    model,
    calib: async function* () {
      yield* calibFeeds;
    },
    eval: evalFeeds,
    unit: 'cos',
    agreement: async (m) => {
      const got = await embed(m);
      let c = 0;
      got.forEach((g, i) => {
        let d = 0, a = 0, b = 0;
        for (let j = 0; j < g.length; j++) {
          d += g[j] * ref[i][j];
          a += ref[i][j] ** 2;
          b += g[j] ** 2;
        }
        c += d / Math.sqrt(a * b);
      });
      return c / got.length;
    },
  };
}

/** A configuration name; `W8` alone: weights only, activations left float. */
function configOf(name: string) {
  const weightsOnly = /^W\d+$/.test(name);
  return { config: loadBitConfig(weightsOnly ? `${name}A8` : name), weightsOnly };
}

async function quantized(cal: Calibrated, name: string): Promise<Model> {
  const { config, weightsOnly } = configOf(name);
  const q = await quantize(cal, config);
  if (!weightsOnly) return Model.fromGraph(q.graph);
  const enc = encodingsFor(cal, config);
  enc.activations.clear();
  return Model.fromGraph(buildQdqGraph(cal.model.graph, enc));
}

function keptOf(cal: Calibrated, bits: number, sequential: boolean): string {
  const c = cal.rounder!.choices().filter((x) => x.bits === bits && x.sequential === sequential);
  const all = c.filter((x) => x.kept === 'gptq').length;
  const mixed = c.filter((x) => x.kept === 'mixed').length;
  return `${all} all, ${mixed} mixed, ${c.length - all - mixed} none of ${c.length}`;
}

async function roundingRows(s: Setup, configs: string[], log: (l: string) => void, sequential: boolean): Promise<RoundingRow[]> {
  const rows: RoundingRow[] = [];
  const calN = await calibrate(s.model, s.calib, { rounding: 'nearest' });
  const { fwd, load } = await forwardSeconds(s);
  const t0 = Date.now();
  const calG = await calibrate(s.model, s.calib, { rounding: 'gptq' });
  const statsS = calG.rounder!.statsSeconds;
  log(`${s.name}: float forward pass over the calibration data ${fwd.toFixed(2)} s; calibration with layer statistics ${((Date.now() - t0) / 1000).toFixed(1)} s, of which layer statistics ${statsS.toFixed(1)} s (${(statsS / fwd).toFixed(1)} x the forward pass; reading the data once, which it includes, ${load.toFixed(2)} s)`);
  let allRounding = statsS;
  for (const name of configs) {
    const bits = configOf(name).config.w;
    const near = await quantized(calN, name);
    const vN = await s.agreement(near);
    const row = (variant: string, value: number, extra: Partial<RoundingRow>) => {
      const r: RoundingRow = { model: s.name, config: name, variant, value: +value.toFixed(s.unit === 'dB' ? 2 : 5), unit: s.unit, vs_nearest: +(value - vN).toFixed(s.unit === 'dB' ? 2 : 5), ...extra };
      rows.push(r);
      log(`| ${s.name} | ${name} | ${variant} | ${r.value} ${s.unit} | ${r.vs_nearest >= 0 ? '+' : ''}${r.vs_nearest} | ${r.kept_data_aware ?? ''} | ${r.rounding_s ?? ''}${r.rounding_x_forward ? ` (${r.rounding_x_forward} x fwd)` : ''} | ${r.top1 ?? ''} |`);
    };
    row('nearest', vN, { top1: s.top1 && +(await s.top1(near)).toFixed(3) });
    // per-layer (the default): the wall time of rounding every weight of this width
    const computedBefore = calG.rounder!.computed;
    const tr = Date.now();
    await prepareWeights(calG, configOf(name).config);
    const sg = calG.rounder!.computed > computedBefore ? (Date.now() - tr) / 1000 : 0;
    allRounding += sg;
    const g = await quantized(calG, name);
    row('per-layer', await s.agreement(g), { kept_data_aware: keptOf(calG, bits, false), rounding_s: +sg.toFixed(2), rounding_x_forward: +(sg / fwd).toFixed(1), top1: s.top1 && +(await s.top1(g)).toFixed(3) });
    if (!sequential) continue;
    // sequential, from the same layer statistics' rounder
    const opts = calG.rounder!.options as RoundingOptions;
    opts.sequential = true;
    const before = calG.rounder!.seconds;
    try {
      const q = await quantized(calG, name);
      const ss = calG.rounder!.seconds - before;
      row('sequential', await s.agreement(q), { kept_data_aware: keptOf(calG, bits, true), rounding_s: +ss.toFixed(1), top1: s.top1 && +(await s.top1(q)).toFixed(3) });
    } finally {
      opts.sequential = false;
    }
  }
  log(`${s.name}: all data-aware rounding (layer statistics and every width above, per-layer) ${allRounding.toFixed(1)} s = ${(allRounding / fwd).toFixed(1)} x the float forward pass (${fwd.toFixed(2)} s)`);
  rows.push({ model: s.name, config: configs.join('+'), variant: 'all data-aware rounding', value: +allRounding.toFixed(2), unit: 's', vs_nearest: 0, rounding_s: +allRounding.toFixed(2), rounding_x_forward: +(allRounding / fwd).toFixed(1) });
  return rows;
}

async function rangeRows(s: Setup, configs: string[], log: (l: string) => void): Promise<RoundingRow[]> {
  const rows: RoundingRow[] = [];
  const cals = new Map<string, Calibrated>();
  for (const act of ['minmax', 'mse'] as const) {
    // 'mse' here is the default policy (MSE where the histogram resolves the step)
    const o: QuantizeOptions = { rounding: 'nearest', actRange: act, weightRange: 'mse' };
    cals.set(act, await calibrate(s.model, s.calib, o));
  }
  const keep = rangePolicy.mseMaxBits;
  for (const name of configs) {
    const vals: Record<string, number> = {};
    vals.minmax = await s.agreement(await quantized(cals.get('minmax')!, name));
    // the MSE search at every width (fresh calibration: ranges are cached per calibration)
    rangePolicy.mseMaxBits = 32;
    try {
      vals.mse = await s.agreement(await quantized(await calibrate(s.model, s.calib, { rounding: 'nearest', actRange: 'mse', weightRange: 'mse' }), name));
    } finally {
      rangePolicy.mseMaxBits = keep;
    }
    vals.default = await s.agreement(await quantized(cals.get('mse')!, name));
    for (const act of ['minmax', 'mse', 'default']) {
      rows.push({ model: s.name, config: name, variant: `acts ${act}`, value: +vals[act].toFixed(2), unit: s.unit, vs_nearest: +(vals[act] - vals.minmax).toFixed(2) });
    }
    log(`| ${s.name} | ${name} | ${vals.minmax.toFixed(2)} | ${vals.mse.toFixed(2)} | ${(vals.mse - vals.minmax).toFixed(2)} | ${vals.default.toFixed(2)} |`);
  }
  return rows;
}

export async function roundingBench(log: (s: string) => void, which: string[], argv: string[]): Promise<RoundingRow[]> {
  if (!fs.existsSync(SHARED)) {
    log('../shared/ is absent: the rounding benchmark needs the shared models and data');
    return [];
  }
  native().setThreads(2);
  const ei = argv.indexOf('--eval');
  const nEval = ei >= 0 ? Number(argv[ei + 1]) : 200;
  const models = which.length ? which : ['mobilenet', 'cls', 'minilm'];
  const rows: RoundingRow[] = [];
  log(`CPU: ${/model name\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? process.arch}, 2 threads`);
  for (const m of models) {
    const s = m === 'mobilenet' ? await mobilenet(nEval) : m === 'cls' ? await cls(nEval) : m === 'minilm' ? await minilm(nEval) : undefined;
    if (!s) throw new Error(`unknown model '${m}' (mobilenet, cls, minilm)`);
    if (argv.includes('--ranges')) {
      log(`| model | config | acts min-max ${s.unit} | acts MSE (histogram search at every width) ${s.unit} | MSE - min-max | default (MSE up to ${rangePolicy.mseMaxBits} bits, min-max above) ${s.unit} |`);
      log('|---|---|---|---|---|---|');
      rows.push(...(await rangeRows(s, ['W8A8', 'W4A8', 'W8A16', 'W16A16'], log)));
      continue;
    }
    log('| model | config | rounding | agreement | vs nearest | weights keeping data-aware (all/mixed/none) | rounding s | top-1 |');
    log('|---|---|---|---|---|---|---|---|');
    rows.push(...(await roundingRows(s, m === 'minilm' ? ['W8', 'W8A8', 'W4A8', 'W8A16'] : ['W8A8', 'W4A8'], log, !argv.includes('--no-sequential'))));
  }
  return rows;
}
