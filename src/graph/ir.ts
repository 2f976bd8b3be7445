/** The graph IR: what the ONNX loader produces and every later pass reads. */

/** Element kind of a value. Data is held as numbers; ints and bools are exact. */
export type DType = 'float' | 'int' | 'bool';

/** A constant tensor. `float` data is a Float32Array, `int`/`bool` data a Float64Array. */
export interface ConstTensor {
  dtype: DType;
  shape: number[];
  data: Float32Array | Float64Array;
  /** ONNX TensorProto.DataType it was read from (1 = float, 7 = int64, ...). */
  onnxType: number;
}

export type AttrValue = number | string | number[] | string[] | ConstTensor | Graph | undefined;

export interface Node {
  name: string;
  op: string;
  domain: string;
  /** Input value names; '' for an omitted optional input. */
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
  /** ONNX AttributeProto type of each attribute as read (so that a float 1.0 is written back as a float). */
  attrTypes?: Record<string, number>;
  /**
   * Control flow (If, Loop, Scan): how many of `inputs` the node declares in ONNX. The rest
   * are the outer-scope values its subgraphs read, listed so that every pass that follows
   * data (ordering, consumers, downstream parts) sees them; they are not written back.
   */
  declaredInputs?: number;
}

/** Is this attribute a subgraph (the branches of If, the body of Loop and Scan)? */
export function isGraph(v: AttrValue): v is Graph {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && 'nodes' in v;
}

/** A graph input or output as declared: dims are numbers, symbolic names, or null (unknown). */
export interface ValueInfo {
  name: string;
  dtype: DType;
  onnxType: number;
  dims: (number | string | null)[] | null;
}

export interface Graph {
  name: string;
  /** Opset of the default ONNX domain. */
  opset: number;
  irVersion: number;
  producer: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  /** Initializers and the values of Constant nodes, by value name. */
  consts: Map<string, ConstTensor>;
  /**
   * Values that shapes depend on, measured on the data (see `probeDataValues`), shared by the
   * graphs derived from this one (BN-folded, QDQ, downstream parts), which specialise with them.
   */
  dataValues?: Map<string, ConstTensor>;
}
