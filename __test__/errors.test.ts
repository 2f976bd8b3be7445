/** Bad input gets a typed, clear error; never a crash. */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from '../src/onnx/proto/onnx';
import { Model, MpqError } from '../index';
import { OCR, tinyModel } from './helpers';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-test-'));

test('truncated model file gives MPQ_BAD_MODEL', (t) => {
  const bytes = fs.readFileSync(path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
  for (const cut of [10, 1000, Math.floor(bytes.length / 2), bytes.length - 7]) {
    const e = t.throws(() => Model.fromBytes(bytes.subarray(0, cut)), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_MODEL', `cut at ${cut}: ${e?.message}`);
  }
});

test('garbage and empty files give MPQ_BAD_MODEL', (t) => {
  for (const bytes of [Buffer.alloc(0), Buffer.from('hello, this is not an onnx model'), Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919) & 255))]) {
    const e = t.throws(() => Model.fromBytes(bytes), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_MODEL', e?.message);
  }
  const e = t.throws(() => Model.fromFile('/nonexistent/model.onnx'), { instanceOf: MpqError });
  t.regex(e!.message, /cannot read model file/);
});

test('unsupported op is reported before any work, with op, node and opset', (t) => {
  const bytes = tinyModel({ inputs: { x: [2, 3] }, outputs: { y: null }, nodes: [{ op: 'Hardmax', inputs: ['x'], outputs: ['y'] }] });
  const e = t.throws(() => Model.fromBytes(bytes), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_UNSUPPORTED_OP');
  t.regex(e!.message, /'Hardmax' \(opset 13; node 'Hardmax_0'\)/);
});

test('wrong input shape is a typed error', async (t) => {
  const bytes = tinyModel({ inputs: { x: [2, 3] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }] });
  const m = Model.fromBytes(bytes);
  const e = await t.throwsAsync(m.run({ x: { shape: [3, 3], data: new Float32Array(9) } }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_INPUT_SHAPE');
  const e2 = await t.throwsAsync(m.run({ x: { shape: [2, 3], data: new Float32Array(5) } }), { instanceOf: MpqError });
  t.is(e2?.code, 'MPQ_INPUT_SHAPE');
  const e3 = await t.throwsAsync(m.run({}), { instanceOf: MpqError });
  t.is(e3?.code, 'MPQ_BAD_INPUT');
});

test('a dynamic input without a shape asks for one', (t) => {
  const bytes = tinyModel({ inputs: { x: ['N', 3] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }] });
  const e = t.throws(() => Model.fromBytes(bytes).specialize(), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_INPUT_SHAPE');
  t.regex(e!.message, /--shape x=1,3/);
});

function externalModel(location: string): Uint8Array {
  const model: onnx.IModelProto = {
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: {
      name: 'ext',
      node: [{ name: 'mm', opType: 'MatMul', input: ['x', 'w'], output: ['y'] }],
      input: [{ name: 'x', type: { tensorType: { elemType: 1, shape: { dim: [{ dimValue: 1 }, { dimValue: 2 }] } } } }],
      output: [{ name: 'y', type: { tensorType: { elemType: 1 } } }],
      initializer: [{
        name: 'w', dims: [2, 2], dataType: 1, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [{ key: 'location', value: location }, { key: 'offset', value: '0' }, { key: 'length', value: '16' }],
      }],
    },
  };
  return onnx.ModelProto.encode(model).finish();
}

test('external data inside the model folder is read', async (t) => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'w.bin'), Buffer.from(new Float32Array([1, 2, 3, 4]).buffer));
  fs.writeFileSync(path.join(dir, 'm.onnx'), externalModel('w.bin'));
  const out = await Model.fromFile(path.join(dir, 'm.onnx')).run({ x: { shape: [1, 2], data: new Float32Array([1, 1]) } });
  t.deepEqual(Array.from(out.y.data), [4, 6]);
});

test('external data paths that leave the model folder are refused', (t) => {
  const dir = tmp();
  const outside = tmp();
  fs.writeFileSync(path.join(outside, 'w.bin'), Buffer.alloc(16));
  for (const loc of ['../' + path.basename(outside) + '/w.bin', path.join(outside, 'w.bin'), 'sub/../../w.bin']) {
    fs.writeFileSync(path.join(dir, 'm.onnx'), externalModel(loc));
    const e = t.throws(() => Model.fromFile(path.join(dir, 'm.onnx')), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_MODEL');
    t.regex(e!.message, /leaves the model's folder|refusing/);
  }
  // a symlink inside the folder that points outside is refused too
  fs.symlinkSync(path.join(outside, 'w.bin'), path.join(dir, 'link.bin'));
  fs.writeFileSync(path.join(dir, 'm.onnx'), externalModel('link.bin'));
  const e = t.throws(() => Model.fromFile(path.join(dir, 'm.onnx')), { instanceOf: MpqError });
  t.regex(e!.message, /outside the model's folder/);
});

test('an aborted run rejects with MPQ_ABORTED', async (t) => {
  const bytes = tinyModel({ inputs: { x: [2, 3] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }] });
  const ac = new AbortController();
  ac.abort();
  const e = await t.throwsAsync(Model.fromBytes(bytes).run({ x: { shape: [2, 3], data: new Float32Array(6) } }, { signal: ac.signal }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_ABORTED');
});
