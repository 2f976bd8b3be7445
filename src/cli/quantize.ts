/** `mpq quantize`: calibrate, quantize at one configuration, export QDQ + encodings. */
import * as path from 'path';
import { MpqError } from '../errors';
import { OutputDir } from '../fsutil';
import { Model } from '../model';
import { BitConfig, loadBitConfig } from '../quant/config';
import { encodingsToJson } from '../quant/encodings';
import { calibrate, exportQdq, quantize } from '../quant/quantize';
import { RangeMethod } from '../quant/ranges';
import { Rounding, ROUNDINGS } from '../quant/rounding';
import { describeVerification, verificationWarning, verifyExport } from '../eval/verify';
import { loadProfile, Profile } from '../profiles/profile';
import { buildGroups, checkConfigAllowed } from '../search/groups';
import { DataFlags, openData } from './data-options';
import { countedPasses, phaseProgress } from './progress';
import { calibFlags, calibRecord } from './verify';

export interface QuantizeFlags extends DataFlags {
  calib: string;
  config: string;
  out: string;
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  rounding?: string;
  profile?: string;
  json?: boolean;
  quiet?: boolean;
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
  // all files or none: written into a staging folder, put in place at once at the end
  const out = OutputDir.open(f.out);
  try {
    const report = await quantizeInto(out, file, f, { t0, config, round, model, profile });
    out.commit();
    process.stdout.write(report);
  } finally {
    out.abort();
  }
}

async function quantizeInto(out: OutputDir, file: string, f: QuantizeFlags, o: { t0: number; config: BitConfig; round?: Rounding; model: Model; profile?: Profile }): Promise<string> {
  const { t0, config, round, model, profile } = o;
  const data = await openData(f.calib, model, f);
  const progress = phaseProgress(!f.quiet);
  const cal = await calibrate(model, countedPasses(() => data.batches(), data.count, 'calibration', progress), {
    weightRange: method(f.weightRange, 'weight-range'),
    actRange: method(f.actRange, 'act-range'),
    // 'auto' rounds data-aware at 8 bits and below: skip gathering layer statistics when no weight is
    rounding: round ?? (Math.min(config.w, ...Object.values(config.weights)) <= 8 ? undefined : 'nearest'),
    scheme: profile?.scheme,
  });
  const notes = cal.notes;
  if (!f.quiet) for (const n of notes) process.stderr.write(`mpq: note: ${n}\n`);
  if (profile) checkConfigAllowed(buildGroups(cal.graph, cal.placement, profile), config, profile);
  const tCal = Date.now();
  const q = await quantize(cal, config);
  progress.stop();
  const bytes = exportQdq(q, cal);
  const tExp = Date.now();
  // the export run in onnxruntime both ways, on the samples `mpq verify DIR` uses by default
  // (before any file is written: a model onnxruntime cannot load leaves no output)
  const calib = calibRecord(f.calib, f, data.count);
  const vdata = await openData(calib.spec, model, calibFlags(calib));
  const verification = await verifyExport(bytes, Model.fromGraph(q.graph), vdata.batches(), { profile: profile?.name });
  const outModel = path.join(f.out, 'model.qdq.onnx');
  const outEnc = path.join(f.out, 'encodings.json');
  out.write('encodings.json', JSON.stringify(encodingsToJson(q.encodings), null, 1));
  out.write('config.json', JSON.stringify({ default: `W${config.w}A${config.a}`, weights: config.weights, activations: config.activations, ...(config.float ? { float: config.float } : {}) }, null, 2));
  const summary = {
    tool: 'onnx-mpq',
    version: require('../../../package.json').version,
    model: path.resolve(file),
    profile: profile?.name ?? 'default',
    calib: { ...calib, samples: data.count - data.skipped().length, skipped: data.skipped(), fingerprint: data.fingerprint() },
    config: `W${config.w}A${config.a}`,
    ranges: { weights: cal.weightRange, activations: cal.actRange },
    rounding: cal.rounding,
    // per weight: whether the data-aware result was kept (per output channel, where it measured a lower output error than nearest)
    rounding_choices: cal.rounder?.choices() ?? [],
    quantizers: { weights: q.encodings.weights.size, activations: q.encodings.activations.size },
    files: { model: outModel, encodings: outEnc },
    size_bytes: bytes.length,
    notes,
    // values the placement leaves float on purpose (masks, sentinels), with the reason
    left_float: cal.placement.skipped,
    seconds: { calibration: (tCal - t0) / 1000, rounding_stats: cal.rounder?.statsSeconds ?? 0, rounding: cal.rounder?.seconds ?? 0, verify: (Date.now() - tExp) / 1000, total: (Date.now() - t0) / 1000 },
    verification,
  };
  out.write('quantize.json', JSON.stringify(summary, null, 2));
  out.write('model.qdq.onnx', bytes);
  const warning = verificationWarning(verification, outModel);
  if (warning) process.stderr.write(warning + '\n');
  if (f.json) return JSON.stringify(summary, null, 2) + '\n';
  return (
    `wrote ${outModel} (${(bytes.length / 1e6).toFixed(2)} MB) and ${outEnc}: ${q.encodings.weights.size} weight and ${q.encodings.activations.size} activation quantizers, ${summary.seconds.total.toFixed(1)} s\n` +
    (cal.placement.skipped.length ? `left float (not quantized): ${cal.placement.skipped.map((v) => `${v.tensor}: ${v.reason}`).join('; ')}\n` : '') +
    (verification ? describeVerification(verification).join('\n') + '\n' : '')
  );
}
