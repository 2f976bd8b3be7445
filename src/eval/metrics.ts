/** Metrics: top-1 (against labels or another model), and output SQNR. */
import { Graph } from '../graph/ir';
import { Tensor } from '../model';

/**
 * The outputs that carry float values. Integer and boolean outputs (token ids passed through,
 * shapes, masks) are carried through unchanged by quantization, so SQNR, top-1 and agreement
 * are measured on the float outputs only (else an id output makes agreement 100%).
 */
export function floatOutputs(model: { graph: Pick<Graph, 'outputs'> }): string[] {
  return model.graph.outputs.filter((o) => o.dtype === 'float').map((o) => o.name);
}

/** Why some outputs are not measured (undefined when every output is float). */
export function nonFloatNote(model: { graph: Pick<Graph, 'outputs'> }): string | undefined {
  const other = model.graph.outputs.filter((o) => o.dtype !== 'float');
  if (!other.length) return undefined;
  return `output${other.length > 1 ? 's' : ''} ${other.map((o) => `'${o.name}' (${o.dtype})`).join(', ')} ${other.length > 1 ? 'are' : 'is'} not float: carried through unchanged and left out of SQNR, top-1 and agreement`;
}

/** The entries of `t` named in `names`. */
export function pick<T>(t: Record<string, T>, names: readonly string[]): Record<string, T> {
  const out: Record<string, T> = {};
  for (const n of names) if (n in t) out[n] = t[n];
  return out;
}

/** Index of the largest value in each row of a [N, C] (or [N, ..., C] flattened per sample) tensor. */
export function argmaxRows(t: Tensor): number[] {
  const n = t.shape[0] ?? 1;
  const c = t.data.length / n;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let b = 0;
    const base = i * c;
    for (let k = 1; k < c; k++) if (t.data[base + k] > t.data[base + b]) b = k;
    out.push(b);
  }
  return out;
}

/** Values per sample of an output: top-1 and agreement only mean something when it is more than 1. */
export function classesOf(t: Tensor): number {
  return t.shape.length === 0 || t.shape[0] === 0 ? 0 : t.data.length / t.shape[0];
}

/** Accumulates signal and noise power per output, over batches. */
export class SqnrMeter {
  private signal = new Map<string, number>();
  private noise = new Map<string, number>();

  add(ref: Record<string, Tensor>, test: Record<string, Tensor>): void {
    for (const [k, r] of Object.entries(ref)) {
      const t = test[k];
      let s = 0, e = 0;
      for (let i = 0; i < r.data.length; i++) {
        const a = r.data[i];
        const d = a - t.data[i];
        s += a * a;
        e += d * d;
      }
      this.signal.set(k, (this.signal.get(k) ?? 0) + s);
      this.noise.set(k, (this.noise.get(k) ?? 0) + e);
    }
  }

  /** SQNR in dB; several outputs: each normalised by its own signal power, then averaged. */
  db(): number {
    const ratios = [...this.signal.keys()].map((k) => (this.noise.get(k) ?? 0) / Math.max(this.signal.get(k) ?? 0, 1e-30));
    const mean = ratios.reduce((a, b) => a + b, 0) / Math.max(ratios.length, 1);
    return mean === 0 ? Infinity : -10 * Math.log10(mean);
  }
}

/** Counts top-1 hits against labels and agreement with a reference. */
export class Top1Meter {
  hits = 0;
  labelled = 0;
  agree = 0;
  compared = 0;

  addLabels(pred: number[], labels: (number | undefined)[]): void {
    pred.forEach((p, i) => {
      if (labels[i] === undefined) return;
      this.labelled++;
      if (p === labels[i]) this.hits++;
    });
  }

  addAgreement(pred: number[], ref: number[]): void {
    pred.forEach((p, i) => {
      this.compared++;
      if (p === ref[i]) this.agree++;
    });
  }

  get top1(): number | null {
    return this.labelled ? this.hits / this.labelled : null;
  }
  get agreement(): number | null {
    return this.compared ? this.agree / this.compared : null;
  }
}
