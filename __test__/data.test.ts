/**
 * Data loading: image decoding and preprocessing against independent references (OpenCV and
 * Pillow results computed offline and embedded below, PNGs built here with known pixels), .npy
 * streaming with selection, presets, labels, data sources and their errors.
 */
import test from 'ava';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { MpqError } from '../src/errors';
import { encodeNpy } from '../src/npy';
import { loadImages, openDataSource, parsePreprocess, presetOptions, PRESET_NAMES, readLabels, selectIndices } from '../src/data';
import { HAS_SHARED, SKIP_SHARED_MSG, sharedFile } from './helpers';

/**
 * Reference values computed with opencv-python-headless 4.x (cv2.imread, cv2.resize) and
 * Pillow 13 (Image.open().convert('RGB'), Image.resize(BILINEAR)) on the synthetic images of
 * `synth` and on the first files of ../shared/data: see the comments of each test.
 */
const REF = {"down_5x7_to_3x4":[48,120,159,119,104,175,114,174,96,173,74,91,127,38,109,63,134,205,159,230,77,95,70,141,140,147,112,92,153,149,72,132,203,167,99,106],"up_5x7_to_9x11":[0,71,142,17,88,159,40,111,182,64,135,206,87,158,229,111,182,253,134,205,114,158,159,44,182,20,68,205,20,91,222,37,108,34,105,176,52,123,155,77,140,134,103,112,159,128,114,185,153,139,210,125,165,127,119,144,90,145,61,116,170,70,95,188,89,74,90,161,232,110,181,149,139,189,53,167,73,82,196,39,111,225,68,139,108,97,150,54,118,168,83,128,197,112,154,101,132,175,18,146,103,174,117,126,132,87,145,86,118,86,118,150,79,150,182,111,182,123,143,141,103,143,132,135,103,164,105,124,118,76,147,76,202,17,88,111,42,113,6,77,148,41,112,183,76,147,218,111,182,253,146,217,125,181,182,67,216,54,102,111,66,137,20,91,162,116,73,144,91,100,171,67,138,197,106,177,144,144,163,144,182,111,182,130,149,148,137,138,127,224,63,123,130,85,156,41,112,183,58,129,172,88,146,201,127,171,222,150,213,119,183,172,98,225,68,139,113,101,172,101,110,173,221,85,130,149,101,159,75,118,189,114,185,86,146,140,117,175,91,154,111,135,144,109,149,166,153,139,210,94,134,205,92,140,164,166,159,75,168,107,101,161,62,132,148,219,34,181,136,67,204,42,113,88,89,160,64,135,206,111,182,253,83,154,225,87,158,159,133,204,42,180,111,66,213,28,99],"pil_6x9_to_4x5":[61,125,155,124,117,170,126,137,123,149,90,95,93,105,128,110,104,136,122,114,155,137,142,137,119,110,117,134,87,104,115,136,154,140,151,151,128,125,161,146,116,117,164,102,76,169,119,131,118,171,112,126,112,122,161,104,127,123,128,158],"pil_6x9_to_8x13":[0,71,142,20,91,162,46,117,188,71,142,213,97,168,239,122,193,186,148,219,34,174,67,60,199,14,85,205,40,111,54,65,136,20,91,162,40,111,182,63,134,205,86,157,142,116,150,98,145,68,127,175,86,157,155,115,157,74,145,120,103,108,149,133,108,117,155,138,49,118,166,77,125,122,107,148,59,130,139,114,185,114,141,126,104,138,86,138,61,120,172,83,154,157,117,159,80,151,126,115,119,161,112,124,133,91,155,66,161,158,69,163,108,93,138,49,120,183,30,101,92,60,131,28,99,163,67,138,179,106,157,216,135,183,185,151,222,69,202,96,98,148,61,132,39,92,161,161,60,106,125,60,114,35,74,145,66,105,176,83,139,210,112,183,202,155,226,91,199,132,117,174,90,151,62,133,172,190,83,144,172,86,157,60,128,182,115,161,60,148,98,49,164,11,82,110,181,92,147,132,129,159,107,156,96,155,137,132,144,178,128,133,204,60,131,202,144,149,108,171,122,94,155,78,129,152,186,60,184,137,70,221,36,107,186,161,72,175,116,113,147,95,144,89,148,130,103,174,149,116,157,162,118,93,164,105,147,106,148,121,93,221,55,114,156,168,116,150,147,132,167,78,149,249,64,135,155,108,179,94,165,177,151,222,56,135,206,21,147,139,33,204,19,90,84,76,147,115,88,159,238,72,143,117,129,200,61,132,203,42,113,184],"imagenet_tf":[{"file":"0000_n01440764.jpg","mean":[-0.0337067,-0.0425823,-0.236305],"px":[-0.403922,-0.286274,-0.32549,-0.403922,-0.286274,-0.32549,-0.192157,-0.105882,-0.168627,-0.231373,-0.145098,-0.192157,-0.427451,-0.294118,-0.341176,-0.223529,-0.137255,-0.2,-0.121569,-0.0666667,-0.129412,-0.270588,-0.192157,-0.254902,-0.34902,-0.270588,-0.341176,0.364706,-0.0588235,-0.733333,0.772549,0.435294,-0.45098,0.898039,0.662745,-0.356863,0.121569,0.168628,0.152941,0.137255,0.152941,0.113726,0.372549,0.32549,0.215686,-0.262745,-0.215686,-0.309804]},{"file":"0001_n01443537.jpg","mean":[-0.269881,-0.277573,-0.549793],"px":[-0.733333,-0.654902,-0.717647,-0.678431,-0.537255,-0.647059,-0.552941,-0.396078,-0.607843,-0.74902,-0.654902,-0.733333,-0.32549,-0.152941,-0.333333,-0.741176,-0.694118,-0.72549,-0.490196,-0.341176,-0.498039,-0.254902,0.0352942,-0.372549,0.254902,0.32549,0.192157,0.803922,0.654902,0.0352942,0.835294,0.584314,-0.270588,0.780392,0.482353,-0.513726,-0.639216,-0.505882,-0.631373,-0.764706,-0.74902,-0.772549,-0.811765,-0.796078,-0.803922,-0.0823529,-0.121569,-0.372549]},{"file":"0002_n01484850.jpg","mean":[0.18587,0.189804,0.206975],"px":[0.0352942,0.027451,-0.00392157,0.0509804,0.0509804,0.0352942,0.905882,0.843137,0.827451,0.443137,0.45098,0.482353,0.827451,0.756863,0.717647,-0.247059,-0.239216,-0.223529,-0.341176,-0.278431,-0.254902,-0.254902,-0.215686,-0.184314,0.0196079,-0.294118,-0.223529,0.262745,-0.0901961,-0.0352941,0.890196,0.819608,0.764706,-0.396078,-0.286274,-0.2,1.0,0.905882,0.87451,0.835294,0.686275,0.576471,0.701961,0.694118,0.654902,0.937255,0.968627,0.960784]},{"file":"0003_n01491361.jpg","mean":[-0.506478,-0.332165,-0.162984],"px":[-0.364706,-0.160784,0.0509804,-0.411765,-0.2,0.027451,-0.443137,-0.231373,0.00392163,-0.458824,-0.231373,0.00392163,-0.435294,-0.223529,0.00392163,-0.47451,-0.262745,-0.027451,-0.537255,-0.333333,-0.0745098,-0.529412,-0.301961,-0.0509804,-0.0745098,0.00392163,0.0117648,-0.231373,-0.152941,-0.160784,-0.521569,-0.498039,-0.443137,-0.443137,-0.341176,-0.278431,-0.639216,-0.396078,-0.152941,-0.639216,-0.411765,-0.160784,-0.615686,-0.427451,-0.160784,-0.670588,-0.435294,-0.168627]}],"rec":[{"file":"0000.png","width":293,"sum":11438.0,"abssum":13754.3,"px":[0.372549,0.364706,0.364706,0.372549,0.364706,0.364706,0.372549,0.364706,0.372549,0.372549,0.372549,0.364706,0.372549,0.364706,0.333333,0.356863,-0.129412,0.0745099,0.317647,0.364706,0.364706,-0.388235,-0.247059,0.317647,-0.152941,0.192157,0.364706,0.356863,0.0352942,-0.341176,-0.34902,0.364706,0.356863,0.364706,0.356863,0.34902,0.372549,0.364706,0.364706,0.372549,0.364706,0.364706,0.372549,0.364706,0.364706,0.372549,0.364706,0.372549,0.372549,0.372549,0.364706,0.372549,0.364706,0.333333,0.356863,-0.129412,0.0745099,0.317647,0.364706,0.364706,-0.388235,-0.247059,0.317647,-0.152941,0.192157,0.364706,0.356863,0.0352942,-0.341176,-0.34902,0.364706,0.356863,0.364706,0.356863,0.34902,0.372549,0.364706,0.364706,0.372549,0.364706,0.364706,0.372549,0.364706,0.364706,0.372549,0.364706,0.372549,0.372549,0.372549,0.364706,0.372549,0.364706,0.333333,0.356863,-0.129412,0.0745099,0.317647,0.364706,0.364706,-0.388235,-0.247059,0.317647,-0.152941,0.192157,0.364706,0.356863,0.0352942,-0.341176,-0.34902,0.364706,0.356863,0.364706,0.356863,0.34902,0.372549,0.364706,0.364706]},{"file":"0001.png","width":87,"sum":3498.0,"abssum":3856.92,"px":[0.380392,0.388235,0.380392,0.380392,0.380392,0.0196079,0.176471,0.0745099,0.388235,0.356863,0.364706,0.301961,0.380392,0.388235,0.380392,0.380392,0.380392,0.0196079,0.176471,0.0745099,0.388235,0.356863,0.364706,0.301961,0.380392,0.388235,0.380392,0.380392,0.380392,0.0196079,0.176471,0.0745099,0.388235,0.356863,0.364706,0.301961]},{"file":"0002.png","width":158,"sum":4767.95,"abssum":11435.2,"px":[0.513726,0.505882,0.505882,0.505882,0.513726,0.498039,0.505882,0.498039,0.176471,0.0980393,-0.466667,-0.764706,0.443137,0.270588,0.505882,0.505882,0.498039,-0.435294,-0.882353,-0.709804,-0.34902,0.513726,0.505882,0.505882,0.505882,0.513726,0.498039,0.505882,0.498039,0.176471,0.0980393,-0.466667,-0.764706,0.443137,0.270588,0.505882,0.505882,0.498039,-0.435294,-0.882353,-0.709804,-0.34902,0.513726,0.505882,0.505882,0.505882,0.513726,0.498039,0.505882,0.498039,0.176471,0.0980393,-0.466667,-0.764706,0.443137,0.270588,0.505882,0.505882,0.498039,-0.435294,-0.882353,-0.709804,-0.34902]},{"file":"0003.png","width":102,"sum":4760.47,"abssum":6667.04,"px":[0.466667,0.466667,0.466667,0.458824,0.466667,0.466667,0.466667,0.47451,0.458824,0.466667,0.466667,0.466667,-0.631373,-0.780392,0.466667,0.466667,0.466667,0.466667,0.458824,0.466667,0.466667,0.466667,0.47451,0.458824,0.466667,0.466667,0.466667,-0.631373,-0.780392,0.466667,0.466667,0.466667,0.466667,0.458824,0.466667,0.466667,0.466667,0.47451,0.458824,0.466667,0.466667,0.466667,-0.631373,-0.780392,0.466667]},{"file":"0004.png","width":102,"sum":6992.56,"abssum":9027.88,"px":[0.756863,0.741176,0.756863,0.74902,0.756863,0.764706,-0.435294,-0.137255,0.74902,0.74902,0.764706,-0.435294,-0.176471,-0.301961,0.686275,0.756863,0.741176,0.756863,0.74902,0.756863,0.764706,-0.435294,-0.137255,0.74902,0.74902,0.764706,-0.435294,-0.176471,-0.301961,0.686275,0.756863,0.741176,0.756863,0.74902,0.756863,0.764706,-0.435294,-0.137255,0.74902,0.74902,0.764706,-0.435294,-0.176471,-0.301961,0.686275]},{"file":"0005.png","width":320,"sum":16543.9,"abssum":24184.3,"px":[0.521569,0.529412,0.513726,0.521569,0.529412,0.521569,0.545098,0.537255,0.513726,0.513726,0.529412,0.529412,0.521569,0.529412,0.529412,0.537255,0.529412,0.521569,0.521569,-0.513726,0.529412,-0.427451,0.521569,0.521569,0.521569,0.32549,0.513726,0.513726,0.505882,0.529412,0.545098,0.521569,0.529412,0.521569,0.529412,0.529412,0.505882,0.521569,0.537255,0.521569,0.513726,0.521569,0.521569,0.529412,0.513726,0.521569,0.529412,0.521569,0.545098,0.537255,0.513726,0.513726,0.529412,0.529412,0.521569,0.529412,0.529412,0.537255,0.529412,0.521569,0.521569,-0.513726,0.529412,-0.427451,0.521569,0.521569,0.521569,0.32549,0.513726,0.513726,0.505882,0.529412,0.545098,0.521569,0.529412,0.521569,0.529412,0.529412,0.505882,0.521569,0.537255,0.521569,0.513726,0.521569,0.521569,0.529412,0.513726,0.521569,0.529412,0.521569,0.545098,0.537255,0.513726,0.513726,0.529412,0.529412,0.521569,0.529412,0.529412,0.537255,0.529412,0.521569,0.521569,-0.513726,0.529412,-0.427451,0.521569,0.521569,0.521569,0.32549,0.513726,0.513726,0.505882,0.529412,0.545098,0.521569,0.529412,0.521569,0.529412,0.529412,0.505882,0.521569,0.537255,0.521569,0.513726,0.521569]}]} as {
  down_5x7_to_3x4: number[];
  up_5x7_to_9x11: number[];
  pil_6x9_to_4x5: number[];
  pil_6x9_to_8x13: number[];
  imagenet_tf: { file: string; mean: number[]; px: number[] }[];
  rec: { file: string; width: number; sum: number; abssum: number; px: number[] }[];
};

// ---- tiny PNG writer, so tests know every pixel ----
const CRC = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(b: Buffer): number {
  let c = 0xffffffff;
  for (const x of b) c = CRC[(c ^ x) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
/** An 8-bit RGB PNG of `h` x `w` pixels, `px` row-major RGB. */
function png(h: number, w: number, px: Uint8Array): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const raw = Buffer.alloc(h * (1 + 3 * w));
  for (let y = 0; y < h; y++) Buffer.from(px.subarray(y * w * 3, (y + 1) * w * 3)).copy(raw, y * (1 + 3 * w) + 1);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
/** The synthetic pattern of the offline references: (37x + 101y + 71c + 9((xy) mod 13)) mod 256. */
function synth(h: number, w: number): Uint8Array {
  const a = new Uint8Array(h * w * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) a[(y * w + x) * 3 + c] = (x * 37 + y * 101 + c * 71 + ((x * y) % 13) * 9) % 256;
  return a;
}

const made: string[] = [];
test.after.always(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));
function tmpDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'mpq-data-test-'));
  made.push(d);
  return d;
}
function writePng(dir: string, name: string, h: number, w: number, px = synth(h, w)): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, png(h, w, px));
  return f;
}
const RAW = { channelOrder: 'rgb', layout: 'nhwc' } as const;

async function badInput(t: import('ava').ExecutionContext, p: Promise<unknown> | (() => unknown), re: RegExp) {
  const e = typeof p === 'function' ? t.throws(p as () => unknown, { instanceOf: MpqError }) : await t.throwsAsync(p, { instanceOf: MpqError });
  t.is(e?.code, 'MPQ_BAD_INPUT');
  t.regex(e?.message ?? '', re);
}

test('synthetic PNG decodes to its pixels; normalisation, channel order and layout are exact', async (t) => {
  const dir = tmpDir();
  const px = synth(2, 3);
  const f = writePng(dir, 'a.png', 2, 3, px);
  const raw = await loadImages([f], RAW);
  t.deepEqual(raw.shape, [1, 2, 3, 3]);
  t.deepEqual(Array.from(raw.data), Array.from(px));
  const mean = [0.485, 0.456, 0.406], std = [0.229, 0.224, 0.225];
  const b = await loadImages([f, f], { channelOrder: 'bgr', layout: 'nchw', scale: 1 / 255, offset: 0.25, mean, std });
  t.deepEqual(b.shape, [2, 3, 2, 3]);
  for (let n = 0; n < 2; n++)
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 2; y++)
        for (let x = 0; x < 3; x++) {
          const p = px[(y * 3 + x) * 3 + (2 - c)];
          t.is(b.data[((n * 3 + c) * 2 + y) * 3 + x], Math.fround((p * (1 / 255) + 0.25 - mean[c]) / std[c]));
        }
  t.deepEqual(b.srcSizes, [[2, 3], [2, 3]]);
});

test('bilinear resize is bit-exact with cv2.resize (INTER_LINEAR), shrinking and enlarging', async (t) => {
  // references: cv2.resize(synth(5, 7), (4, 3)) and cv2.resize(synth(5, 7), (11, 9))
  const dir = tmpDir();
  const f = writePng(dir, 's.png', 5, 7);
  const down = await loadImages([f], { ...RAW, resize: [3, 4] });
  t.deepEqual(down.shape, [1, 3, 4, 3]);
  t.deepEqual(Array.from(down.data), REF.down_5x7_to_3x4);
  const up = await loadImages([f], { ...RAW, resize: [9, 11], resizeMode: 'bilinear' });
  t.deepEqual(Array.from(up.data), REF.up_5x7_to_9x11);
});

test('antialias resize is within one level of Pillow BILINEAR', async (t) => {
  // references: Image.fromarray(synth(6, 9)).resize((5, 4)) and .resize((13, 8)), BILINEAR
  const dir = tmpDir();
  const f = writePng(dir, 's.png', 6, 9);
  for (const [hw, ref] of [[[4, 5], REF.pil_6x9_to_4x5], [[8, 13], REF.pil_6x9_to_8x13]] as const) {
    const r = await loadImages([f], { ...RAW, resize: [hw[0], hw[1]], resizeMode: 'antialias' });
    let md = 0;
    r.data.forEach((v, i) => (md = Math.max(md, Math.abs(v - ref[i]))));
    t.true(md <= 1, `max diff ${md}`);
  }
});

test('nearest resize, shorter-side resize, centre crop and keepIfCropSize', async (t) => {
  const dir = tmpDir();
  const px = synth(2, 2);
  const f = writePng(dir, 'n.png', 2, 2, px);
  const n = await loadImages([f], { ...RAW, resize: [4, 4], resizeMode: 'nearest' });
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) for (let c = 0; c < 3; c++) t.is(n.data[(y * 4 + x) * 3 + c], px[((y >> 1) * 2 + (x >> 1)) * 3 + c]);
  // 6x9 -> crop 4x5: torchvision offsets top round(1) = 1, left round(2) = 2
  const g = writePng(dir, 'g.png', 6, 9);
  const full = synth(6, 9);
  const c = await loadImages([g], { ...RAW, crop: [4, 5] });
  t.deepEqual(c.shape, [1, 4, 5, 3]);
  for (let y = 0; y < 4; y++) for (let x = 0; x < 5; x++) t.is(c.data[(y * 5 + x) * 3], full[((y + 1) * 9 + x + 2) * 3]);
  // shorter side 4: 6x9 -> 4x6 (int(4 * 9 / 6) = 6)
  const s = await loadImages([g], { ...RAW, resize: 4 });
  t.deepEqual(s.shape, [1, 4, 6, 3]);
  // an image already of the crop size is left alone with keepIfCropSize
  const k = await loadImages([g], { ...RAW, resize: 8, crop: [6, 9], keepIfCropSize: true });
  t.deepEqual(Array.from(k.data), Array.from(full));
  const notKept = await loadImages([g], { ...RAW, resize: 8, crop: [6, 9] });
  t.notDeepEqual(Array.from(notKept.data), Array.from(full));
});

test('both ImageNet presets leave an image that already has the target size 224x224 as it is', async (t) => {
  const dir = tmpDir();
  const px = synth(224, 224);
  const f = writePng(dir, 'a.png', 224, 224, px);
  for (const name of ['imagenet-tf', 'imagenet-torch']) {
    const opts = presetOptions(name, { layout: 'nhwc', mean: 0, std: 1, scale: 1, offset: 0 });
    const r = await loadImages([f], opts);
    t.deepEqual(r.shape, [1, 224, 224, 3], name);
    let diff = 0;
    for (let i = 0; i < px.length; i++) diff = Math.max(diff, Math.abs(r.data[i] - px[i]));
    t.is(diff, 0, `${name}: a 224x224 image was resized or cropped`);
    // a larger image still gets the shorter-side resize and centre crop
    const g = writePng(dir, 'b.png', 240, 300);
    t.deepEqual((await loadImages([g], opts)).shape, [1, 224, 224, 3], name);
  }
});

test('imagenet-tf preset on ImageNet samples matches Pillow decoding (JPEG decoders differ by a few levels)', async (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const dir = sharedFile('data/imagenet-samples/images');
  const r = await loadImages(REF.imagenet_tf.map((e) => path.join(dir, e.file)), presetOptions('imagenet-tf'));
  t.deepEqual(r.shape, [4, 3, 224, 224]);
  const plane = 224 * 224;
  REF.imagenet_tf.forEach((e, n) => {
    let sumAbs = 0, maxAbs = 0, k = 0;
    for (let y = 0; y < 224; y += 56)
      for (let x = 0; x < 224; x += 56)
        for (let c = 0; c < 3; c++) {
          const d = Math.abs(r.data[(n * 3 + c) * plane + y * 224 + x] - e.px[k++]);
          sumAbs += d;
          maxAbs = Math.max(maxAbs, d);
        }
    t.true(maxAbs <= 8 / 127.5, `${e.file}: max diff ${maxAbs * 127.5} levels`);
    t.true(sumAbs / k <= 1.5 / 127.5, `${e.file}: mean diff ${(sumAbs / k) * 127.5} levels`);
    for (let c = 0; c < 3; c++) {
      let s = 0;
      for (let i = 0; i < plane; i++) s += r.data[(n * 3 + c) * plane + i];
      t.true(Math.abs(s / plane - e.mean[c]) < 0.5 / 127.5, `${e.file} channel ${c}: mean ${s / plane} vs Pillow ${e.mean[c]}`);
    }
  });
});

test('paddleocr-rec preset matches PaddleOCR preprocessing with OpenCV on text lines', async (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  // reference: cv2.imread, w' = min(320, ceil(48 * w / h)), cv2.resize to (w', 48), /255, -0.5, /0.5, zero pad to 320
  const dir = sharedFile('data/textlines/images');
  const r = await loadImages(REF.rec.map((e) => path.join(dir, e.file)), presetOptions('paddleocr-rec'));
  t.deepEqual(r.shape, [REF.rec.length, 3, 48, 320]);
  REF.rec.forEach((e, n) => {
    t.deepEqual(r.sizes[n], [48, e.width]);
    const img = r.data.subarray(n * 3 * 48 * 320, (n + 1) * 3 * 48 * 320);
    let s = 0, sa = 0;
    for (const v of img) {
      s += v;
      sa += Math.abs(v);
    }
    // the reference sums are rounded to 6 significant digits
    t.true(Math.abs(s - e.sum) <= 1e-5 * Math.abs(e.sum) + 1e-3 && Math.abs(sa - e.abssum) <= 1e-5 * e.abssum, `${e.file}: sums ${s}, ${sa} vs ${e.sum}, ${e.abssum}`);
    let k = 0;
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 48; y += 16)
        for (let x = 0; x < e.width; x += 23) t.true(Math.abs(img[(c * 48 + y) * 320 + x] - e.px[k++]) < 1e-5);
    t.is(k, e.px.length);
    // padding is 0
    t.true(img.subarray(320 - 1, 320).every((v) => e.width === 320 || v === 0));
  });
});

test('paddleocr-cls and paddleocr-rec shapes: ratio kept, padded right with 0, width capped', async (t) => {
  const dir = tmpDir();
  const wide = writePng(dir, 'wide.png', 10, 100); // 48 * 10 = 480 -> capped
  const small = writePng(dir, 'small.png', 24, 30); // ceil(48 * 30 / 24) = 60
  const cls = await loadImages([wide, small], presetOptions('paddleocr-cls'));
  t.deepEqual(cls.shape, [2, 3, 48, 192]);
  t.deepEqual(cls.sizes, [[48, 192], [48, 60]]);
  const plane = 48 * 192;
  for (let c = 0; c < 3; c++) for (let y = 0; y < 48; y++) for (let x = 60; x < 192; x++) t.is(cls.data[(3 + c) * plane + y * 192 + x], 0);
  const rec = await loadImages([wide, small], presetOptions('paddleocr-rec'));
  t.deepEqual(rec.shape, [2, 3, 48, 320]);
  t.deepEqual(rec.sizes, [[48, 320], [48, 60]]);
  // values in [-1, 1]
  t.true(rec.data.every((v) => v >= -1 && v <= 1));
  t.deepEqual(PRESET_NAMES.slice().sort(), ['imagenet-tf', 'imagenet-torch', 'paddleocr-cls', 'paddleocr-rec']);
});

test('image folder source with imagenet-tf: sorted files, even/odd selection, labels, batches', async (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const images = sharedFile('data/imagenet-samples/images');
  const labels = readLabels(sharedFile('data/imagenet-samples/labels.tsv'));
  if (labels.kind !== 'class') return t.fail('labels.tsv should be class labels');
  t.is(labels.byFile.size, 1000);
  t.is(labels.byFile.get('0001_n01443537.jpg'), 1);
  t.is(labels.classNames.get(1), 'goldfish');
  for (const [select, parity] of [['even', 0], ['odd', 1]] as const) {
    const src = await openDataSource(images, { preset: 'imagenet-tf', select, limit: 7 });
    t.is(src.count, 7);
    t.deepEqual(src.inputNames, ['input']);
    t.deepEqual(src.sampleShapes.input, [3, 224, 224]);
    t.true(src.names.every((n) => labels.byFile.get(n)! % 2 === parity));
    const sizes: number[] = [];
    const seen: string[] = [];
    for await (const b of src.batchesWithInfo(3)) {
      t.deepEqual(b.inputs.input.shape, [b.indices.length, 3, 224, 224]);
      sizes.push(b.indices.length);
      seen.push(...b.names);
    }
    t.deepEqual(sizes, [3, 3, 1]);
    t.deepEqual(seen, src.names);
  }
  const all = await openDataSource(images, { preset: 'imagenet-tf' });
  t.is(all.count, 1000);
  t.is(all.fingerprint(), (await openDataSource(images, { preset: 'imagenet-tf' })).fingerprint());
  t.not(all.fingerprint(), (await openDataSource(images, { preset: 'imagenet-torch' })).fingerprint());
});

test('text-line labels and the paddleocr-rec source over a range', async (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const labels = readLabels(sharedFile('data/textlines/labels.tsv'));
  if (labels.kind !== 'text') return t.fail('labels.tsv should be text labels');
  t.is(labels.byFile.get('0000.png'), 'Sections may be');
  const src = await openDataSource(sharedFile('data/textlines/images'), { preset: 'paddleocr-rec', range: [200, 600], limit: 5 });
  t.deepEqual(src.names, ['0200.png', '0201.png', '0202.png', '0203.png', '0204.png']);
  for await (const b of src.batches(5)) t.deepEqual(b.input.shape, [5, 3, 48, 320]);
});

test.serial('npy with a leading sample axis streams only the rows it needs; even/odd, range, offset, limit', async (t) => {
  const dir = tmpDir();
  const n = 2000, len = 2 * 3;
  const data = new Float32Array(n * len).map((_, i) => Math.floor(i / len) * 100 + (i % len));
  const file = path.join(dir, 'x.npy');
  fs.writeFileSync(file, encodeNpy([n, 2, 3], data));
  const size = fs.statSync(file).size;
  // count the bytes read from disk (patching the module object that every import reads through)
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const rawFs = require('fs') as { readSync: typeof fs.readSync };
  let bytes = 0;
  const orig = rawFs.readSync;
  rawFs.readSync = ((...a: Parameters<typeof fs.readSync>) => {
    const r = orig(...a);
    bytes += r;
    return r;
  }) as typeof fs.readSync;
  try {
    const odd = await openDataSource(file, { select: 'odd', range: [10, 20], inputName: 'x' });
    t.deepEqual(odd.indices, [11, 13, 15, 17, 19]);
    t.deepEqual(odd.sampleShapes.x, [2, 3]);
    const got: number[] = [];
    for await (const b of odd.batches(2)) {
      t.deepEqual(b.x.shape.slice(1), [2, 3]);
      for (let i = 0; i < b.x.shape[0]; i++) got.push(b.x.data[i * len], b.x.data[i * len + 5]);
    }
    t.deepEqual(got, [1100, 1105, 1300, 1305, 1500, 1505, 1700, 1705, 1900, 1905]);
    t.true(bytes < size / 20, `read ${bytes} of ${size} bytes`);
  } finally {
    rawFs.readSync = orig;
  }
  const even = await openDataSource(file, { select: 'even', offset: 2, limit: 3 });
  t.deepEqual(even.indices, [4, 6, 8]);
  const one = [];
  for await (const b of even.batches(8)) one.push(b.input);
  t.is(one.length, 1);
  t.deepEqual(Array.from(one[0].data.subarray(0, 1)), [400]);
  t.deepEqual(selectIndices(5, {}), [0, 1, 2, 3, 4]);
  t.deepEqual(selectIndices(5, { select: 'odd', limit: 1 }), [1]);
});

test('npy folders: one sample per file, or batched files; float64 is read as float32', async (t) => {
  const single = tmpDir();
  for (let i = 0; i < 3; i++) fs.writeFileSync(path.join(single, `s${i}.npy`), encodeNpy([2, 2], new Float32Array(4).fill(i)));
  const s = await openDataSource(single);
  t.is(s.count, 3);
  t.deepEqual(s.sampleShapes.input, [2, 2]);
  for await (const b of s.batches(3)) t.deepEqual(Array.from(b.input.data), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);

  const batched = tmpDir();
  fs.writeFileSync(path.join(batched, 'a.npy'), encodeNpy([2, 3], Float32Array.from([0, 0, 0, 1, 1, 1])));
  fs.writeFileSync(path.join(batched, 'b.npy'), encodeNpy([3, 3], Float32Array.from([2, 2, 2, 3, 3, 3, 4, 4, 4])));
  const b = await openDataSource(batched, { select: 'odd' });
  t.is(b.count, 2);
  t.deepEqual(b.names, ['a.npy[1]', 'b.npy[1]']);
  for await (const x of b.batches()) t.deepEqual(Array.from(x.input.data), [1, 1, 1, 3, 3, 3]);

  // sampleRank decides when shapes alone cannot: [1, 3] files are batched of one by default
  const ones = tmpDir();
  fs.writeFileSync(path.join(ones, 'a.npy'), encodeNpy([1, 3], new Float32Array(3)));
  fs.writeFileSync(path.join(ones, 'b.npy'), encodeNpy([1, 3], new Float32Array(3)));
  t.deepEqual((await openDataSource(ones)).sampleShapes.input, [3]);
  t.deepEqual((await openDataSource(ones, { sampleRank: 2 })).sampleShapes.input, [1, 3]);

  // float64
  const f64 = tmpDir();
  const header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 2), }";
  const hdr = header + ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
  const h = Buffer.concat([Buffer.from('\x93NUMPY\x01\x00', 'latin1'), Buffer.alloc(2)]);
  h.writeUInt16LE(hdr.length, 8);
  fs.writeFileSync(path.join(f64, 'd.npy'), Buffer.concat([h, Buffer.from(hdr, 'latin1'), Buffer.from(new Float64Array([0.5, -1, 2, 3]).buffer)]));
  const d = await openDataSource(path.join(f64, 'd.npy'));
  for await (const x of d.batches(1)) t.deepEqual(x.input.shape, [1, 2]);
  const all = [];
  for await (const x of d.batches(2)) all.push(...x.input.data);
  t.deepEqual(all, [0.5, -1, 2, 3]);
});

test('several inputs: NAME=PATH record, counts must agree', async (t) => {
  const dir = tmpDir();
  const a = path.join(dir, 'a.npy'), b = path.join(dir, 'b.npy'), c = path.join(dir, 'c.npy');
  fs.writeFileSync(a, encodeNpy([4, 2], Float32Array.from([0, 0, 1, 1, 2, 2, 3, 3])));
  fs.writeFileSync(b, encodeNpy([4], Float32Array.from([10, 11, 12, 13])));
  fs.writeFileSync(c, encodeNpy([5], new Float32Array(5)));
  const src = await openDataSource({ x: a, y: b }, { select: 'even' });
  t.deepEqual(src.inputNames, ['x', 'y']);
  for await (const batch of src.batches()) {
    t.deepEqual(batch.x.shape, [2, 2]);
    t.deepEqual(Array.from(batch.x.data), [0, 0, 2, 2]);
    t.deepEqual(batch.y.shape, [2]);
    t.deepEqual(Array.from(batch.y.data), [10, 12]);
  }
  await badInput(t, openDataSource({ x: a, z: c }), /different numbers of samples.*'x' has 4.*'z' has 5/);
});

test('errors: missing or empty folder, corrupt images named, mismatched shapes, missing preset', async (t) => {
  const dir = tmpDir();
  await badInput(t, openDataSource(path.join(dir, 'nope')), /does not exist/);
  const empty = path.join(dir, 'empty');
  fs.mkdirSync(empty);
  fs.writeFileSync(path.join(empty, 'notes.txt'), 'x');
  await badInput(t, openDataSource(empty), /is empty/);

  const imgs = path.join(dir, 'imgs');
  fs.mkdirSync(imgs);
  writePng(imgs, 'a.png', 4, 4);
  writePng(imgs, 'b.png', 4, 5);
  await badInput(t, openDataSource(imgs), /holds images: give a preset/);
  await badInput(t, openDataSource(imgs, { preset: 'nope' }), /unknown preset 'nope'/);
  await badInput(t, openDataSource(imgs, { preprocess: { scale: 1 } }), /differ in size: a\.png is 4x4 \(HxW\) but b\.png is 4x5/);
  await badInput(t, loadImages([path.join(imgs, 'a.png'), path.join(imgs, 'b.png')], {}), /images differ in size/);
  // with a fixed size they batch
  const ok = await openDataSource(imgs, { preprocess: { resize: [3, 3] } });
  for await (const b of ok.batches()) t.deepEqual(b.input.shape, [2, 3, 3, 3]);

  // garbage: named at open (headers are probed)
  fs.writeFileSync(path.join(imgs, 'c.jpg'), 'not an image at all');
  await badInput(t, openDataSource(imgs, { preprocess: { resize: [3, 3] } }), /c\.jpg/);
  fs.unlinkSync(path.join(imgs, 'c.jpg'));
  // a truncated PNG (header fine, data cut): named at open (no IEND chunk), and by the decoder
  const full = png(40, 40, synth(40, 40));
  fs.writeFileSync(path.join(imgs, 'd.png'), full.subarray(0, 60));
  await badInput(t, openDataSource(imgs, { preprocess: { resize: [3, 3] } }), /image '.*d\.png' is a truncated PNG/);
  await badInput(t, loadImages([path.join(imgs, 'd.png')], { resize: [3, 3] }), /cannot decode image '.*d\.png'/);
  fs.unlinkSync(path.join(imgs, 'd.png'));

  const npys = path.join(dir, 'npys');
  fs.mkdirSync(npys);
  fs.writeFileSync(path.join(npys, 'a.npy'), encodeNpy([3, 2], new Float32Array(6)));
  fs.writeFileSync(path.join(npys, 'b.npy'), encodeNpy([2, 3], new Float32Array(6)));
  await badInput(t, openDataSource(npys), /differ in shape: a\.npy is \[3, 2\] but b\.npy is \[2, 3\]/);
  fs.writeFileSync(path.join(npys, 'b.npy'), 'garbage');
  await badInput(t, openDataSource(npys), /b\.npy: not a \.npy file/);

  await badInput(t, loadImages([path.join(imgs, 'a.png')], { crop: [10, 10] }), /smaller than the crop/);
  await badInput(t, loadImages([path.join(imgs, 'a.png')], { std: [1, 0, 1] }), /std/);
  await badInput(t, () => parsePreprocess('resize=abc'), /not a number/);
  await badInput(t, () => selectIndices(5, { range: [3, 1] }), /range/);
  await badInput(t, () => readLabels(path.join(dir, 'none.tsv')), /cannot read labels/);
});

test('parsePreprocess and headerless label files', (t) => {
  t.deepEqual(parsePreprocess('resize=256,crop=224,mean=0.485/0.456/0.406,std=0.5,scale=0.00392156862745098,order=bgr,layout=nhwc,mode=nearest'), {
    resize: 256,
    crop: [224, 224],
    mean: [0.485, 0.456, 0.406],
    std: 0.5,
    scale: 0.00392156862745098,
    channelOrder: 'bgr',
    layout: 'nhwc',
    resizeMode: 'nearest',
  });
  t.deepEqual(parsePreprocess('resize=h48/640,pad=48x640'), { resize: { height: 48, maxWidth: 640 }, pad: [48, 640] });
  const dir = tmpDir();
  fs.writeFileSync(path.join(dir, 'c.tsv'), 'a.jpg\t3\nb.jpg\t5\n');
  fs.writeFileSync(path.join(dir, 't.tsv'), 'a.png\thello  world\nb.png\t42x\n');
  const c = readLabels(path.join(dir, 'c.tsv'));
  t.is(c.kind, 'class');
  t.is(c.byFile.get('b.jpg'), 5);
  const tx = readLabels(path.join(dir, 't.tsv'));
  t.is(tx.kind, 'text');
  t.is(tx.byFile.get('a.png'), 'hello  world');
});

test('decode throughput: 128 ImageNet images with imagenet-tf', async (t) => {
  if (!HAS_SHARED) return t.pass(SKIP_SHARED_MSG);
  const src = await openDataSource(sharedFile('data/imagenet-samples/images'), { preset: 'imagenet-tf', limit: 128 });
  const t0 = performance.now();
  let n = 0;
  for await (const b of src.batches(32)) n += b.input.shape[0];
  const s = (performance.now() - t0) / 1000;
  t.is(n, 128);
  t.log(`${(n / s).toFixed(0)} images/s (${(s * 1000).toFixed(0)} ms for ${n})`);
});
