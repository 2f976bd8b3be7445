/** `mpq search`: the mixed-precision search. */
import { MpqError } from '../errors';
import { loadSampleLabels } from '../eval/labels';
import { Model } from '../model';
import { RangeMethod } from '../quant/ranges';
import { Rounding, ROUNDINGS } from '../quant/rounding';
import { search } from '../search/search';
import { DataFlags, openData } from './data-options';
import { phaseProgress } from './progress';

export interface SearchFlags extends DataFlags {
  calib: string;
  profile?: string;
  maxDrop?: string;
  maxBops?: string;
  maxSize?: string;
  eval?: string;
  labels?: string;
  task?: string;
  order?: string;
  weightRange?: RangeMethod;
  actRange?: RangeMethod;
  rounding?: string;
  sequential?: boolean;
  out: string;
  json?: boolean;
}

const num = (v: string | undefined, flag: string): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new MpqError('MPQ_BAD_INPUT', `--${flag} must be a non-negative number, got '${v}'`);
  return n;
};

export async function searchCommand(file: string, f: SearchFlags): Promise<void> {
  const model = Model.fromFile(file);
  const calib = await openData(f.calib, model, f);
  const evalSrc = f.eval ? await openData(f.eval, model, { ...f, select: 'all', limit: undefined, offset: undefined }) : undefined;
  if (f.labels && !evalSrc) throw new MpqError('MPQ_BAD_INPUT', '--labels needs --eval DATA (the labelled evaluation samples)');
  const labels = f.labels ? loadSampleLabels(f.labels) : undefined;
  if (f.order && !['sqnr', 'efficiency', 'auto'].includes(f.order)) throw new MpqError('MPQ_BAD_INPUT', `--order must be sqnr, efficiency or auto`);
  if (f.rounding && !(ROUNDINGS as string[]).includes(f.rounding)) throw new MpqError('MPQ_BAD_INPUT', `--rounding must be one of ${ROUNDINGS.join(', ')}, got '${f.rounding}'`);
  const progress = phaseProgress(!f.json);
  try {
    const r = await search({
      model: file,
      calib: { batches: () => calib.batches(), fingerprint: calib.fingerprint(), count: calib.count },
      profile: f.profile,
      target: { maxDrop: num(f.maxDrop, 'max-drop'), maxBops: num(f.maxBops, 'max-bops'), maxSizeMb: num(f.maxSize, 'max-size') },
      eval: evalSrc ? { batches: () => evalSrc.batchesWithInfo(), labels } : undefined,
      task: f.task,
      order: f.order as 'sqnr' | 'efficiency' | 'auto' | undefined,
      weightRange: f.weightRange,
      actRange: f.actRange,
      rounding: f.rounding as Rounding | undefined,
      roundingOptions: { sequential: !!f.sequential },
      out: f.out,
      onProgress: (p) => progress.update(p.phase, p.done, p.total),
      record: { calib: { spec: f.calib, preset: f.preset, preprocess: f.preprocess, select: f.select, limit: f.limit }, eval: f.eval, labels: f.labels },
    });
    progress.stop();
    if (f.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else {
      const s = r.selected;
      process.stdout.write(
        `selected: rel_bops ${s.rel_bops.toFixed(3)}, ${(s.size_bytes / 1e6).toFixed(3)} MB, ${r.metric} ${s.metric.toFixed(4)} (float ${r.float_metric.toFixed(4)})${s.meets_target ? '' : ' - target NOT met'}\n` +
          r.homogeneous.map((h) => `  ${h.name.padEnd(7)} rel_bops ${h.rel_bops.toFixed(3)}  ${r.metric} ${h.metric.toFixed(4)}`).join('\n') +
          `\nphase 1: ${r.phase1.computed} computed, ${r.phase1.reused} reused; ${r.seconds.total} s\nwrote ${r.files.model}, ${r.files.report}\n`,
      );
    }
  } finally {
    progress.stop();
  }
}
