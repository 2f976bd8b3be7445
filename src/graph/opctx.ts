/** The context an op handler sees during shape inference, folding and lowering. */
import { MpqError } from '../errors';
import { checkTensorSize, limits } from '../limits';
import { AttrValue, ConstTensor, DType, Node } from './ir';
import type { Specialized } from './specialize';

/** A value after specialisation: static shape, and its data when it is constant. */
export interface Val {
  dtype: DType;
  shape: number[];
  value?: ConstTensor;
}

/** What a handler returns from `lower`: which inputs reach Rust, and lowered attributes. */
export interface Lowered {
  op?: string;
  inputs?: number[];
  attrs?: Record<string, number | string | number[]>;
}

export interface OpDef {
  /** Output dtypes and shapes (and values, for ops whose output is known from shapes alone). */
  infer(c: OpCtx): Val[];
  /** Output values when every present input is constant; null when this op does not fold. */
  fold?(c: OpCtx, outs: Val[]): ConstTensor[] | null;
  /** The node as Rust receives it (see crates/core/src/ops/CONTRACT.md). Default: all inputs, plain attributes. */
  lower?(c: OpCtx, outs: Val[]): Lowered;
}

/**
 * Thrown where a shape-like input (a Reshape target, Range's bounds, ...) is not known from
 * constants and input shapes: the specialiser then takes its value from the data (see
 * `specialize`'s `known`), or reports it.
 */
export class DataDependent extends MpqError {
  constructor(
    /** The plan name of the value needed. */
    readonly value: string,
    message: string,
  ) {
    super('MPQ_BAD_NODE', message);
  }
}

/**
 * Thrown by `specialize` when a shape depends on the value of `value` and `known` lacks
 * it. `partial` is the specialisation so far, whose nodes compute that value from the inputs.
 */
export class NeedsData extends DataDependent {
  constructor(
    value: string,
    message: string,
    readonly partial: Specialized,
  ) {
    super(value, message);
  }
}

export class OpCtx {
  constructor(
    readonly node: Node,
    readonly opset: number,
    readonly inputs: (Val | undefined)[],
  ) {}

  fail(msg: string): never {
    throw new MpqError('MPQ_BAD_NODE', `node '${this.node.name}' (${this.node.op}, opset ${this.opset}): ${msg}`);
  }
  /**
   * Checks that a value of `shape` fits the size limits before anything of that size is
   * allocated, and returns its element count. `fold`: the value is computed here, in
   * TypeScript, where the (smaller) folding limit applies too.
   */
  checkSize(shape: readonly number[], fold = false): number {
    const where = `node '${this.node.name}' (${this.node.op}, opset ${this.opset})`;
    const n = checkTensorSize(shape, where);
    const max = limits().maxFoldElements;
    if (fold && n > max) {
      throw new MpqError('MPQ_TOO_LARGE', `${where}: a constant of shape [${shape}] (${n} elements) is over the folding limit of ${max} elements (raise MPQ_MAX_FOLD_ELEMENTS if the model really needs it)`);
    }
    return n;
  }
  has(i: number): boolean {
    return this.inputs[i] !== undefined;
  }
  in(i: number): Val {
    const v = this.inputs[i];
    if (!v) this.fail(`input ${i} is required`);
    return v;
  }
  shape(i: number): number[] {
    return this.in(i).shape;
  }
  rank(i: number): number {
    return this.in(i).shape.length;
  }
  constOf(i: number): ConstTensor | undefined {
    return this.inputs[i]?.value;
  }
  /** The integer values of constant input `i` (shape-like inputs), or a clear error. */
  ints(i: number, what: string): number[] {
    const vals = this.floats(i, what);
    const bad = vals.findIndex((x) => !Number.isInteger(x));
    if (bad >= 0) this.fail(`${what} (input ${i}) must hold integers, but element ${bad} is ${vals[bad]} (of ${vals.length} values${vals.length > 8 ? `: ${vals.slice(0, 8).join(',')},...` : ''})`);
    return vals;
  }
  /** The values of constant input `i`, or a clear error. */
  floats(i: number, what: string): number[] {
    const v = this.in(i).value;
    if (!v) throw new DataDependent(this.node.inputs[i], `node '${this.node.name}' (${this.node.op}, opset ${this.opset}): ${what} (input ${i}) depends on the input data`);
    return Array.from(v.data, (x) => Number(x));
  }
  attr(name: string): AttrValue {
    return this.node.attrs[name];
  }
  ai(name: string, def: number): number {
    const v = this.node.attrs[name];
    if (v === undefined) return def;
    if (typeof v !== 'number') this.fail(`attribute '${name}' must be an integer`);
    return v;
  }
  af(name: string, def: number): number {
    const v = this.node.attrs[name];
    if (v === undefined) return def;
    if (typeof v !== 'number') this.fail(`attribute '${name}' must be a number`);
    return v;
  }
  as(name: string, def: string): string {
    const v = this.node.attrs[name];
    if (v === undefined) return def;
    if (typeof v !== 'string') this.fail(`attribute '${name}' must be a string`);
    return v;
  }
  aints(name: string): number[] | undefined {
    const v = this.node.attrs[name];
    if (v === undefined) return undefined;
    if (!Array.isArray(v)) this.fail(`attribute '${name}' must be a list of integers`);
    return v as number[];
  }
  afloats(name: string): number[] | undefined {
    return this.aints(name);
  }
  axis(a: number, rank: number): number {
    const r = a < 0 ? a + rank : a;
    if (!(r >= 0 && r < Math.max(rank, 1))) this.fail(`axis ${a} is out of range for rank ${rank}`);
    return r;
  }
}
