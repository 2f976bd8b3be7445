/** Evaluation of a float model, and of its simulated quantized version, over labelled or unlabelled data. */
import { BatchInfo } from '../data/source';
import { Model, RunOptions } from '../model';
import { MpqError } from '../errors';
import { argmaxRows, classesOf, floatOutputs, nonFloatNote, pick, SqnrMeter, Top1Meter } from './metrics';
import { SampleLabels } from './labels';

export interface EvalResult {
  samples: number;
  task: string;
  /** Top-1 of the (float) model against labels. */
  top1: number | null;
  /** With a quantized model: its top-1, agreement and output SQNR against float. */
  quantized?: { top1: number | null; agreement: number | null; sqnr_db: number };
  /** Why top-1 and agreement are null although asked for (an output with one value per sample). */
  note?: string;
}

/** Runs `model` (and `quantized`, when given) over `batches`: top-1 against `labels`, agreement and SQNR against float. */
export async function evaluateModels(
  model: Model,
  quantized: Model | undefined,
  batches: AsyncIterable<BatchInfo>,
  labels: SampleLabels | undefined,
  opts: RunOptions & { task?: string; onProgress?: (done: number) => void } = {},
): Promise<EvalResult> {
  const fl = new Top1Meter();
  const qm = new Top1Meter();
  const sq = new SqnrMeter();
  // integer outputs (ids passed through, shapes) are carried through unchanged: not measured
  const floats = floatOutputs(model);
  const out0 = floats[0] ?? model.outputNames[0];
  let samples = 0;
  // top-1 and agreement need class scores: an output with one value per sample has a single "class"
  let classes = Infinity;
  for await (const b of batches) {
    const ref = await model.run(b.inputs, opts);
    classes = Math.min(classes, classesOf(ref[out0]));
    const pred = argmaxRows(ref[out0]);
    samples += pred.length;
    const lab = labels ? b.names.map((n, i) => labels(n, b.indices[i])).map((v) => (typeof v === 'number' ? v : undefined)) : [];
    if (labels) fl.addLabels(pred, lab);
    if (quantized) {
      const got = await quantized.run(b.inputs, opts);
      const qp = argmaxRows(got[out0]);
      if (labels) qm.addLabels(qp, lab);
      qm.addAgreement(qp, pred);
      sq.add(pick(ref, floats), pick(got, floats));
    }
    opts.onProgress?.(samples);
  }
  const scores = classes > 1;
  const r: EvalResult = { samples, task: opts.task ?? 'classification', top1: scores ? fl.top1 : null };
  if (quantized) r.quantized = { top1: scores ? qm.top1 : null, agreement: scores ? qm.agreement : null, sqnr_db: sq.db() };
  const nf = nonFloatNote(model);
  if (nf) r.note = nf;
  if (!scores) r.note = `${nf ? `${nf}; ` : ''}output '${out0}' has ${classes === 1 ? 'one value' : 'no values'} per sample, so top-1 and agreement (one class) mean nothing and are not measured`;
  if (!scores && !quantized) throw new MpqError('MPQ_BAD_INPUT', `${r.note}; nothing to measure (give --encodings to compare a quantized model with float by SQNR)`);
  return r;
}
