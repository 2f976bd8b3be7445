/** The command line: exit codes, --json output, files written. */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { encodeNpy, parseNpy, VERIFY_SAMPLES } from '../index';
import { mpq, OCR, randomData, tinyModel } from './helpers';

const CLS = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');

test('mpq inspect --json prints one JSON document with ops, parameters and MACs', async (t) => {
  const r = await mpq(['inspect', CLS, '--shape', 'x=1,3,48,192', '--json']);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.is(j.inputs[0].name, 'x');
  t.deepEqual(j.inputs[0].shape, [1, 3, 48, 192]);
  t.true(j.ops.Conv > 10);
  t.true(j.parameters > 100_000);
  t.true(j.totalMacs > 1e6);
  t.true(j.macs.every((m: { macs: number }) => m.macs > 0));
});

test('mpq inspect without shapes on a dynamic model still lists ops and says why MACs are missing', async (t) => {
  const r = await mpq(['inspect', CLS]);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /Conv \d+/);
  t.regex(r.stdout, /MACs: unknown .*--shape x=/);
});

test('mpq run writes each output as .npy with a safe file name', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const input = path.join(dir, 'x.npy');
  fs.writeFileSync(input, encodeNpy([2, 3, 48, 192], randomData(2 * 3 * 48 * 192, 3)));
  const r = await mpq(['run', CLS, '--input', `x=${input}`, '--out', path.join(dir, 'out'), '--json']);
  t.is(r.code, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  t.is(j.outputs.length, 1);
  const f = path.join(dir, 'out', 'softmax_0.tmp_0.npy');
  t.is(j.outputs[0].file, f);
  const a = parseNpy(fs.readFileSync(f));
  t.deepEqual(a.shape, [2, 2]);
  t.true(Math.abs(a.data[0] + a.data[1] - 1) < 1e-5);
});

test('mpq on a garbage model exits 1 with a clear error and no stack trace', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const f = path.join(dir, 'bad.onnx');
  fs.writeFileSync(f, 'garbage garbage garbage');
  const r = await mpq(['inspect', f]);
  t.is(r.code, 1);
  t.regex(r.stderr, /MPQ_BAD_MODEL/);
  t.notRegex(r.stderr, /at .*\.js:\d+/);
});

test('mpq with a bad flag exits 2', async (t) => {
  const r = await mpq(['run', CLS, '--nope']);
  t.is(r.code, 2);
});

/** A small CNN, x [N,3,8,8] -> Conv 3x3 + Relu -> GlobalAveragePool -> Flatten -> Gemm -> y [N,classes]; and 48 samples in one .npy. */
function tinyCnn(classes: number, batch: number | string = 'N'): { dir: string; model: string; data: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const bytes = tinyModel({
    inputs: { x: [batch, 3, 8, 8] },
    outputs: { y: [batch, classes] },
    nodes: [
      { op: 'Conv', inputs: ['x', 'w', 'b'], outputs: ['c'], attrs: { pads: [1, 1, 1, 1], kernel_shape: [3, 3] } },
      { op: 'Relu', inputs: ['c'], outputs: ['r'] },
      { op: 'GlobalAveragePool', inputs: ['r'], outputs: ['g'] },
      { op: 'Flatten', inputs: ['g'], outputs: ['f'] },
      { op: 'Gemm', inputs: ['f', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      w: { dims: [6, 3, 3, 3], values: Array.from(randomData(162, 5)) },
      b: { dims: [6], values: Array.from(randomData(6, 6)) },
      gw: { dims: [classes, 6], values: Array.from(randomData(6 * classes, 7)) },
      gb: { dims: [classes], values: Array.from(randomData(classes, 8)) },
    },
  });
  const model = path.join(dir, 'tiny.onnx');
  fs.writeFileSync(model, bytes);
  const data = path.join(dir, 'calib.npy');
  fs.writeFileSync(data, encodeNpy([48, 3, 8, 8], randomData(48 * 192, 9)));
  return { dir, model, data };
}

const progressLines = (s: string) => s.split('\n').filter((l) => /^mpq: \S.* \d+\/\d+/.test(l));

test('mpq quantize with stderr in a pipe prints plain progress lines; --quiet silences them', async (t) => {
  const m = tinyCnn(5);
  const r = await mpq(['quantize', m.model, '--calib', m.data, '--config', 'W8A8', '--batch', '16', '--out', path.join(m.dir, 'q')]);
  t.is(r.code, 0, r.stderr);
  const lines = progressLines(r.stderr);
  t.true(lines.some((l) => /^mpq: calibration 48\/48 100% done in /.test(l)), r.stderr);
  t.false(/\x1b\[/.test(r.stderr), 'no terminal escape codes in a pipe');
  const q = await mpq(['quantize', m.model, '--calib', m.data, '--config', 'W8A8', '--out', path.join(m.dir, 'q2'), '--quiet']);
  t.is(q.code, 0, q.stderr);
  // --quiet silences progress; a warning about the export (onnxruntime's default session) still shows
  t.deepEqual(progressLines(q.stderr), []);
  t.deepEqual(q.stderr.split('\n').filter((l) => l && !/^mpq: WARNING: /.test(l)), []);
});

test('mpq search 2>log writes progress lines of each phase', async (t) => {
  const m = tinyCnn(5);
  const r = await mpq(['search', m.model, '--calib', m.data, '--max-bops', '0.75', '--rounding', 'nearest', '--out', path.join(m.dir, 's')]);
  t.is(r.code, 0, r.stderr);
  const lines = progressLines(r.stderr);
  t.true(lines.some((l) => l.startsWith('mpq: calibration ')), r.stderr);
  t.true(lines.some((l) => /^mpq: phase1 (\d+)\/\1 100% done/.test(l)), r.stderr);
  t.true(lines.some((l) => l.startsWith('mpq: phase3 ')), r.stderr);
  t.regex(r.stdout, /^selected: rel_bops/m);
});

test('mpq --json on bad input prints one JSON error document on stdout, one line on stderr, exit 1', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const f = path.join(dir, 'bad.onnx');
  fs.writeFileSync(f, 'garbage garbage garbage');
  const r = await mpq(['quantize', f, '--calib', f, '--config', 'W8A8', '--out', dir, '--json']);
  t.is(r.code, 1);
  const j = JSON.parse(r.stdout);
  t.deepEqual(Object.keys(j), ['error']);
  t.is(j.error.code, 'MPQ_BAD_MODEL');
  t.true(j.error.message.length > 10);
  t.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  t.regex(r.stderr, /^mpq: error \[MPQ_BAD_MODEL\]/);
  // a stack trace only with --debug
  const d = await mpq(['quantize', f, '--calib', f, '--config', 'W8A8', '--out', dir, '--debug']);
  t.is(d.code, 1);
  t.regex(d.stderr, /at .*\.js:\d+/);
  t.is(d.stdout, '');
});

test('mpq --json on a command line that does not parse: exit 2 and a JSON error', async (t) => {
  const r = await mpq(['quantize', 'm.onnx', '--calib', 'd', '--config', 'W8A8', '--out', 'o', '--json', '--nope']);
  t.is(r.code, 2);
  const j = JSON.parse(r.stdout);
  t.is(j.error.code, 'MPQ_USAGE');
  t.regex(j.error.message, /--nope/);
  const u = await mpq(['nope-command']);
  t.is(u.code, 2);
});

test('mpq inspect --shape takes several inputs at once, as repeated --shape does', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const f = path.join(dir, 'two.onnx');
  fs.writeFileSync(f, tinyModel({
    inputs: { a: ['N', 4], b: ['N', 'K'] },
    outputs: { y: null },
    nodes: [{ op: 'MatMul', inputs: ['a', 'w'], outputs: ['m'] }, { op: 'MatMul', inputs: ['m', 'b'], outputs: ['y'] }],
    inits: { w: { dims: [4, 3], values: Array.from(randomData(12, 2)) } },
  }));
  const once = await mpq(['inspect', f, '--shape', 'a=2,4,b=3x5', '--json']);
  t.is(once.code, 0, once.stderr);
  const rep = await mpq(['inspect', f, '--shape', 'a=2,4', '--shape', 'b=3,5', '--json']);
  t.is(rep.code, 0, rep.stderr);
  const j = JSON.parse(once.stdout);
  t.deepEqual(j.inputs.map((i: { shape: number[] }) => i.shape), [[2, 4], [3, 5]]);
  t.deepEqual(j, JSON.parse(rep.stdout));
  const bad = await mpq(['inspect', f, '--shape', '2,4,b=3,5']);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /MPQ_BAD_INPUT.*NAME=/);
});

test('mpq eval on a one-class output prints no agreement or top-1, only SQNR', async (t) => {
  const m = tinyCnn(1);
  const q = await mpq(['quantize', m.model, '--calib', m.data, '--config', 'W8A8', '--rounding', 'nearest', '--out', path.join(m.dir, 'q'), '--quiet']);
  t.is(q.code, 0, q.stderr);
  const r = await mpq(['eval', m.model, '--data', m.data, '--encodings', path.join(m.dir, 'q', 'encodings.json'), '--quiet']);
  t.is(r.code, 0, r.stderr);
  t.notRegex(r.stdout, /agreement with float|top-1: /);
  t.regex(r.stdout, /one value per sample/);
  t.regex(r.stdout, /SQNR: \d/);
  const j = JSON.parse((await mpq(['eval', m.model, '--data', m.data, '--encodings', path.join(m.dir, 'q', 'encodings.json'), '--json'])).stdout);
  t.is(j.quantized.agreement, null);
  t.true(j.quantized.sqnr_db > 20);
  // with several classes agreement is reported
  const m5 = tinyCnn(5);
  await mpq(['quantize', m5.model, '--calib', m5.data, '--config', 'W8A8', '--rounding', 'nearest', '--out', path.join(m5.dir, 'q'), '--quiet']);
  const j5 = JSON.parse((await mpq(['eval', m5.model, '--data', m5.data, '--encodings', path.join(m5.dir, 'q', 'encodings.json'), '--json'])).stdout);
  t.true(j5.quantized.agreement > 0.5);
});

test('a model that declares batch 1 is calibrated, searched, evaluated and verified at batch 1 without --batch', async (t) => {
  const m = tinyCnn(5, 1);
  const out = path.join(m.dir, 'q');
  const q = await mpq(['quantize', m.model, '--calib', m.data, '--config', 'W8A8', '--out', out, '--quiet']);
  t.is(q.code, 0, q.stderr);
  const e = await mpq(['eval', m.model, '--data', m.data, '--encodings', path.join(out, 'encodings.json'), '--json']);
  t.is(e.code, 0, e.stderr);
  t.is(JSON.parse(e.stdout).samples, 48);
  const v = await mpq(['verify', out, '--json']);
  t.is(v.code, 0, v.stderr);
  const vj = JSON.parse(v.stdout);
  // verify re-reads the calibration samples (at most VERIFY_SAMPLES), one at a time
  t.is(vj.samples, Math.min(48, VERIFY_SAMPLES));
  t.true(vj.qdq.sqnr_db > 40, `qdq vs simulation ${vj.qdq.sqnr_db} dB`);
  const s = await mpq(['search', m.model, '--calib', m.data, '--limit', '8', '--max-bops', '0.75', '--out', path.join(m.dir, 's'), '--quiet', '--json']);
  t.is(s.code, 0, s.stderr);
  t.is(JSON.parse(s.stdout).verification.samples, Math.min(8, VERIFY_SAMPLES), 'the end-of-run check runs every calibration sample (up to VERIFY_SAMPLES) at batch 1');
  // an explicit --batch that the model does not take is still refused, with the reason
  const b = await mpq(['quantize', m.model, '--calib', m.data, '--config', 'W8A8', '--batch', '16', '--out', out]);
  t.is(b.code, 1);
  t.regex(b.stderr, /MPQ_INPUT_SHAPE.*needs size 1 on axis 0/);
});

test('a model that declares batch 4 gets batches of 4; the samples past the last multiple are left out with a note', async (t) => {
  const m = tinyCnn(5, 4);
  const out = path.join(m.dir, 'q');
  const q = await mpq(['quantize', m.model, '--calib', m.data, '--limit', '10', '--config', 'W8A8', '--rounding', 'nearest', '--out', out, '--json']);
  t.is(q.code, 0, q.stderr);
  t.is(JSON.parse(q.stdout).calib.samples, 8);
  const r = await mpq(['eval', m.model, '--data', m.data, '--limit', '10', '--encodings', path.join(out, 'encodings.json'), '--json']);
  t.is(r.code, 0, r.stderr);
  t.is(JSON.parse(r.stdout).samples, 8);
  t.regex(r.stderr, /batches of exactly 4: using 8 of the 10 samples/);
});

test('mpq quantize records the onnxruntime verification; mpq verify --json from another folder gives the same figures and a consistent verdict', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  fs.writeFileSync(path.join(dir, 'calib.npy'), encodeNpy([16, 3, 48, 192], randomData(16 * 3 * 48 * 192, 21)));
  // relative paths, resolved in dir
  const q = await mpq(['quantize', CLS, '--calib', 'calib.npy', '--config', 'W8A8', '--rounding', 'nearest', '--out', 'q', '--json'], dir);
  t.is(q.code, 0, q.stderr);
  const summary = JSON.parse(q.stdout);
  t.is(summary.calib.spec, path.join(fs.realpathSync(dir), 'calib.npy'));
  const rec = summary.verification;
  t.is(rec.samples, 16);
  t.is(rec.faithful, rec.optimized.agreement >= rec.limits.agreement && rec.optimized.sqnr_db >= rec.limits.sqnr_db);
  t.is(rec.advice !== undefined, !rec.faithful);
  if (!rec.faithful) t.regex(q.stderr, /WARNING.*--profile ort-cpu/);

  const v = await mpq(['verify', path.join(dir, 'q'), '--json'], os.tmpdir());
  t.is(v.code, 0, v.stderr);
  const j = JSON.parse(v.stdout);
  for (const k of ['samples', 'qdq', 'optimized', 'optimized_vs_qdq', 'faithful', 'limits'] as const) t.deepEqual(j[k], rec[k], k);
  t.true(j.qdq.within_limits, 'optimizations off reproduce the simulation');
  t.true(j.qdq.agreement >= 0 && j.qdq.agreement <= 1 && j.optimized.agreement >= 0 && j.optimized.agreement <= 1);
});

test('mpq verify names the missing calibration data and the fix; quantize --profile refuses a configuration the profile does not allow', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const calib = path.join(dir, 'calib.npy');
  fs.writeFileSync(calib, encodeNpy([4, 3, 48, 192], randomData(4 * 3 * 48 * 192, 22)));
  const bad = await mpq(['quantize', CLS, '--calib', calib, '--config', 'W16A16', '--profile', 'ort-cpu', '--rounding', 'nearest', '--out', path.join(dir, 'x')]);
  t.is(bad.code, 1);
  t.regex(bad.stderr, /W16A16 is not allowed by profile 'ort-cpu'/);
  t.false(fs.existsSync(path.join(dir, 'x', 'model.qdq.onnx')));
  const q = await mpq(['quantize', CLS, '--calib', calib, '--config', 'W8A8', '--rounding', 'nearest', '--out', path.join(dir, 'q')]);
  t.is(q.code, 0, q.stderr);
  fs.renameSync(calib, calib + '.moved');
  const v = await mpq(['verify', path.join(dir, 'q')]);
  t.is(v.code, 1);
  t.regex(v.stderr, /calibration data .* is not found .*pass --data/);
  fs.renameSync(calib + '.moved', calib);
  fs.writeFileSync(path.join(dir, 'q', 'model.qdq.onnx'), 'not a model');
  const g = await mpq(['verify', path.join(dir, 'q')]);
  t.is(g.code, 1);
  t.regex(g.stderr, /MPQ_BAD_MODEL.*onnxruntime cannot load the exported model/);
  t.notRegex(g.stderr, /internal error/);
});

test('inputs with the batch on another axis (recurrent state [2, batch, 4]) or none (an int64 scalar) are calibrated, searched and verified in onnxruntime without flags', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-cli-'));
  const bytes = tinyModel({
    inputs: { x: ['batch', 6], h: [2, 'batch', 4], k: [] },
    inputTypes: { k: 7 },
    outputs: { y: null, hn: null },
    nodes: [
      { op: 'MatMul', inputs: ['x', 'w'], outputs: ['m'] },
      { op: 'Gather', inputs: ['h', 'i0'], outputs: ['h0'], attrs: { axis: 0 } },
      { op: 'Add', inputs: ['m', 'h0'], outputs: ['s'] },
      { op: 'Cast', inputs: ['k'], outputs: ['kf'], attrs: { to: 1 } },
      { op: 'Mul', inputs: ['s', 'kf'], outputs: ['y'] },
      { op: 'Tanh', inputs: ['h'], outputs: ['hn'] },
    ],
    inits: { w: { dims: [6, 4], values: Array.from(randomData(24, 3)) }, i0: { dims: [], type: 7, values: [0] } },
  });
  const model = path.join(dir, 'm.onnx');
  fs.writeFileSync(model, bytes);
  const n = 20;
  fs.writeFileSync(path.join(dir, 'x.npy'), encodeNpy([n, 6], randomData(n * 6, 4)));
  fs.writeFileSync(path.join(dir, 'h.npy'), encodeNpy([n, 2, 4], randomData(n * 8, 5)));
  fs.writeFileSync(path.join(dir, 'k.npy'), encodeNpy([n], new Float32Array(n).fill(3)));
  const data = ['x', 'h', 'k'].map((k) => `${k}=${path.join(dir, `${k}.npy`)}`).join(',');
  const q = await mpq(['quantize', model, '--calib', data, '--config', 'W8A8', '--out', path.join(dir, 'q'), '--quiet']);
  t.is(q.code, 0, q.stderr);
  const v = JSON.parse(fs.readFileSync(path.join(dir, 'q', 'quantize.json'), 'utf8')).verification;
  t.true(v.qdq.sqnr_db > 30, JSON.stringify(v));
  const s = await mpq(['search', model, '--calib', data, '--max-bops', '0.75', '--out', path.join(dir, 's'), '--quiet']);
  t.is(s.code, 0, s.stderr);
  // the scalar must be the same over a batch (it has no batch axis)
  const k2 = new Float32Array(n).fill(3);
  k2[5] = 4;
  fs.writeFileSync(path.join(dir, 'k.npy'), encodeNpy([n], k2));
  const bad = await mpq(['quantize', model, '--calib', data, '--config', 'W8A8', '--out', path.join(dir, 'q2'), '--json']);
  t.is(bad.code, 1);
  t.is(JSON.parse(bad.stdout).error.code, 'MPQ_BAD_INPUT');
  t.regex(bad.stdout, /input 'k' has no batch axis.*--batch 1/);
  const one = await mpq(['quantize', model, '--calib', data, '--config', 'W8A8', '--out', path.join(dir, 'q3'), '--quiet', '--batch', '1']);
  t.is(one.code, 0, one.stderr);
});
