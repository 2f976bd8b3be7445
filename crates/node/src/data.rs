//! Image decoding and preprocessing into batch tensors (calibration and evaluation data).
//!
//! Each image goes through: decode (JPEG or PNG, format sniffed from the bytes) -> 8-bit RGB ->
//! optional resize -> optional centre crop -> optional pad (right and bottom) -> normalise
//! `value = (pixel * scale + offset - mean[c]) / std[c]` (computed in f64, rounded once to f32;
//! `c` is the channel in the output order) -> layout NCHW or NHWC. Images of a batch are
//! processed in parallel with rayon, off the JS thread.
//!
//! Resampling, like the references the presets follow:
//! - `bilinear`: OpenCV `INTER_LINEAR` on 8-bit images (half-pixel centres, edge clamping,
//!   11-bit fixed-point coefficients, rounded to 8 bits), as PaddleOCR's `cv2.resize` does.
//! - `antialias`: Pillow's `BILINEAR` resampling (triangle filter widened by the downscale factor,
//!   as torchvision's `Resize` on PIL images).
//! - `nearest`: the source pixel under the output pixel's centre.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use rayon::prelude::*;

fn bad(msg: impl Into<String>) -> Error {
    Error::new(Status::InvalidArg, format!("MPQ_BAD_INPUT: {}", msg.into()))
}

use crate::catch_panics as guard;

/// Preprocessing options, already resolved by the TypeScript layer (`src/data/images.ts`).
#[napi(object)]
#[derive(Clone)]
pub struct NativeImageOptions {
    /// "none", "exact" (resize = [h, w]), "short" (resize = [s]: shorter side to s, torchvision
    /// rounding), "height" (resize = [h, maxW]: height h, width ceil(h*w0/h0) capped at maxW).
    pub resize_kind: String,
    pub resize: Vec<u32>,
    /// "bilinear" (OpenCV), "antialias" (Pillow), "nearest".
    pub resize_mode: String,
    /// Centre crop [h, w] after the resize.
    pub crop: Option<Vec<u32>>,
    /// Images that already have the crop size are neither resized nor cropped.
    pub keep_if_crop_size: Option<bool>,
    /// Pad right and bottom to [h, w] with `pad_value` (a value of the normalised tensor).
    pub pad: Option<Vec<u32>>,
    pub pad_value: Option<f64>,
    /// "rgb" or "bgr".
    pub channel_order: String,
    /// "nchw" or "nhwc".
    pub layout: String,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub scale: f64,
    pub offset: f64,
}

/// A batch tensor and, per image, its size as decoded and as placed in the tensor (before padding).
#[napi(object)]
pub struct ImageBatch {
    pub shape: Vec<u32>,
    pub data: Float32Array,
    /// [h0, w0, h0, w0, ...]: decoded sizes.
    pub src_sizes: Vec<u32>,
    /// [h, w, ...]: sizes after resize and crop (the valid region when padded).
    pub sizes: Vec<u32>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Bilinear,
    Antialias,
    Nearest,
}

#[derive(Clone)]
enum ResizeKind {
    None,
    Exact(usize, usize),
    Short(usize),
    Height(usize, usize),
}

#[derive(Clone)]
struct Opts {
    resize: ResizeKind,
    mode: Mode,
    crop: Option<(usize, usize)>,
    keep_if_crop_size: bool,
    pad: Option<(usize, usize)>,
    pad_value: f32,
    bgr: bool,
    nhwc: bool,
    /// per output channel, per pixel value: the normalised value
    lut: [[f32; 256]; 3],
}

fn pair(v: &Option<Vec<u32>>, what: &str) -> Result<Option<(usize, usize)>> {
    match v {
        None => Ok(None),
        Some(v) if v.len() == 2 && v[0] > 0 && v[1] > 0 => Ok(Some((v[0] as usize, v[1] as usize))),
        Some(v) => Err(bad(format!("{what} must be [height, width] with positive sizes, got {v:?}"))),
    }
}

fn parse_opts(o: &NativeImageOptions) -> Result<Opts> {
    let r = &o.resize;
    let pos = r.iter().all(|&d| d > 0);
    let resize = match (o.resize_kind.as_str(), r.len()) {
        ("none", _) => ResizeKind::None,
        ("exact", 2) if pos => ResizeKind::Exact(r[0] as usize, r[1] as usize),
        ("short", 1) if pos => ResizeKind::Short(r[0] as usize),
        ("height", 2) if pos => ResizeKind::Height(r[0] as usize, r[1] as usize),
        (k, _) => return Err(bad(format!("bad resize '{k}' {r:?}"))),
    };
    let mode = match o.resize_mode.as_str() {
        "bilinear" => Mode::Bilinear,
        "antialias" => Mode::Antialias,
        "nearest" => Mode::Nearest,
        m => return Err(bad(format!("resizeMode must be 'bilinear', 'antialias' or 'nearest', got '{m}'"))),
    };
    let bgr = match o.channel_order.as_str() {
        "rgb" => false,
        "bgr" => true,
        c => return Err(bad(format!("channelOrder must be 'rgb' or 'bgr', got '{c}'"))),
    };
    let nhwc = match o.layout.as_str() {
        "nchw" => false,
        "nhwc" => true,
        l => return Err(bad(format!("layout must be 'nchw' or 'nhwc', got '{l}'"))),
    };
    if o.mean.len() != 3 || o.std.len() != 3 {
        return Err(bad(format!("mean and std need 3 values each, got {:?} and {:?}", o.mean, o.std)));
    }
    if o.std.iter().any(|&s| s == 0.0 || !s.is_finite()) || !o.scale.is_finite() || !o.offset.is_finite() {
        return Err(bad(format!("std must be finite and non-zero, scale and offset finite (std {:?})", o.std)));
    }
    let mut lut = [[0f32; 256]; 3];
    for c in 0..3 {
        for p in 0..256 {
            lut[c][p] = ((p as f64 * o.scale + o.offset - o.mean[c]) / o.std[c]) as f32;
        }
    }
    Ok(Opts {
        resize,
        mode,
        crop: pair(&o.crop, "crop")?,
        keep_if_crop_size: o.keep_if_crop_size.unwrap_or(false),
        pad: pair(&o.pad, "pad")?,
        pad_value: o.pad_value.unwrap_or(0.0) as f32,
        bgr,
        nhwc,
        lut,
    })
}

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
struct Rgb {
    h: usize,
    w: usize,
    px: Vec<u8>,
}

/// OpenCV-style horizontal/vertical coefficients: source index pairs and 11-bit weights.
struct LinCoef {
    i0: Vec<usize>,
    i1: Vec<usize>,
    a0: Vec<i32>,
    a1: Vec<i32>,
}

/// Coefficients as OpenCV's `resize` (INTER_LINEAR, fixed point) computes them. Horizontally
/// (`vertical` false) the fraction is zeroed outside the image; vertically OpenCV keeps it and
/// clamps the row indices instead.
fn cv_linear_coefs(src: usize, dst: usize, vertical: bool) -> LinCoef {
    let scale = 1.0 / (dst as f64 / src as f64);
    let mut c = LinCoef { i0: vec![0; dst], i1: vec![0; dst], a0: vec![0; dst], a1: vec![0; dst] };
    for d in 0..dst {
        let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
        let mut sx = f.floor() as i64;
        let mut fx = f - sx as f32;
        if vertical {
            c.i0[d] = sx.clamp(0, src as i64 - 1) as usize;
            c.i1[d] = (sx + 1).clamp(0, src as i64 - 1) as usize;
            c.a0[d] = ((1.0f32 - fx) * 2048.0).round_ties_even() as i32;
            c.a1[d] = (fx * 2048.0).round_ties_even() as i32;
            continue;
        }
        if sx < 0 {
            fx = 0.0;
            sx = 0;
        }
        if sx >= src as i64 - 1 {
            fx = 0.0;
            sx = src as i64 - 1;
        }
        let sx = sx as usize;
        c.i0[d] = sx;
        c.i1[d] = (sx + 1).min(src - 1);
        c.a0[d] = ((1.0f32 - fx) * 2048.0).round_ties_even() as i32;
        c.a1[d] = (fx * 2048.0).round_ties_even() as i32;
    }
    c
}

fn resize_cv_bilinear(img: &Rgb, oh: usize, ow: usize) -> Rgb {
    let cx = cv_linear_coefs(img.w, ow, false);
    let cy = cv_linear_coefs(img.h, oh, true);
    // horizontal pass on every source row that the vertical pass reads (i32, exact)
    let mut need = vec![false; img.h];
    for y in 0..oh {
        need[cy.i0[y]] = true;
        need[cy.i1[y]] = true;
    }
    let rw = ow * 3;
    let mut rows = vec![0i32; img.h * rw];
    for sy in 0..img.h {
        if !need[sy] {
            continue;
        }
        let s = &img.px[sy * img.w * 3..(sy + 1) * img.w * 3];
        let d = &mut rows[sy * rw..(sy + 1) * rw];
        for x in 0..ow {
            let (i0, i1, a0, a1) = (cx.i0[x] * 3, cx.i1[x] * 3, cx.a0[x], cx.a1[x]);
            for k in 0..3 {
                d[x * 3 + k] = s[i0 + k] as i32 * a0 + s[i1 + k] as i32 * a1;
            }
        }
    }
    // vertical pass, rounded as OpenCV's SIMD path does
    let mut px = vec![0u8; oh * rw];
    for y in 0..oh {
        let (r0, r1) = (&rows[cy.i0[y] * rw..(cy.i0[y] + 1) * rw], &rows[cy.i1[y] * rw..(cy.i1[y] + 1) * rw]);
        let (b0, b1) = (cy.a0[y], cy.a1[y]);
        let o = &mut px[y * rw..(y + 1) * rw];
        for x in 0..rw {
            let v = (((b0 * (r0[x] >> 4)) >> 16) + ((b1 * (r1[x] >> 4)) >> 16) + 2) >> 2;
            o[x] = v.clamp(0, 255) as u8;
        }
    }
    Rgb { h: oh, w: ow, px }
}

/// Pillow's resampling coefficients for the bilinear (triangle) filter, 22-bit fixed point.
fn pil_coefs(src: usize, dst: usize) -> (Vec<usize>, Vec<Vec<i32>>) {
    let scale = src as f64 / dst as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale;
    let mut starts = Vec::with_capacity(dst);
    let mut ws = Vec::with_capacity(dst);
    for d in 0..dst {
        let center = (d as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(src as i64) as usize;
        let mut k: Vec<f64> = (xmin..xmax)
            .map(|x| {
                let t = ((x as f64 - center + 0.5) / filterscale).abs();
                if t < 1.0 {
                    1.0 - t
                } else {
                    0.0
                }
            })
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|v| *v /= ww);
        }
        starts.push(xmin);
        ws.push(k.iter().map(|&v| if v < 0.0 { (-0.5 + v * (1u64 << 22) as f64) as i32 } else { (0.5 + v * (1u64 << 22) as f64) as i32 }).collect());
    }
    (starts, ws)
}

fn resize_pil(img: &Rgb, oh: usize, ow: usize) -> Rgb {
    let clip = |s: i64| (s >> 22).clamp(0, 255) as u8;
    let mut cur = Rgb { h: img.h, w: img.w, px: img.px.clone() };
    if ow != cur.w {
        let (st, ws) = pil_coefs(cur.w, ow);
        let mut px = vec![0u8; cur.h * ow * 3];
        for y in 0..cur.h {
            let s = &cur.px[y * cur.w * 3..(y + 1) * cur.w * 3];
            for x in 0..ow {
                for k in 0..3 {
                    let mut acc: i64 = 1 << 21;
                    for (j, &w) in ws[x].iter().enumerate() {
                        acc += s[(st[x] + j) * 3 + k] as i64 * w as i64;
                    }
                    px[(y * ow + x) * 3 + k] = clip(acc);
                }
            }
        }
        cur = Rgb { h: cur.h, w: ow, px };
    }
    if oh != cur.h {
        let (st, ws) = pil_coefs(cur.h, oh);
        let rw = cur.w * 3;
        let mut px = vec![0u8; oh * rw];
        for y in 0..oh {
            for x in 0..rw {
                let mut acc: i64 = 1 << 21;
                for (j, &w) in ws[y].iter().enumerate() {
                    acc += cur.px[(st[y] + j) * rw + x] as i64 * w as i64;
                }
                px[y * rw + x] = clip(acc);
            }
        }
        cur = Rgb { h: oh, w: cur.w, px };
    }
    cur
}

fn resize_nearest(img: &Rgb, oh: usize, ow: usize) -> Rgb {
    let idx = |src: usize, dst: usize| -> Vec<usize> {
        let scale = src as f64 / dst as f64;
        (0..dst).map(|d| (((d as f64 + 0.5) * scale).floor() as usize).min(src - 1)).collect()
    };
    let (xs, ys) = (idx(img.w, ow), idx(img.h, oh));
    let mut px = vec![0u8; oh * ow * 3];
    for y in 0..oh {
        for x in 0..ow {
            let s = (ys[y] * img.w + xs[x]) * 3;
            px[(y * ow + x) * 3..(y * ow + x) * 3 + 3].copy_from_slice(&img.px[s..s + 3]);
        }
    }
    Rgb { h: oh, w: ow, px }
}

fn resize(img: Rgb, oh: usize, ow: usize, mode: Mode) -> Rgb {
    if oh == img.h && ow == img.w {
        return img;
    }
    match mode {
        Mode::Bilinear => resize_cv_bilinear(&img, oh, ow),
        Mode::Antialias => resize_pil(&img, oh, ow),
        Mode::Nearest => resize_nearest(&img, oh, ow),
    }
}

/// The size after the resize step, for a decoded size (h, w).
fn resized_size(r: &ResizeKind, h: usize, w: usize) -> (usize, usize) {
    match *r {
        ResizeKind::None => (h, w),
        ResizeKind::Exact(oh, ow) => (oh, ow),
        // torchvision: the longer side is int(s * long / short)
        ResizeKind::Short(s) => {
            if h <= w {
                (s, (s * w / h).max(1))
            } else {
                ((s * h / w).max(1), s)
            }
        }
        // PaddleOCR's resize_norm_img: ceil(imgH * (w / h)), capped at imgW
        ResizeKind::Height(oh, maxw) => {
            let ratio = w as f64 / h as f64;
            let rw = (oh as f64 * ratio).ceil() as usize;
            (oh, rw.clamp(1, maxw))
        }
    }
}

/// Python's round(): halves to even.
fn round_half_even(x: f64) -> usize {
    x.round_ties_even() as usize
}

/// Decodes and preprocesses one image into `[C,H,W]` or `[H,W,C]` floats; returns (data, out h, out w, src size, placed size).
fn process(file: &str, o: &Opts) -> Result<(Vec<f32>, usize, usize, (usize, usize), (usize, usize))> {
    let reader = image::ImageReader::open(file)
        .map_err(|e| bad(format!("cannot read image '{file}': {e}")))?
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read image '{file}': {e}")))?;
    let dynimg = reader.decode().map_err(|e| bad(format!("cannot decode image '{file}' (corrupt, or not a JPEG/PNG file): {e}")))?;
    let rgb = dynimg.into_rgb8();
    let (w0, h0) = (rgb.width() as usize, rgb.height() as usize);
    if w0 == 0 || h0 == 0 {
        return Err(bad(format!("image '{file}' is empty ({w0}x{h0})")));
    }
    let mut img = Rgb { h: h0, w: w0, px: rgb.into_raw() };
    let skip = o.keep_if_crop_size && o.crop == Some((h0, w0));
    if !skip {
        let (rh, rw) = resized_size(&o.resize, h0, w0);
        img = resize(img, rh, rw, o.mode);
        if let Some((ch, cw)) = o.crop {
            if ch > img.h || cw > img.w {
                return Err(bad(format!(
                    "image '{file}' is {}x{} (HxW) after resizing, smaller than the crop {ch}x{cw}",
                    img.h, img.w
                )));
            }
            let top = round_half_even((img.h - ch) as f64 / 2.0);
            let left = round_half_even((img.w - cw) as f64 / 2.0);
            if (ch, cw) != (img.h, img.w) {
                let mut px = vec![0u8; ch * cw * 3];
                for y in 0..ch {
                    let s = ((top + y) * img.w + left) * 3;
                    px[y * cw * 3..(y + 1) * cw * 3].copy_from_slice(&img.px[s..s + cw * 3]);
                }
                img = Rgb { h: ch, w: cw, px };
            }
        }
    }
    let (vh, vw) = (img.h, img.w);
    let (oh, ow) = match o.pad {
        None => (vh, vw),
        Some((ph, pw)) => {
            if vh > ph || vw > pw {
                return Err(bad(format!("image '{file}' is {vh}x{vw} (HxW) after resizing, larger than the pad size {ph}x{pw}")));
            }
            (ph, pw)
        }
    };
    let mut out = vec![o.pad_value; 3 * oh * ow];
    let src_c = |c: usize| if o.bgr { 2 - c } else { c };
    for y in 0..vh {
        for x in 0..vw {
            let p = &img.px[(y * vw + x) * 3..(y * vw + x) * 3 + 3];
            for c in 0..3 {
                let v = o.lut[c][p[src_c(c)] as usize];
                if o.nhwc {
                    out[(y * ow + x) * 3 + c] = v;
                } else {
                    out[(c * oh + y) * ow + x] = v;
                }
            }
        }
    }
    Ok((out, oh, ow, (h0, w0), (vh, vw)))
}

pub struct LoadImagesTask {
    files: Vec<String>,
    opts: Opts,
}

pub struct Batch {
    shape: Vec<u32>,
    data: Vec<f32>,
    src: Vec<u32>,
    sizes: Vec<u32>,
}

fn load_batch(files: &[String], o: &Opts) -> Result<Batch> {
    if files.is_empty() {
        return Err(bad("no image files given"));
    }
    let per: Vec<_> = files.par_iter().map(|f| process(f, o)).collect();
    let mut imgs = Vec::with_capacity(per.len());
    for r in per {
        imgs.push(r?);
    }
    let (h, w) = (imgs[0].1, imgs[0].2);
    for (i, im) in imgs.iter().enumerate() {
        if (im.1, im.2) != (h, w) {
            return Err(bad(format!(
                "images differ in size: '{}' gives {}x{} but '{}' gives {}x{} (HxW); resize, crop or pad them to one size (a preset or --preprocess options)",
                files[0], h, w, files[i], im.1, im.2
            )));
        }
    }
    let n = imgs.len();
    let mut data = Vec::with_capacity(n * 3 * h * w);
    let (mut src, mut sizes) = (Vec::with_capacity(2 * n), Vec::with_capacity(2 * n));
    for im in imgs {
        data.extend_from_slice(&im.0);
        src.extend([im.3 .0 as u32, im.3 .1 as u32]);
        sizes.extend([im.4 .0 as u32, im.4 .1 as u32]);
    }
    let shape = if o.nhwc { vec![n as u32, h as u32, w as u32, 3] } else { vec![n as u32, 3, h as u32, w as u32] };
    Ok(Batch { shape, data, src, sizes })
}

#[napi]
impl Task for LoadImagesTask {
    type Output = Batch;
    type JsValue = ImageBatch;

    fn compute(&mut self) -> Result<Self::Output> {
        let files = std::mem::take(&mut self.files);
        let opts = self.opts.clone();
        guard(move || load_batch(&files, &opts))
    }

    fn resolve(&mut self, _env: Env, b: Self::Output) -> Result<Self::JsValue> {
        Ok(ImageBatch { shape: b.shape, data: Float32Array::new(b.data), src_sizes: b.src, sizes: b.sizes })
    }
}

/// Decodes and preprocesses `files` into one batch tensor, off the JS thread, in parallel.
/// Errors are "MPQ_BAD_INPUT: ..." naming the file.
#[napi]
pub fn load_images(files: Vec<String>, opts: NativeImageOptions) -> Result<AsyncTask<LoadImagesTask>> {
    let opts = guard(|| parse_opts(&opts))?;
    Ok(AsyncTask::new(LoadImagesTask { files, opts }))
}

pub struct ProbeImagesTask {
    files: Vec<String>,
}

#[napi]
impl Task for ProbeImagesTask {
    type Output = Vec<u32>;
    type JsValue = Vec<u32>;

    fn compute(&mut self) -> Result<Self::Output> {
        let files = std::mem::take(&mut self.files);
        guard(move || {
            let r: Vec<Result<(u32, u32)>> = files
                .par_iter()
                .map(|f| {
                    image::ImageReader::open(f)
                        .and_then(|r| r.with_guessed_format())
                        .map_err(|e| bad(format!("cannot read image '{f}': {e}")))?
                        .into_dimensions()
                        .map_err(|e| bad(format!("cannot read image '{f}' (corrupt, or not a JPEG/PNG file): {e}")))
                })
                .collect();
            let mut out = Vec::with_capacity(2 * files.len());
            for x in r {
                let (w, h) = x?;
                out.extend([h, w]);
            }
            Ok(out)
        })
    }

    fn resolve(&mut self, _env: Env, v: Self::Output) -> Result<Self::JsValue> {
        Ok(v)
    }
}

/// Reads image sizes from the file headers only: [h0, w0, h1, w1, ...].
#[napi]
pub fn probe_images(files: Vec<String>) -> AsyncTask<ProbeImagesTask> {
    AsyncTask::new(ProbeImagesTask { files })
}
