/**
 * Image preprocessing options and batch decoding (JPEG/PNG, decoded and preprocessed in Rust,
 * in parallel, off the JS thread).
 *
 * Each image: decode -> 8-bit RGB -> resize -> centre crop -> pad (right, bottom) ->
 * `value = (pixel * scale + offset - mean[c]) / std[c]` (f64, rounded once to f32; `c` is the
 * channel in the output order) -> NCHW or NHWC.
 */
import { MpqError, fromNative } from '../errors';
import { native } from '../native';

export type ResizeMode = 'bilinear' | 'nearest' | 'antialias';

export interface ImagePreprocess {
  /**
   * `number`: shorter side to this size (longer side `floor(s * long / short)`, as torchvision);
   * `[h, w]`: exactly this size; `{ height, maxWidth }`: this height, width
   * `ceil(height * w / h)` capped at maxWidth (PaddleOCR's text-line resize). Default: none.
   */
  resize?: number | [number, number] | { height: number; maxWidth: number };
  /**
   * `bilinear` (default): OpenCV's `INTER_LINEAR` on 8-bit images, bit-exact with `cv2.resize`
   * (half-pixel centres); `antialias`: Pillow's `BILINEAR` (triangle filter widened when
   * shrinking, as torchvision on PIL images; within one 8-bit level of Pillow); `nearest`: the
   * source pixel under the output pixel's centre.
   */
  resizeMode?: ResizeMode;
  /** Centre crop `[h, w]` after the resize (offsets rounded as torchvision's CenterCrop). */
  crop?: [number, number];
  /** Images that already have the crop size are neither resized nor cropped. */
  keepIfCropSize?: boolean;
  /** Pad right and bottom to `[h, w]` with `padValue` (a normalised value, default 0). */
  pad?: [number, number];
  padValue?: number;
  /** Channel order of the tensor (default `rgb`). */
  channelOrder?: 'rgb' | 'bgr';
  /** Default `nchw`. */
  layout?: 'nchw' | 'nhwc';
  /** Per channel of the tensor (in `channelOrder`), default 0. A single number applies to all three. */
  mean?: number[] | number;
  /** Per channel of the tensor, default 1. */
  std?: number[] | number;
  /** Pixel multiplier, default 1. */
  scale?: number;
  /** Added after `scale`, default 0. */
  offset?: number;
}

export type NativeImageOptions = Parameters<ReturnType<typeof native>['loadImages']>[1];

export interface ImageBatch {
  /** `[n, 3, h, w]` or `[n, h, w, 3]`. */
  shape: number[];
  data: Float32Array;
  /** Per image `[h, w]` as decoded. */
  srcSizes: [number, number][];
  /** Per image `[h, w]` after resize and crop: the valid region when padded. */
  sizes: [number, number][];
}

const bad = (msg: string) => new MpqError('MPQ_BAD_INPUT', msg);

function posInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) throw bad(`${what} must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
}

function hw(v: unknown, what: string): [number, number] {
  if (!Array.isArray(v) || v.length !== 2) throw bad(`${what} must be [height, width], got ${JSON.stringify(v)}`);
  return [posInt(v[0], `${what}[0]`), posInt(v[1], `${what}[1]`)];
}

function triple(v: number[] | number | undefined, dflt: number, what: string): number[] {
  if (v === undefined) return [dflt, dflt, dflt];
  const a = typeof v === 'number' ? [v, v, v] : v;
  if (!Array.isArray(a) || a.length !== 3 || a.some((x) => typeof x !== 'number' || !Number.isFinite(x))) {
    throw bad(`${what} needs 3 finite numbers (one per channel), got ${JSON.stringify(v)}`);
  }
  return a.slice();
}

/** Validates options and turns them into the native form. Throws MPQ_BAD_INPUT. */
export function toNativeOptions(p: ImagePreprocess): NativeImageOptions {
  let resizeKind = 'none';
  let resize: number[] = [];
  if (typeof p.resize === 'number') {
    resizeKind = 'short';
    resize = [posInt(p.resize, 'resize')];
  } else if (Array.isArray(p.resize)) {
    resizeKind = 'exact';
    resize = hw(p.resize, 'resize');
  } else if (p.resize !== undefined) {
    resizeKind = 'height';
    resize = [posInt(p.resize.height, 'resize.height'), posInt(p.resize.maxWidth, 'resize.maxWidth')];
  }
  const mode = p.resizeMode ?? 'bilinear';
  if (!['bilinear', 'nearest', 'antialias'].includes(mode)) throw bad(`resizeMode must be bilinear, nearest or antialias, got '${mode}'`);
  const order = p.channelOrder ?? 'rgb';
  if (order !== 'rgb' && order !== 'bgr') throw bad(`channelOrder must be rgb or bgr, got '${order}'`);
  const layout = p.layout ?? 'nchw';
  if (layout !== 'nchw' && layout !== 'nhwc') throw bad(`layout must be nchw or nhwc, got '${layout}'`);
  const std = triple(p.std, 1, 'std');
  if (std.some((s) => s === 0)) throw bad('std must not be 0');
  const scale = p.scale ?? 1;
  const offset = p.offset ?? 0;
  if (!Number.isFinite(scale) || !Number.isFinite(offset)) throw bad('scale and offset must be finite numbers');
  return {
    resizeKind,
    resize,
    resizeMode: mode,
    crop: p.crop === undefined ? undefined : hw(p.crop, 'crop'),
    keepIfCropSize: p.keepIfCropSize ?? false,
    pad: p.pad === undefined ? undefined : hw(p.pad, 'pad'),
    padValue: p.padValue ?? 0,
    channelOrder: order,
    layout,
    mean: triple(p.mean, 0, 'mean'),
    std,
    scale,
    offset,
  };
}

/**
 * The output `[h, w]` every image gets, when the options fix it (crop or pad, or an exact resize);
 * undefined when it depends on the image.
 */
export function fixedImageSize(p: ImagePreprocess): [number, number] | undefined {
  if (p.pad) return [p.pad[0], p.pad[1]];
  if (p.crop) return [p.crop[0], p.crop[1]];
  if (Array.isArray(p.resize)) return [p.resize[0], p.resize[1]];
  return undefined;
}

function pairs(a: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (let i = 0; i + 1 < a.length; i += 2) out.push([a[i], a[i + 1]]);
  return out;
}

/** Decodes and preprocesses `files` into one batch tensor (parallel, off the JS thread). */
export async function loadImages(files: string[], opts: ImagePreprocess | NativeImageOptions): Promise<ImageBatch> {
  const nopts = 'resizeKind' in opts ? (opts as NativeImageOptions) : toNativeOptions(opts as ImagePreprocess);
  let r;
  try {
    r = await native().loadImages(files, nopts);
  } catch (e) {
    throw fromNative(e);
  }
  return { shape: r.shape, data: r.data, srcSizes: pairs(r.srcSizes), sizes: pairs(r.sizes) };
}

/** Image sizes `[h, w]` from the file headers only (no decoding). */
export async function probeImages(files: string[]): Promise<[number, number][]> {
  try {
    return pairs(await native().probeImages(files));
  } catch (e) {
    throw fromNative(e);
  }
}

/**
 * Parses the CLI form of {@link ImagePreprocess}: comma-separated `key=value`, for example
 * `resize=256,crop=224x224,mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=0.00392156862745098`.
 * Keys: resize (`S`, `HxW` or `hH/maxW`, e.g. `h48/320`), mode, crop (`HxW` or `S`), keepIfCropSize,
 * pad (`HxW`), padValue, order (rgb|bgr), layout (nchw|nhwc), mean, std (`a/b/c` or one number),
 * scale, offset.
 */
export function parsePreprocess(s: string): ImagePreprocess {
  const p: ImagePreprocess = {};
  const num = (k: string, v: string) => {
    const x = Number(v);
    if (v.trim() === '' || !Number.isFinite(x)) throw bad(`--preprocess ${k}=${v}: not a number`);
    return x;
  };
  const size = (k: string, v: string): [number, number] => {
    const m = /^(\d+)x(\d+)$/.exec(v);
    if (m) return [Number(m[1]), Number(m[2])];
    const n = num(k, v);
    return [n, n];
  };
  for (const part of s.split(',').map((x) => x.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 0) throw bad(`--preprocess: '${part}' is not key=value`);
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    switch (k) {
      case 'resize': {
        const h = /^h(\d+)\/(\d+)$/.exec(v);
        if (h) p.resize = { height: Number(h[1]), maxWidth: Number(h[2]) };
        else if (/x/.test(v)) p.resize = size(k, v);
        else p.resize = num(k, v);
        break;
      }
      case 'mode': case 'resizeMode': p.resizeMode = v as ResizeMode; break;
      case 'crop': p.crop = size(k, v); break;
      case 'keepIfCropSize': p.keepIfCropSize = v !== 'false' && v !== '0'; break;
      case 'pad': p.pad = size(k, v); break;
      case 'padValue': p.padValue = num(k, v); break;
      case 'order': case 'channelOrder': p.channelOrder = v as 'rgb' | 'bgr'; break;
      case 'layout': p.layout = v as 'nchw' | 'nhwc'; break;
      case 'mean': case 'std': {
        const a = v.split('/').map((x) => num(k, x));
        p[k] = a.length === 1 ? a[0] : a;
        break;
      }
      case 'scale': p.scale = num(k, v); break;
      case 'offset': p.offset = num(k, v); break;
      default: throw bad(`--preprocess: unknown key '${k}'`);
    }
  }
  toNativeOptions(p); // validate now
  return p;
}
