/** The op table: ONNX op type -> shape inference, folding and lowering. */
import { OpDef } from '../opctx';
import { ELEMENTWISE } from './elementwise';
import { MOVEMENT } from './movement';
import { NN } from './nn';

export const OPS: Record<string, OpDef> = { ...ELEMENTWISE, ...MOVEMENT, ...NN };

/** Ops that never reach the engine: they are always computed from shapes at load time. */
export const SHAPE_ONLY_OPS = new Set(['Shape', 'Size', 'ConstantOfShape', 'Range', 'Constant']);
