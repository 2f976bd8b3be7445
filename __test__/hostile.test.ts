/**
 * Hostile models and bad data (issue 11): each test is named after the case it guards. The
 * files are built here, a few hundred bytes each; none may crash, hang, grow memory without
 * bound or end in anything but an MpqError with the right code.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from '../src/onnx/proto/onnx';
import { inspectModel, Model, MpqError, openDataSource, setLimits } from '../index';
import { encodeNpy } from '../src/npy';
import { OutputDir } from '../src/fsutil';
import { HAS_SHARED, sharedFile, tinyModel } from './helpers';

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-hostile-'));
const BIG = 2 ** 20;

async function refusedAtInspectAndRun(t: import('ava').ExecutionContext, bytes: Uint8Array, code: MpqError['code'], pattern: RegExp, feed = { shape: [1], data: new Float32Array(1) }) {
  const rss0 = process.memoryUsage().rss;
  let e: MpqError | undefined;
  try {
    const m = Model.fromBytes(bytes);
    e = t.throws(() => inspectModel(m), { instanceOf: MpqError });
    t.is(e?.code, code, e?.message);
    t.regex(e!.message, pattern);
    e = await t.throwsAsync(m.run({ x: feed }), { instanceOf: MpqError });
  } catch (err) {
    e = err as MpqError;
    t.true(err instanceof MpqError, String(err));
  }
  t.is(e?.code, code, e?.message);
  t.regex(e!.message, pattern);
  // refused before allocating: memory grew by far less than the tensor asked for
  t.true(process.memoryUsage().rss - rss0 < 256 * 2 ** 20, `rss grew by ${(process.memoryUsage().rss - rss0) / 2 ** 20} MiB`);
}

test('Expand to [2^20, 2^20] is refused at inspect and run, naming the node and the size', async (t) => {
  const bytes = tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Expand', inputs: ['x', 's'], outputs: ['y'] }], inits: { s: { dims: [2], type: 7, values: [BIG, BIG] } } });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'Expand_0' \(Expand.*shape \[1048576,1048576\] needs 4\.00 TiB, over the limit of 2\.00 GiB per tensor/);
});

test('Tile to [2^16, 2^16] is refused (it used to end in ERR_BUFFER_TOO_LARGE at 16.8 GB)', async (t) => {
  const bytes = tinyModel({ inputs: { x: [1, 1] }, outputs: { y: null }, nodes: [{ op: 'Tile', inputs: ['x', 'r'], outputs: ['y'] }], inits: { r: { dims: [2], type: 7, values: [65536, 65536] } } });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'Tile_0'.*16\.0 GiB/, { shape: [1, 1], data: new Float32Array(1) });
});

test('ConstantOfShape to a huge shape is refused before it is filled', async (t) => {
  const bytes = tinyModel({
    inputs: { x: [1] },
    outputs: { y: null },
    nodes: [{ op: 'ConstantOfShape', inputs: ['s'], outputs: ['z'] }, { op: 'Add', inputs: ['x', 'z'], outputs: ['y'] }],
    inits: { s: { dims: [3], type: 7, values: [4096, 4096, 4096] } },
  });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'ConstantOfShape_0'/);
});

test('Resize with scales of 1e4 is refused', async (t) => {
  const bytes = tinyModel({ inputs: { x: [1, 1, 4, 4] }, outputs: { y: null }, nodes: [{ op: 'Resize', inputs: ['x', '', 'sc'], outputs: ['y'], attrs: { mode: 'nearest' } }], inits: { sc: { dims: [4], values: [1, 1, 1e4, 1e4] } } });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'Resize_0'/, { shape: [1, 1, 4, 4], data: new Float32Array(16) });
});

test('Pad by 2^30 is refused', async (t) => {
  const bytes = tinyModel({ inputs: { x: [2, 3] }, outputs: { y: null }, nodes: [{ op: 'Pad', inputs: ['x', 'p'], outputs: ['y'] }], inits: { p: { dims: [4], type: 7, values: [0, 2 ** 30, 0, 2 ** 30] } } });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'Pad_0'/, { shape: [2, 3], data: new Float32Array(6) });
});

test('Range to 2^40 elements is refused', async (t) => {
  const bytes = tinyModel({
    inputs: { x: [1] },
    outputs: { y: null },
    nodes: [{ op: 'Range', inputs: ['a', 'b', 'c'], outputs: ['r'] }, { op: 'Cast', inputs: ['r'], outputs: ['rf'], attrs: { to: 1 } }, { op: 'Add', inputs: ['x', 'rf'], outputs: ['y'] }],
    inits: { a: { dims: [], type: 7, values: [0] }, b: { dims: [], type: 7, values: [2 ** 40] }, c: { dims: [], type: 7, values: [1] } },
  });
  await refusedAtInspectAndRun(t, bytes, 'MPQ_TOO_LARGE', /node 'Range_0'/);
});

test('initializer dims of 2^33 are MPQ_BAD_MODEL, not RangeError: Invalid typed array length', (t) => {
  for (const dims of [[2 ** 33], [2 ** 20, 2 ** 20, 2 ** 20], [2 ** 53 + 2]]) {
    const bytes = tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Add', inputs: ['x', 'w'], outputs: ['y'] }], inits: { w: { dims, values: [1] } } });
    const e = t.throws(() => Model.fromBytes(bytes), { instanceOf: MpqError });
    t.regex(e!.code, /MPQ_BAD_MODEL|MPQ_TOO_LARGE/, e?.message);
    t.regex(e!.message, /tensor 'w'/);
  }
  // a size within the limit but without the data: the truncation is reported before allocating
  const bytes = tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Add', inputs: ['x', 'w'], outputs: ['y'] }], inits: { w: { dims: [2 ** 28], values: [1] } } });
  const e = t.throws(() => Model.fromBytes(bytes), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_MODEL');
  t.regex(e!.message, /tensor 'w' has 1 values, shape \[268435456\] needs 268435456/);
});

test('a graph input of element type 999 is refused at load', (t) => {
  const m = onnx.ModelProto.decode(tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }] }));
  m.graph!.input![0].type!.tensorType!.elemType = 999;
  const e = t.throws(() => Model.fromBytes(onnx.ModelProto.encode(m).finish()), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_MODEL');
  t.regex(e!.message, /graph input 'x' has element type 999, which is not an ONNX tensor type/);
});

test('a value with two producers is refused at load', (t) => {
  const bytes = tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['y'] }, { op: 'Neg', inputs: ['x'], outputs: ['y'] }] });
  const e = t.throws(() => Model.fromBytes(bytes), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_MODEL');
  t.regex(e!.message, /value 'y' is defined twice: by node 'Relu_0' \(Relu\) and by node 'Neg_1' \(Neg\)/);
  // a node that overwrites a graph input
  const b2 = tinyModel({ inputs: { x: [1] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['x'] }, { op: 'Neg', inputs: ['x'], outputs: ['y'] }] });
  t.regex(t.throws(() => Model.fromBytes(b2), { instanceOf: MpqError })!.message, /value 'x' is defined twice: by graph input 'x'/);
});

test('an external-data location that is a folder is MPQ_BAD_MODEL, not EISDIR', (t) => {
  const dir = tmp();
  fs.mkdirSync(path.join(dir, 'weights'));
  const m = onnx.ModelProto.decode(tinyModel({ inputs: { x: [2] }, outputs: { y: null }, nodes: [{ op: 'Add', inputs: ['x', 'w'], outputs: ['y'] }], inits: { w: { dims: [2], values: [1, 2] } } }));
  const w = m.graph!.initializer![0];
  w.floatData = [];
  w.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
  w.externalData = [{ key: 'location', value: 'weights' }];
  fs.writeFileSync(path.join(dir, 'm.onnx'), onnx.ModelProto.encode(m).finish());
  const e = t.throws(() => Model.fromFile(path.join(dir, 'm.onnx')), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_MODEL');
  t.regex(e!.message, /external data location 'weights' is a folder/);
});

test('the size limits are configurable (MPQ_MAX_TENSOR_BYTES, setLimits) and the plan total is checked in the engine', async (t) => {
  const bytes = tinyModel({ inputs: { x: [64, 64] }, outputs: { y: null }, nodes: [{ op: 'Relu', inputs: ['x'], outputs: ['r'] }, { op: 'Neg', inputs: ['r'], outputs: ['y'] }] });
  const feed = { x: { shape: [64, 64], data: new Float32Array(4096) } };
  try {
    process.env.MPQ_MAX_TENSOR_BYTES = '8K';
    let e = await t.throwsAsync(Model.fromBytes(bytes).run(feed), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_TOO_LARGE');
    t.regex(e!.message, /node 'Relu_0' \(Relu, opset 13\): shape \[64,64\] needs 16\.0 KiB, over the limit of 8\.00 KiB/);
    process.env.MPQ_MAX_TENSOR_BYTES = 'lots';
    e = await t.throwsAsync(Model.fromBytes(bytes).run(feed), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_INPUT');
    delete process.env.MPQ_MAX_TENSOR_BYTES;
    // the engine's own check: two tensors of 16 KiB live at once at the peak (x is freed after Relu)
    setLimits({ maxPlanBytes: 24 * 1024 });
    e = await t.throwsAsync(Model.fromBytes(bytes).run(feed), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_TOO_LARGE');
    t.regex(e!.message, /the plan's live values \(at node 'Relu_0', Relu\) needs 32\.0 KiB, over the limit of 24\.0 KiB/);
    setLimits({ maxPlanBytes: undefined });
    const r = await Model.fromBytes(bytes).run(feed);
    t.deepEqual(r.y.shape, [64, 64]);
  } finally {
    delete process.env.MPQ_MAX_TENSOR_BYTES;
    setLimits({ maxPlanBytes: undefined, maxTensorBytes: undefined });
  }
});

test('a .npy v2 header length of 0xffffffff is MPQ_BAD_INPUT naming the file, not ERR_BUFFER_TOO_LARGE', async (t) => {
  const dir = tmp();
  const f = path.join(dir, 'a.npy');
  const b = Buffer.alloc(64);
  b.write('\x93NUMPY', 0, 'latin1');
  b[6] = 2;
  b.writeUInt32LE(0xffffffff, 8);
  fs.writeFileSync(f, b);
  const e = await t.throwsAsync(openDataSource(f), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_INPUT');
  t.regex(e!.message, /a\.npy: header length 4294967295 is larger than the file/);
});

function npyFolder(samples: Float32Array[], shape = [3, 4, 4]): string {
  const dir = tmp();
  samples.forEach((s, i) => fs.writeFileSync(path.join(dir, `s${String(i).padStart(2, '0')}.npy`), encodeNpy(shape, s)));
  return dir;
}

async function drain(src: Awaited<ReturnType<typeof openDataSource>>): Promise<string[]> {
  const names: string[] = [];
  for await (const b of src.batchesWithInfo(2)) names.push(...b.names);
  return names;
}

test('calibration data with NaN, Inf or 3e38 is refused naming the sample; --skip-bad-samples skips it with a warning', async (t) => {
  const good = () => new Float32Array(48).fill(0.5);
  const withVal = (v: number) => {
    const a = good();
    a[7] = v;
    return a;
  };
  for (const v of [NaN, Infinity, -Infinity, 3e38]) {
    const dir = npyFolder([good(), good(), withVal(v), good()]);
    const src = await openDataSource(dir, { sampleRank: 3 });
    const e = await t.throwsAsync(drain(src), { instanceOf: MpqError });
    t.is(e?.code, 'MPQ_BAD_INPUT');
    t.regex(e!.message, new RegExp(`sample 's02\\.npy': input 'input' has ${v === 3e38 ? '3e\\+38' : String(v)} at element 7.*--skip-bad-samples`));
    const warnings: string[] = [];
    const skip = await openDataSource(dir, { sampleRank: 3, skipBadSamples: true, onWarning: (m) => warnings.push(m) });
    t.deepEqual(await drain(skip), ['s00.npy', 's01.npy', 's03.npy']);
    t.is(warnings.length, 1);
    t.regex(warnings[0], /skipping sample 's02\.npy'/);
  }
  // all NaN: nothing left
  const dir = npyFolder([withVal(NaN), withVal(NaN)]);
  const e = await t.throwsAsync(drain(await openDataSource(dir, { sampleRank: 3, skipBadSamples: true, onWarning: () => undefined })), { instanceOf: MpqError });
  t.regex(e!.message, /every sample was skipped/);
});

test('calibration data of the wrong shape or dtype is refused naming the file', async (t) => {
  const dir = npyFolder([new Float32Array(48), new Float32Array(48)]);
  const e = await t.throwsAsync(openDataSource(dir, { sampleRank: 3, expect: { input: { sampleDims: [3, 8, 8] } } }), { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_INPUT');
  t.regex(e!.message, /one sample of input 'input' has shape \[3, 4, 4\], the model expects \[3, 8, 8\]/);
  const frac = new Float32Array(48).fill(0.5);
  const src = await openDataSource(dir.replace(/$/, ''), { sampleRank: 3 });
  t.is(src.count, 2);
  const dir2 = npyFolder([frac]);
  const e2 = await t.throwsAsync(drain(await openDataSource(dir2, { sampleRank: 3, expect: { input: { dtype: 'int' } } })), { instanceOf: MpqError });
  t.regex(e2!.message, /input 'input' is an integer in the model, but the data has 0\.5 at element 0/);
});

test('truncated .npy files and junk images are refused, or skipped with --skip-bad-samples', async (t) => {
  const dir = npyFolder([new Float32Array(48), new Float32Array(48), new Float32Array(48)]);
  const f = path.join(dir, 's01.npy');
  fs.writeFileSync(f, fs.readFileSync(f).subarray(0, 200));
  const e = await t.throwsAsync(openDataSource(dir, { sampleRank: 3 }), { instanceOf: MpqError });
  t.regex(e!.message, /s01\.npy: truncated data.*--skip-bad-samples/);
  const warnings: string[] = [];
  t.deepEqual(await drain(await openDataSource(dir, { sampleRank: 3, skipBadSamples: true, onWarning: (m) => warnings.push(m) })), ['s00.npy', 's02.npy']);
  t.is(warnings.length, 1);

  const img = tmp();
  fs.writeFileSync(path.join(img, 'a.png'), Buffer.from('not a png at all'));
  const e2 = await t.throwsAsync(async () => drain(await openDataSource(img, { preset: 'imagenet-tf' })), { instanceOf: MpqError });
  t.regex(e2!.message, /a\.png/);
  // a JPEG cut short decodes without complaint (the rest grey): refused by its missing end marker
  if (!HAS_SHARED) return;
  const jpg = sharedFile('data/imagenet-samples/images/0230_n02105855.jpg');
  const dir2 = tmp();
  fs.copyFileSync(jpg, path.join(dir2, 'a.jpg'));
  fs.writeFileSync(path.join(dir2, 'b.jpg'), fs.readFileSync(jpg).subarray(0, 5000));
  const e3 = await t.throwsAsync(openDataSource(dir2, { preset: 'imagenet-tf' }), { instanceOf: MpqError });
  t.regex(e3!.message, /b\.jpg' is a truncated JPEG.*--skip-bad-samples/);
  const w: string[] = [];
  t.deepEqual(await drain(await openDataSource(dir2, { preset: 'imagenet-tf', skipBadSamples: true, onWarning: (m) => w.push(m) })), ['a.jpg']);
  t.regex(w[0], /skipping sample 'b\.jpg'/);
});

test('--out that is an existing file is a clear error; a second run on a locked --out is refused; a stale lock is taken over', (t) => {
  const dir = tmp();
  const file = path.join(dir, 'f');
  fs.writeFileSync(file, 'x');
  const e = t.throws(() => OutputDir.open(file), { instanceOf: MpqError });
  t.regex(e!.message, /--out '.*f' is an existing file, not a folder/);

  const out = path.join(dir, 'out');
  const a = OutputDir.open(out);
  const e2 = t.throws(() => OutputDir.open(out), { instanceOf: MpqError });
  t.regex(e2!.message, new RegExp(`another mpq run \\(pid ${process.pid}.*is writing into`));
  a.write('x.txt', 'one');
  a.commit();
  t.is(fs.readFileSync(path.join(out, 'x.txt'), 'utf8'), 'one');
  // a lock left by a dead process
  fs.writeFileSync(path.join(out, '.mpq.lock'), JSON.stringify({ pid: 2 ** 22 + 12345, host: os.hostname() }));
  const b = OutputDir.open(out);
  b.write('x.txt', 'two');
  b.commit();
  t.is(fs.readFileSync(path.join(out, 'x.txt'), 'utf8'), 'two');
  t.false(fs.existsSync(path.join(out, '.mpq.lock')));
  // only the set in force is left: one generation folder
  t.is(fs.readdirSync(out).filter((n) => n.startsWith('.mpq-gen-')).length, 1);
});

test('an aborted run leaves the old set and no staging folder; a new --out it created is removed', (t) => {
  const dir = tmp();
  const out = path.join(dir, 'out');
  const a = OutputDir.open(out);
  a.write('x.txt', 'old');
  a.commit();
  const b = OutputDir.open(out);
  b.write('x.txt', 'half');
  b.abort();
  t.is(fs.readFileSync(path.join(out, 'x.txt'), 'utf8'), 'old');
  t.deepEqual(fs.readdirSync(out).filter((n) => n.startsWith('.mpq-gen-')).length, 1);
  const fresh = path.join(dir, 'fresh');
  OutputDir.open(fresh).abort();
  t.false(fs.existsSync(fresh));
  // plain files of an older version are adopted: readable throughout, then replaced as a set
  const legacy = path.join(dir, 'legacy');
  fs.mkdirSync(legacy);
  fs.writeFileSync(path.join(legacy, 'x.txt'), 'legacy');
  fs.writeFileSync(path.join(legacy, 'keep.txt'), 'user file');
  const c = OutputDir.open(legacy);
  c.write('x.txt', 'new');
  c.commit();
  t.is(fs.readFileSync(path.join(legacy, 'x.txt'), 'utf8'), 'new');
  t.is(fs.readFileSync(path.join(legacy, 'keep.txt'), 'utf8'), 'user file');
});
