/** `mpq eval`: top-1 against labels and agreement/SQNR against the float model. */
import { MpqError } from '../errors';
import { loadSampleLabels } from '../eval/labels';
import { argmaxRows, SqnrMeter, Top1Meter } from '../eval/metrics';
import { Model } from '../model';
import { readEncodings, simulate } from '../quant/simulate';
import { DataFlags, openData } from './data-options';

export interface EvalFlags extends DataFlags {
  data: string;
  labels?: string;
  task?: string;
  encodings?: string;
  json?: boolean;
}

export interface EvalResult {
  samples: number;
  task: string;
  /** Top-1 of the (float) model against labels. */
  top1: number | null;
  /** With --encodings: top-1 of the simulated quantized model, agreement and SQNR against float. */
  quantized?: { top1: number | null; agreement: number | null; sqnr_db: number };
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
  for await (const b of data.batchesWithInfo()) {
    const ref = await model.run(b.inputs);
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
  }
  const r: EvalResult = { samples: data.count, task, top1: fl.top1 };
  if (q) r.quantized = { top1: qm.top1, agreement: qm.agreement, sqnr_db: sq.db() };
  if (f.json) {
    process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    return;
  }
  const pct = (v: number | null) => (v === null ? 'n/a' : (100 * v).toFixed(2) + '%');
  process.stdout.write(`samples: ${r.samples}\nfloat top-1: ${pct(r.top1)}\n`);
  if (r.quantized) process.stdout.write(`quantized top-1: ${pct(r.quantized.top1)}  agreement with float: ${pct(r.quantized.agreement)}  SQNR: ${r.quantized.sqnr_db.toFixed(2)} dB\n`);
}
