/** `mpq quantize`: calibrate, quantize at one configuration, export QDQ + encodings. */
import * as path from 'path';
import { MpqError } from '../errors';
import { writeFileAtomic } from '../fsutil';
import { Model } from '../model';
import { loadBitConfig } from '../quant/config';
import { encodingsToJson } from '../quant/encodings';
import { calibrate, exportQdq, quantize } from '../quant/quantize';
import { RangeMethod } from '../quant/ranges';
import { Rounding, ROUNDINGS } from '../quant/rounding';
import { describeVerification, verificationWarning, verifyExport } from '../eval/verify';
import { loadProfile } from '../profiles/profile';
import { buildGroups, checkConfigAllowed } from '../search/groups';
import { DataFlags, openData } from './data-options';
import { absoluteDataSpec, calibFlags, CalibRecord } from './verify';

export interface QuantizeFlags extends DataFlags {
  calib: string;
  config: string;
  out: string;
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  rounding?: string;
  profile?: string;
  json?: boolean;
}

function method(v: string | undefined, flag: string): RangeMethod | undefined {
  if (v === undefined) return undefined;
  if (v !== 'minmax' && v !== 'mse') throw new MpqError('MPQ_BAD_INPUT', `--${flag} must be minmax or mse, got '${v}'`);
  return v;
}

function rounding(v: string | undefined): Rounding | undefined {
  if (v === undefined) return undefined;
  if (!(ROUNDINGS as string[]).includes(v)) throw new MpqError('MPQ_BAD_INPUT', `--rounding must be one of ${ROUNDINGS.join(', ')}, got '${v}'`);
  return v as Rounding;
}

export async function quantizeCommand(file: string, f: QuantizeFlags): Promise<void> {
  const t0 = Date.now();
  const config = loadBitConfig(f.config);
  const round = rounding(f.rounding);
  const profile = f.profile !== undefined ? loadProfile(f.profile) : undefined;
  const model = Model.fromFile(file);
  const data = await openData(f.calib, model, f);
  const log = f.json ? () => undefined : (s: string) => process.stderr.write(s + '\n');
  log(`calibrating on ${data.count} samples...`);
  const cal = await calibrate(model, () => data.batches(), {
    weightRange: method(f.weightRange, 'weight-range'),
    actRange: method(f.actRange, 'act-range'),
    // 'auto' rounds data-aware at 8 bits and below: skip gathering layer statistics when no weight is
    rounding: round ?? (Math.min(config.w, ...Object.values(config.weights)) <= 8 ? undefined : 'nearest'),
    scheme: profile?.scheme,
  });
  if (profile) checkConfigAllowed(buildGroups(model.graph, cal.placement, profile), config, profile);
  const tCal = Date.now();
  const q = await quantize(cal, config);
  const bytes = exportQdq(q, cal);
  const tExp = Date.now();
  // the export run in onnxruntime both ways, on the samples `mpq verify DIR` uses by default
  // (before any file is written: a model onnxruntime cannot load leaves no output)
  const calib: CalibRecord = { spec: absoluteDataSpec(f.calib), samples: data.count, preset: f.preset, preprocess: f.preprocess, select: f.select, limit: f.limit, offset: f.offset };
  const vdata = await openData(calib.spec, model, calibFlags(calib));
  const verification = await verifyExport(bytes, Model.fromGraph(q.graph), vdata.batches(), { profile: profile?.name });
  const outModel = path.join(f.out, 'model.qdq.onnx');
  const outEnc = path.join(f.out, 'encodings.json');
  writeFileAtomic(outEnc, JSON.stringify(encodingsToJson(q.encodings), null, 1));
  writeFileAtomic(path.join(f.out, 'config.json'), JSON.stringify({ default: `W${config.w}A${config.a}`, weights: config.weights, activations: config.activations }, null, 2));
  writeFileAtomic(outModel, bytes);
  const summary = {
    tool: 'onnx-mpq',
    version: require('../../../package.json').version,
    model: path.resolve(file),
    profile: profile?.name ?? 'default',
    calib: { ...calib, fingerprint: data.fingerprint() },
    config: `W${config.w}A${config.a}`,
    ranges: { weights: cal.weightRange, activations: cal.actRange },
    rounding: cal.rounding,
    quantizers: { weights: q.encodings.weights.size, activations: q.encodings.activations.size },
    files: { model: outModel, encodings: outEnc },
    size_bytes: bytes.length,
    seconds: { calibration: (tCal - t0) / 1000, rounding_stats: cal.rounder?.statsSeconds ?? 0, rounding: cal.rounder?.seconds ?? 0, verify: (Date.now() - tExp) / 1000, total: (Date.now() - t0) / 1000 },
    verification,
  };
  writeFileAtomic(path.join(f.out, 'quantize.json'), JSON.stringify(summary, null, 2));
  const warning = verificationWarning(verification, outModel);
  if (warning) process.stderr.write(warning + '\n');
  if (f.json) process.stdout.write(JSON.stringify(summary, null, 2) + '\n');
  else {
    process.stdout.write(`wrote ${outModel} (${(bytes.length / 1e6).toFixed(2)} MB) and ${outEnc}: ${q.encodings.weights.size} weight and ${q.encodings.activations.size} activation quantizers, ${summary.seconds.total.toFixed(1)} s\n`);
    if (verification) process.stdout.write(describeVerification(verification).join('\n') + '\n');
  }
}
