/** The command line: exit codes, --json output, files written. */
import test from 'ava';
import { execFile } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { promisify } from 'util';
import { encodeNpy, parseNpy } from '../index';
import { OCR, randomData, ROOT } from './helpers';

const run = promisify(execFile);
const MPQ = path.join(ROOT, 'bin', 'mpq.js');
const CLS = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');

async function mpq(args: string[], cwd?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [MPQ, ...args], { maxBuffer: 64 << 20, cwd });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code: number; stdout: string; stderr: string };
    return { code: x.code, stdout: x.stdout, stderr: x.stderr };
  }
}

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
