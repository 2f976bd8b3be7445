/**
 * The exported QDQ model run in onnxruntime-node, against the simulation (DESIGN.md sections 6
 * and 9): once with graph optimizations off (QDQ semantics: must reproduce the simulation) and
 * once with the default session options (what a deployment on ONNX Runtime's CPU provider
 * runs: fused int8 kernels). One implementation, used by `mpq verify`, and at the end of
 * `mpq quantize` and `mpq search`.
 */
import * as fs from 'fs';
import { MpqError } from '../errors';
import { Runnable, Tensor } from '../model';
import { loadOrt } from '../ort';
import { OrtWorker } from '../verify';
import { argmaxRows, nonFloatNote, pick, SqnrMeter, Top1Meter } from './metrics';

/**
 * When a run counts as faithful to the simulation: argmax agreement (first output, per row)
 * of at least `agreement` and output SQNR against the simulation of at least `sqnr_db`.
 * Chosen from measurement (bench/ort-cpu.ts, MobileNetV1, 128 calibration images): exports
 * that ONNX Runtime's default session runs as simulated differ from it by the fused kernels'
 * requantization rounding only (W8A8 with 7-bit weights 32.3 dB / 0.992, W4A8 30.1 dB /
 * 0.984, W8A16 81.4 dB / 1.0); the saturating W8A8 run gives 9.2 dB / 0.797 (top-1 -15
 * points) and the overflowing W16A16 run -2 dB / 0.0. SQNR is the sharper test; agreement
 * guards classifiers, with room for a few single flips among 128 samples.
 */
export const FAITHFUL_LIMITS = { agreement: 0.95, sqnr_db: 20 } as const;

/** Samples compared by default: the first 128 of the calibration data (`mpq verify DIR` and the check at the end of quantize/search). */
export const VERIFY_SAMPLES = 128;

export interface RuntimeCheck {
  sqnr_db: number;
  agreement: number;
  /** Both figures within {@link FAITHFUL_LIMITS}. */
  within_limits: boolean;
}

export interface Verification {
  samples: number;
  /** ORT with graph optimizations disabled: QDQ semantics, must reproduce the simulation. */
  qdq: RuntimeCheck;
  /** ORT with default session options (fused int8 kernels): what a default deployment runs. */
  optimized: RuntimeCheck;
  /**
   * The default-options run against the optimizations-off run: both from onnxruntime alone,
   * so a figure anyone can reproduce without the engine (equal to `optimized` while the
   * simulation reproduces QDQ semantics exactly).
   */
  optimized_vs_qdq: { sqnr_db: number; agreement: number };
  /** The default-options run agrees with the simulation within `limits`. */
  faithful: boolean;
  limits: typeof FAITHFUL_LIMITS;
  runtime: { onnxruntime: string; vnni: boolean };
  /** What to do when not faithful. */
  advice?: string;
  /** Outputs left out of the comparison (not float), when there are any. */
  note?: string;
}

/** Whether this CPU has VNNI (x86 avx512_vnni or avx_vnni: u8 x s8 dot products without int16 saturation). */
export function cpuHasVnni(): boolean {
  try {
    const flags = /^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1].split(/\s+/) ?? [];
    return flags.includes('avx512_vnni') || flags.includes('avx_vnni');
  } catch {
    return false;
  }
}

/** The first `n` rows of every tensor of a batch. */
function headRows(b: Record<string, Tensor>, n: number): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(b)) {
    const row = t.data.length / t.shape[0];
    out[k] = { shape: [n, ...t.shape.slice(1)], data: t.data.subarray(0, n * row) as Float32Array };
  }
  return out;
}

export interface VerifyOptions {
  /** At most this many samples (default: all the batches give). */
  limit?: number;
  /** The profile the export was made with (the advice differs when it already is ort-cpu). */
  profile?: string;
  /** Aborts the verification (the onnxruntime worker is stopped). */
  signal?: AbortSignal;
}

/**
 * Runs `exported` (file or bytes) in onnxruntime-node both ways on `batches` and compares each
 * with `sim` (the engine running the same QDQ graph).
 */
export async function verifyExport(
  exported: string | Uint8Array,
  sim: Runnable,
  batches: AsyncIterable<Record<string, Tensor>>,
  o: VerifyOptions = {},
): Promise<Verification | undefined> {
  // onnxruntime-node is an optional peer: a clear error saying how to install it when absent
  const ortModule = loadOrt();
  // the sessions run in a worker thread: loading onnxruntime's native library and its runs
  // would otherwise hold up the caller's event loop for seconds
  let ort: OrtWorker;
  try {
    ort = await OrtWorker.start(exported, ['disabled', 'all'], o.signal);
  } catch (e) {
    if ((e as MpqError).code === 'MPQ_ABORTED') throw e;
    throw new MpqError('MPQ_BAD_MODEL', `onnxruntime cannot load the exported model${typeof exported === 'string' ? ` ${exported}` : ''}: ${(e as Error).message}`, { cause: e });
  }
  const meters = { qdq: { s: new SqnrMeter(), t: new Top1Meter() }, optimized: { s: new SqnrMeter(), t: new Top1Meter() }, cross: { s: new SqnrMeter(), t: new Top1Meter() } };
  const outputs = sim.outputNames;
  // integer outputs (ids passed through) are equal by construction: compared, they would inflate both figures
  const types = ort.outputTypes;
  const floats = outputs.filter((n) => (types[n] ?? 'float32').startsWith('float'));
  const out0 = floats[0] ?? outputs[0];
  let samples = 0;
  try {
    for await (const full of batches) {
      const n0 = full[sim.inputNames[0]].shape[0];
      const n = o.limit === undefined ? n0 : Math.min(n0, o.limit - samples);
      if (n <= 0) break;
      const b = n === n0 ? full : headRows(full, n);
      const want = pick(await sim.run(b, { signal: o.signal }), floats);
      const wantTop = argmaxRows(want[out0]);
      const [qdq, optimized] = (await ort.run(b, outputs)).map((r) => pick(r, floats));
      const got: Record<'qdq' | 'optimized', Record<string, Tensor>> = { qdq, optimized };
      for (const k of ['qdq', 'optimized'] as const) {
        meters[k].s.add(want, got[k]);
        meters[k].t.addAgreement(argmaxRows(got[k][out0]), wantTop);
      }
      meters.cross.s.add(got.qdq, got.optimized);
      meters.cross.t.addAgreement(argmaxRows(got.optimized[out0]), argmaxRows(got.qdq[out0]));
      samples += n;
    }
  } finally {
    ort.close();
  }
  if (samples === 0) return undefined;
  const check = (k: keyof typeof meters): RuntimeCheck => {
    const sqnr = +Math.min(200, meters[k].s.db()).toFixed(2);
    const agreement = meters[k].t.agreement ?? 0;
    return { sqnr_db: sqnr, agreement, within_limits: agreement >= FAITHFUL_LIMITS.agreement && sqnr >= FAITHFUL_LIMITS.sqnr_db };
  };
  const qdq = check('qdq'), optimized = check('optimized');
  const cross = check('cross');
  const v: Verification = { samples, qdq, optimized, optimized_vs_qdq: { sqnr_db: cross.sqnr_db, agreement: cross.agreement }, faithful: optimized.within_limits, limits: FAITHFUL_LIMITS, runtime: { onnxruntime: ortModule.env.versions?.common ?? 'unknown', vnni: cpuHasVnni() } };
  const note = nonFloatNote({ graph: { outputs: outputs.map((name) => ({ name, dtype: floats.includes(name) ? 'float' : 'int', onnxType: 0, dims: null })) } });
  if (note) v.note = note;
  if (!v.faithful) {
    v.advice =
      o.profile === 'ort-cpu'
        ? "even the ort-cpu profile's export is not run as simulated here: deploy with graph optimizations disabled (session option graphOptimizationLevel 'disabled'), and please report the model"
        : "re-export with --profile ort-cpu (8-bit weights in a 7-bit range, no 16-bit weights into Conv/Gemm/MatMul), or deploy with graph optimizations disabled (session option graphOptimizationLevel 'disabled')";
  }
  if (!qdq.within_limits) v.advice = `the export does not reproduce the simulation even with graph optimizations off (a bug in onnx-mpq or onnxruntime: please report it)${v.advice ? `; ${v.advice}` : ''}`;
  return v;
}

/** One-paragraph human summary of a verification (CLI output, report, summary.md). */
export function describeVerification(v: Verification): string[] {
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  const line = (what: string, c: RuntimeCheck) => `  ${what}: SQNR ${c.sqnr_db.toFixed(1)} dB, argmax agreement ${pct(c.agreement)}${c.within_limits ? '' : ' (outside the limits)'}`;
  return [
    `onnxruntime ${v.runtime.onnxruntime} (CPU ${v.runtime.vnni ? 'with' : 'without'} VNNI) vs the simulation, ${v.samples} samples:`,
    line('graph optimizations off (QDQ semantics)', v.qdq),
    line('default session options (deployment)   ', v.optimized),
    `  (default options vs optimizations off, onnxruntime alone: SQNR ${v.optimized_vs_qdq.sqnr_db.toFixed(1)} dB, agreement ${pct(v.optimized_vs_qdq.agreement)})`,
    `  faithful: ${v.faithful} (limits: agreement >= ${pct(v.limits.agreement)} and SQNR >= ${v.limits.sqnr_db} dB with default options)`,
    ...(v.note ? [`  note: ${v.note}`] : []),
  ];
}

/** The warning to print when `v` is not faithful (undefined when it is). */
export function verificationWarning(v: Verification | undefined, file: string): string | undefined {
  if (!v?.advice) return undefined;
  return `mpq: WARNING: onnxruntime's default CPU session does not run ${file} as simulated (agreement ${(100 * v.optimized.agreement).toFixed(1)}%, SQNR ${v.optimized.sqnr_db.toFixed(1)} dB): ${v.advice}`;
}
