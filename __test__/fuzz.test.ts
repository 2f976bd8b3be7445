/**
 * Fuzz (issue 11): mutated small models and a mutated real model (the PP-OCR direction
 * classifier), a bounded number of cases from a fixed seed, each loaded, inspected and run.
 * Every case must end either in outputs or in an MpqError whose code is not MPQ_INTERNAL:
 * no crash, no hang, no other exception. Limits are lowered so that no case can take much
 * memory on a CI machine. The longer run, in child processes with time and memory caps, is
 * bench/fuzz.ts.
 */
import test from 'ava';
import * as fs from 'fs';
import * as path from 'path';
import { inspectModel, Model, MpqError, setLimits } from '../index';
import { mutate, Rng, seedModels } from '../bench/mutate';
import { OCR } from './helpers';

const CASES = 240;
const SEED = 11;

/** Loads, inspects and runs one model on zeros of its declared shape (dynamic dims as 1). */
async function exercise(bytes: Uint8Array, dynamic: number[] = []): Promise<'ok' | string> {
  try {
    const m = Model.fromBytes(bytes);
    inspectModel(m);
    const feeds: Record<string, { shape: number[]; data: Float32Array }> = {};
    for (const i of m.graph.inputs) {
      const shape = (i.dims ?? [1]).map((d, k) => (typeof d === 'number' ? d : dynamic[k] ?? 1));
      const n = shape.reduce((a, b) => a * b, 1);
      if (n > 2 ** 24) return 'MPQ_INPUT_SHAPE'; // a declared input too large to feed here
      feeds[i.name] = { shape, data: new Float32Array(n).fill(0.25) };
    }
    await m.run(feeds);
    return 'ok';
  } catch (e) {
    if (e instanceof MpqError) return e.code;
    return `not an MpqError: ${e instanceof Error ? e.stack : String(e)}`;
  }
}

test(`fuzz: ${CASES} mutated models end in outputs or a typed error (seed ${SEED})`, async (t) => {
  t.timeout(120_000);
  setLimits({ maxTensorBytes: 64 * 2 ** 20, maxPlanBytes: 512 * 2 ** 20 });
  try {
    const seeds: { name: string; bytes: Uint8Array; dynamic?: number[] }[] = seedModels();
    const cls = path.join(OCR, 'ch_ppocr_mobile_v2.0_cls_infer.onnx');
    if (fs.existsSync(cls)) seeds.push({ name: 'ppocr-cls', bytes: fs.readFileSync(cls), dynamic: [1, 3, 48, 192] });
    // every seed runs as it is
    for (const s of seeds) t.is(await exercise(s.bytes, s.dynamic), 'ok', `seed model ${s.name}`);
    const rng = new Rng(SEED);
    const outcomes: Record<string, number> = {};
    const bad: string[] = [];
    for (let i = 0; i < CASES; i++) {
      const s = seeds[i % seeds.length];
      const m = mutate(s.bytes, rng);
      const r = await exercise(m.bytes, s.dynamic);
      outcomes[r.startsWith('not an') ? 'other' : r] = (outcomes[r.startsWith('not an') ? 'other' : r] ?? 0) + 1;
      if (r === 'MPQ_INTERNAL' || r.startsWith('not an')) bad.push(`case ${i} (${s.name}: ${m.what}): ${r}`);
    }
    t.log(JSON.stringify(outcomes));
    t.deepEqual(bad, []);
    // the mutations reach the checks, not only the protobuf decoder
    t.true((outcomes.ok ?? 0) > 0 && (outcomes.MPQ_BAD_MODEL ?? 0) > 0 && Object.keys(outcomes).length >= 4, JSON.stringify(outcomes));
  } finally {
    setLimits({ maxTensorBytes: undefined, maxPlanBytes: undefined });
  }
});
