//! Layer-input statistics for data-aware weight rounding: for each weighted layer, the
//! second moment `H = sum x x^T` of the vectors its weight rows are dotted with (im2col
//! patches of a Conv, channel vectors of a ConvTranspose, rows of a Gemm/MatMul input), one
//! `H` per group, and their sum (for the mean, used by bias correction).
//!
//! Accumulation runs over chunks of images in parallel (rayon): short input vectors
//! (depthwise patches) by a dot-product kernel, longer ones on the engine's GEMM with the
//! columns of several images at once when one image has few.

use crate::dispatch_fn;
use crate::error::{Error, Result};
use crate::kernels::gemm::{sgemm, MatRef};
use crate::tensor::Tensor;
use rayon::prelude::*;
use serde::Deserialize;

/// How a layer's weight rows see its input.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LayerSpec {
    /// Conv over an `[N, C, H, W]` (or `[N, C, L]`) input.
    Conv { kernel: Vec<usize>, strides: Vec<usize>, pads: Vec<usize>, dilations: Vec<usize>, group: usize },
    /// ConvTranspose: each input pixel's channel vector (per group) is multiplied by the weight.
    ConvTranspose {
        group: usize,
        /// Input pixels per output pixel (scales the bias shift).
        #[serde(default = "one")]
        bias_factor: f64,
    },
    /// Gemm / MatMul: the input's last axis (or, with `trans`, its first of two) is `K`.
    Rows {
        #[serde(default)]
        trans: bool,
        /// The weight is stored `[N, K]` (Gemm with transB); else `[K, N]`.
        #[serde(default)]
        w_trans: bool,
        /// The exported layer takes the bias correction (MatMul has no bias input: false).
        #[serde(default = "yes")]
        bias: bool,
    },
}

fn one() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

impl LayerSpec {
    /// Whether the rounding's output-mean shift is folded into a bias of the exported layer.
    pub fn bias_corrected(&self) -> bool {
        !matches!(self, LayerSpec::Rows { bias: false, .. })
    }
}

/// Accumulated statistics of one layer.
///
/// With a reference stream (sequential rounding: `x` is the layer's input in the network whose
/// upstream layers are already quantized, `x_ref` the same input in the float network), also
/// the cross moment `sum x_ref x^T` and the sum of `x_ref`, so that rounding can aim at the
/// float layer's output: minimise `E |W x_ref - Q x|^2`.
#[derive(Clone, Debug)]
pub struct LayerStats {
    pub groups: usize,
    /// Length of one input vector (columns of the weight matrix of a group).
    pub dim: usize,
    /// `groups` row-major `dim x dim` matrices.
    pub h: Vec<f64>,
    /// `groups` sums of the input vectors.
    pub sum: Vec<f64>,
    /// `groups` row-major `dim x dim` matrices `sum x_ref x^T` (reference stream only).
    pub cross: Option<Vec<f64>>,
    /// `groups` sums of the reference input vectors.
    pub sum_ref: Option<Vec<f64>>,
    /// Number of vectors accumulated (per group).
    pub count: u64,
}

impl LayerStats {
    fn new(groups: usize, dim: usize, with_ref: bool) -> Self {
        LayerStats {
            groups,
            dim,
            h: vec![0.0; groups * dim * dim],
            sum: vec![0.0; groups * dim],
            cross: with_ref.then(|| vec![0.0; groups * dim * dim]),
            sum_ref: with_ref.then(|| vec![0.0; groups * dim]),
            count: 0,
        }
    }
    /// Mean input vector of group `g`.
    pub fn mean(&self, g: usize) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        self.sum[g * self.dim..(g + 1) * self.dim].iter().map(|s| s / n).collect()
    }
    /// `H / count` of group `g`.
    pub fn hessian(&self, g: usize) -> Vec<f64> {
        let n = self.count.max(1) as f64;
        let d2 = self.dim * self.dim;
        self.h[g * d2..(g + 1) * d2].iter().map(|s| s / n).collect()
    }
    /// `E[x_ref x^T]` of group `g` (reference stream only).
    pub fn cross(&self, g: usize) -> Option<Vec<f64>> {
        let n = self.count.max(1) as f64;
        let d2 = self.dim * self.dim;
        self.cross.as_ref().map(|c| c[g * d2..(g + 1) * d2].iter().map(|s| s / n).collect())
    }
    /// Mean reference input vector of group `g` (reference stream only).
    pub fn mean_ref(&self, g: usize) -> Option<Vec<f64>> {
        let n = self.count.max(1) as f64;
        self.sum_ref.as_ref().map(|s| s[g * self.dim..(g + 1) * self.dim].iter().map(|v| v / n).collect())
    }
}

/// Per-layer accumulator.
#[derive(Clone, Debug)]
pub struct LayerAcc {
    pub spec: LayerSpec,
    pub stats: Option<LayerStats>,
}

/// How one image's input becomes `groups` matrices `[d, l]` whose columns are input vectors.
#[derive(Clone, Copy)]
enum Geom {
    /// `[n, c, l]` (pointwise conv, ConvTranspose): the group's channel rows, as they are.
    ChannelMajor { c: usize },
    /// im2col of a 2-D conv (1-D as height 1).
    Patches { c: usize, ih: usize, iw: usize, kh: usize, kw: usize, sh: usize, sw: usize, dh: usize, dw: usize, pt: usize, pl: usize, oh: usize, ow: usize },
}

struct Plan {
    n: usize,
    groups: usize,
    d: usize,
    l: usize,
    geom: Geom,
}

impl Plan {
    /// Matrix `[d, l]` of image `i`, group `g` (a slice of `x`, or filled into `buf`).
    fn mat<'a>(&self, x: &'a [f32], i: usize, g: usize, buf: &'a mut [f32]) -> &'a [f32] {
        let (d, l) = (self.d, self.l);
        match self.geom {
            Geom::ChannelMajor { c } => &x[(i * c + g * d) * l..(i * c + (g + 1) * d) * l],
            Geom::Patches { c, ih, iw, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow } => {
                let cg = c / self.groups;
                for ci in 0..cg {
                    let plane = &x[((i * c) + g * cg + ci) * ih * iw..((i * c) + g * cg + ci + 1) * ih * iw];
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let row = &mut buf[((ci * kh + ky) * kw + kx) * l..((ci * kh + ky) * kw + kx + 1) * l];
                            // output columns whose input column ox * sw + kx * dw - pl lies inside
                            let off = kx * dw;
                            let lo = if off >= pl { 0 } else { (pl - off).div_ceil(sw) }.min(ow);
                            let hi = if iw + pl > off { (iw + pl - off).div_ceil(sw).min(ow) } else { 0 }.max(lo);
                            for oy in 0..oh {
                                let y = (oy * sh + ky * dh) as isize - pt as isize;
                                let dst = &mut row[oy * ow..(oy + 1) * ow];
                                if y < 0 || y >= ih as isize {
                                    dst.fill(0.0);
                                    continue;
                                }
                                let src = &plane[y as usize * iw..(y as usize + 1) * iw];
                                dst[..lo].fill(0.0);
                                dst[hi..].fill(0.0);
                                let x0 = lo * sw + off - pl;
                                if sw == 1 {
                                    dst[lo..hi].copy_from_slice(&src[x0..x0 + hi - lo]);
                                } else {
                                    for (v, &s) in dst[lo..hi].iter_mut().zip(src[x0..].iter().step_by(sw)) {
                                        *v = s;
                                    }
                                }
                            }
                        }
                    }
                }
                &buf[..d * l]
            }
        }
    }
}

/// Per-thread partial sums.
struct Part {
    h: Vec<f64>,
    s: Vec<f64>,
    c: Option<Vec<f64>>,
    sr: Option<Vec<f64>>,
}

impl Part {
    fn new(groups: usize, d: usize, with_ref: bool) -> Self {
        Part { h: vec![0.0; groups * d * d], s: vec![0.0; groups * d], c: with_ref.then(|| vec![0.0; groups * d * d]), sr: with_ref.then(|| vec![0.0; groups * d]) }
    }
    fn merge(mut self, o: Part) -> Part {
        add64(&mut self.h, &o.h);
        add64(&mut self.s, &o.s);
        if let (Some(a), Some(b)) = (self.c.as_mut(), o.c.as_ref()) {
            add64(a, b);
        }
        if let (Some(a), Some(b)) = (self.sr.as_mut(), o.sr.as_ref()) {
            add64(a, b);
        }
        self
    }
}

impl LayerAcc {
    pub fn new(spec: LayerSpec) -> Self {
        LayerAcc { spec, stats: None }
    }

    /// Adds one batch of the layer's input.
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        self.add_pair(x, None)
    }

    /// Adds one batch of the layer's input `x` and, for sequential rounding, the same input
    /// `x_ref` in the float network (same shape). A layer takes either always or never a reference.
    pub fn add_pair(&mut self, x: &Tensor, x_ref: Option<&Tensor>) -> Result<()> {
        if let Some(r) = x_ref {
            if r.shape != x.shape {
                return Err(Error::Plan(format!("rounding statistics: reference input {:?} differs from input {:?}", r.shape, x.shape)));
            }
        }
        if let LayerSpec::Rows { trans, .. } = self.spec {
            return self.add_rows(x, x_ref, trans);
        }
        let plan = self.plan(x)?;
        let with_ref = x_ref.is_some();
        let (groups, d, l, n) = (plan.groups, plan.d, plan.l, plan.n);
        let st = self.stats(groups, d, with_ref)?;
        let patches = matches!(plan.geom, Geom::Patches { .. });
        let threads = rayon::current_num_threads();
        if patches {
            let per = (d as u128).checked_mul(l as u128).and_then(|v| v.checked_mul(8 * threads as u128));
            crate::limits::check_total(&format!("rounding statistics: the im2col buffers of a layer with {d} x {l} patches"), per)?;
        }
        // images in parallel when there are enough of them, else the GEMMs use the threads
        let gemm_threads = if n >= threads { 1 } else { threads };
        let level = crate::kernels::simd_level();
        // a GEMM takes the columns of several images when one image has few (late layers),
        // so that its inner dimension is long enough to run near full speed
        let per = if d > GRAM_MAX_DIM { (GEMM_COLS / l).clamp(1, n.max(1)) } else { 1 };
        // out += a b^T for a, b [d, k] (a is b when sym)
        let moment = |a: &[f32], b: &[f32], k: usize, sym: bool, out: &mut [f64], tmp: &mut [f32]| {
            if d > GRAM_MAX_DIM {
                sgemm(d, d, k, MatRef::row_major(a, k), MatRef::transposed(b, k), tmp, d, false, gemm_threads);
                add_into(out, tmp);
            } else {
                gram(level, a, b, d, k, sym, out);
            }
        };
        let chunk = |ids: &[usize]| -> Part {
            let mut p = Part::new(groups, d, with_ref);
            let mut tmp = if d > GRAM_MAX_DIM { vec![0f32; d * d] } else { Vec::new() };
            let one_len = if patches { d * l } else { 0 };
            let wide_len = if per > 1 { d * per * l } else { 0 };
            let (mut one, mut one_r) = (vec![0f32; one_len], vec![0f32; if with_ref { one_len } else { 0 }]);
            let (mut wide, mut wide_r) = (vec![0f32; wide_len], vec![0f32; if with_ref { wide_len } else { 0 }]);
            for sub in ids.chunks(per) {
                let k = sub.len() * l;
                for g in 0..groups {
                    let m = gather(&plan, &x.data, sub, g, &mut one, &mut wide);
                    moment(m, m, k, true, &mut p.h[g * d * d..(g + 1) * d * d], &mut tmp);
                    row_sums(level, m, d, k, &mut p.s[g * d..(g + 1) * d]);
                    if let Some(r) = x_ref {
                        let mr = gather(&plan, &r.data, sub, g, &mut one_r, &mut wide_r);
                        moment(mr, m, k, false, &mut p.c.as_mut().unwrap()[g * d * d..(g + 1) * d * d], &mut tmp);
                        row_sums(level, mr, d, k, &mut p.sr.as_mut().unwrap()[g * d..(g + 1) * d]);
                    }
                }
            }
            p
        };
        let ids: Vec<usize> = (0..n).collect();
        let total = if gemm_threads == 1 {
            // a fixed split of the images and an ordered merge: the sums (and so the rounding)
            // do not depend on how rayon happened to schedule the work, so a rerun (the search,
            // then `quantize --config`) rounds to the same integers
            let parts: Vec<Part> = ids.par_chunks(n.div_ceil(8).max(1)).map(chunk).collect();
            parts.into_iter().fold(Part::new(groups, d, with_ref), Part::merge)
        } else {
            chunk(&ids)
        };
        st.merge(total, (n * l) as u64);
        Ok(())
    }

    fn plan(&self, x: &Tensor) -> Result<Plan> {
        match &self.spec {
            LayerSpec::ConvTranspose { group, .. } => {
                if x.rank() < 3 {
                    return Err(Error::Plan(format!("ConvTranspose input of rank {} for rounding statistics", x.rank())));
                }
                let (n, c) = (x.shape[0], x.shape[1]);
                let l: usize = x.shape[2..].iter().product();
                channel_major(n, c, l, *group)
            }
            LayerSpec::Conv { kernel, strides, pads, dilations: dil, group } => {
                let group = *group;
                let nsp = kernel.len();
                if !(1..=2).contains(&nsp) || x.rank() != nsp + 2 || strides.len() != nsp || dil.len() != nsp || pads.len() != 2 * nsp {
                    return Err(Error::Plan(format!("rounding statistics support 1-D and 2-D convolutions (input {:?}, kernel {kernel:?})", x.shape)));
                }
                // 1-D as 2-D with height 1.
                let (n, c) = (x.shape[0], x.shape[1]);
                let (ih, iw, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr) = if nsp == 1 {
                    (1, x.shape[2], 1, kernel[0], 1, strides[0], 1, dil[0], 0, pads[0], 0, pads[1])
                } else {
                    (x.shape[2], x.shape[3], kernel[0], kernel[1], strides[0], strides[1], dil[0], dil[1], pads[0], pads[1], pads[2], pads[3])
                };
                let oh = (ih + pt + pb).checked_sub(dh * (kh - 1) + 1).map(|v| v / sh + 1).unwrap_or(0);
                let ow = (iw + pl + pr).checked_sub(dw * (kw - 1) + 1).map(|v| v / sw + 1).unwrap_or(0);
                if group == 0 || c % group != 0 || oh == 0 || ow == 0 {
                    return Err(Error::Plan(format!("rounding statistics: bad conv geometry (input {:?}, group {group})", x.shape)));
                }
                if kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pl + pb + pr == 0 {
                    return channel_major(n, c, ih * iw, group);
                }
                let cg = c / group;
                Ok(Plan { n, groups: group, d: cg * kh * kw, l: oh * ow, geom: Geom::Patches { c, ih, iw, kh, kw, sh, sw, dh, dw, pt, pl, oh, ow } })
            }
            LayerSpec::Rows { .. } => unreachable!(),
        }
    }

    fn stats(&mut self, groups: usize, dim: usize, with_ref: bool) -> Result<&mut LayerStats> {
        if self.stats.is_none() {
            // the layer's statistics, one partial sum per thread and the per-thread scratch
            let copies = (2 + rayon::current_num_threads() as u128) * if with_ref { 2 } else { 1 };
            let per = (groups as u128).checked_mul(dim as u128).and_then(|v| v.checked_mul(dim as u128)).and_then(|v| v.checked_mul(8 * copies));
            crate::limits::check_total(&format!("rounding statistics of a layer with {groups} x {dim} inputs ({groups} x {dim}x{dim} Hessians)"), per)
                .map_err(|e| Error::TooLarge(format!("{e}; round this layer with --rounding nearest")))?;
        }
        let s = self.stats.get_or_insert_with(|| LayerStats::new(groups, dim, with_ref));
        if s.groups != groups || s.dim != dim {
            return Err(Error::Plan(format!("rounding statistics: input changed from {}x{} to {groups}x{dim}", s.groups, s.dim)));
        }
        if s.cross.is_some() != with_ref {
            return Err(Error::Plan("rounding statistics: a layer's batches must all have, or all lack, a reference input".into()));
        }
        Ok(s)
    }

    fn add_rows(&mut self, x: &Tensor, x_ref: Option<&Tensor>, trans: bool) -> Result<()> {
        if x.rank() == 0 || (trans && x.rank() != 2) {
            return Err(Error::Plan(format!("rounding statistics: matrix input of shape {:?}", x.shape)));
        }
        let (k, m) = if trans { (x.shape[0], x.shape[1]) } else { (x.shape[x.rank() - 1], x.len() / x.shape[x.rank() - 1].max(1)) };
        let st = self.stats(1, k, x_ref.is_some())?;
        let mut part = Part::new(1, k, x_ref.is_some());
        let mut tmp = vec![0f32; k * k];
        let threads = rayon::current_num_threads();
        // a: x as [k, m] (rows = features)
        fn as_km(d: &[f32], trans: bool, k: usize, m: usize) -> MatRef<'_> {
            if trans { MatRef::row_major(d, m) } else { MatRef::transposed(d, k) }
        }
        fn as_mk(d: &[f32], trans: bool, k: usize, m: usize) -> MatRef<'_> {
            if trans { MatRef::transposed(d, m) } else { MatRef::row_major(d, k) }
        }
        let sums = |d: &[f32], out: &mut [f64]| {
            if trans {
                row_sums(crate::kernels::simd_level(), d, k, m, out);
            } else {
                for r in 0..m {
                    for (a, &v) in out.iter_mut().zip(&d[r * k..(r + 1) * k]) {
                        *a += v as f64;
                    }
                }
            }
        };
        sgemm(k, k, m, as_km(&x.data, trans, k, m), as_mk(&x.data, trans, k, m), &mut tmp, k, false, threads);
        add_into(&mut part.h, &tmp);
        sums(&x.data, &mut part.s);
        if let Some(r) = x_ref {
            sgemm(k, k, m, as_km(&r.data, trans, k, m), as_mk(&x.data, trans, k, m), &mut tmp, k, false, threads);
            add_into(part.c.as_mut().unwrap(), &tmp);
            sums(&r.data, part.sr.as_mut().unwrap());
        }
        st.merge(part, m as u64);
        Ok(())
    }
}

impl LayerStats {
    fn merge(&mut self, p: Part, count: u64) {
        add64(&mut self.h, &p.h);
        add64(&mut self.sum, &p.s);
        if let (Some(a), Some(b)) = (self.cross.as_mut(), p.c.as_ref()) {
            add64(a, b);
        }
        if let (Some(a), Some(b)) = (self.sum_ref.as_mut(), p.sr.as_ref()) {
            add64(a, b);
        }
        self.count += count;
    }
}

fn channel_major(n: usize, c: usize, l: usize, group: usize) -> Result<Plan> {
    if group == 0 || c % group != 0 {
        return Err(Error::Plan(format!("{c} channels do not split into {group} groups")));
    }
    Ok(Plan { n, groups: group, d: c / group, l, geom: Geom::ChannelMajor { c } })
}

/// Input vectors of at most this length (depthwise 3x3 and 5x5, small convs) have their
/// second moment summed by [`gram`] (a GEMM of so few rows runs far below its speed).
const GRAM_MAX_DIM: usize = 32;
/// Columns a second-moment GEMM takes at least, from several images if need be.
const GEMM_COLS: usize = 1024;

/// The `[d, k]` matrix of images `ids` (group `g`), side by side: image `ids[0]`'s own slice
/// or im2col when there is one image, else copied into `wide`.
fn gather<'a>(plan: &Plan, x: &'a [f32], ids: &[usize], g: usize, one: &'a mut [f32], wide: &'a mut [f32]) -> &'a [f32] {
    let (d, l) = (plan.d, plan.l);
    if ids.len() == 1 {
        return plan.mat(x, ids[0], g, one);
    }
    let k = ids.len() * l;
    for (j, &i) in ids.iter().enumerate() {
        let m = plan.mat(x, i, g, one);
        for r in 0..d {
            wide[r * k + j * l..r * k + (j + 1) * l].copy_from_slice(&m[r * l..(r + 1) * l]);
        }
    }
    &wide[..d * k]
}

const LANES: usize = 16;

// `out[a, b] += sum_p x[a, p] y[b, p]` for `x`, `y` `[d, k]` (with `sym`, `x` is `y` and only
// `b >= a` is summed, then mirrored): sixteen f32 lanes per pair, added up in f64. Plain
// multiplies and adds, so every SIMD level sums the same bits.
dispatch_fn!(fn gram(x: &[f32], y: &[f32], d: usize, k: usize, sym: bool, out: &mut [f64]) {
    for a in 0..d {
        let xa = &x[a * k..(a + 1) * k];
        for b in if sym { a } else { 0 }..d {
            let yb = &y[b * k..(b + 1) * k];
            let mut acc = [0f32; LANES];
            for (u, v) in xa.chunks_exact(LANES).zip(yb.chunks_exact(LANES)) {
                for t in 0..LANES {
                    acc[t] += u[t] * v[t];
                }
            }
            let mut s: f64 = acc.iter().map(|&v| v as f64).sum();
            for t in k - k % LANES..k {
                s += (xa[t] * yb[t]) as f64;
            }
            out[a * d + b] += s;
            if sym && b != a {
                out[b * d + a] += s;
            }
        }
    }
});

// `out[r] += sum_p x[r, p]` for `x` `[d, k]`, in eight f64 lanes.
dispatch_fn!(fn row_sums(x: &[f32], d: usize, k: usize, out: &mut [f64]) {
    for (r, o) in out.iter_mut().enumerate().take(d) {
        let row = &x[r * k..(r + 1) * k];
        let mut acc = [0f64; 8];
        for u in row.chunks_exact(8) {
            for t in 0..8 {
                acc[t] += u[t] as f64;
            }
        }
        *o += acc.iter().sum::<f64>() + row[k - k % 8..].iter().map(|&v| v as f64).sum::<f64>();
    }
});

fn add_into(dst: &mut [f64], src: &[f32]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b as f64;
    }
}

fn add64(dst: &mut [f64], src: &[f64]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::rnd;

    /// Patch vector of (image, group, oy, ox) by its definition (zero outside the input).
    #[allow(clippy::too_many_arguments)]
    fn patch(x: &[f32], shape: [usize; 4], group: usize, k: [usize; 2], st: [usize; 2], dil: [usize; 2], pads: [usize; 2], i: usize, g: usize, oy: usize, ox: usize) -> Vec<f64> {
        let [_, c, ih, iw] = shape;
        let cg = c / group;
        let mut v = Vec::new();
        for ci in 0..cg {
            for ky in 0..k[0] {
                for kx in 0..k[1] {
                    let y = (oy * st[0] + ky * dil[0]) as isize - pads[0] as isize;
                    let xx = (ox * st[1] + kx * dil[1]) as isize - pads[1] as isize;
                    let inside = y >= 0 && y < ih as isize && xx >= 0 && xx < iw as isize;
                    v.push(if inside { x[((i * c + g * cg + ci) * ih + y as usize) * iw + xx as usize] as f64 } else { 0.0 });
                }
            }
        }
        v
    }

    #[test]
    fn every_accumulation_path_matches_the_definition() {
        // (shape, group, kernel, strides, dilations, pads top/left = bottom/right): the small-vector
        // path (d <= GRAM_MAX_DIM) with strides, dilation and padding, the GEMM path with columns
        // gathered from several images (d > GRAM_MAX_DIM, few columns each), the plain GEMM path;
        // each with a reference stream (cross moments) as sequential rounding gathers them
        let cases: [([usize; 4], usize, [usize; 2], [usize; 2], [usize; 2], [usize; 2]); 4] = [
            ([3, 6, 9, 11], 6, [3, 3], [2, 1], [1, 2], [1, 2]),
            ([5, 8, 7, 6], 2, [3, 3], [1, 2], [1, 1], [1, 0]),
            ([9, 40, 3, 3], 1, [1, 1], [1, 1], [1, 1], [0, 0]),
            ([2, 6, 40, 41], 1, [3, 3], [1, 1], [1, 1], [1, 1]),
        ];
        for (ci, &(shape, group, k, st, dil, pads)) in cases.iter().enumerate() {
            let len: usize = shape.iter().product();
            let x = rnd(len, 40 + ci as u32);
            let xr: Vec<f32> = rnd(len, 50 + ci as u32).iter().zip(&x).map(|(a, b)| b + 0.1 * a).collect();
            let spec = LayerSpec::Conv { kernel: k.to_vec(), strides: st.to_vec(), pads: vec![pads[0], pads[1], pads[0], pads[1]], dilations: dil.to_vec(), group };
            let mut acc = LayerAcc::new(spec);
            acc.add_pair(&Tensor::new(shape.to_vec(), x.clone()), Some(&Tensor::new(shape.to_vec(), xr.clone()))).unwrap();
            let stt = acc.stats.unwrap();
            let oh = (shape[2] + 2 * pads[0] - dil[0] * (k[0] - 1) - 1) / st[0] + 1;
            let ow = (shape[3] + 2 * pads[1] - dil[1] * (k[1] - 1) - 1) / st[1] + 1;
            let d = shape[1] / group * k[0] * k[1];
            assert_eq!((stt.groups, stt.dim, stt.count), (group, d, (shape[0] * oh * ow) as u64), "case {ci}");
            for g in 0..group {
                let (mut h, mut c, mut s, mut sr) = (vec![0f64; d * d], vec![0f64; d * d], vec![0f64; d], vec![0f64; d]);
                for i in 0..shape[0] {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let v = patch(&x, shape, group, k, st, dil, pads, i, g, oy, ox);
                            let vr = patch(&xr, shape, group, k, st, dil, pads, i, g, oy, ox);
                            for a in 0..d {
                                s[a] += v[a];
                                sr[a] += vr[a];
                                for b in 0..d {
                                    h[a * d + b] += v[a] * v[b];
                                    c[a * d + b] += vr[a] * v[b];
                                }
                            }
                        }
                    }
                }
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-4 * (1.0 + a.abs());
                for j in 0..d * d {
                    assert!(close(h[j], stt.h[g * d * d + j]), "case {ci} H[{j}]: {} vs {}", h[j], stt.h[g * d * d + j]);
                    assert!(close(c[j], stt.cross.as_ref().unwrap()[g * d * d + j]), "case {ci} C[{j}]");
                }
                for a in 0..d {
                    assert!(close(s[a], stt.sum[g * d + a]) && close(sr[a], stt.sum_ref.as_ref().unwrap()[g * d + a]), "case {ci} sum[{a}]");
                }
            }
        }
    }

    #[test]
    fn conv_patches_match_direct_sum() {
        // 1 image, 4 channels, 2 groups, 3x3 kernel, stride 2, pad 1 on a 5x6 input.
        let (n, c, ih, iw) = (2, 4, 5, 6);
        let x = Tensor::new(vec![n, c, ih, iw], rnd(n * c * ih * iw, 7));
        let spec = LayerSpec::Conv { kernel: vec![3, 3], strides: vec![2, 2], pads: vec![1, 1, 1, 1], dilations: vec![1, 1], group: 2 };
        let mut acc = LayerAcc::new(spec);
        acc.add(&x).unwrap();
        let st = acc.stats.unwrap();
        let (oh, ow) = (3, 3);
        assert_eq!((st.groups, st.dim, st.count), (2, 18, (n * oh * ow) as u64));
        for g in 0..2 {
            let mut h = vec![0f64; 18 * 18];
            for i in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut v = vec![0f64; 18];
                        for ci in 0..2 {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let y = (oy * 2 + ky) as isize - 1;
                                    let xx = (ox * 2 + kx) as isize - 1;
                                    if y >= 0 && y < ih as isize && xx >= 0 && xx < iw as isize {
                                        v[(ci * 3 + ky) * 3 + kx] = x.data[((i * c + g * 2 + ci) * ih + y as usize) * iw + xx as usize] as f64;
                                    }
                                }
                            }
                        }
                        for a in 0..18 {
                            for b in 0..18 {
                                h[a * 18 + b] += v[a] * v[b];
                            }
                        }
                    }
                }
            }
            for (a, b) in h.iter().zip(&st.h[g * 324..(g + 1) * 324]) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn reference_stream_cross_moments_match_direct_sums() {
        // Rows (Gemm input [m, k]) and a pointwise conv: cross = sum x_ref x^T, sum_ref = sum x_ref
        let (m, k) = (40, 6);
        let x = rnd(m * k, 3);
        let xr = rnd(m * k, 4);
        let mut acc = LayerAcc::new(LayerSpec::Rows { trans: false, w_trans: true, bias: true });
        acc.add_pair(&Tensor::new(vec![m, k], x.clone()), Some(&Tensor::new(vec![m, k], xr.clone()))).unwrap();
        let st = acc.stats.as_ref().unwrap();
        let c = st.cross(0).unwrap();
        let mr = st.mean_ref(0).unwrap();
        for a in 0..k {
            let want_m: f64 = (0..m).map(|i| xr[i * k + a] as f64).sum::<f64>() / m as f64;
            assert!((mr[a] - want_m).abs() < 1e-6);
            for b in 0..k {
                let want: f64 = (0..m).map(|i| xr[i * k + a] as f64 * x[i * k + b] as f64).sum::<f64>() / m as f64;
                assert!((c[a * k + b] - want).abs() < 1e-5, "{a},{b}: {} vs {want}", c[a * k + b]);
            }
        }
        // a reference must be given always or never
        assert!(acc.add(&Tensor::new(vec![m, k], x.clone())).is_err());
        let (n, ch, hw) = (3, 4, 5);
        let x = rnd(n * ch * hw, 5);
        let xr = rnd(n * ch * hw, 6);
        let spec = LayerSpec::Conv { kernel: vec![1, 1], strides: vec![1, 1], pads: vec![0, 0, 0, 0], dilations: vec![1, 1], group: 2 };
        let mut acc = LayerAcc::new(spec);
        acc.add_pair(&Tensor::new(vec![n, ch, 1, hw], x.clone()), Some(&Tensor::new(vec![n, ch, 1, hw], xr.clone()))).unwrap();
        let st = acc.stats.as_ref().unwrap();
        assert_eq!((st.groups, st.dim, st.count), (2, 2, (n * hw) as u64));
        for g in 0..2 {
            let c = st.cross(g).unwrap();
            for a in 0..2 {
                for b in 0..2 {
                    let mut want = 0f64;
                    for i in 0..n {
                        for p in 0..hw {
                            want += xr[(i * ch + g * 2 + a) * hw + p] as f64 * x[(i * ch + g * 2 + b) * hw + p] as f64;
                        }
                    }
                    want /= (n * hw) as f64;
                    assert!((c[a * 2 + b] - want).abs() < 1e-5);
                }
            }
        }
    }
}
