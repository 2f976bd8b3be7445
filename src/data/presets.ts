/** Named image preprocessing presets (`--preset NAME`). */
import { MpqError } from '../errors';
import { ImagePreprocess } from './images';

export type PresetName = 'imagenet-tf' | 'imagenet-torch' | 'paddleocr-rec' | 'paddleocr-cls';

/** PaddleOCR's `resize_norm_img`: BGR, height 48, width kept in ratio up to `width`, right-padded. */
function paddleocr(width: number): ImagePreprocess & { description: string } {
  return {
    description: `BGR NCHW, height 48, width ceil(48*w/h) up to ${width} (OpenCV bilinear), (pixel/255 - 0.5)/0.5, right-padded with 0 to width ${width}`,
    resize: { height: 48, maxWidth: width },
    resizeMode: 'bilinear',
    pad: [48, width],
    padValue: 0,
    channelOrder: 'bgr',
    layout: 'nchw',
    scale: 1 / 255,
    mean: 0.5,
    std: 0.5,
  };
}

export const PRESETS: Readonly<Record<PresetName, Readonly<ImagePreprocess> & { description: string }>> = {
  /** MobileNet (TF/Keras): RGB, value = pixel/127.5 - 1; 224x224 images are used as they are. */
  'imagenet-tf': {
    description: 'RGB NCHW 224x224, pixel/127.5 - 1; other sizes: shorter side 256 (Pillow bilinear) and centre crop 224',
    resize: 256,
    resizeMode: 'antialias',
    crop: [224, 224],
    keepIfCropSize: true,
    channelOrder: 'rgb',
    layout: 'nchw',
    scale: 1 / 127.5,
    offset: -1,
  },
  /** torchvision: Resize(256) + CenterCrop(224) + ToTensor + Normalize; 224x224 images are used as they are. */
  'imagenet-torch': {
    description: 'RGB NCHW 224x224, (pixel/255 - mean)/std with the ImageNet mean and std; other sizes: shorter side 256 (Pillow bilinear) and centre crop 224',
    resize: 256,
    resizeMode: 'antialias',
    crop: [224, 224],
    keepIfCropSize: true,
    channelOrder: 'rgb',
    layout: 'nchw',
    scale: 1 / 255,
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  },
  /** PaddleOCR text-line recogniser: as `resize_norm_img` with rec_image_shape 3,48,320. */
  'paddleocr-rec': paddleocr(320),
  /** PaddleOCR direction classifier: as `resize_norm_img` with cls_image_shape 3,48,192. */
  'paddleocr-cls': paddleocr(192),
};

export const PRESET_NAMES = Object.keys(PRESETS) as PresetName[];

/**
 * The preprocessing of a preset, with `overrides` on top (for example
 * `{ pad: [48, 640], resize: { height: 48, maxWidth: 640 } }` for longer text lines).
 */
export function presetOptions(name: string, overrides: ImagePreprocess = {}): ImagePreprocess {
  const p = (PRESETS as Record<string, ImagePreprocess & { description: string }>)[name];
  if (!p) throw new MpqError('MPQ_BAD_INPUT', `unknown preset '${name}'; presets: ${PRESET_NAMES.join(', ')}`);
  const { description: _d, ...opts } = p;
  return { ...opts, ...overrides };
}
