/**
 * The engine against onnxruntime outputs recorded on other CPU classes (`../shared/golden/`,
 * one folder per class; `bench/record-golden.ts` records a new one). ONNX Runtime's float
 * kernels (MLAS) follow one summation order on every x86-64 CPU with FMA for the graph with
 * optimizations off, and every engine level computes that order, so each level this machine
 * has must reproduce every class's `ort_disabled_*` outputs. The optimized (`ort_all_*`)
 * outputs depend on the CPU (NCHWc block size, int8 kernels) and are reported, with a loose
 * bound on the float model only. `MPQ_GOLDEN_DIR` points the test at another folder of classes.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { Model, engineInfo, readNpy, setEngineLevel, setOrtThreads, SqnrMeter } from '../index';
import { HAS_SHARED, MOBILENET, SHARED, SKIP_SHARED_MSG, relMaxDiff } from './helpers';

// MPQ_GOLDEN_DIR: another folder of CPU classes (a fresh `bench/record-golden.ts` recording)
const GOLDEN = process.env.MPQ_GOLDEN_DIR ?? path.join(SHARED, 'golden');
const classes = HAS_SHARED && fs.existsSync(GOLDEN) ? fs.readdirSync(GOLDEN).filter((d) => fs.statSync(path.join(GOLDEN, d)).isDirectory()) : [];
const info = engineInfo();
test.after.always(() => {
  setEngineLevel(info.level);
  setOrtThreads(info.ortThreads);
});

const sqnr = (ref: Float32Array, got: Float32Array, shape: number[]) => {
  const m = new SqnrMeter();
  m.add({ y: { shape, data: ref } }, { y: { shape, data: got } });
  return m.db();
};

if (classes.length === 0) {
  test('golden onnxruntime outputs', (t) => {
    t.log(HAS_SHARED ? '../shared/golden has no CPU folders' : SKIP_SHARED_MSG);
    t.pass();
  });
}

for (const cls of classes) {
  const dir = path.join(GOLDEN, cls);
  const models = fs.readdirSync(dir).filter((d) => fs.statSync(path.join(dir, d)).isDirectory()).sort();
  for (const name of models) {
    // Serial: the engine level and the mirrored ORT thread count are process-wide.
    test.serial(`golden ${cls}: ${name} with optimizations off, at every engine level`, async (t) => {
      const input = readNpy(path.join(dir, 'input.npy'));
      const file = fs.existsSync(path.join(dir, name, 'model.onnx')) ? path.join(dir, name, 'model.onnx') : MOBILENET;
      const model = Model.fromFile(file);
      const inName = model.graph.inputs[0].name;
      const per = input.data.length / input.shape[0];
      const quantized = name !== 'mobilenet_v1_float';
      const refs = fs.readdirSync(path.join(dir, name)).filter((f) => /^ort_disabled_t\d+_b\d+\.npy$/.test(f)).sort();
      t.true(refs.length > 0, `no ort_disabled_* outputs in ${cls}/${name}`);
      for (const level of info.available) {
        t.is(setEngineLevel(level), level);
        for (const f of refs) {
          const [, threads, batch] = /_t(\d+)_b(\d+)/.exec(f)!.map(Number);
          // the plain-code level is slow: batch 1 only
          if (level === 'scalar' && batch > 1) continue;
          setOrtThreads(threads);
          const ref = readNpy(path.join(dir, name, f));
          const feeds = { [inName]: { shape: [batch, ...input.shape.slice(1)], data: input.data.subarray(0, batch * per) } };
          const got = Object.values(await model.run(feeds))[0];
          t.deepEqual(got.shape, ref.shape);
          const db = sqnr(ref.data, got.data, ref.shape);
          const rel = relMaxDiff(got.data, ref.data);
          t.log(`${level} ${f}: SQNR ${db.toFixed(1)} dB, max rel diff ${rel.toExponential(2)}`);
          if (quantized) t.true(db >= 100, `${level} ${f}: SQNR ${db.toFixed(1)} dB < 100`);
          else t.true(rel <= 1e-6, `${level} ${f}: max relative difference ${rel} > 1e-6`);
        }
      }
    });
  }
  test.serial(`golden ${cls}: float MobileNetV1 within 1e-5 of the optimized session's outputs`, async (t) => {
    if (!fs.existsSync(path.join(dir, 'mobilenet_v1_float'))) return t.pass();
    const input = readNpy(path.join(dir, 'input.npy'));
    const model = Model.fromFile(MOBILENET);
    const inName = model.graph.inputs[0].name;
    const per = input.data.length / input.shape[0];
    setEngineLevel(info.detected);
    for (const f of fs.readdirSync(path.join(dir, 'mobilenet_v1_float')).filter((f) => /^ort_all_t\d+_b\d+\.npy$/.test(f)).sort()) {
      const [, threads, batch] = /_t(\d+)_b(\d+)/.exec(f)!.map(Number);
      setOrtThreads(threads);
      const ref = readNpy(path.join(dir, 'mobilenet_v1_float', f));
      const got = Object.values(await model.run({ [inName]: { shape: [batch, ...input.shape.slice(1)], data: input.data.subarray(0, batch * per) } }))[0];
      const rel = relMaxDiff(got.data, ref.data);
      t.log(`${f}: max rel diff ${rel.toExponential(2)}`);
      t.true(rel <= 1e-5, `${f}: ${rel}`);
    }
  });
}
