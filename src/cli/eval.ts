/** `mpq eval`: top-1 against labels and agreement/SQNR against the float model. */
import { MpqError } from '../errors';
import { loadSampleLabels } from '../eval/labels';
import { argmaxRows, classesOf, SqnrMeter, Top1Meter } from '../eval/metrics';
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

export interface EvalResult {
  samples: number;
  task: string;
  /** Top-1 of the (float) model against labels. */
  top1: number | null;
  /** With --encodings: top-1 of the simulated quantized model, agreement and SQNR against float. */
  quantized?: { top1: number | null; agreement: number | null; sqnr_db: number };
  /** Why top-1 and agreement are null although asked for (an output with one value per sample). */
  note?: string;
}

export async function evalCommand(file: string, f: EvalFlags): Promise<void> {
  const task = f.task ?? 'classification';
  if (task !== 'classification') throw new MpqError('MPQ_BAD_INPUT', `--task '${task}' is not supported (classification)`);
  const model = Model.fromFile(file);
  const q = f.encodings ? simulate(model, readEncodings(f.encodings)) : undefined;
  const data = await openData(f.data, model, f);
  const labels = f.labels ? loadSampleLabels(f.labels) : undefined;
  if (!labels && !q) throw new MpqError('MPQ_BAD_INPUT', 'nothing to measure: give --labels, or --encodings to compare the quantized model with float');
  const fl = new Top1Meter();
  const qm = new Top1Meter();
  const sq = new SqnrMeter();
  const out0 = model.outputNames[0];
  const progress = phaseProgress(!f.quiet);
  let done = 0;
  // top-1 and agreement need class scores: an output with one value per sample has a single "class"
  let classes = Infinity;
  for await (const b of data.batchesWithInfo()) {
    const ref = await model.run(b.inputs);
    classes = Math.min(classes, classesOf(ref[out0]));
    const pred = argmaxRows(ref[out0]);
    const lab = labels ? b.names.map((n, i) => labels(n, b.indices[i])).map((v) => (typeof v === 'number' ? v : undefined)) : [];
    if (labels) fl.addLabels(pred, lab);
    if (q) {
      const got = await q.run(b.inputs);
      const qp = argmaxRows(got[out0]);
      if (labels) qm.addLabels(qp, lab);
      qm.addAgreement(qp, pred);
      sq.add(ref, got);
    }
    done += b.names.length;
    progress.update('eval', Math.min(done, data.count), data.count);
  }
  progress.stop();
  const scores = classes > 1;
  const r: EvalResult = { samples: data.count, task, top1: scores ? fl.top1 : null };
  if (q) r.quantized = { top1: scores ? qm.top1 : null, agreement: scores ? qm.agreement : null, sqnr_db: sq.db() };
  if (!scores) r.note = `output '${out0}' has ${classes === 1 ? 'one value' : 'no values'} per sample, so top-1 and agreement (one class) mean nothing and are not measured`;
  if (!scores && !q) throw new MpqError('MPQ_BAD_INPUT', `${r.note}; nothing to measure (give --encodings to compare a quantized model with float by SQNR)`);
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
