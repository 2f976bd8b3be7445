/**
 * Opset conversion of the ops this tool supports, so that a QDQ export (opset 13, or 21 when
 * 4- or 16-bit types occur) of a model written for an older opset keeps its meaning.
 * Attributes that became inputs become constant inputs; Upsample becomes Resize.
 */
import { MpqError } from '../errors';
import { ConstTensor, Graph, isGraph, Node } from '../graph/ir';

const ints = (v: number[]): ConstTensor => ({ dtype: 'int', shape: [v.length], data: Float64Array.from(v), onnxType: 7 });
const floats = (v: number[]): ConstTensor => ({ dtype: 'float', shape: [v.length], data: Float32Array.from(v), onnxType: 1 });
const scalar = (v: number): ConstTensor => ({ dtype: 'float', shape: [], data: Float32Array.of(v), onnxType: 1 });

export function upgradeOpset(g: Graph, target: number, rankOf: (value: string) => number | undefined = () => undefined): Graph {
  if (target < g.opset) throw new MpqError('MPQ_BAD_INPUT', `cannot lower the opset from ${g.opset} to ${target}`);
  if (target === g.opset) return g;
  const from = g.opset;
  let k = 0;
  // a graph or subgraph (the branches of If, the bodies of Loop and Scan are converted too)
  const convert = (sg: Graph): Graph => {
    const consts = new Map(sg.consts);
    const addConst = (base: string, t: ConstTensor): string => {
      const name = `${base}__opset${target}_${k++}`;
      consts.set(name, t);
      return name;
    };
    const nodes: Node[] = [];
    for (const n0 of sg.nodes) {
      const attrs = Object.fromEntries(Object.entries(n0.attrs).map(([a, v]) => [a, isGraph(v) ? convert(v) : v]));
      const n: Node = { ...n0, inputs: [...n0.inputs], attrs, attrTypes: { ...(n0.attrTypes ?? {}) } };
      const take = (a: string) => {
        const v = n.attrs[a];
        delete n.attrs[a];
        delete n.attrTypes![a];
        return v;
      };
      const setInput = (i: number, name: string) => {
        while (n.inputs.length < i) n.inputs.push('');
        n.inputs[i] = name;
      };
      const fail = (why: string): never => {
        throw new MpqError('MPQ_UNSUPPORTED_OP', `cannot convert node '${n.name}' (${n.op}) from opset ${from} to ${target}: ${why}`);
      };
      switch (n.op) {
        case 'Clip':
          if (from < 11) {
            const lo = take('min') as number | undefined;
            const hi = take('max') as number | undefined;
            if (lo !== undefined) setInput(1, addConst(n.name + '_min', scalar(lo)));
            if (hi !== undefined) setInput(2, addConst(n.name + '_max', scalar(hi)));
          }
          break;
        case 'Slice':
          if (from < 10) {
            const starts = take('starts') as number[];
            const ends = take('ends') as number[];
            const axes = take('axes') as number[] | undefined;
            setInput(1, addConst(n.name + '_starts', ints(starts)));
            setInput(2, addConst(n.name + '_ends', ints(ends.map((e) => Math.min(e, 2 ** 53)))));
            if (axes) setInput(3, addConst(n.name + '_axes', ints(axes)));
          }
          break;
        case 'Squeeze':
        case 'Unsqueeze':
          if (from < 13 && target >= 13) {
            const axes = take('axes') as number[] | undefined;
            if (axes) setInput(1, addConst(n.name + '_axes', ints(axes)));
          }
          break;
        case 'ReduceSum':
        case 'ReduceMean':
        case 'ReduceMax':
        case 'ReduceMin':
        case 'ReduceProd':
        case 'ReduceL2': {
          const inputFrom = n.op === 'ReduceSum' ? 13 : 18;
          if (from < inputFrom && target >= inputFrom) {
            const axes = take('axes') as number[] | undefined;
            if (axes) setInput(1, addConst(n.name + '_axes', ints(axes)));
          }
          break;
        }
        case 'Split':
          if (from < 13 && target >= 13) {
            const split = take('split') as number[] | undefined;
            if (split) setInput(1, addConst(n.name + '_split', ints(split)));
          }
          if (target >= 18 && !n.inputs[1]) n.attrs.num_outputs = n.outputs.length;
          break;
        case 'Pad':
          if (from < 11) {
            const pads = take('pads') as number[];
            const value = take('value') as number | undefined;
            setInput(1, addConst(n.name + '_pads', ints(pads)));
            if (value !== undefined) setInput(2, addConst(n.name + '_value', scalar(value)));
          }
          break;
        case 'Softmax':
        case 'LogSoftmax':
          if (from < 13) {
            // legacy semantics coerce to 2-D at `axis`; equal to the new ones only on the last axis
            const axis = (n.attrs.axis as number | undefined) ?? 1;
            const r = rankOf(n.inputs[0]);
            if (r === undefined || (axis < 0 ? axis + r : axis) !== r - 1) fail('a legacy Softmax over an axis other than the last (or of unknown rank)');
            n.attrs.axis = axis;
            n.attrTypes!.axis = 2;
          }
          break;
        case 'Upsample': {
          const mode = (n.attrs.mode as string | undefined) ?? 'nearest';
          const scales = from < 9 ? floats(take('scales') as number[]) : undefined;
          n.op = 'Resize';
          n.attrs = { mode, coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' };
          n.attrTypes = { mode: 3, coordinate_transformation_mode: 3, nearest_mode: 3 };
          const sc = scales ? addConst(n.name + '_scales', scales) : n.inputs[1];
          n.inputs = [n.inputs[0], '', sc];
          break;
        }
        case 'Resize':
          if (from < 11) {
            n.inputs = [n.inputs[0], '', n.inputs[1]];
            n.attrs.coordinate_transformation_mode = 'asymmetric';
            n.attrs.nearest_mode = 'floor';
            n.attrTypes!.coordinate_transformation_mode = 3;
            n.attrTypes!.nearest_mode = 3;
          }
          break;
        case 'Dropout':
          if (from < 12) {
            take('ratio');
            take('is_test');
          }
          break;
        case 'BatchNormalization':
          take('spatial');
          take('is_test');
          take('consumed_inputs');
          break;
        case 'Cast':
          if (typeof n.attrs.to === 'string') fail('string-typed Cast');
          break;
        default:
          break;
      }
      nodes.push(n);
    }
    return { ...sg, opset: target, nodes, consts };
  };
  return convert(g);
}
