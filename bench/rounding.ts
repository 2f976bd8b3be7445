/**
 * Weight rounding benchmark: round-to-nearest against data-aware rounding (GPTQ + bias
 * correction) on MobileNetV1-0.75, top-1 of the exported QDQ model in onnxruntime-node with
 * graph optimizations off (= QDQ semantics) on the 500 odd-class images, calibrated on the
 * 128 even-class images. Prints a table and the time each step takes.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/rounding.js CALIB.npy EVAL.npy LABELS.npy [--configs W4A8,W4A16,W8A8] [--threads 2]
 *
 * CALIB.npy: [128,3,224,224] even-class images preprocessed for MobileNet (pixel/127.5 - 1);
 * EVAL.npy: [500,3,224,224] odd-class images; LABELS.npy: their class indices.
 */
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { Model } from '../index';
import { native } from '../src/native';
import { readNpy } from '../src/npy';
import { Calibrated, calibrate, exportQdq, quantize } from '../src/quant/quantize';

const ROOT = path.resolve(__dirname, '..', '..');
const MOBILENET = path.resolve(ROOT, '..', 'shared', 'models', 'mobilenet_v1_0.75_224.onnx');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

async function main(): Promise<void> {
  const [calibFile, evalFile, labelFile] = process.argv.slice(2).filter((a, i, all) => !a.startsWith('--') && !all[i - 1]?.startsWith('--'));
  if (!calibFile || !evalFile || !labelFile) throw new Error('usage: node dist/bench/rounding.js CALIB.npy EVAL.npy LABELS.npy [--configs W4A8,W4A16,W8A8] [--threads 2]');
  const threads = Number(arg('threads', '2'));
  native().setThreads(threads);
  const configs = arg('configs', 'W4A8,W4A16,W8A8').split(',');
  const calib = readNpy(calibFile);
  const ev = readNpy(evalFile);
  const labels = readNpy(labelFile).data;
  const per = 3 * 224 * 224;
  const nCal = calib.shape[0];
  const nEval = ev.shape[0];
  const B = 32;
  const batches = async function* () {
    for (let i = 0; i < nCal; i += B) {
      const n = Math.min(B, nCal - i);
      yield { input: { shape: [n, 3, 224, 224], data: calib.data.subarray(i * per, (i + n) * per) as Float32Array } };
    }
  };
  const model = Model.fromFile(MOBILENET);
  let t0 = Date.now();
  const calN = await calibrate(model, batches, { rounding: 'nearest' });
  const tCal = (Date.now() - t0) / 1000;
  t0 = Date.now();
  const calG = await calibrate(model, batches, { rounding: 'gptq' });
  const tStats = calG.rounder!.statsSeconds;

  const top1 = async (bytes: Uint8Array): Promise<number> => {
    const s = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled', intraOpNumThreads: threads, interOpNumThreads: 1 });
    let hits = 0;
    for (let i = 0; i < nEval; i += 50) {
      const n = Math.min(50, nEval - i);
      const r = await s.run({ input: new ort.Tensor('float32', ev.data.subarray(i * per, (i + n) * per) as Float32Array, [n, 3, 224, 224]) });
      const p = r[s.outputNames[0]].data as Float32Array;
      const k = p.length / n;
      for (let j = 0; j < n; j++) {
        let b = 0;
        for (let c = 1; c < k; c++) if (p[j * k + c] > p[j * k + b]) b = c;
        if (b === labels[i + j]) hits++;
      }
    }
    return hits / nEval;
  };
  const fs = await import('fs');
  const floatTop1 = await top1(fs.readFileSync(MOBILENET));
  console.log(`MobileNetV1-0.75, ${nCal} calibration images, ${nEval} evaluation images, ORT graph optimizations off, ${threads} threads`);
  console.log(`float top-1 ${floatTop1.toFixed(3)}; calibration ${tCal.toFixed(1)} s; layer statistics for data-aware rounding ${tStats.toFixed(1)} s`);
  console.log('| config | nearest top-1 | data-aware top-1 | data-aware rounding s |');
  console.log('|---|---|---|---|');
  const rows: Record<string, unknown>[] = [];
  for (const name of configs) {
    const m = /^W(\d+)A(\d+)$/.exec(name);
    if (!m) throw new Error(`bad config ${name}`);
    const config = { w: Number(m[1]), a: Number(m[2]), weights: {}, activations: {} };
    const qN = await quantize(calN, config);
    const accN = await top1(exportQdq(qN, calN));
    const before = calG.rounder!.seconds;
    const tq = Date.now();
    const qG = await quantize(calG as Calibrated, config);
    const tRound = (Date.now() - tq) / 1000;
    const accG = await top1(exportQdq(qG, calG));
    console.log(`| ${name} | ${accN.toFixed(3)} | ${accG.toFixed(3)} | ${tRound.toFixed(1)}${calG.rounder!.seconds === before ? ' (cached)' : ''} |`);
    rows.push({ config: name, nearest: accN, gptq: accG, roundingSeconds: tRound });
  }
  if (process.argv.includes('--json')) console.log(JSON.stringify({ float: floatTop1, calibrationSeconds: tCal, statsSeconds: tStats, rows }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
