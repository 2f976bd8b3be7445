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
import { HAS_SHARED, MOBILENET, OCR, randomData, SKIP_SHARED_MSG, sharedFile } from './helpers';

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
