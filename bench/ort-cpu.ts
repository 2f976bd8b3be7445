/**
 * What ONNX Runtime's CPU provider runs faithfully (DESIGN.md section 9, issue 10): MobileNetV1
 * exported at several configurations, with the default scheme and with the ort-cpu profile's
 * (8-bit weights in [-63, 63]), evaluated in onnxruntime-node with graph optimizations off (=
 * QDQ semantics = the simulation) and with the default session options, side by side, plus
 * `verifyExport`'s figures (the check `mpq verify` runs) on the calibration images.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/ort-cpu.js [--configs W8A8,W8A16,W16A16,W4A8,W4A16] [--schemes default,reduce_range] [--eval 500] [--rounding auto]
 *
 * Calibration: the first 128 even-class images of ../shared/data/imagenet-samples (preset
 * imagenet-tf); evaluation: the odd-class images (top-1 against their class).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { openDataSource } from '../src/data';
import { cpuHasVnni, verifyExport } from '../src/eval/verify';
import { Model } from '../src/model';
import { Tensor } from '../src/model';
import { Calibrated, calibrate, exportQdq, quantize } from '../src/quant/quantize';
import { Rounding } from '../src/quant/rounding';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const MOBILENET = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');
const IMAGES = path.join(SHARED, 'data', 'imagenet-samples', 'images');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

async function main(): Promise<void> {
  if (!fs.existsSync(MOBILENET)) throw new Error(`${MOBILENET} is missing: this benchmark needs ../shared`);
  const configs = arg('configs', 'W8A8,W8A16,W16A16,W4A8,W4A16').split(',');
  const schemes = arg('schemes', 'default,reduce_range').split(',');
  const nEval = Number(arg('eval', '500'));
  const rounding = arg('rounding', 'auto') as Rounding;
  const calibSrc = await openDataSource(IMAGES, { preset: 'imagenet-tf', select: 'even', limit: 128, inputName: 'input' });
  const evalSrc = await openDataSource(IMAGES, { preset: 'imagenet-tf', select: 'odd', limit: nEval, inputName: 'input', batchSize: 50 });
  const evalBatches: { x: Tensor; labels: number[] }[] = [];
  for await (const b of evalSrc.batchesWithInfo()) evalBatches.push({ x: b.inputs.input, labels: b.indices });
  const top1 = async (bytes: Uint8Array, optimize: boolean): Promise<{ top1: number; pred: number[]; ms: number }> => {
    const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: optimize ? 'all' : 'disabled', intraOpNumThreads: 2, interOpNumThreads: 1 });
    let hits = 0, n = 0;
    const pred: number[] = [];
    let ms = 0;
    for (const b of evalBatches) {
      const t0 = process.hrtime.bigint();
      const r = await s.run({ input: new ort.Tensor('float32', b.x.data, b.x.shape) });
      ms += Number(process.hrtime.bigint() - t0) / 1e6;
      const p = r[s.outputNames[0]].data as Float32Array;
      const k = p.length / b.labels.length;
      b.labels.forEach((label, j) => {
        let best = 0;
        for (let c = 1; c < k; c++) if (p[j * k + c] > p[j * k + best]) best = c;
        pred.push(best);
        if (best === label) hits++;
        n++;
      });
    }
    await s.release();
    return { top1: hits / n, pred, ms: ms / n };
  };
  const model = Model.fromFile(MOBILENET);
  const float = await top1(fs.readFileSync(MOBILENET), true);
  console.log(`MobileNetV1-0.75; onnxruntime-node ${ort.env.versions?.common}; CPU ${cpuHasVnni() ? 'with' : 'without'} VNNI; calibration 128 even-class images, top-1 on ${evalSrc.count} odd-class images; rounding ${rounding}`);
  console.log(`float top-1 ${float.top1.toFixed(3)}, ${float.ms.toFixed(2)} ms per image (default options, batch 50, 2 threads)`);
  console.log('| config | scheme | top-1 opt off | top-1 default opts | off vs default argmax agreement | verify: off SQNR dB / agr | verify: default SQNR dB / agr | faithful | default-opts ms/image (float = 1) |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  const cals: Record<string, Calibrated> = {};
  for (const scheme of schemes) {
    for (const name of configs) {
      const m = /^W(\d+)A(\d+)$/.exec(name);
      if (!m) throw new Error(`bad config ${name}`);
      const w = Number(m[1]), a = Number(m[2]);
      if (scheme === 'reduce_range' && w !== 8) continue; // reduce_range only changes 8-bit weights
      cals[scheme] ??= await calibrate(model, () => calibSrc.batches(), { rounding, scheme: { reduce_range: scheme === 'reduce_range' } });
      const q = await quantize(cals[scheme], { w, a, weights: {}, activations: {} });
      const bytes = exportQdq(q, cals[scheme]);
      const off = await top1(bytes, false);
      const on = await top1(bytes, true);
      const agree = off.pred.filter((p, i) => p === on.pred[i]).length / off.pred.length;
      const v = (await verifyExport(bytes, Model.fromGraph(q.graph), calibSrc.batches()))!;
      console.log(
        `| ${name} | ${scheme} | ${off.top1.toFixed(3)} | ${on.top1.toFixed(3)} | ${agree.toFixed(3)} | ${v.qdq.sqnr_db.toFixed(1)} / ${v.qdq.agreement.toFixed(3)} | ${v.optimized.sqnr_db.toFixed(1)} / ${v.optimized.agreement.toFixed(3)} | ${v.faithful} | ${on.ms.toFixed(2)} (${(on.ms / float.ms).toFixed(2)}) |`,
      );
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
