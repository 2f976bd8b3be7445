/** Calibration and evaluation data: image folders, .npy files, presets, labels. */
export { openDataSource, selectIndices } from './source';
export type { DataSource, DataSourceOptions, DataSpec, BatchInfo, Tensor } from './source';
export { loadImages, probeImages, parsePreprocess, toNativeOptions, fixedImageSize } from './images';
export type { ImagePreprocess, ImageBatch, ResizeMode } from './images';
export { PRESETS, PRESET_NAMES, presetOptions } from './presets';
export type { PresetName } from './presets';
export { readLabels } from './labels';
export type { Labels } from './labels';
export { readNpyHeader, readNpyRows } from './npy-stream';
export type { NpyHeader } from './npy-stream';
