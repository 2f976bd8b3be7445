/**
 * The If conditions the calibration data decide. An If whose condition comes from the data and
 * whose branches agree in shape runs in a plan as both branches and a Where (control.ts): right
 * for any input, but quantizers inside would be calibrated on a branch the data never takes.
 * When every calibration batch gives its condition the same value (silero VAD's `sr == 16000`),
 * that value is kept with the values measured on the data: plans then run the branch it
 * selects (and check at run time that the data still select it), so that its quantizers are
 * placed inside that branch (taken-branches.ts). When the batches disagree, both branches ran
 * on the calibration data: the If stays as it is, float inside, with a note.
 */
import { ConstTensor } from '../graph/ir';
import { Model, RunOptions } from '../model';
import { Batches } from './calibrate';

/** Keeps the conditions that all `batches` agree on in `model.graph.dataValues`; returns notes on those they do not. */
export async function pinConditions(model: Model, shapes: Record<string, number[]>, batches: Batches, opts: RunOptions = {}): Promise<string[]> {
  const notes: string[] = [];
  const tried = new Set<string>();
  for (;;) {
    const spec = model.specialize(shapes);
    const todo = [...spec.both].filter(([, cond]) => !tried.has(cond) && spec.values.get(cond)?.shape.length === 0);
    if (todo.length === 0) return notes;
    const conds = todo.map(([, c]) => c);
    for (const c of conds) tried.add(c);
    const seen = new Map<string, Set<number>>(conds.map((c) => [c, new Set()]));
    for await (const b of batches()) {
      const c = model.compile(Object.fromEntries(model.inputNames.map((n) => [n, b[n].shape])), conds);
      const got = await model.exec(c, model.inputNames.map((n) => b[n]), opts, conds.map((v) => c.lowered.index.get(v)!));
      conds.forEach((v, i) => seen.get(v)!.add(got[i].data[0] ? 1 : 0));
    }
    for (const [node, cond] of todo) {
      const vals = [...seen.get(cond)!];
      if (vals.length === 1) {
        const dtype = spec.values.get(cond)!.dtype;
        const t: ConstTensor = { dtype, shape: [], data: dtype === 'float' ? Float32Array.of(vals[0]) : Float64Array.of(vals[0]), onnxType: dtype === 'bool' ? 9 : dtype === 'int' ? 7 : 1 };
        model.graph.dataValues!.set(cond, t);
      } else {
        notes.push(`If '${node}' took both branches on the calibration data (its condition '${cond}' is true for some batches and false for others), so it runs as both branches and a Where and stays float inside`);
      }
    }
  }
}
