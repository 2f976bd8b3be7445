/** The search: groups, profiles, cost, front, cache and resume after a kill. */
import test from 'ava';
import { execFile, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { Model, MpqError, search } from '../index';
import { encodeNpy, readNpy } from '../src/npy';
import { loadProfile, Profile } from '../src/profiles/profile';
import { placeQuantizers } from '../src/quant/placement';
import { mseRange } from '../src/quant/ranges';
import { CostModel } from '../src/search/cost';
import { buildGroups } from '../src/search/groups';
import { buildFront } from '../src/search/pareto';
import { OCR, randomData, ROOT, tinyModel } from './helpers';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-search-'));
const rnd = (dims: number[], seed: number) => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed)) });

/** x -> Conv(w1) -> Relu -> r1 -> Conv(w2) -> c2 ; r1 also -> Conv(w3) -> c3 ; Add(c2, c3) -> Softmax -> y */
function twoBranchModel(): Model {
  return Model.fromBytes(twoBranchBytes());
}

/** The ONNX bytes of {@link twoBranchModel}, with batch dimension `batch`. */
function twoBranchBytes(batch: number | string = 1, w3 = 'w3'): Uint8Array {
  return tinyModel({
    inputs: { x: [batch, 3, 8, 8] },
    outputs: { y: null },
    inits: { w1: rnd([4, 3, 3, 3], 1), w2: rnd([4, 4, 1, 1], 2), [w3]: rnd([4, 4, 1, 1], 3) },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'], attrs: { pads: [1, 1, 1, 1] } },
      { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
      { op: 'Conv', inputs: ['r1', 'w2'], outputs: ['c2'] },
      { op: 'Conv', inputs: ['r1', w3], outputs: ['c3'] },
      { op: 'Add', inputs: ['c2', 'c3'], outputs: ['s'] },
      { op: 'Flatten', inputs: ['s'], outputs: ['f'] },
      { op: 'Softmax', inputs: ['f'], outputs: ['y'] },
    ],
  });
}

function setup(profile: Profile = loadProfile('default')) {
  const m = twoBranchModel();
  const spec = m.specialize({});
  const isFloat = (v: string) => spec.values.get(v)?.dtype === 'float' && !spec.values.get(v)?.value;
  const placement = placeQuantizers(m.graph, isFloat);
  const groups = buildGroups(m.graph, placement, profile);
  return { m, spec, placement, groups, cost: new CostModel(m.graph, spec, placement, groups, profile) };
}

test('groups: an activation joins the weights of every op that reads it; conv+relu is one kernel', (t) => {
  const { groups, placement } = setup();
  t.deepEqual(placement.activations.map((a) => a.tensor), ['x', 'r1', 'c2', 'c3', 's']);
  const byAct = Object.fromEntries(groups.map((g) => [g.act, g.weights.sort()]));
  t.deepEqual(byAct.x, ['w1']);
  t.deepEqual(byAct.r1, ['w2', 'w3']);
  t.deepEqual(byAct.c2, []);
  // Flatten passes the encoding of s through to the Softmax that reads it
  const s = groups.find((g) => g.act === 's')!;
  t.true(s.ops.includes('Softmax'));
  t.deepEqual(s.candidates.map((c) => `W${c.w}A${c.a}`), ['W4A8', 'W8A8', 'W8A16', 'W16A16']);
});

test('profile restrictions: a group whose ops share no candidate is an error naming them', (t) => {
  const p: Profile = { name: 'narrow', candidates: [{ a: 8, w: 8 }, { a: 16, w: 16 }], ops: { Softmax: { a: [16] }, Add: { a: [8] } } };
  const e = t.throws(() => setup(p), { instanceOf: MpqError });
  t.regex(e!.message, /ops Add, Softmax|ops Add.*Softmax/);
});

test('profile validation names the field', (t) => {
  const dir = tmp();
  const f = path.join(dir, 'p.json');
  fs.writeFileSync(f, JSON.stringify({ name: 'x', candidates: [{ a: 8, w: 99 }], bogus: 1 }));
  const e = t.throws(() => loadProfile(f), { instanceOf: MpqError });
  t.regex(e!.message, /candidates\[0\]\.w: must be <= 16/);
  t.regex(e!.message, /additional properties 'bogus'/);
});

test('cost: rel_bops is 1 at W8A8, 0.5 at W4A8, 4 at W16A16; memory follows weight bits', (t) => {
  const { groups, cost } = setup();
  const all = (a: number, w: number) => groups.map(() => ({ a, w }));
  t.is(cost.relBops(all(8, 8)), 1);
  t.is(cost.relBops(all(8, 4)), 0.5);
  t.is(cost.relBops(all(16, 16)), 4);
  const params = 4 * 3 * 9 + 16 + 16;
  t.is(cost.sizeBytes(all(8, 8)), params);
  t.is(cost.sizeBytes(all(8, 4)), params / 2);
});

test('front: starts all-highest, cost never rises, no group ever gains bits', (t) => {
  const { groups, cost } = setup();
  const entries = groups.flatMap((g) => g.candidates.slice(0, -1).map((c, k) => ({ group: g.id, candidate: c, sqnr_db: 10 + g.id * 3 + k * 5, cached: false })));
  for (const order of ['sqnr', 'efficiency'] as const) {
    const front = buildFront(entries, groups, cost, order);
    t.is(front[0].rel_bops, 4);
    for (let i = 1; i < front.length; i++) {
      t.true(front[i].rel_bops <= front[i - 1].rel_bops + 1e-12);
      front[i].choice.forEach((c, gi) => t.true(c.a * c.w <= front[i - 1].choice[gi].a * front[i - 1].choice[gi].w));
    }
    t.is(front[front.length - 1].rel_bops, 0.5);
  }
});

test('MSE range clips a long tail and keeps a uniform range', (t) => {
  const uniform = new Float64Array(1000).fill(10);
  const [lo, hi] = mseRange(uniform, 0, 10, 8);
  t.is(lo, 0);
  t.true(hi > 9.9);
  const tail = new Float64Array(1000);
  tail.fill(1000, 0, 100);
  tail[999] = 1;
  const [, hi2] = mseRange(tail, 0, 100, 4);
  t.true(hi2 < 50, `hi ${hi2}`);
});

/** `n` seeded random inputs of the PP-OCR cls model as a calibration .npy in a fresh folder, and the node arguments of `mpq search` on it into DIR/out. */
function clsSearch(n: number, seed: number, flags: string[]): { out: string; args: string[] } {
  const dir = tmp();
  const calib = path.join(dir, 'calib.npy');
  fs.writeFileSync(calib, encodeNpy([n, 3, 48, 192], randomData(n * 3 * 48 * 192, seed)));
  const out = path.join(dir, 'out');
  const model = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
  return { out, args: [path.join(ROOT, 'bin', 'mpq.js'), 'search', model, '--calib', calib, '--batch', '4', ...flags, '--out', out, '--json'] };
}

test.serial('a search killed during phase 1 resumes from its cache and leaves no partial file', async (t) => {
  const { out, args } = clsSearch(8, 5, ['--max-bops', '0.75']);
  const cacheFile = path.join(out, 'cache', 'sensitivity.jsonl');
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  const lines = () => (fs.existsSync(cacheFile) ? fs.readFileSync(cacheFile, 'utf8').split('\n').filter(Boolean).length : 0);
  const started = Date.now();
  while (lines() < 1 && Date.now() - started < 120_000) await new Promise((r) => setTimeout(r, 100));
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const before = lines();
  t.true(before >= 1, 'phase 1 wrote results before the kill');
  t.false(fs.existsSync(path.join(out, 'run.json')), 'killed before the end');
  const r = await promisify(execFile)(process.execPath, args, { maxBuffer: 64 << 20 });
  const run = JSON.parse(r.stdout);
  t.true(run.phase1.reused >= before, `reused ${run.phase1.reused} of ${before} cached`);
  t.is(run.phase1.reused + run.phase1.computed, run.phase1.total);
  const left = fs.readdirSync(out).filter((f) => f.endsWith('.tmp'));
  t.deepEqual(left, []);
  for (const f of ['model.qdq.onnx', 'encodings.json', 'pareto.json', 'sensitivity.json', 'report.html', 'summary.md', 'run.json']) t.true(fs.existsSync(path.join(out, f)), f);
  const pareto = JSON.parse(fs.readFileSync(path.join(out, 'pareto.json'), 'utf8'));
  t.true(pareto.points.length >= 10);
  t.true(run.selected.rel_bops <= 0.75);
  // the export checked in onnxruntime both ways, recorded with a verdict consistent with its figures
  const v = run.verification;
  t.is(v.faithful, v.optimized.agreement >= v.limits.agreement && v.optimized.sqnr_db >= v.limits.sqnr_db);
  t.is(v.advice !== undefined, !v.faithful);
  t.regex(fs.readFileSync(path.join(out, 'report.html'), 'utf8'), new RegExp(`faithful: ${v.faithful}`));
  t.regex(fs.readFileSync(path.join(out, 'summary.md'), 'utf8'), new RegExp(`faithful: ${v.faithful}`));
});

test.serial('the search reports for its selected point the metric that `mpq quantize --config` of its config.json scores on the same data; a rerun rounds nothing', async (t) => {
  // PP-OCR cls with data-aware rounding (the default): the search scores points in its
  // simulation with per-layer rounded weights; `quantize` rounds again from its own calibration
  const dir = tmp();
  const calib = path.join(dir, 'calib.npy');
  const n = 8;
  fs.writeFileSync(calib, encodeNpy([n, 3, 48, 192], randomData(n * 3 * 48 * 192, 17)));
  const model = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
  const float = Model.fromFile(model);
  const x = { x: { shape: [n, 3, 48, 192], data: Float32Array.from(readNpy(calib).data as ArrayLike<number>) } };
  const ref = (await float.run(x))[float.outputNames[0]];
  // SQNR of the output against float: a continuous metric, so that equal means the same weights
  const evaluate = async (m: { run: Model['run'] }) => {
    const got = (await m.run(x))[float.outputNames[0]];
    let s = 0, e = 0;
    ref.data.forEach((v, i) => ((s += v * v), (e += (v - got.data[i]) ** 2)));
    return 10 * Math.log10(s / e);
  };
  const out = path.join(dir, 'out');
  const opts = { model, calibration: calib, data: { batchSize: 4 }, target: { maxBops: 0.75 }, evaluate, out };
  const run = await search(opts);
  t.true(run.rounding.computed > 0, 'the default rounding is data-aware');
  t.true(Number.isFinite(run.selected.metric));
  const q = path.join(dir, 'q');
  await promisify(execFile)(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), 'quantize', model, '--calib', calib, '--batch', '4', '--config', path.join(out, 'config.json'), '--out', q, '--quiet'], { maxBuffer: 64 << 20 });
  const exported = await evaluate(Model.fromFile(path.join(q, 'model.qdq.onnx')));
  t.log(`selected point: ${run.selected.metric} dB in the search, ${exported} dB from quantize --config; ${run.rounding.computed} weights rounded`);
  t.true(Math.abs(exported - run.selected.metric) <= 1e-6, `search reported ${run.selected.metric} dB, quantize --config scores ${exported} dB`);
  // the search's own export is the same model
  t.true(Math.abs((await evaluate(Model.fromFile(path.join(out, 'model.qdq.onnx')))) - run.selected.metric) <= 1e-6);
  const again = await search(opts);
  t.is(again.rounding.computed, 0, 'a second search with the same data and options does no rounding');
  t.is(again.selected.metric, run.selected.metric);
});

test.serial('a search with --profile ort-cpu exports 8-bit weights in [-63, 63] and records the profile and the verification', async (t) => {
  const { out, args } = clsSearch(4, 6, ['--profile', 'ort-cpu', '--rounding', 'nearest', '--max-bops', '1.5']);
  const run = JSON.parse((await promisify(execFile)(process.execPath, args, { maxBuffer: 64 << 20 })).stdout);
  t.is(run.options.profile, 'ort-cpu');
  t.is(run.verification.samples, 4);
  const enc = JSON.parse(fs.readFileSync(path.join(out, 'encodings.json'), 'utf8'));
  const weights = Object.entries(enc.param_encodings) as [string, { bitwidth: number; scale: number; max: number }[]][];
  t.true(weights.length > 10);
  for (const [name, e] of weights) {
    t.is(e[0].bitwidth, 8, name);
    t.is(enc.mpq.range_bits[name], 7, name);
    t.true(Math.abs(e[0].max - 63 * e[0].scale) <= 1e-6 * e[0].max, name);
  }
  t.is(JSON.parse(fs.readFileSync(path.join(out, 'quantize.json'), 'utf8')).profile, 'ort-cpu');
});

test('profile scheme values the quantizer does not implement are refused, not ignored', (t) => {
  const f = path.join(tmp(), 'p.json');
  fs.writeFileSync(f, JSON.stringify({ name: 'x', candidates: [{ a: 8, w: 8 }], scheme: { per_channel: false } }));
  const e = t.throws(() => loadProfile(f), { instanceOf: MpqError });
  t.regex(e!.message, /scheme\.per_channel = false is not implemented/);
  const ort = loadProfile('ort-cpu');
  t.true(ort.scheme?.reduce_range);
  t.false(ort.candidates.some((c) => c.w > 8), 'no 16-bit weights: ORT overflows their int32 biases');
});

test('cost: a latency table and conversion costs from the profile change the ranking cost, not rel_bops', (t) => {
  const p: Profile = {
    name: 'lat',
    candidates: [{ a: 8, w: 4 }, { a: 8, w: 8 }, { a: 16, w: 16 }],
    cost: { metric: 'latency', latency: { Conv: { W4A8: 1, W8A8: 1, W16A16: 3 } }, conversion: 1000 },
  };
  const { groups, cost } = setup(p);
  const all = (a: number, w: number) => groups.map(() => ({ a, w }));
  // W4A8 runs no faster than W8A8 on this device: same cost, half the BOPs
  t.is(cost.relCost(all(8, 4)), 1);
  t.is(cost.relBops(all(8, 4)), 0.5);
  t.true(cost.custom);
  // a group at 16 bits between 8-bit neighbours pays for conversions
  const mixed = all(8, 8);
  const r1 = groups.find((g) => g.act === 'r1')!;
  mixed[r1.id] = { a: 16, w: 16 };
  const convs = cost.cost(mixed) - cost.cost(all(8, 8));
  t.true(convs >= 2000, `conversion cost ${convs}`);
});

test('phase-1 cache key covers the rounding: changing --rounding recomputes, the same options reuse', async (t) => {
  const dir = tmp();
  const file = path.join(dir, 'm.onnx');
  fs.writeFileSync(file, twoBranchBytes('N'));
  const x = { x: { shape: [16, 3, 8, 8], data: randomData(16 * 3 * 64, 9) } };
  const calib = { batches: async function* () { yield x; }, fingerprint: 'fixed-16', count: 16 };
  const out = path.join(dir, 'out');
  const run = (rounding?: 'nearest') => search({ model: file, calib, target: { maxBops: 0.9 }, out, rounding });
  const first = await run('nearest');
  t.is(first.phase1.reused, 0);
  t.true(first.phase1.total > 0);
  const other = await run();
  t.is(other.phase1.reused, 0, 'sensitivities measured with round-to-nearest must not be reused for data-aware rounding');
  const again = await run();
  t.is(again.phase1.reused, again.phase1.total, 'the same options reuse every entry');
  // and the rounded weights: the rerun loads them from cache/rounding-<key>.bin and rounds nothing
  t.true(other.rounding.computed > 0);
  t.is(again.rounding.computed, 0, 'a rerun with the same data and options does no rounding');
  t.is(again.rounding.loaded, other.rounding.computed);
});

test('phase-1 cache key covers the profile scheme: another scheme recomputes; ties and unimplemented schemes are refused', async (t) => {
  const dir = tmp();
  const file = path.join(dir, 'm.onnx');
  fs.writeFileSync(file, twoBranchBytes('N'));
  const x = { x: { shape: [8, 3, 8, 8], data: randomData(8 * 3 * 64, 5) } };
  const calib = { batches: async function* () { yield x; }, fingerprint: 'fixed-8', count: 8 };
  const out = path.join(dir, 'out');
  const base = loadProfile('default');
  const run = (profile: Profile) => search({ model: file, calib, target: { maxBops: 0.9 }, out, rounding: 'nearest', profile });
  const first = await run(base);
  t.is(first.phase1.reused, 0);
  const narrow = await run({ ...base, scheme: { reduce_range: true } });
  t.is(narrow.phase1.reused, 0, 'a profile with another scheme must not reuse sensitivities');
  const f = path.join(dir, 'ties.json');
  fs.writeFileSync(f, JSON.stringify({ name: 'tied', candidates: base.candidates, ties: [{ op: 'Add', inputs: 'all' }] }));
  t.throws(() => loadProfile(f), { message: /ties \(Add\) are not implemented/ });
  fs.writeFileSync(f, JSON.stringify({ name: 'pt', candidates: base.candidates, scheme: { per_channel: false } }));
  t.throws(() => loadProfile(f), { message: /scheme.per_channel = false is not implemented/ });
});

test('phase 1 on the simulation plan equals phase 1 on one QDQ graph per entry, bit for bit', async (t) => {
  const { computePhase1, computePhase1Graphs } = await import('../src/search/phase1');
  const { calibrate } = await import('../src/quant/quantize');
  const m = Model.fromBytes(twoBranchBytes('N'));
  const b = [0, 1].map((i) => ({ x: { shape: [4, 3, 8, 8], data: randomData(4 * 3 * 64, 20 + i) } }));
  const batches = async function* () { yield* b; };
  const cal = await calibrate(m, batches, { roundingOptions: { sequential: false } });
  const groups = buildGroups(m.graph, cal.placement, loadProfile('default'));
  const todo = groups.flatMap((g) => g.candidates.slice(0, -1).map((cand) => ({ group: g, cand })));
  const { Simulator } = await import('../src/sim');
  t.is(Simulator.of(cal).unsupported, null);
  const measure = async (f: typeof computePhase1) => {
    const got = new Map<string, Record<string, [number, number]>>();
    await f(todo, (r) => got.set(`${r.work.group.id}/${r.work.cand.w}/${r.work.cand.a}`, r.powers), {}, cal, groups, batches);
    return got;
  };
  const sim = await measure(computePhase1);
  const graphs = await measure(computePhase1Graphs);
  t.is(sim.size, todo.length);
  t.deepEqual([...sim.entries()].sort(), [...graphs.entries()].sort());
  t.true([...sim.values()].every((p) => p.y[1] > 0), 'every entry measured some noise');
});

test('targets: binary and interpolation search find the same cheapest point meeting the goal; a budget picks the best within it', async (t) => {
  const { binarySearch, interpolationSearch, budget } = await import('../src/search/targets');
  const mk = (metrics: number[]) => metrics.map((m, i) => ({ index: i, choice: [], rel_bops: 1 - i / metrics.length, rel_cost: 1 - i / metrics.length, size_bytes: 1000 - i, predicted_sqnr_db: 0, measured: null as number | null, m }));
  for (const metrics of [Array.from({ length: 80 }, (_, i) => 0.85 - 0.002 * i - (i > 60 ? 0.1 : 0)), Array.from({ length: 33 }, (_, i) => 0.9 - 0.00001 * i * i * i)]) {
    for (const goal of [0.95, 0.84, 0.8, 0.75, 0.5, 0.0]) {
      const answers = [];
      for (const s of [binarySearch(goal), interpolationSearch(goal)]) {
        const front = mk(metrics);
        let evals = 0;
        const p = await s.select(front, async (q) => (evals++, (q as unknown as { m: number }).m));
        answers.push(p.index);
        t.true(evals <= Math.ceil(Math.log2(front.length)) * 2 + 2, `${s.name}: ${evals} evaluations`);
      }
      const want = metrics.findIndex((m) => m < goal);
      const expect = want === -1 ? metrics.length - 1 : want === 0 ? 0 : want - 1;
      t.deepEqual(answers, [expect, expect], `goal ${goal}`);
    }
  }
  const front = mk([0.9, 0.8, 0.85, 0.7, 0.6]);
  const p = await budget((q) => q.rel_cost <= 0.85).select(front, async (q) => (q as unknown as { m: number }).m);
  t.is(p.index, 2, 'the most accurate of the costliest points within budget');
  await t.throwsAsync(budget(() => false).select(front, async () => 0), { message: /no configuration meets the budget/ });
});

test('phase-1 cache key covers the quantizer groups: another placement under the same model hash, profile, data and options gets another key', async (t) => {
  const { openSession } = await import('../src/search/session');
  const x = { x: { shape: [4, 3, 8, 8], data: randomData(4 * 3 * 64, 7) } };
  const data = { batches: async function* () { yield x; }, fingerprint: 'fixed-4', count: 4 };
  const profile = loadProfile('default');
  const a = Model.fromBytes(twoBranchBytes('N'));
  // the same graph with one weight under another name (what another version's placement or
  // a re-export would change): the same model hash is given on purpose
  const bBytes = twoBranchBytes('N', 'w4');
  const sa = await openSession(a, 'same-hash', data, profile, { rounding: 'nearest' });
  const sb = await openSession(Model.fromBytes(bBytes), 'same-hash', data, profile, { rounding: 'nearest' });
  const sa2 = await openSession(Model.fromBytes(twoBranchBytes('N')), 'same-hash', data, profile, { rounding: 'nearest' });
  t.is(sa.key, sa2.key, 'the same model, data and options: the same key');
  t.notDeepEqual(sa.groups.map((g) => g.weights), sb.groups.map((g) => g.weights));
  t.not(sa.key, sb.key, 'cached entries are named by group id: other groups must not reuse them');
});
