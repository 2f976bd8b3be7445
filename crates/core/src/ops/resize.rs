//! Resize (see CONTRACT.md), following ONNX Runtime's CPU kernel: nearest (four rounding
//! modes), linear and cubic, with the coordinate transformation modes of opset 11-19.
//!
//! Interpolation is separable, so it runs as one 1-D pass per axis whose size or mapping
//! changes. A pass is a table, made at build time, giving for each output position the input
//! positions it reads and their weights (1 tap for nearest, 2 for linear, 4 for cubic).
use super::elementwise::checked;
use super::{reg, BuildCtx, Op, Registry};
use crate::error::Result;
use crate::kernels::bcast::{PAR_CHUNK, PAR_MIN};
use crate::tensor::{numel, Tensor};
use rayon::prelude::*;

pub fn register(r: &mut Registry) {
    reg(r, "Resize", build);
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest(Nearest),
    Linear,
    Cubic { a: f32, exclude_outside: bool },
}

/// Input coordinate of output position `x` along an axis of `n` -> `m` with `scale`
/// (ONNX Runtime's `GetOriginalCoordinate`, in `f32` like it).
fn original(c: Coord, x: usize, scale: f32, n: usize, m: usize) -> f32 {
    let xf = x as f32;
    match c {
        Coord::HalfPixel => (xf + 0.5) / scale - 0.5,
        Coord::HalfPixelSymmetric => {
            let adjustment = m as f32 / (scale * n as f32);
            let center = n as f32 / 2.0;
            let offset = center * (1.0 - adjustment);
            offset + (xf + 0.5) / scale - 0.5
        }
        Coord::PytorchHalfPixel => {
            if m > 1 {
                (xf + 0.5) / scale - 0.5
            } else {
                0.0
            }
        }
        Coord::AlignCorners => {
            if m == 1 {
                0.0
            } else {
                xf * (n as f32 - 1.0) / (m as f32 - 1.0)
            }
        }
        Coord::Asymmetric => xf / scale,
        Coord::TfHalfPixelForNn => (xf + 0.5) / scale,
    }
}

fn nearest_index(mode: Nearest, x: f32) -> i64 {
    match mode {
        Nearest::RoundPreferFloor => {
            if x == (x as i64) as f32 + 0.5 {
                x as i64
            } else {
                x.round() as i64
            }
        }
        Nearest::RoundPreferCeil => x.round() as i64,
        Nearest::Floor => x.floor() as i64,
        Nearest::Ceil => x.ceil() as i64,
    }
}

fn cubic_coeffs(s: f32, a: f32) -> [f32; 4] {
    let s1 = s + 1.0;
    let s2 = 1.0 - s;
    let s3 = 2.0 - s;
    [
        ((a * s1 - 5.0 * a) * s1 + 8.0 * a) * s1 - 4.0 * a,
        ((a + 2.0) * s - (a + 3.0)) * s * s + 1.0,
        ((a + 2.0) * s2 - (a + 3.0)) * s2 * s2 + 1.0,
        ((a * s3 - 5.0 * a) * s3 + 8.0 * a) * s3 - 4.0 * a,
    ]
}

/// One 1-D pass: `[outer, n, inner] -> [outer, m, inner]`.
#[derive(Debug)]
struct Pass {
    n: usize,
    m: usize,
    outer: usize,
    inner: usize,
    /// Taps per output position.
    k: usize,
    idx: Vec<usize>,
    w: Vec<f32>,
}

/// The taps of one axis (indices always within `0..n`).
fn taps(mode: Mode, c: Coord, scale: f32, n: usize, m: usize) -> (usize, Vec<usize>, Vec<f32>) {
    let last = n as i64 - 1;
    let clampi = |i: i64| i.clamp(0, last) as usize;
    let mut idx = Vec::new();
    let mut w = Vec::new();
    let k = match mode {
        Mode::Nearest(_) => 1,
        Mode::Linear => 2,
        Mode::Cubic { .. } => 4,
    };
    for j in 0..m {
        let x = original(c, j, scale, n, m);
        match mode {
            Mode::Nearest(nm) => {
                idx.push(clampi(nearest_index(nm, x)));
                w.push(1.0);
            }
            Mode::Linear => {
                let x = x.min(last as f32).max(0.0);
                let i1 = (x as i64).min(last);
                let i2 = (i1 + 1).min(last);
                let (mut d1, mut d2) = ((x - i1 as f32).abs(), (x - i2 as f32).abs());
                if i1 == i2 {
                    d1 = 0.5;
                    d2 = 0.5;
                }
                idx.extend_from_slice(&[i1 as usize, i2 as usize]);
                w.extend_from_slice(&[d2, d1]);
            }
            Mode::Cubic { a, exclude_outside } => {
                let f = x.floor();
                let base = f as i64 - 1;
                let mut cs = cubic_coeffs(x - f, a);
                if exclude_outside {
                    let mut sum = 0.0;
                    for (t, c) in cs.iter_mut().enumerate() {
                        let i = base + t as i64;
                        if i < 0 || i > last {
                            *c = 0.0;
                        }
                        sum += *c;
                    }
                    if sum != 0.0 {
                        cs.iter_mut().for_each(|c| *c /= sum);
                    }
                }
                for (t, c) in cs.iter().enumerate() {
                    idx.push(clampi(base + t as i64));
                    w.push(*c);
                }
            }
        }
    }
    (k, idx, w)
}

impl Pass {
    /// Whether the pass maps every position to itself with weight 1.
    fn is_identity(&self) -> bool {
        self.n == self.m
            && (0..self.m).all(|j| {
                let t = &self.idx[j * self.k..(j + 1) * self.k];
                let w = &self.w[j * self.k..(j + 1) * self.k];
                let on: f32 = t.iter().zip(w).filter(|(&i, _)| i == j).map(|(_, &w)| w).sum();
                on == 1.0 && t.iter().zip(w).all(|(&i, &w)| i == j || w == 0.0)
            })
    }

    fn run(&self, x: &[f32]) -> Vec<f32> {
        let (n, m, k, inner) = (self.n, self.m, self.k, self.inner);
        let mut y = vec![0.0; self.outer * m * inner];
        if y.is_empty() {
            return y;
        }
        let rows = |r0: usize, ch: &mut [f32]| {
            for (q, row) in ch.chunks_mut(inner).enumerate() {
                let r = r0 + q;
                let (o, j) = (r / m, r % m);
                let base = o * n * inner;
                if k == 1 {
                    let s = base + self.idx[j] * inner;
                    row.copy_from_slice(&x[s..s + inner]);
                } else {
                    for t in 0..k {
                        let wv = self.w[j * k + t];
                        let s = base + self.idx[j * k + t] * inner;
                        for (y, &v) in row.iter_mut().zip(&x[s..s + inner]) {
                            *y += wv * v;
                        }
                    }
                }
            }
        };
        if y.len() < PAR_MIN {
            rows(0, &mut y);
        } else {
            let per = PAR_CHUNK.div_ceil(inner).max(1);
            y.par_chunks_mut(per * inner).enumerate().for_each(|(i, ch)| rows(i * per, ch));
        }
        y
    }
}

struct Resize {
    name: String,
    in_numel: usize,
    passes: Vec<Pass>,
    out_shape: Vec<usize>,
}

impl Op for Resize {
    fn run(&self, inputs: &[Option<&Tensor>]) -> Result<Vec<Tensor>> {
        let x = checked("Resize", &self.name, inputs, 0, self.in_numel)?;
        let mut cur: Option<Vec<f32>> = None;
        for p in &self.passes {
            let next = p.run(cur.as_deref().unwrap_or(&x.data));
            cur = Some(next);
        }
        let data = cur.unwrap_or_else(|| x.data.clone());
        Ok(vec![Tensor::new(self.out_shape.clone(), data)])
    }
}

fn build(ctx: &BuildCtx) -> Result<Box<dyn Op>> {
    let x = ctx.in_shape(0)?;
    let out = ctx.out_shapes.first().copied().ok_or_else(|| ctx.err("expects 1 output"))?;
    let r = x.len();
    if out.len() != r {
        return Err(ctx.err(format!("output rank of {out:?} differs from input {x:?}")));
    }
    let a = &ctx.attrs;
    let coord = match a.str("coordinate_transformation_mode", "half_pixel")?.as_str() {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
        other => return Err(ctx.err(format!("coordinate_transformation_mode \"{other}\" is not supported"))),
    };
    let mode = match a.str("mode", "nearest")?.as_str() {
        "nearest" => Mode::Nearest(match a.str("nearest_mode", "round_prefer_floor")?.as_str() {
            "round_prefer_floor" => Nearest::RoundPreferFloor,
            "round_prefer_ceil" => Nearest::RoundPreferCeil,
            "floor" => Nearest::Floor,
            "ceil" => Nearest::Ceil,
            other => return Err(ctx.err(format!("nearest_mode \"{other}\" is not supported"))),
        }),
        "linear" => Mode::Linear,
        "cubic" => Mode::Cubic { a: a.float("cubic_coeff_a", -0.75)?, exclude_outside: a.int("exclude_outside", 0)? != 0 },
        other => return Err(ctx.err(format!("mode \"{other}\" is not supported (nearest, linear, cubic)"))),
    };
    if a.int("antialias", 0)? != 0 {
        return Err(ctx.err("antialias is not supported"));
    }
    let scales = match a.floats_opt("scales")? {
        Some(s) => s,
        None => x.iter().zip(out).map(|(&i, &o)| if i == 0 { 1.0 } else { o as f32 / i as f32 }).collect(),
    };
    if scales.len() != r || scales.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
        return Err(ctx.err(format!("scales {scales:?} must be one positive number per axis of {x:?}")));
    }
    let mut passes = Vec::new();
    let mut shape = x.to_vec();
    for d in (0..r).rev() {
        let (n, m) = (x[d], out[d]);
        if n == 0 || m == 0 {
            if n != m {
                return Err(ctx.err(format!("axis {d}: cannot resize {n} to {m}")));
            }
            continue;
        }
        let (k, idx, w) = taps(mode, coord, scales[d], n, m);
        let p = Pass { n, m, outer: shape[..d].iter().product(), inner: shape[d + 1..].iter().product(), k, idx, w };
        if !p.is_identity() {
            passes.push(p);
        }
        shape[d] = m;
    }
    Ok(Box::new(Resize { name: ctx.node.name.clone(), in_numel: numel(x), passes, out_shape: out.to_vec() }))
}

#[cfg(test)]
mod tests {
    use super::super::elementwise::testutil::*;
    use super::*;

    fn resize(x: Vec<f32>, xs: &[usize], out: &[usize], attrs: &str) -> Vec<f32> {
        run("Resize", attrs, vec![inp(xs, x)], &[out]).unwrap().remove(0).data
    }

    fn iota1(n: usize) -> Vec<f32> {
        (1..=n).map(|i| i as f32).collect()
    }

    // Expected values below are those of the ONNX backend tests of the same names.
    #[test]
    fn onnx_nearest_cases() {
        let r = resize(vec![1., 2., 3., 4.], &[1, 1, 2, 2], &[1, 1, 4, 6], r#"{"mode": "nearest", "scales": [1, 1, 2, 3]}"#);
        assert_eq!(r, vec![1., 1., 1., 2., 2., 2., 1., 1., 1., 2., 2., 2., 3., 3., 3., 4., 4., 4., 3., 3., 3., 4., 4., 4.]);
        // resize_downsample_scales_nearest
        let r = resize(iota1(8), &[1, 1, 2, 4], &[1, 1, 1, 2], r#"{"mode": "nearest", "scales": [1, 1, 0.6, 0.6]}"#);
        assert_eq!(r, vec![1., 3.]);
        // 1-D index maps of resize_upsample_sizes_nearest_{ceil_half_pixel, floor_align_corners,
        // round_prefer_ceil_asymmetric}: 4 -> 8
        let map = |nm: Nearest, c: Coord| -> Vec<usize> { taps(Mode::Nearest(nm), c, 2.0, 4, 8).1 };
        assert_eq!(map(Nearest::Ceil, Coord::HalfPixel), vec![0, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(map(Nearest::Floor, Coord::AlignCorners), vec![0, 0, 0, 1, 1, 2, 2, 3]);
        assert_eq!(map(Nearest::RoundPreferCeil, Coord::Asymmetric), vec![0, 1, 1, 2, 2, 3, 3, 3]);
        assert_eq!(map(Nearest::RoundPreferFloor, Coord::Asymmetric), vec![0, 0, 1, 1, 2, 2, 3, 3]);
        assert_eq!(map(Nearest::RoundPreferFloor, Coord::TfHalfPixelForNn), vec![0, 1, 1, 2, 2, 3, 3, 3]);
        let r = resize(iota1(16), &[1, 1, 4, 4], &[1, 1, 8, 8], r#"{"mode": "nearest", "nearest_mode": "floor", "coordinate_transformation_mode": "align_corners"}"#);
        assert_eq!(&r[..8], &[1., 1., 1., 2., 2., 3., 3., 4.]);
        assert_eq!(&r[56..], &[13., 13., 13., 14., 14., 15., 15., 16.]);
    }

    #[test]
    fn onnx_linear_cases() {
        let a = r#"{"mode": "linear", "scales": [1, 1, 2, 2]}"#;
        let r = resize(vec![1., 2., 3., 4.], &[1, 1, 2, 2], &[1, 1, 4, 4], a);
        let want = [1., 1.25, 1.75, 2., 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3., 3.25, 3.75, 4.];
        assert_close(&r, &want, 1e-6, "linear half_pixel");
        let a = r#"{"mode": "linear", "scales": [1, 1, 2, 2], "coordinate_transformation_mode": "align_corners"}"#;
        let r = resize(vec![1., 2., 3., 4.], &[1, 1, 2, 2], &[1, 1, 4, 4], a);
        let t = 1.0 / 3.0;
        let want = [1., 1. + t, 1. + 2. * t, 2., 1. + 2. * t, 2., 2. + t, 2. + 2. * t, 2. + t, 2. + 2. * t, 3., 3. + t, 3., 3. + t, 3. + 2. * t, 4.];
        assert_close(&r, &want, 1e-6, "linear align_corners");
        let r = resize(iota1(8), &[1, 1, 2, 4], &[1, 1, 1, 2], r#"{"mode": "linear", "scales": [1, 1, 0.6, 0.6]}"#);
        assert_close(&r, &[2.666_666_5, 4.333_333], 1e-6, "linear downsample");
    }

    #[test]
    fn onnx_cubic_cases() {
        let r = resize(iota1(16), &[1, 1, 4, 4], &[1, 1, 8, 8], r#"{"mode": "cubic", "scales": [1, 1, 2, 2]}"#);
        let want = [0.472_656_25, 0.769_531_25, 1.246_093_8, 1.875, 2.281_25, 2.910_156_3, 3.386_718_8, 3.683_593_8];
        assert_close(&r[..8], &want, 1e-5, "cubic half_pixel");
        let r = resize(iota1(16), &[1, 1, 4, 4], &[1, 1, 8, 8], r#"{"mode": "cubic", "scales": [1, 1, 2, 2], "coordinate_transformation_mode": "align_corners"}"#);
        let want = [1., 1.341_107_9, 1.800_291_5, 2.329_446, 2.670_554, 3.199_708_5, 3.658_892, 4.];
        assert_close(&r[..8], &want, 1e-5, "cubic align_corners");
        let r = resize(iota1(16), &[1, 1, 4, 4], &[1, 1, 8, 8], r#"{"mode": "cubic", "scales": [1, 1, 2, 2], "coordinate_transformation_mode": "asymmetric"}"#);
        let want = [1., 1.406_25, 2., 2.5, 3., 3.593_75, 4., 4.093_75];
        assert_close(&r[..8], &want, 1e-5, "cubic asymmetric");
    }

    /// ONNX Runtime's direct bilinear formula, for comparison with the separable passes.
    fn bilinear(x: &[f32], (n, c, h, w): (usize, usize, usize, usize), oh: usize, ow: usize, sh: f32, sw: f32, coord: Coord) -> Vec<f32> {
        let setup = |o: usize, len: usize, s: f32, olen: usize| {
            let v = original(coord, o, s, len, olen).min(len as f32 - 1.0).max(0.0);
            let i1 = (v as usize).min(len - 1);
            let i2 = (i1 + 1).min(len - 1);
            let (mut d1, mut d2) = ((v - i1 as f32).abs(), (v - i2 as f32).abs());
            if i1 == i2 {
                d1 = 0.5;
                d2 = 0.5;
            }
            (i1, i2, d1, d2)
        };
        let mut y = Vec::new();
        for b in 0..n * c {
            let p = &x[b * h * w..];
            for oy in 0..oh {
                let (y1, y2, dy1, dy2) = setup(oy, h, sh, oh);
                for ox in 0..ow {
                    let (x1, x2, dx1, dx2) = setup(ox, w, sw, ow);
                    y.push(dx2 * dy2 * p[y1 * w + x1] + dx1 * dy2 * p[y1 * w + x2] + dx2 * dy1 * p[y2 * w + x1] + dx1 * dy1 * p[y2 * w + x2]);
                }
            }
        }
        y
    }

    #[test]
    fn separable_linear_matches_direct_bilinear() {
        for (dims, oh, ow, coord, name) in [
            ((2, 3, 7, 9), 14, 18, Coord::HalfPixel, "half_pixel"),
            ((1, 2, 10, 6), 5, 3, Coord::AlignCorners, "align_corners"),
            ((1, 4, 8, 8), 13, 5, Coord::PytorchHalfPixel, "pytorch_half_pixel"),
            ((2, 64, 40, 40), 80, 80, Coord::Asymmetric, "asymmetric"),
        ] {
            let (n, c, h, w) = dims;
            let (sh, sw) = (oh as f32 / h as f32, ow as f32 / w as f32);
            let x = rand(n * c * h * w, 5, 3.0);
            let attrs = format!(r#"{{"mode": "linear", "coordinate_transformation_mode": "{name}", "scales": [1, 1, {sh}, {sw}]}}"#);
            let got = resize(x.clone(), &[n, c, h, w], &[n, c, oh, ow], &attrs);
            assert_close(&got, &bilinear(&x, dims, oh, ow, sh, sw, coord), 1e-5, name);
        }
    }

    #[test]
    fn identity_axes_are_skipped_and_bad_attrs_rejected() {
        let r = resize(iota1(6), &[1, 2, 3], &[1, 2, 3], r#"{"mode": "linear", "scales": [1, 1, 1]}"#);
        assert_eq!(r, iota1(6));
        let bad = |a: &str| run("Resize", a, vec![inp(&[1, 1, 2, 2], vec![0.; 4])], &[&[1, 1, 4, 4]]).is_err();
        assert!(bad(r#"{"mode": "area"}"#));
        assert!(bad(r#"{"coordinate_transformation_mode": "tf_crop_and_resize"}"#));
        assert!(bad(r#"{"nearest_mode": "up"}"#));
        assert!(bad(r#"{"scales": [1, 1, 2]}"#));
        assert!(bad(r#"{"scales": [1, 1, 0, 2]}"#));
    }
}
