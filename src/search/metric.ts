/**
 * What phase 3 measures: top-1 against labels (classification with labels), else top-1
 * agreement with the float model (classifiers), else output SQNR against float (dB); or a
 * user's own async function. Higher is always better.
 *
 * Only float outputs are measured: integer outputs (token ids a transformer passes through,
 * shapes) are carried through unchanged, so they would make agreement 100% and add noise-free
 * terms to SQNR. The first float output is the one a classifier's top-1 reads.
 */
import { SampleLabels } from '../eval/labels';
import { argmaxRows, floatOutputs, pick, SqnrMeter } from '../eval/metrics';
import { Model, RunOptions, Runnable, Tensor } from '../model';

export type MetricName = 'top1' | 'agreement' | 'sqnr_db' | 'custom';

/** A user-supplied evaluation: given a model (float or simulated quantized), a score, higher is better. */
export type EvaluateFn = (model: Runnable, opts: RunOptions) => Promise<number>;

export interface EvalData {
  batches: () => AsyncIterable<{ inputs: Record<string, Tensor>; names: string[]; indices: number[] }>;
  labels?: SampleLabels;
}

export interface Metric {
  name: MetricName;
  measure(model: Runnable, opts: RunOptions): Promise<number>;
}

/** Is this model a classifier (first output [N, C] with C > 1)? */
function isClassifier(model: Model, shapes: Record<string, number[]>): boolean {
  const spec = model.specialize(shapes);
  const s = spec.values.get(floatOutputs(model)[0] ?? model.outputNames[0])?.shape;
  return !!s && s.length === 2 && s[1] > 1;
}

/** Float reference outputs kept in memory for the SQNR metric at most (bytes). */
const REF_BUDGET_BYTES = 256 * 2 ** 20;

export async function makeMetric(
  float: Model,
  data: EvalData,
  shapes: Record<string, number[]>,
  opts: { custom?: EvaluateFn; task?: string; signal?: AbortSignal },
): Promise<Metric> {
  if (opts.custom) {
    const f = opts.custom;
    return { name: 'custom', measure: (m, o) => f(m, o) };
  }
  const floats = floatOutputs(float);
  const out0 = floats[0] ?? float.outputNames[0];
  if (data.labels && (opts.task === 'classification' || isClassifier(float, shapes))) {
    const labels = data.labels;
    return {
      name: 'top1',
      async measure(m, o) {
        let hit = 0, n = 0;
        for await (const b of data.batches()) {
          const pred = argmaxRows((await m.run(b.inputs, o))[out0]);
          pred.forEach((p, i) => {
            const l = labels(b.names[i], b.indices[i]);
            if (typeof l !== 'number') return;
            n++;
            if (l === p) hit++;
          });
        }
        return n ? hit / n : 0;
      },
    };
  }
  // reference outputs of the float model, computed once: top-1 classes of a classifier, or
  // the outputs while they fit REF_BUDGET_BYTES (else recomputed per batch, so that memory
  // stays bounded by the batch size, not the number of samples)
  const classifier = isClassifier(float, shapes);
  const refTop: number[][] = [];
  let ref: Record<string, Tensor>[] | null = [];
  let refBytes = 0;
  for await (const b of data.batches()) {
    const r = pick(await float.run(b.inputs, { signal: opts.signal }), floats);
    if (classifier) refTop.push(argmaxRows(r[out0]));
    else if (ref) {
      refBytes += Object.values(r).reduce((a, t) => a + t.data.byteLength, 0);
      if (refBytes > REF_BUDGET_BYTES) ref = null;
      else ref.push(r);
    }
  }
  if (classifier) {
    return {
      name: 'agreement',
      async measure(m, o) {
        if (m === float) return 1;
        let agree = 0, n = 0, k = 0;
        for await (const b of data.batches()) {
          const pred = argmaxRows((await m.run(b.inputs, o))[out0]);
          pred.forEach((p, i) => {
            n++;
            if (p === refTop[k][i]) agree++;
          });
          k++;
        }
        return n ? agree / n : 0;
      },
    };
  }
  return {
    name: 'sqnr_db',
    async measure(m, o) {
      if (m === float) return 200;
      const meter = new SqnrMeter();
      let k = 0;
      for await (const b of data.batches()) meter.add(ref ? ref[k++] : pick(await float.run(b.inputs, o), floats), pick(await m.run(b.inputs, o), floats));
      return Math.min(200, meter.db());
    },
  };
}
