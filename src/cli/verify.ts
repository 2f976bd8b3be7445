/**
 * `mpq verify DIR`: runs the exported QDQ model in onnxruntime-node and compares it with the
 * simulation (the float model with DIR/encodings.json applied, in the engine): SQNR and
 * argmax agreement, with ORT's graph optimizations off (= QDQ semantics) and with the default
 * session options (= what a default deployment runs), and the verdict `faithful`.
 */
import * as fs from 'fs';
import * as path from 'path';
import { MpqError } from '../errors';
import { describeVerification, verificationWarning, verifyExport, VERIFY_SAMPLES } from '../eval/verify';
import { Model } from '../model';
import { readEncodings, simulate } from '../quant/simulate';
import { DataFlags, openData } from './data-options';

export interface VerifyFlags extends DataFlags {
  data?: string;
  json?: boolean;
}

/** What `quantize.json` records about the calibration data (paths absolute since 0.1). */
export interface CalibRecord {
  spec: string;
  samples?: number;
  preset?: string;
  preprocess?: string;
  select?: 'all' | 'even' | 'odd';
  limit?: string;
  offset?: string;
  /** The run skipped unusable samples (`--skip-bad-samples`): re-reading the data does too. */
  skipBadSamples?: boolean;
  /** `--batch` as given: re-reading the data batches it the same way. */
  batch?: string;
}

interface Summary {
  model: string;
  profile?: string;
  calib: CalibRecord;
}

/** The data flags that re-open the recorded calibration data (its first {@link VERIFY_SAMPLES} samples unless `limit`). */
export function calibFlags(c: CalibRecord, limit?: string): DataFlags {
  const recorded = c.limit !== undefined ? Number(c.limit) : c.samples;
  const n = Math.min(recorded ?? VERIFY_SAMPLES, VERIFY_SAMPLES);
  return { preset: c.preset, preprocess: c.preprocess, select: c.select, offset: c.offset, limit: limit ?? String(n), skipBadSamples: c.skipBadSamples, batch: c.batch };
}

/** What a run records about its calibration data `spec` (read with `f`, `samples` of them), for `mpq verify` to re-open it from anywhere. */
export function calibRecord(spec: string, f: DataFlags, samples: number): CalibRecord {
  return { spec: absoluteDataSpec(spec), samples, preset: f.preset, preprocess: f.preprocess, select: f.select, limit: f.limit, offset: f.offset, skipBadSamples: f.skipBadSamples || undefined, batch: f.batch };
}

/** Every path of a DATA spec (one path, or NAME=PATH pairs) made absolute. */
export function absoluteDataSpec(spec: string): string {
  if (!spec.includes('=')) return path.resolve(spec);
  return spec
    .split(',')
    .map((part) => {
      const i = part.indexOf('=');
      return i <= 0 ? part : `${part.slice(0, i)}=${path.resolve(part.slice(i + 1))}`;
    })
    .join(',');
}

function dataPaths(spec: string): string[] {
  return spec.includes('=') ? spec.split(',').map((p) => p.slice(p.indexOf('=') + 1)) : [spec];
}

export async function verifyCommand(dir: string, f: VerifyFlags): Promise<void> {
  const sumFile = path.join(dir, 'quantize.json');
  if (!fs.existsSync(sumFile)) throw new MpqError('MPQ_BAD_INPUT', `${dir} has no quantize.json: is it the --out folder of mpq quantize or mpq search?`);
  let s: Summary;
  try {
    s = JSON.parse(fs.readFileSync(sumFile, 'utf8')) as Summary;
  } catch (e) {
    throw new MpqError('MPQ_BAD_INPUT', `cannot read ${sumFile}: ${(e as Error).message}`);
  }
  if (!fs.existsSync(s.model)) throw new MpqError('MPQ_BAD_INPUT', `the float model ${s.model} recorded in ${sumFile} does not exist (moved?)`);
  const model = Model.fromFile(s.model);
  const sim = simulate(model, readEncodings(path.join(dir, 'encodings.json')));
  let data;
  if (f.data) data = await openData(f.data, model, f);
  else {
    const missing = dataPaths(s.calib.spec).filter((p) => !fs.existsSync(p));
    if (missing.length) {
      throw new MpqError('MPQ_BAD_INPUT', `the calibration data recorded in ${sumFile} (${missing.join(', ')}) is not found from ${process.cwd()}: pass --data DATA (with --preset/--preprocess as for calibration)`);
    }
    data = await openData(s.calib.spec, model, calibFlags(s.calib, f.limit));
  }
  const res = await verifyExport(path.join(dir, 'model.qdq.onnx'), sim, data.batches(), { profile: s.profile });
  if (!res) throw new MpqError('MPQ_BAD_INPUT', 'no samples to verify on');
  if (f.json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
  else process.stdout.write(describeVerification(res).join('\n') + '\n');
  const warning = verificationWarning(res, path.join(dir, 'model.qdq.onnx'));
  if (warning) process.stderr.write(warning + '\n');
}
