/**
 * The long calls leave the JS thread free and can be stopped: models load in a worker, weight
 * scales are computed in the engine, search() takes paths or in-memory batches, reports
 * progress in every phase, and an abort rejects with an AbortError and writes nothing more.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { AbortError, encodeNpy, Model, MpqError, search, VERIFY_SAMPLES } from '../index';
import type { Progress } from '../index';
import { native } from '../src/native';
import { ROOT, randomData, tinyModel } from './helpers';

const CLS = path.join(ROOT, 'demo', 'model', 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-async-'));

test('Model.load (in a worker) gives the same model as Model.fromFile, from a path or bytes', async (t) => {
  const x = { shape: [2, 3, 48, 192], data: randomData(2 * 3 * 48 * 192, 5) };
  const want = await Model.fromFile(CLS).run({ x });
  for (const src of [CLS, new Uint8Array(fs.readFileSync(CLS))]) {
    const m = await Model.load(src);
    const got = await m.run({ x });
    t.deepEqual(Object.keys(got), Object.keys(want));
    for (const k of Object.keys(want)) t.deepEqual(got[k].data, want[k].data);
  }
  const e = await t.throwsAsync(Model.load(new Uint8Array([1, 2, 3, 4, 5])));
  t.true(e instanceof MpqError);
  t.is((e as MpqError).code, 'MPQ_BAD_MODEL');
});

test('weight scales: the off-thread and the synchronous engine calls agree, MSE clips below max-abs', async (t) => {
  const w = randomData(16 * 3 * 3 * 3, 9);
  w[5] = 4; // an outlier in channel 0
  const shape = [16, 3, 3, 3];
  const n = native();
  for (const method of ['minmax', 'mse']) {
    for (const bits of [4, 8]) t.deepEqual(await n.weightScales(w, shape, 0, bits, method), n.weightScalesSync(w, shape, 0, bits, method));
  }
  const max = n.weightScalesSync(w, shape, 0, 4, 'minmax');
  const mse = n.weightScalesSync(w, shape, 0, 4, 'mse');
  t.is(max[0], Math.fround(4 / 7));
  t.true(mse[0] < max[0], 'the outlier is clipped at 4 bits');
  t.throws(() => n.weightScalesSync(w, [16, 3, 3], 0, 4, 'mse'), { message: /MPQ_BAD_INPUT: weight of shape/ });
});

/** x -> Conv -> Relu -> Conv -> Flatten -> Softmax: a search over it takes well under a second. */
function tiny(): Uint8Array {
  const rnd = (dims: number[], seed: number) => ({ dims, values: Array.from(randomData(dims.reduce((a, b) => a * b, 1), seed)) });
  return tinyModel({
    inputs: { x: ['N', 3, 8, 8] },
    outputs: { y: null },
    inits: { w1: rnd([4, 3, 3, 3], 1), w2: rnd([4, 4, 1, 1], 2) },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w1'], outputs: ['c1'], attrs: { pads: [1, 1, 1, 1] } },
      { op: 'Relu', inputs: ['c1'], outputs: ['r1'] },
      { op: 'Conv', inputs: ['r1', 'w2'], outputs: ['c2'] },
      { op: 'Flatten', inputs: ['c2'], outputs: ['f'] },
      { op: 'Softmax', inputs: ['f'], outputs: ['y'] },
    ],
  });
}
/** The files of an --out folder a user sees: the run's own staging folder and lock (.mpq-*), removed when it aborts, are left out. */
const listed = (out: string) => (fs.existsSync(out) ? fs.readdirSync(out, { recursive: true }).map(String).filter((f) => !f.startsWith('.mpq')).sort() : []);
const batch = (n: number, seed: number) => ({ x: { shape: [n, 3, 8, 8], data: randomData(n * 3 * 8 * 8, seed) } });

test.serial('search() takes bytes and in-memory batches, or a path and a .npy, and reports progress in every phase', async (t) => {
  const events: Progress[] = [];
  const r = await search({ model: tiny(), calibration: [batch(8, 3), batch(8, 4)], target: { maxBops: 0.8 }, out: tmp(), onProgress: (p) => events.push(p) });
  t.true(fs.existsSync(r.files.report));
  t.is(r.options.model, null, 'a model given as bytes has no path');
  t.is(r.options.calib_samples, 16);
  t.is(r.verification?.samples, Math.min(16, VERIFY_SAMPLES), 'the export ran in onnxruntime (in a worker) on the calibration samples');
  t.true(r.verification!.qdq.sqnr_db > 20, `onnxruntime, optimizations off, vs simulation: ${r.verification!.qdq.sqnr_db} dB`);
  const phases = [...new Set(events.map((e) => e.phase))];
  for (const p of ['load', 'calibration', 'phase1', 'phase3', 'export']) t.true(phases.includes(p as Progress['phase']), `progress in ${p}`);
  for (const e of events) {
    t.true(e.done <= e.total && e.done >= 0, `${e.phase} ${e.done}/${e.total}`);
    t.true(e.etaSeconds === null || e.etaSeconds >= 0);
  }
  const cal = events.filter((e) => e.phase === 'calibration');
  t.true(cal.length >= 5, `calibration reports per batch of every pass (${cal.length} events)`);
  t.is(cal[cal.length - 1].done, cal[cal.length - 1].total);

  // the same data as a file path, as the CLI takes it: the same samples give the same front
  const dir = tmp();
  const file = path.join(dir, 'model.onnx');
  fs.writeFileSync(file, tiny());
  const all = batch(16, 0);
  all.x.data.set(batch(8, 3).x.data, 0);
  all.x.data.set(batch(8, 4).x.data, 8 * 3 * 8 * 8);
  fs.writeFileSync(path.join(dir, 'calib.npy'), encodeNpy(all.x.shape, all.x.data));
  const r2 = await search({ model: file, calibration: path.join(dir, 'calib.npy'), data: { batchSize: 8 }, target: { maxBops: 0.8 }, out: tmp() });
  t.is(r2.options.model, path.resolve(file));
  t.is(r2.options.calib_samples, 16);
  t.deepEqual(r2.selected, r.selected);
});

test.serial('an aborted search rejects with AbortError (MPQ_ABORTED) and writes nothing more', async (t) => {
  for (const at of ['load', 'calibration', 'phase1', 'phase3', 'export', 'verify'] as const) {
    const out = tmp();
    const ac = new AbortController();
    let snap: string[] = [];
    const e = await t.throwsAsync(
      search({
        model: tiny(),
        calibration: [batch(8, 5)],
        target: { maxBops: 0.8 },
        out,
        signal: ac.signal,
        onProgress: (p) => {
          if (p.phase === at && !ac.signal.aborted) {
            ac.abort();
            snap = listed(out);
          }
        },
      }),
    );
    t.true(e instanceof AbortError, `${at}: ${e?.message}`);
    t.is(e?.name, 'AbortError');
    t.is((e as MpqError).code, 'MPQ_ABORTED');
    await new Promise((r) => setTimeout(r, 100));
    const now = listed(out);
    t.deepEqual(now, snap, `${at}: nothing written after the abort`);
    t.false(now.includes('model.qdq.onnx'));
  }
});
