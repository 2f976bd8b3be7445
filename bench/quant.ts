/**
 * Quantization benchmark: range setting (min-max vs MSE) and homogeneous configurations on
 * MobileNetV1 (top-1 on the 500 odd-class ImageNet samples, calibrated on 128 even-class ones)
 * and PP-OCRv4 rec (exact match on text lines 200-599, calibrated on 0-199). The quantized
 * numbers are those of the simulation, which equals onnxruntime on the exported model
 * (graph optimizations off; see __test__/quantize.test.ts).
 */
import * as fs from 'fs';
import * as path from 'path';
import { Model } from '../index';
import { openDataSource, readLabels } from '../src/data';
import { ctcGreedyDecode, readCharset } from '../src/eval/ctc';
import { argmaxRows } from '../src/eval/metrics';
import { loadBitConfig } from '../src/quant/config';
import { calibrate, quantize, QuantizeOptions } from '../src/quant/quantize';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const OCR = path.join(ROOT, 'node_modules', '@gutenye', 'ocr-models', 'assets');

export interface QuantRow {
  model: string;
  config: string;
  weight_range: string;
  act_range: string;
  rounding: string;
  metric: string;
  value: number;
  float: number;
  seconds: number;
}

type Measure = (m: Model) => Promise<number>;

async function mobilenet(): Promise<{ model: Model; calib: () => AsyncIterable<Record<string, { shape: number[]; data: Float32Array }>>; measure: Measure; metric: string }> {
  const images = path.join(SHARED, 'data', 'imagenet-samples', 'images');
  const labels = readLabels(path.join(SHARED, 'data', 'imagenet-samples', 'labels.tsv'));
  if (labels.kind !== 'class') throw new Error('labels.tsv: expected classes');
  const calib = await openDataSource(images, { preset: 'imagenet-tf', select: 'even', limit: 128, batchSize: 32 });
  const evalSrc = await openDataSource(images, { preset: 'imagenet-tf', select: 'odd', batchSize: 50 });
  const measure: Measure = async (m) => {
    let hit = 0, n = 0;
    for await (const b of evalSrc.batchesWithInfo()) {
      const pred = argmaxRows((await m.run(b.inputs)).probs);
      pred.forEach((p, i) => {
        n++;
        if (p === labels.byFile.get(b.names[i])) hit++;
      });
    }
    return hit / n;
  };
  return { model: Model.fromFile(path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx')), calib: () => calib.batches(), measure, metric: 'top1' };
}

async function rec(): Promise<{ model: Model; calib: () => AsyncIterable<Record<string, { shape: number[]; data: Float32Array }>>; measure: Measure; metric: string }> {
  const dir = path.join(SHARED, 'data', 'textlines');
  const labels = readLabels(path.join(dir, 'labels.tsv'));
  if (labels.kind !== 'text') throw new Error('labels.tsv: expected text');
  const charset = readCharset(path.join(OCR, 'ppocr_keys_v1.txt'));
  // batch 1 at each line's own width (as the FP32 reference in shared/data/README.md; padding
  // lines to one width changes what the recogniser reads)
  const own = { preset: 'paddleocr-rec', preprocess: { pad: undefined }, inputName: 'x', batchSize: 1 };
  const calib = await openDataSource(path.join(dir, 'images'), { ...own, range: [0, 200] });
  const evalSrc = await openDataSource(path.join(dir, 'images'), { ...own, range: [200, 600] });
  const model = Model.fromFile(path.join(OCR, 'ch_PP-OCRv4_rec_infer.onnx'));
  const out = model.outputNames[0];
  const measure: Measure = async (m) => {
    let hit = 0, n = 0;
    for await (const b of evalSrc.batchesWithInfo()) {
      const texts = ctcGreedyDecode((await m.run(b.inputs))[out], charset);
      texts.forEach((t, i) => {
        n++;
        if (t === labels.byFile.get(b.names[i])) hit++;
      });
    }
    return hit / n;
  };
  return { model, calib: () => calib.batches(), measure, metric: 'exact_match' };
}

export async function quantBench(log: (s: string) => void, which: string[] = ['mobilenet', 'rec'], only?: string[]): Promise<QuantRow[]> {
  if (!fs.existsSync(SHARED)) {
    log('../shared/ is absent: the quantization benchmark needs the shared models and data');
    return [];
  }
  const rows: QuantRow[] = [];
  for (const name of which) {
    const setup = name === 'mobilenet' ? await mobilenet() : await rec();
    const float = await setup.measure(setup.model);
    log(`${name}: float ${setup.metric} ${float.toFixed(4)}`);
    const variants: { cfg: string; opts: QuantizeOptions }[] = [
      { cfg: 'W8A8', opts: { weightRange: 'minmax', actRange: 'minmax', rounding: 'nearest' } },
      { cfg: 'W8A8', opts: { weightRange: 'mse', actRange: 'mse', rounding: 'nearest' } },
      { cfg: 'W8A8', opts: { weightRange: 'mse', actRange: 'minmax', rounding: 'nearest' } },
      { cfg: 'W8A8', opts: { weightRange: 'minmax', actRange: 'mse', rounding: 'nearest' } },
      { cfg: 'W8A8', opts: {} },
      { cfg: 'W8A16', opts: {} },
      { cfg: 'W4A8', opts: {} },
      { cfg: 'W4A16', opts: {} },
      { cfg: 'W16A16', opts: {} },
    ];
    const cals = new Map<string, Awaited<ReturnType<typeof calibrate>>>();
    // --configs W8A16,W4A16: only those, at the default range setting and rounding
    for (const v of only ? variants.filter((x) => only.includes(x.cfg) && Object.keys(x.opts).length === 0) : variants) {
      const t0 = Date.now();
      const key = JSON.stringify(v.opts);
      let cal = cals.get(key);
      if (!cal) cals.set(key, (cal = await calibrate(setup.model, setup.calib, v.opts)));
      const q = await quantize(cal, loadBitConfig(v.cfg));
      const value = await setup.measure(Model.fromGraph(q.graph));
      const row: QuantRow = {
        model: name, config: v.cfg, weight_range: cal.weightRange, act_range: cal.actRange, rounding: cal.rounding, metric: setup.metric,
        value, float, seconds: +((Date.now() - t0) / 1000).toFixed(1),
      };
      rows.push(row);
      log(`${name} ${v.cfg} weights ${row.weight_range} acts ${row.act_range} rounding ${row.rounding}: ${setup.metric} ${value.toFixed(4)} (float ${float.toFixed(4)}, ${row.seconds} s)`);
    }
  }
  return rows;
}
