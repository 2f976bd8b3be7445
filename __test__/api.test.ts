/** The public API: a search with the caller's own evaluation function, CTC decoding. */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ctcGreedyDecode, Model, Runnable, search, argmaxRows } from '../index';
import { OCR, randomData } from './helpers';

test('greedy CTC decoding collapses repeats and drops blanks', (t) => {
  const charset = ['', 'a', 'b', ' '];
  // steps: a a blank a b b space blank
  const steps = [1, 1, 0, 1, 2, 2, 3, 0];
  const data = new Float32Array(steps.length * 4);
  steps.forEach((c, k) => (data[k * 4 + c] = 1));
  t.deepEqual(ctcGreedyDecode({ shape: [1, steps.length, 4], data }, charset), ['aab ']);
});

test.serial('search() takes a custom async evaluation function and reports what it measured', async (t) => {
  const file = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
  const x = { shape: [8, 3, 48, 192], data: randomData(8 * 3 * 48 * 192, 21) };
  const batches = async function* () {
    yield { x };
  };
  const float = await Model.fromFile(file).run({ x });
  const ref = argmaxRows(float[Object.keys(float)[0]]);
  let calls = 0;
  const seen: number[] = [];
  const evaluate = async (m: Runnable) => {
    calls++;
    const out = await m.run({ x });
    const pred = argmaxRows(out[m.outputNames[0]]);
    // a score the built-in metrics do not compute: agreement minus a penalty on confidence change
    let s = 0;
    pred.forEach((p, i) => (s += p === ref[i] ? 1 : 0));
    const v = s / pred.length - Math.abs(out[m.outputNames[0]].data[0] - float[m.outputNames[0]].data[0]);
    seen.push(v);
    return v;
  };
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-api-'));
  const r = await search({ model: file, calib: { batches, fingerprint: 'api-test', count: 8 }, target: { maxDrop: 0.05 }, evaluate, out, rounding: 'nearest' });
  t.is(r.metric, 'custom');
  t.true(calls >= 3, `evaluate called ${calls} times`);
  t.true(seen.includes(r.selected.metric), 'the selected point reports the value the function returned');
  t.true(r.selected.meets_target === r.selected.metric >= r.float_metric - 0.05);
  t.true(fs.existsSync(r.files.model));
});
