/**
 * Checks an `mpq quantize`/`mpq search` output folder of MobileNetV1 against plain
 * onnxruntime-node, side by side with `mpq verify DIR --json` (issue 10's done-when):
 * - top-1 on the odd-class images with graph optimizations off and with default options, and float;
 * - on the samples verify uses (the first 128 calibration samples recorded in quantize.json):
 *   argmax agreement of the default-options run with the optimizations-off run (= QDQ
 *   semantics), next to verify's agreement figures against the simulation.
 *
 *   npx tsc -p tsconfig.json && node dist/bench/ort-check.js DIR [--eval 500]
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { openDataSource } from '../src/data';
import { Tensor } from '../src/model';

const ROOT = path.resolve(__dirname, '..', '..');
const IMAGES = path.resolve(ROOT, '..', 'shared', 'data', 'imagenet-samples', 'images');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : def;
}

async function argmaxes(file: string, optimize: boolean, batches: Tensor[]): Promise<number[]> {
  const s = await ort.InferenceSession.create(file, { graphOptimizationLevel: optimize ? 'all' : 'disabled', intraOpNumThreads: 2, interOpNumThreads: 1 });
  const out: number[] = [];
  for (const x of batches) {
    const r = await s.run({ [s.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) });
    const p = r[s.outputNames[0]].data as Float32Array;
    const n = x.shape[0], k = p.length / n;
    for (let j = 0; j < n; j++) {
      let b = 0;
      for (let c = 1; c < k; c++) if (p[j * k + c] > p[j * k + b]) b = c;
      out.push(b);
    }
  }
  await s.release();
  return out;
}

async function main(): Promise<void> {
  const dir = process.argv[2];
  if (!dir || !fs.existsSync(path.join(dir, 'quantize.json'))) throw new Error('usage: node dist/bench/ort-check.js DIR (an mpq quantize/search --out folder of MobileNetV1)');
  const s = JSON.parse(fs.readFileSync(path.join(dir, 'quantize.json'), 'utf8'));
  const qdq = path.join(dir, 'model.qdq.onnx');
  const collect = async (src: Awaited<ReturnType<typeof openDataSource>>) => {
    const xs: Tensor[] = [], labels: number[] = [];
    for await (const b of src.batchesWithInfo()) {
      xs.push(b.inputs.input);
      labels.push(...b.indices);
    }
    return { xs, labels };
  };
  const ev = await collect(await openDataSource(IMAGES, { preset: 'imagenet-tf', select: 'odd', limit: Number(arg('eval', '500')), inputName: 'input', batchSize: 50 }));
  const c = s.calib;
  const limit = Math.min(Number(c.limit ?? c.samples ?? 128), 128);
  const cal = await collect(await openDataSource(c.spec, { preset: c.preset, select: c.select, offset: c.offset ? Number(c.offset) : undefined, limit, inputName: 'input' }));
  const top1 = (p: number[]) => p.filter((v, i) => v === ev.labels[i]).length / p.length;
  const float = await argmaxes(s.model, false, ev.xs);
  const off = await argmaxes(qdq, false, ev.xs);
  const on = await argmaxes(qdq, true, ev.xs);
  const calOff = await argmaxes(qdq, false, cal.xs);
  const calOn = await argmaxes(qdq, true, cal.xs);
  const agree = calOn.filter((v, i) => v === calOff[i]).length / calOn.length;
  const v = JSON.parse(execFileSync(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), 'verify', dir, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));
  console.log(`${dir}: profile ${s.profile ?? 'default'}, config ${s.config}; onnxruntime-node ${ort.env.versions?.common}`);
  console.log(`top-1 on ${ev.labels.length} odd-class images: float ${top1(float).toFixed(3)}, optimizations off ${top1(off).toFixed(3)}, default options ${top1(on).toFixed(3)} (default - off ${(100 * (top1(on) - top1(off))).toFixed(1)} points, default - float ${(100 * (top1(on) - top1(float))).toFixed(1)} points)`);
  console.log(`on the ${cal.xs.reduce((a, x) => a + x.shape[0], 0)} calibration samples verify uses:`);
  console.log(`  independent: agreement(default options, optimizations off) ${agree.toFixed(4)}`);
  console.log(`  mpq verify:  agreement(optimizations off, simulation) ${v.qdq.agreement.toFixed(4)}, agreement(default options, simulation) ${v.optimized.agreement.toFixed(4)}, SQNR ${v.qdq.sqnr_db} / ${v.optimized.sqnr_db} dB, faithful ${v.faithful}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
