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
import { DataFlags, openData } from './data-options';

export interface QuantizeFlags extends DataFlags {
  calib: string;
  config: string;
  out: string;
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  rounding?: string;
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
  const model = Model.fromFile(file);
  // all files or none: written into a staging folder, put in place at once at the end
  const out = OutputDir.open(f.out);
  try {
    const report = await quantizeInto(out, file, f, { t0, config, round, model });
    out.commit();
    process.stdout.write(report);
  } finally {
    out.abort();
  }
}

async function quantizeInto(out: OutputDir, file: string, f: QuantizeFlags, o: { t0: number; config: BitConfig; round?: Rounding; model: Model }): Promise<string> {
  const { t0, config, round, model } = o;
  const data = await openData(f.calib, model, f);
  const log = f.json ? () => undefined : (s: string) => process.stderr.write(s + '\n');
  log(`calibrating on ${data.count} samples...`);
  const cal = await calibrate(model, () => data.batches(), {
    weightRange: method(f.weightRange, 'weight-range'),
    actRange: method(f.actRange, 'act-range'),
    // 'auto' rounds data-aware at 8 bits and below: skip gathering layer statistics when no weight is
    rounding: round ?? (Math.min(config.w, ...Object.values(config.weights)) <= 8 ? undefined : 'nearest'),
  });
  const tCal = Date.now();
  const q = await quantize(cal, config);
  const bytes = exportQdq(q, cal);
  const outModel = path.join(f.out, 'model.qdq.onnx');
  const outEnc = path.join(f.out, 'encodings.json');
  out.write('encodings.json', JSON.stringify(encodingsToJson(q.encodings), null, 1));
  out.write('config.json', JSON.stringify({ default: `W${config.w}A${config.a}`, weights: config.weights, activations: config.activations }, null, 2));
  const summary = {
    tool: 'onnx-mpq',
    version: require('../../../package.json').version,
    model: path.resolve(file),
    calib: { spec: f.calib, samples: data.count - data.skipped().length, skipped: data.skipped(), fingerprint: data.fingerprint(), preset: f.preset, preprocess: f.preprocess, select: f.select },
    config: `W${config.w}A${config.a}`,
    ranges: { weights: cal.weightRange, activations: cal.actRange },
    rounding: cal.rounding,
    quantizers: { weights: q.encodings.weights.size, activations: q.encodings.activations.size },
    files: { model: outModel, encodings: outEnc },
    size_bytes: bytes.length,
    seconds: { calibration: (tCal - t0) / 1000, rounding_stats: cal.rounder?.statsSeconds ?? 0, rounding: cal.rounder?.seconds ?? 0, total: (Date.now() - t0) / 1000 },
  };
  out.write('quantize.json', JSON.stringify(summary, null, 2));
  out.write('model.qdq.onnx', bytes);
  if (f.json) return JSON.stringify(summary, null, 2) + '\n';
  return (`wrote ${outModel} (${(bytes.length / 1e6).toFixed(2)} MB) and ${outEnc}: ${q.encodings.weights.size} weight and ${q.encodings.activations.size} activation quantizers, ${summary.seconds.total.toFixed(1)} s\n`);
}
