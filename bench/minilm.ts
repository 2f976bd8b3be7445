/**
 * The paper's NLP case (issue 15): paraphrase-MiniLM-L3-v2 on ../shared/data/textpairs,
 * retrieval top-1 of each export measured in onnxruntime-node, side by side with float.
 *
 *   npm run bench -- minilm [--configs W8A8,W8A16,W4A8,W16A16] [--rounding nearest|auto] (default: the tool's, auto) [--eval 500]
 *                           [--checks] [--search [--searches max-bops,max-drop]] [--search-out DIR]
 *                           [--measure DIR|FILE ...]
 *
 * Task (../shared/data/README.md): embed each text by the mean of the last hidden state over
 * its attention mask, L2-normalise, and find each of the 500 evaluation summaries' own
 * description among the 500 descriptions by cosine similarity; top-1. Calibration: the 128
 * `calib_*` rows. For every configuration the exported QDQ model is run in onnxruntime-node
 * with graph optimizations off (QDQ semantics) and with the default options; the hidden-state
 * SQNR of the export against the simulation (optimizations off, the 128 calibration rows) and
 * against float are printed beside top-1, BOPs relative to W8A8 and weight size.
 *
 * `--checks` measures why the W8A8 export differs from the simulation: a MatMul of a
 * DequantizeLinear weight against onnxruntime bit for bit (beside the same MatMul of a float
 * initializer), and how far a 1-ulp change of one weight's scales moves the engine's own W8A8
 * hidden state.
 *
 * `--measure DIR` measures an export written elsewhere (a CLI search's `--out` folder, whose
 * run.json gives BOPs, size and seconds) the same way; `--configs ''` skips the homogeneous rows.
 *
 * `--search` also runs the mixed-precision search through the API twice: `--max-bops 0.75`
 * with the CLI's label-free metric (SQNR of the float outputs) and `--max-drop 0.01` with the
 * retrieval top-1 as the `evaluate` callback (on the simulated model), and measures each
 * selected export in onnxruntime-node the same way.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { openDataSource } from '../src/data';
import { SqnrMeter } from '../src/eval/metrics';
import { Model, Tensor } from '../src/model';
import { readNpy } from '../src/npy';
import { fromOrt, ortFeeds } from '../src/ort';
import { loadBitConfig } from '../src/quant/config';
import { calibrate, DEFAULT_ROUNDING, exportQdq, quantize } from '../src/quant/quantize';
import { Rounding } from '../src/quant/rounding';
import { loadProfile } from '../src/profiles/profile';
import { buildGroups } from '../src/search/groups';
import { CostModel } from '../src/search/cost';
import { search } from '../src/search/search';
import { embedMean, retrievalEvaluate, retrievalTop1 } from '../src/eval/retrieval';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const MODEL = path.join(SHARED, 'models', 'paraphrase-MiniLM-L3-v2.onnx');
const PAIRS = path.join(SHARED, 'data', 'textpairs');
const HIDDEN = 'onnx::Shape_422';

type Batch = Record<string, Tensor>;
type Runner = (b: Batch) => Promise<Tensor>;

function arg(argv: string[], name: string, def: string): string {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
}

/** Rows [from, to) of the ids/mask pair of `split` (calib, eval_query, eval_doc) as batches of `bs`. */
function split(name: string, limit: number, bs = 50): Batch[] {
  const ids = readNpy(path.join(PAIRS, `${name}_input_ids.npy`));
  const mask = readNpy(path.join(PAIRS, `${name}_attention_mask.npy`));
  const [rows, len] = ids.shape;
  const n = Math.min(rows, limit);
  const out: Batch[] = [];
  for (let s = 0; s < n; s += bs) {
    const e = Math.min(n, s + bs);
    out.push({
      input_ids: { shape: [e - s, len], data: ids.data.slice(s * len, e * len) },
      attention_mask: { shape: [e - s, len], data: mask.data.slice(s * len, e * len) },
    });
  }
  return out;
}

async function ortRunner(model: string | Uint8Array, optimize: boolean): Promise<{ run: Runner; release: () => Promise<void> }> {
  const opts = { graphOptimizationLevel: optimize ? 'all' : 'disabled', intraOpNumThreads: 2, interOpNumThreads: 1, logSeverityLevel: 3 } as const;
  const s = typeof model === 'string' ? await ort.InferenceSession.create(model, opts) : await ort.InferenceSession.create(model, opts);
  return { run: async (b) => fromOrt((await s.run(ortFeeds(ort, s, b)))[HIDDEN]), release: () => s.release() };
}

const engineRunner = (m: Model): Runner => async (b) => (await m.run(b))[HIDDEN];

/** Retrieval top-1 of `run` over the evaluation pairs. */
async function top1(run: Runner, queries: Batch[], docs: Batch[]): Promise<number> {
  const embed = async (bs: Batch[]) => {
    const parts: Float32Array[] = [];
    for (const b of bs) parts.push(embedMean(await run(b), b.attention_mask));
    return parts;
  };
  const q = await embed(queries);
  return retrievalTop1(q, await embed(docs), q[0].length / queries[0].attention_mask.shape[0]);
}

/** Hidden-state SQNR (dB) of `test` against `ref` over `batches`. */
async function hiddenSqnr(ref: Runner, test: Runner, batches: Batch[]): Promise<number> {
  const m = new SqnrMeter();
  for (const b of batches) m.add({ h: await ref(b) }, { h: await test(b) });
  return +m.db().toFixed(2);
}

interface Row { config: string; rel_bops: number | null; size_mb: number | null; top1_ort: number; top1_ort_optimized: number; top1_sim?: number; sqnr_export_vs_sim_db?: number; sqnr_vs_float_db: number; seconds?: number }

/** The fraction of outputs of `y = x W` that differ from onnxruntime (optimizations off), W a float initializer or an int8 weight through DequantizeLinear. */
async function gemmCheck(log: (s: string) => void): Promise<void> {
  const { tinyModel, randomData } = await import('../__test__/helpers');
  const K = 384, N = 384, B = 2, L = 64;
  const q = Array.from(randomData(K * N, 3), (v) => Math.round(v * 127));
  const scales = Array.from(randomData(N, 4), (v) => 0.001 + Math.abs(v) * 0.01);
  const wf = q.map((v, i) => Math.fround(v * scales[i % N]));
  const x = Float32Array.from(randomData(B * L * K, 5));
  const cases: [string, Parameters<typeof tinyModel>[0]][] = [
    ['float initializer', { inputs: { x: [B, L, K] }, outputs: { y: null }, inits: { w: { dims: [K, N], values: wf } }, nodes: [{ op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }], opset: 17 }],
    ['int8 through DequantizeLinear', {
      inputs: { x: [B, L, K] }, outputs: { y: null }, opset: 17,
      inits: { wq: { dims: [K, N], type: 3, values: q }, sc: { dims: [N], values: scales }, zp: { dims: [N], type: 3, values: new Array(N).fill(0) } },
      nodes: [{ op: 'DequantizeLinear', inputs: ['wq', 'sc', 'zp'], outputs: ['w'], attrs: { axis: 1 } }, { op: 'MatMul', inputs: ['x', 'w'], outputs: ['y'] }],
    }],
  ];
  for (const [name, spec] of cases) {
    const bytes = tinyModel(spec);
    const ours = (await Model.fromBytes(bytes).run({ x: { shape: [B, L, K], data: x } })).y.data;
    const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 1 });
    const theirs = (await s.run({ x: new ort.Tensor('float32', x, [B, L, K]) })).y.data as Float32Array;
    let d = 0;
    for (let i = 0; i < theirs.length; i++) if (ours[i] !== theirs[i]) d++;
    log(`MatMul [${B},${L},${K}] x [${K},${N}], weight as ${name}: ${d} of ${theirs.length} outputs differ from onnxruntime (${((100 * d) / theirs.length).toFixed(1)}%)`);
  }
}

/** Hidden-state SQNR of the engine's simulation of `q` against itself with the scales of one weight 1 ulp larger. */
async function ulpCheck(graph: Model['graph'], weight: string, calibRows: Batch[], label: string, log: (s: string) => void): Promise<void> {
  const key = `${weight}_scale`;
  const t = graph.consts.get(key);
  if (!t) return log(`${label}: no scale constant ${key}`);
  const d = Float32Array.from(t.data);
  const u = new Uint32Array(d.buffer);
  for (let i = 0; i < u.length; i++) u[i] += 1;
  const consts = new Map(graph.consts);
  consts.set(key, { ...t, data: d });
  const sqnr = await hiddenSqnr(engineRunner(Model.fromGraph(graph)), engineRunner(Model.fromGraph({ ...graph, consts })), calibRows);
  log(`${label}: the ${u.length} scales of ${weight} 1 ulp larger move the simulated hidden state to ${sqnr} dB of itself`);
}

export async function minilmBench(log: (s: string) => void, argv: string[]): Promise<Row[]> {
  if (!fs.existsSync(SHARED)) {
    log('../shared/ is absent: skipping the MiniLM benchmark');
    return [];
  }
  for (const f of [MODEL, path.join(PAIRS, 'calib_input_ids.npy')]) if (!fs.existsSync(f)) throw new Error(`${f} is missing (../shared is present)`);
  const configs = arg(argv, 'configs', 'W8A8,W8A16,W4A8,W16A16').split(',').filter(Boolean);
  const rounding = arg(argv, 'rounding', DEFAULT_ROUNDING) as Rounding;
  const nEval = Number(arg(argv, 'eval', '500'));
  const queries = split('eval_query', nEval), docs = split('eval_doc', nEval), calibRows = split('calib', 128);
  log(`MiniLM-L3: ${nEval} retrieval pairs, 128 calibration rows, rounding ${rounding}, CPU ${os.cpus()[0]?.model ?? process.arch}`);

  const model = Model.fromFile(MODEL);
  const floatOrt = await ortRunner(MODEL, false);
  const rows: Row[] = [];
  const floatTop1 = await top1(floatOrt.run, queries, docs);
  const floatOpt = await ortRunner(MODEL, true);
  rows.push({ config: 'float', rel_bops: null, size_mb: null, top1_ort: floatTop1, top1_ort_optimized: await top1(floatOpt.run, queries, docs), top1_sim: await top1(engineRunner(model), queries, docs), sqnr_vs_float_db: Infinity });
  await floatOpt.release();
  log(`float: top-1 ${floatTop1.toFixed(3)} (onnxruntime, optimizations off), engine ${rows[0].top1_sim!.toFixed(3)}`);

  const calib = await openDataSource({ input_ids: path.join(PAIRS, 'calib_input_ids.npy'), attention_mask: path.join(PAIRS, 'calib_attention_mask.npy') }, { batchSize: 32 });
  const t0 = Date.now();
  const cal = await calibrate(model, () => calib.batches(), { rounding });
  log(`calibration: ${((Date.now() - t0) / 1000).toFixed(1)} s; ${cal.placement.weights.length} weight and ${cal.placement.activations.length} activation quantizers, ${cal.placement.skipped.length} values left float (${cal.placement.skipped.map((s) => s.tensor.replace(/.*\//, '')).join(', ')})`);
  const profile = loadProfile('default');
  const groups = buildGroups(model.graph, cal.placement, profile);
  const cost = new CostModel(model.graph, model.specialize(cal.shapes), cal.placement, groups, profile);

  const measureExport = async (config: string, bytes: Uint8Array, sim: Model, relBops: number | null, size: number | null, seconds?: number) => {
    const off = await ortRunner(bytes, false);
    const on = await ortRunner(bytes, true);
    const row: Row = {
      config,
      rel_bops: relBops === null ? null : +relBops.toFixed(4),
      size_mb: size === null ? null : +(size / 1e6).toFixed(2),
      top1_ort: await top1(off.run, queries, docs),
      top1_ort_optimized: await top1(on.run, queries, docs),
      sqnr_export_vs_sim_db: await hiddenSqnr(engineRunner(sim), off.run, calibRows),
      sqnr_vs_float_db: await hiddenSqnr(floatOrt.run, off.run, calibRows),
      ...(seconds !== undefined ? { seconds } : {}),
    };
    await off.release();
    await on.release();
    rows.push(row);
    log(`${config}: top-1 ${row.top1_ort.toFixed(3)} (default options ${row.top1_ort_optimized.toFixed(3)}), rel BOPs ${row.rel_bops}, ${row.size_mb} MB, hidden SQNR export vs simulation ${row.sqnr_export_vs_sim_db} dB, vs float ${row.sqnr_vs_float_db} dB`);
  };

  const checks = argv.includes('--checks');
  if (checks) await gemmCheck(log);
  for (const name of configs) {
    const bc = loadBitConfig(name);
    const q = await quantize(cal, bc);
    if (checks) await ulpCheck(q.graph, cal.placement.weights.find((w) => w.op === 'MatMul')!.tensor, calibRows, name, log);
    const choice = groups.map(() => ({ a: bc.a, w: bc.w }));
    await measureExport(name, exportQdq(q, cal), Model.fromGraph(q.graph), cost.relBops(choice), cost.sizeBytes(choice));
  }

  // exports written elsewhere (a CLI search's --out folder, or a .onnx file), measured the same way
  for (const given of argv.flatMap((a, i) => (a === '--measure' ? [argv[i + 1]] : []))) {
    const file = fs.statSync(given).isDirectory() ? path.join(given, 'model.qdq.onnx') : given;
    const run = path.join(path.dirname(file), 'run.json');
    const r = fs.existsSync(run) ? JSON.parse(fs.readFileSync(run, 'utf8')) : undefined;
    const bytes = fs.readFileSync(file);
    await measureExport(`${given}`, bytes, Model.fromBytes(bytes), r?.selected?.rel_bops ?? null, r?.selected?.size_bytes ?? null, r?.seconds?.total);
  }

  if (argv.includes('--search')) {
    const outBase = arg(argv, 'search-out', fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-minilm-')));
    const calibration = { input_ids: path.join(PAIRS, 'calib_input_ids.npy'), attention_mask: path.join(PAIRS, 'calib_attention_mask.npy') };
    const retrieval = retrievalEvaluate({ queries, docs, output: HIDDEN });
    const runs: [string, Parameters<typeof search>[0]['target'], boolean][] = [
      ['search --max-bops 0.75 (SQNR metric)', { maxBops: 0.75 }, false],
      ['search --max-drop 0.01 (retrieval evaluate)', { maxDrop: 0.01 }, true],
    ];
    const only = arg(argv, 'searches', 'max-bops,max-drop').split(',');
    for (const [label, target, custom] of runs.filter(([, , c]) => only.includes(c ? 'max-drop' : 'max-bops'))) {
      const out = path.join(outBase, custom ? 'max-drop' : 'max-bops');
      const t = Date.now();
      const r = await search({ model: MODEL, calibration, target, rounding, out, ...(custom ? { evaluate: retrieval } : {}) });
      const secs = +((Date.now() - t) / 1000).toFixed(1);
      log(`${label}: ${secs} s, selected rel BOPs ${r.selected.rel_bops}, metric ${r.selected.metric} (float ${r.float_metric}), phase 1 ${JSON.stringify(r.phase1)}`);
      const bytes = fs.readFileSync(path.join(out, 'model.qdq.onnx'));
      const sim = Model.fromBytes(bytes);
      await measureExport(label, bytes, sim, r.selected.rel_bops, r.selected.size_bytes, secs);
    }
  }
  await floatOrt.release();

  log('\nconfig                                        rel_bops  size_MB  top1_ort  top1_ort_opt  SQNR_export_vs_sim  SQNR_vs_float  seconds');
  for (const r of rows) {
    log(`${r.config.padEnd(46)}${String(r.rel_bops ?? '-').padStart(8)}${String(r.size_mb ?? '-').padStart(9)}${r.top1_ort.toFixed(3).padStart(10)}${r.top1_ort_optimized.toFixed(3).padStart(14)}${String(r.sqnr_export_vs_sim_db ?? '-').padStart(20)}${String(r.sqnr_vs_float_db === Infinity ? '-' : r.sqnr_vs_float_db).padStart(15)}${String(r.seconds ?? '-').padStart(9)}`);
  }
  log(`top-1 ratios to float (onnxruntime, optimizations off): ${rows.slice(1).map((r) => `${r.config} ${(r.top1_ort / floatTop1).toFixed(3)}`).join(', ')}`);
  return rows;
}
