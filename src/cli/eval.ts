/** `mpq eval`: top-1 against labels and agreement/SQNR against the float model. */
import { MpqError } from '../errors';
import { loadSampleLabels } from '../eval/labels';
import { EvalResult, evaluateModels } from '../eval/evaluate';
import { Model } from '../model';
import { readEncodings, simulate } from '../quant/simulate';
import { DataFlags, openData } from './data-options';
import { phaseProgress } from './progress';

export interface EvalFlags extends DataFlags {
  data: string;
  labels?: string;
  task?: string;
  encodings?: string;
  json?: boolean;
  quiet?: boolean;
}

export type { EvalResult };

export async function evalCommand(file: string, f: EvalFlags): Promise<void> {
  const task = f.task ?? 'classification';
  if (task !== 'classification') throw new MpqError('MPQ_BAD_INPUT', `--task '${task}' is not supported (classification)`);
  const model = Model.fromFile(file);
  const q = f.encodings ? simulate(model, readEncodings(f.encodings)) : undefined;
  const data = await openData(f.data, model, f);
  const labels = f.labels ? loadSampleLabels(f.labels) : undefined;
  if (!labels && !q) throw new MpqError('MPQ_BAD_INPUT', 'nothing to measure: give --labels, or --encodings to compare the quantized model with float');
  const progress = phaseProgress(!f.quiet);
  const r = await evaluateModels(model, q, data.batchesWithInfo(), labels, { task, onProgress: (done) => progress.update('eval', Math.min(done, data.count), data.count) });
  progress.stop();
  if (f.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const pct = (v: number | null) => (v === null ? 'n/a' : (100 * v).toFixed(2) + '%');
  process.stdout.write(`samples: ${r.samples}\n`);
  if (r.note) process.stdout.write(`note: ${r.note}\n`);
  else process.stdout.write(`float top-1: ${pct(r.top1)}\n`);
  if (r.quantized) {
    const qs = r.quantized;
    process.stdout.write(`${r.note ? '' : `quantized top-1: ${pct(qs.top1)}  agreement with float: ${pct(qs.agreement)}  `}SQNR: ${qs.sqnr_db.toFixed(2)} dB\n`);
  }
}
