/** The four shared models, run by the engine and by ONNX Runtime: every output within 1e-4 of max |ort|. */
import test from 'ava';
import * as path from 'path';
import { Model } from '../index';
import { HAS_SHARED, MOBILENET, OCR, ortRun, randomData, relMaxDiff, SKIP_SHARED_MSG } from './helpers';

const cases: { name: string; file: () => string; shape: number[]; needsShared: boolean }[] = [
  { name: 'MobileNetV1 batch 8', file: () => MOBILENET, shape: [8, 3, 224, 224], needsShared: true },
  { name: 'PP-OCR cls 8 x 48x192', file: () => path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx'), shape: [8, 3, 48, 192], needsShared: false },
  { name: 'PP-OCRv4 rec 4 x 48x320', file: () => path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'), shape: [4, 3, 48, 320], needsShared: false },
  { name: 'PP-OCRv4 det 1 x 320x640', file: () => path.join(OCR, 'ch_PP-OCRv4_det_infer.onnx'), shape: [1, 3, 320, 640], needsShared: false },
];

/** White page (normalised 1.0) with rows of dark striped blocks, like lines of words. */
function pageLike(shape: number[]): Float32Array {
  const [, C, H, W] = shape;
  const x = new Float32Array(C * H * W).fill(1);
  let s = 3;
  for (let line = 0; line < Math.floor((H - 40) / 45); line++) {
    for (let wd = 0; wd < Math.floor((W - 40) / 50); wd++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const len = 10 + (s % 30);
      const y0 = 30 + line * 45, x0 = 20 + wd * 50;
      for (let c = 0; c < C; c++) for (let y = y0; y < y0 + 14; y++) for (let xx = x0; xx < Math.min(W, x0 + len); xx++) if ((xx + y) % 5 < 3) x[c * H * W + y * W + xx] = -1;
    }
  }
  return x;
}

for (const c of cases) {
  const run = c.needsShared && !HAS_SHARED ? test.skip : test.serial;
  run(`${c.name} matches onnxruntime-node`, async (t) => {
    if (c.needsShared && !HAS_SHARED) return t.log(SKIP_SHARED_MSG);
    const model = Model.fromFile(c.file());
    const input = model.inputNames[0];
    // the detector sees a page-like image (its output on noise is ~1e-5 everywhere, which makes a
    // relative comparison meaningless); the classifiers see noise
    const data = c.name.includes('det') ? pageLike(c.shape) : randomData(c.shape.reduce((a, b) => a * b, 1), 7);
    const feeds = { [input]: { shape: c.shape, data } };
    const ref = await ortRun(c.file(), feeds);
    const ours = await model.run(feeds);
    for (const o of model.outputNames) {
      t.deepEqual(ours[o].shape, ref[o].shape);
      const d = relMaxDiff(ours[o].data, ref[o].data);
      t.log(`${o}: max |ours - ort| / max |ort| = ${d.toExponential(2)}`);
      t.true(d <= 1e-4, `${o}: ${d}`);
    }
  });
}
if (!HAS_SHARED) test('shared models', (t) => { t.log(SKIP_SHARED_MSG); t.pass(); });
