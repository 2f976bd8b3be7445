/**
 * Quantization end to end: the simulated QDQ model and the exported file run in
 * onnxruntime-node (graph optimizations off = QDQ semantics) give the same numbers.
 */
import test from 'ava';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Model } from '../index';
import { openDataSource } from '../src/data';
import { SqnrMeter, argmaxRows } from '../src/eval/metrics';
import { loadBitConfig } from '../src/quant/config';
import { calibrate, exportQdq, quantize } from '../src/quant/quantize';
import { HAS_SHARED, MOBILENET, OCR, randomData, SKIP_SHARED_MSG, sharedFile, tinyModel } from './helpers';

async function ortOutputs(bytes: Uint8Array, feeds: Record<string, { shape: number[]; data: Float32Array }>) {
  const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 2 });
  const f: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) f[k] = new ort.Tensor('float32', v.data, v.shape);
  const r = await s.run(f);
  const out: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, v] of Object.entries(r)) out[k] = { shape: [...v.dims], data: v.data as Float32Array };
  return out;
}

const run = HAS_SHARED ? test.serial : test.skip;
run('MobileNetV1: simulation equals onnxruntime on the exported model (W8A8, W8A16, W4A8), 4-bit weights stored as 4-bit', async (t) => {
  if (!HAS_SHARED) return t.log(SKIP_SHARED_MSG);
  const images = path.dirname(sharedFile('data/imagenet-samples/labels.tsv')) + '/images';
  const calib = await openDataSource(images, { preset: 'imagenet-tf', select: 'even', limit: 32, batchSize: 16 });
  const evalSrc = await openDataSource(images, { preset: 'imagenet-tf', select: 'odd', limit: 16, batchSize: 16 });
  const model = Model.fromFile(MOBILENET);
  const cal = await calibrate(model, () => calib.batches());
  const sizes: Record<string, number> = {};
  for (const [cfg, minDb] of [['W8A8', 40], ['W8A16', 40], ['W4A8', 30]] as const) {
    const q = await quantize(cal, loadBitConfig(cfg));
    const bytes = exportQdq(q, cal);
    sizes[cfg] = bytes.length;
    const sim = Model.fromGraph(q.graph);
    const meter = new SqnrMeter();
    let agree = 0, n = 0;
    for await (const b of evalSrc.batches()) {
      const feeds = { input: b.input };
      const want = await sim.run(feeds);
      const got = await ortOutputs(bytes, feeds);
      meter.add(got, want);
      const a = argmaxRows(want.probs), c = argmaxRows(got.probs);
      a.forEach((v, i) => { n++; if (v === c[i]) agree++; });
    }
    t.log(`${cfg}: simulation vs onnxruntime SQNR ${meter.db().toFixed(1)} dB, argmax agreement ${agree}/${n}, ${bytes.length} bytes`);
    t.true(meter.db() >= minDb, `${cfg} SQNR ${meter.db()}`);
    t.true(agree / n >= 0.98, `${cfg} agreement ${agree}/${n}`);
  }
  t.true(sizes.W4A8 <= 0.65 * sizes.W8A8, `W4A8 ${sizes.W4A8} bytes vs W8A8 ${sizes.W8A8}`);
});

test.serial('PP-OCR cls (opset 9, weights in Constant nodes): the opset-13 and opset-21 exports run in onnxruntime exactly as simulated', async (t) => {
  const model = Model.fromFile(path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'));
  const x = { shape: [8, 3, 48, 192], data: randomData(8 * 3 * 48 * 192, 11) };
  const cal = await calibrate(model, async function* () { yield { x }; }, { rounding: 'nearest' });
  for (const cfg of ['W8A8', 'W4A16']) {
    const q = await quantize(cal, loadBitConfig(cfg));
    const bytes = exportQdq(q, cal);
    const want = await Model.fromGraph(q.graph).run({ x });
    const got = await ortOutputs(bytes, { x });
    const m = new SqnrMeter();
    m.add(got, want);
    t.log(`${cfg}: ${m.db().toFixed(1)} dB`);
    t.true(m.db() >= 60, `${cfg}: ${m.db()} dB`);
  }
});

test('an audio front-end (STFT as Conv, power spectrum, mel filterbank, Log): the values the Log reads stay float with the reason; the input and the weights keep their quantizers, and W8A8 loses less', async (t) => {
  // x [N, 1, 256] -> Conv (8 "frequencies", stride 32) -> Pow 2 -> MatMul (filterbank, after a Transpose) -> Clip -> Log -> Gemm -> y
  const K = 8, T = 8;
  const basis = Array.from({ length: K * 32 }, (_, i) => Math.cos((Math.PI * (Math.floor(i / 32) + 1) * (i % 32)) / 32));
  const fb = Array.from({ length: K * 4 }, (_, i) => (Math.floor(i / 4) % 4 === i % 4 ? 1 : 0.1));
  const bytes = tinyModel({
    inputs: { x: ['N', 1, 256] },
    outputs: { y: null },
    nodes: [
      { op: 'Conv', inputs: ['x', 'basis'], outputs: ['spec'], attrs: { kernel_shape: [32], strides: [32] } },
      { op: 'Pow', inputs: ['spec', 'two'], outputs: ['power'] },
      { op: 'Transpose', inputs: ['power'], outputs: ['pt'], attrs: { perm: [0, 2, 1] } },
      { op: 'MatMul', inputs: ['pt', 'fb'], outputs: ['mel'] },
      { op: 'Clip', inputs: ['mel', 'eps', ''], outputs: ['melc'] },
      { op: 'Log', inputs: ['melc'], outputs: ['logmel'] },
      { op: 'Flatten', inputs: ['logmel'], outputs: ['f'] },
      { op: 'Gemm', inputs: ['f', 'gw', 'gb'], outputs: ['y'], attrs: { transB: 1 } },
    ],
    inits: {
      basis: { dims: [K, 1, 32], values: basis }, two: { dims: [], values: [2] }, fb: { dims: [K, 4], values: fb }, eps: { dims: [], values: [1e-6] },
      gw: { dims: [3, 4 * T], values: Array.from(randomData(3 * 4 * T, 91)) }, gb: { dims: [3], values: [0, 0, 0] },
    },
  });
  const m = Model.fromBytes(bytes);
  // quiet and loud segments: the small power values matter
  const sig = (seed: number) => Float32Array.from(randomData(8 * 256, seed), (v, i) => v * (Math.floor(i / 256) % 2 ? 0.5 : 0.005));
  const batch = { x: { shape: [8, 1, 256], data: sig(92) } };
  const cal = await calibrate(m, async function* () { yield batch; }, { rounding: 'nearest' });
  const skipped = new Map(cal.placement.skipped.map((s) => [s.tensor, s.reason]));
  // quantizer positions on the way (the Pow output, its Transpose) are left out with the reason; the others are fused kernels' inner values
  for (const v of ['power', 'pt']) t.regex(skipped.get(v) ?? '', /feeds Log 'Log_\d+'/, `${v} stays float`);
  for (const v of ['spec', 'power', 'pt', 'mel', 'melc']) t.false(cal.placement.activations.some((a) => a.tensor === v), `no quantizer on ${v}`);
  t.true(cal.placement.activations.some((a) => a.tensor === 'logmel'), 'the Log output is quantized');
  t.true(cal.placement.activations.some((a) => a.tensor === 'x'), 'the input keeps its quantizer');
  t.deepEqual(cal.placement.weights.map((w) => w.tensor).sort(), ['basis', 'fb', 'gw']);
  const q = await quantize(cal, loadBitConfig('W8A8'));
  const test = { x: { shape: [8, 1, 256], data: sig(93) } };
  const float = await m.run(test);
  const got = await Model.fromGraph(q.graph).run(test);
  const meter = new SqnrMeter();
  meter.add(float, got);
  // measured: 19.2 dB; 13.4 dB with the values the Log reads quantized (the quiet segments' input quantization bounds both)
  t.true(meter.db() > 17, `W8A8 output SQNR ${meter.db().toFixed(1)} dB`);
});
