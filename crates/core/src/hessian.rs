//! Layer-input statistics for data-aware weight rounding: for each weighted layer, the
//! second moment `H = sum x x^T` of the vectors its weight rows are dotted with (im2col
//! patches of a Conv, channel vectors of a ConvTranspose, rows of a Gemm/MatMul input), one
//! `H` per group, and their sum (for the mean, used by bias correction).
//!
//! Accumulation runs per image in parallel (rayon), with the products on the engine's GEMM.

use crate::error::{Error, Result};
use crate::kernels::gemm::{sgemm, MatRef};
use crate::tensor::Tensor;
use rayon::prelude::*;
use serde::Deserialize;

/// How a layer's weight rows see its input.
#[derive(Clone, Debug, Deserialize)]
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
    },
}

fn one() -> f64 {
    1.0
}

/// Accumulated statistics of one layer.
#[derive(Clone, Debug)]
pub struct LayerStats {
    pub groups: usize,
    /// Length of one input vector (columns of the weight matrix of a group).
    pub dim: usize,
    /// `groups` row-major `dim x dim` matrices.
    pub h: Vec<f64>,
    /// `groups` sums of the input vectors.
    pub sum: Vec<f64>,
    /// Number of vectors accumulated (per group).
    pub count: u64,
}

impl LayerStats {
    fn new(groups: usize, dim: usize) -> Self {
        LayerStats { groups, dim, h: vec![0.0; groups * dim * dim], sum: vec![0.0; groups * dim], count: 0 }
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
}

/// Per-layer accumulator.
#[derive(Clone, Debug)]
pub struct LayerAcc {
    pub spec: LayerSpec,
    pub stats: Option<LayerStats>,
}

impl LayerAcc {
    pub fn new(spec: LayerSpec) -> Self {
        LayerAcc { spec, stats: None }
    }

    /// Adds one batch of the layer's input.
    pub fn add(&mut self, x: &Tensor) -> Result<()> {
        match self.spec.clone() {
            LayerSpec::Conv { kernel, strides, pads, dilations, group } => self.add_conv(x, &kernel, &strides, &pads, &dilations, group),
            LayerSpec::ConvTranspose { group, .. } => {
                if x.rank() < 3 {
                    return Err(Error::Plan(format!("ConvTranspose input of rank {} for rounding statistics", x.rank())));
                }
                let (n, c) = (x.shape[0], x.shape[1]);
                let l: usize = x.shape[2..].iter().product();
                self.add_channel_major(x, n, c, l, group)
            }
            LayerSpec::Rows { trans, .. } => self.add_rows(x, trans),
        }
    }

    fn stats(&mut self, groups: usize, dim: usize) -> Result<&mut LayerStats> {
        let s = self.stats.get_or_insert_with(|| LayerStats::new(groups, dim));
        if s.groups != groups || s.dim != dim {
            return Err(Error::Plan(format!("rounding statistics: input changed from {}x{} to {groups}x{dim}", s.groups, s.dim)));
        }
        Ok(s)
    }

    /// Input `[n, c, l]` whose vectors are the channel columns (per group).
    fn add_channel_major(&mut self, x: &Tensor, n: usize, c: usize, l: usize, group: usize) -> Result<()> {
        if group == 0 || c % group != 0 {
            return Err(Error::Plan(format!("{c} channels do not split into {group} groups")));
        }
        let d = c / group;
        let st = self.stats(group, d)?;
        let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut h = vec![0f64; group * d * d];
                let mut s = vec![0f64; group * d];
                let mut tmp = vec![0f32; d * d];
                for g in 0..group {
                    let p = &x.data[(i * c + g * d) * l..(i * c + (g + 1) * d) * l];
                    gram_rows(p, d, l, &mut tmp);
                    add_into(&mut h[g * d * d..(g + 1) * d * d], &tmp);
                    row_sums(p, d, l, &mut s[g * d..(g + 1) * d]);
                }
                (h, s)
            })
            .collect();
        for (h, s) in parts {
            add64(&mut st.h, &h);
            add64(&mut st.sum, &s);
        }
        st.count += (n * l) as u64;
        Ok(())
    }

    fn add_conv(&mut self, x: &Tensor, kernel: &[usize], strides: &[usize], pads: &[usize], dil: &[usize], group: usize) -> Result<()> {
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
        let pointwise = kh == 1 && kw == 1 && sh == 1 && sw == 1 && pt + pl + pb + pr == 0;
        if pointwise {
            return self.add_channel_major(x, n, c, ih * iw, group);
        }
        let cg = c / group;
        let d = cg * kh * kw;
        let l = oh * ow;
        let st = self.stats(group, d)?;
        let parts: Vec<(Vec<f64>, Vec<f64>)> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut h = vec![0f64; group * d * d];
                let mut s = vec![0f64; group * d];
                let mut tmp = vec![0f32; d * d];
                let mut p = vec![0f32; d * l];
                for g in 0..group {
                    // im2col of this group's channels: row (ci, ky, kx), column output pixel.
                    for ci in 0..cg {
                        let plane = &x.data[((i * c) + g * cg + ci) * ih * iw..((i * c) + g * cg + ci + 1) * ih * iw];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let row = &mut p[((ci * kh + ky) * kw + kx) * l..((ci * kh + ky) * kw + kx + 1) * l];
                                for oy in 0..oh {
                                    let y = (oy * sh + ky * dh) as isize - pt as isize;
                                    let dst = &mut row[oy * ow..(oy + 1) * ow];
                                    if y < 0 || y >= ih as isize {
                                        dst.fill(0.0);
                                        continue;
                                    }
                                    let src = &plane[y as usize * iw..(y as usize + 1) * iw];
                                    for (ox, v) in dst.iter_mut().enumerate() {
                                        let xx = (ox * sw + kx * dw) as isize - pl as isize;
                                        *v = if xx >= 0 && xx < iw as isize { src[xx as usize] } else { 0.0 };
                                    }
                                }
                            }
                        }
                    }
                    gram_rows(&p, d, l, &mut tmp);
                    add_into(&mut h[g * d * d..(g + 1) * d * d], &tmp);
                    row_sums(&p, d, l, &mut s[g * d..(g + 1) * d]);
                }
                (h, s)
            })
            .collect();
        for (h, s) in parts {
            add64(&mut st.h, &h);
            add64(&mut st.sum, &s);
        }
        st.count += (n * l) as u64;
        Ok(())
    }

    fn add_rows(&mut self, x: &Tensor, trans: bool) -> Result<()> {
        if x.rank() == 0 || (trans && x.rank() != 2) {
            return Err(Error::Plan(format!("rounding statistics: matrix input of shape {:?}", x.shape)));
        }
        let (k, m) = if trans { (x.shape[0], x.shape[1]) } else { (x.shape[x.rank() - 1], x.len() / x.shape[x.rank() - 1].max(1)) };
        let st = self.stats(1, k)?;
        let mut tmp = vec![0f32; k * k];
        let mut s = vec![0f64; k];
        let threads = rayon::current_num_threads();
        if trans {
            // x is [k, m]: H = x x^T
            sgemm(k, k, m, MatRef::row_major(&x.data, m), MatRef::transposed(&x.data, m), &mut tmp, k, false, threads);
            row_sums(&x.data, k, m, &mut s);
        } else {
            // x is [m, k]: H = x^T x
            sgemm(k, k, m, MatRef::transposed(&x.data, k), MatRef::row_major(&x.data, k), &mut tmp, k, false, threads);
            for r in 0..m {
                for (a, &v) in s.iter_mut().zip(&x.data[r * k..(r + 1) * k]) {
                    *a += v as f64;
                }
            }
        }
        add_into(&mut st.h, &tmp);
        add64(&mut st.sum, &s);
        st.count += m as u64;
        Ok(())
    }
}

/// `out[d, d] = p p^T` for row-major `p` of shape `[d, l]` (single-threaded GEMM).
fn gram_rows(p: &[f32], d: usize, l: usize, out: &mut [f32]) {
    sgemm(d, d, l, MatRef::row_major(p, l), MatRef::transposed(p, l), out, d, false, 1);
}

fn row_sums(p: &[f32], d: usize, l: usize, out: &mut [f64]) {
    for (r, o) in out.iter_mut().enumerate().take(d) {
        *o += p[r * l..(r + 1) * l].iter().map(|&v| v as f64).sum::<f64>();
    }
}

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

    fn rnd(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) - 0.5
            })
            .collect()
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
}
