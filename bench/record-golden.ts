/**
 * Records a golden folder of onnxruntime outputs on this machine's CPU class, in the layout of
 * `../shared/golden/` (see its README), so that the engine can be checked against CPU classes
 * a developer does not have (AVX-512 VNNI, ARM64 NEON, ...):
 *
 *   node dist/bench/record-golden.js OUT_DIR [--images N] [--calib N]
 *
 * writes `OUT_DIR/cpu.json` (CPU model, architecture, SIMD flags, onnxruntime-node version,
 * image names), `OUT_DIR/input.npy` (the first N odd-class ImageNet samples, preprocessed as
 * `../shared/data/README.md` says), and per model a folder with `model.onnx` (QDQ exports of
 * MobileNetV1 made by `mpq quantize` from the first `--calib` even-class images; the float
 * model stays in `../shared/models/`) and `ort_<disabled|all>_t<1|2>_b<1|N>.npy`.
 * Name the folder after the CPU class (for example `x86-64-avx512-vnni`, `arm64-neon`) and
 * add it to `../shared/golden/`; `__test__/golden.test.ts` picks up every folder there.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { encodeNpy, openDataSource } from '../index';

const ROOT = path.resolve(__dirname, '..', '..');
const SHARED = path.resolve(ROOT, '..', 'shared');
const MOBILENET = path.join(SHARED, 'models', 'mobilenet_v1_0.75_224.onnx');
const IMAGES = path.join(SHARED, 'data', 'imagenet-samples', 'images');
const CONFIGS = ['W8A8', 'W4A8', 'W8A16'];

function simdFlags(): string[] {
  if (process.arch === 'arm64') return ['neon'];
  try {
    const flags = /flags\s*:\s*(.*)/.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.split(/\s+/) ?? [];
    return flags.filter((f) => /^(sse4_2|avx|avx2|fma|f16c|avx512\w*|avx_vnni\w*|amx\w*)$/.test(f));
  } catch {
    return [];
  }
}

async function main(argv: string[]): Promise<void> {
  const out = argv.find((a, i) => !a.startsWith('--') && !['--images', '--calib'].includes(argv[i - 1]));
  if (!out) throw new Error('usage: node dist/bench/record-golden.js OUT_DIR [--images N] [--calib N]');
  const opt = (name: string, d: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : d);
  const nImages = opt('--images', 8);
  const nCalib = opt('--calib', 32);
  if (!fs.existsSync(MOBILENET)) throw new Error(`${MOBILENET} is missing: the recorder reads ../shared/`);
  fs.mkdirSync(out, { recursive: true });

  const src = await openDataSource(IMAGES, { preset: 'imagenet-tf', select: 'odd', limit: nImages });
  const batches = [];
  for await (const b of src.batches(nImages)) batches.push(b.input);
  const input = batches[0];
  fs.writeFileSync(path.join(out, 'input.npy'), encodeNpy(input.shape, input.data));
  const ortVersion = require(path.join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json')).version;
  const cpu = { model: os.cpus()[0]?.model ?? 'unknown', arch: process.arch, simd: simdFlags(), onnxruntime_node: ortVersion, images: src.names };
  fs.writeFileSync(path.join(out, 'cpu.json'), JSON.stringify(cpu, null, 1));

  const models: [string, string][] = [['mobilenet_v1_float', MOBILENET]];
  for (const c of CONFIGS) {
    const dir = path.join(out, `mobilenet_v1_${c.toLowerCase()}`);
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-golden-'));
    execFileSync(process.execPath, [path.join(ROOT, 'bin', 'mpq.js'), 'quantize', MOBILENET, '--calib', IMAGES, '--preset', 'imagenet-tf', '--select', 'even', '--limit', String(nCalib), '--config', c, '--out', tmp], { stdio: 'inherit' });
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(path.join(tmp, 'model.qdq.onnx'), path.join(dir, 'model.onnx'));
    fs.rmSync(tmp, { recursive: true, force: true });
    models.push([path.basename(dir), path.join(dir, 'model.onnx')]);
  }
  const per = input.data.length / input.shape[0];
  for (const [name, file] of models) {
    const dir = path.join(out, name);
    fs.mkdirSync(dir, { recursive: true });
    for (const level of ['disabled', 'all'] as const) {
      for (const threads of [1, 2]) {
        const s = await ort.InferenceSession.create(file, { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: level });
        for (const batch of [1, nImages]) {
          const feeds = { [s.inputNames[0]]: new ort.Tensor('float32', input.data.subarray(0, batch * per), [batch, ...input.shape.slice(1)]) };
          const r = (await s.run(feeds))[s.outputNames[0]];
          fs.writeFileSync(path.join(dir, `ort_${level}_t${threads}_b${batch}.npy`), encodeNpy(r.dims.slice(), r.data as Float32Array));
        }
        await s.release();
      }
    }
    process.stdout.write(`${name}: recorded\n`);
  }
  process.stdout.write(`wrote ${out} (${cpu.model}, ${cpu.simd.join(' ')})\n`);
}

main(process.argv.slice(2)).catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exitCode = 1;
});
