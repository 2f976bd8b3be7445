/**
 * `mpq verify DIR`: runs the exported QDQ model in onnxruntime-node and compares it with the
 * simulation (the float model with DIR/encodings.json applied, in the engine): SQNR and
 * argmax agreement, with ORT's graph optimizations off (= QDQ semantics) and on (= what a
 * default deployment runs).
 */
import * as fs from 'fs';
import * as path from 'path';
import { MpqError } from '../errors';
import { argmaxRows, SqnrMeter, Top1Meter } from '../eval/metrics';
import { Model, Tensor } from '../model';
import { loadOrt } from '../ort';
import { readEncodings, simulate } from '../quant/simulate';
import { DataFlags, openData } from './data-options';

export interface VerifyFlags extends DataFlags {
  data?: string;
  json?: boolean;
}

interface Summary {
  model: string;
  calib: { spec: string; preset?: string; preprocess?: string; select?: 'all' | 'even' | 'odd' };
}

export interface VerifyResult {
  samples: number;
  /** ORT with graph optimizations disabled: must reproduce the simulation. */
  qdq: { sqnr_db: number; agreement: number };
  /** ORT with default optimizations (fused int8 kernels): what a default deployment runs. */
  optimized: { sqnr_db: number; agreement: number };
}

export async function verifyCommand(dir: string, f: VerifyFlags): Promise<void> {
  const sumFile = path.join(dir, 'quantize.json');
  if (!fs.existsSync(sumFile)) throw new MpqError('MPQ_BAD_INPUT', `${dir} has no quantize.json: is it the --out folder of mpq quantize or mpq search?`);
  const s = JSON.parse(fs.readFileSync(sumFile, 'utf8')) as Summary;
  const model = Model.fromFile(s.model);
  const sim = simulate(model, readEncodings(path.join(dir, 'encodings.json')));
  const flags: DataFlags = f.data ? f : { ...f, preset: s.calib.preset, preprocess: s.calib.preprocess, select: s.calib.select, limit: f.limit ?? '32' };
  const data = await openData(f.data ?? s.calib.spec, model, flags);
  const ort = loadOrt();
  const qdqFile = path.join(dir, 'model.qdq.onnx');
  const sessions = {
    qdq: await ort.InferenceSession.create(qdqFile, { graphOptimizationLevel: 'disabled', intraOpNumThreads: 2 }),
    optimized: await ort.InferenceSession.create(qdqFile, { intraOpNumThreads: 2 }),
  };
  const meters = { qdq: { s: new SqnrMeter(), t: new Top1Meter() }, optimized: { s: new SqnrMeter(), t: new Top1Meter() } };
  const out0 = model.outputNames[0];
  for await (const b of data.batches()) {
    const want = await sim.run(b);
    const wantTop = argmaxRows(want[out0]);
    for (const k of ['qdq', 'optimized'] as const) {
      const feeds: Record<string, InstanceType<typeof ort.Tensor>> = {};
      for (const [n, t] of Object.entries(b)) feeds[n] = new ort.Tensor('float32', t.data, t.shape);
      const r = await sessions[k].run(feeds);
      const got: Record<string, Tensor> = {};
      for (const n of model.outputNames) got[n] = { shape: [...r[n].dims], data: r[n].data as Float32Array };
      meters[k].s.add(want, got);
      meters[k].t.addAgreement(argmaxRows(got[out0]), wantTop);
    }
  }
  const res: VerifyResult = {
    samples: data.count,
    qdq: { sqnr_db: meters.qdq.s.db(), agreement: meters.qdq.t.agreement ?? 0 },
    optimized: { sqnr_db: meters.optimized.s.db(), agreement: meters.optimized.t.agreement ?? 0 },
  };
  if (f.json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
  else {
    process.stdout.write(`samples: ${res.samples}\n`);
    process.stdout.write(`onnxruntime, optimizations off (QDQ semantics) vs simulation: SQNR ${res.qdq.sqnr_db.toFixed(1)} dB, argmax agreement ${(100 * res.qdq.agreement).toFixed(1)}%\n`);
    process.stdout.write(`onnxruntime, default optimizations vs simulation:           SQNR ${res.optimized.sqnr_db.toFixed(1)} dB, argmax agreement ${(100 * res.optimized.agreement).toFixed(1)}%\n`);
  }
}
