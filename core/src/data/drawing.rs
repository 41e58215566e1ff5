//! A hand drawing turned into an MNIST digit the way MNIST's digits were made (LeCun et al. 1998): the ink's
//! bounding box is scaled, keeping its aspect ratio, to fit a 20×20 box with anti-aliasing, then placed in a 28×28
//! field so that its centre of mass lies at the field's centre.

use crate::Result;

/// MNIST's field and the box the digit is scaled into.
const FIELD: usize = 28;
const BOX: usize = 20;
/// Ink below this is background (1/255: one grey level).
const INK: f32 = 1.0 / 255.0;

/// `ink`: `height×width` values in [0, 1] (1 = full ink). The 28×28 digit in [0, 1] (MNIST's pixels / 255), or
/// `None` when nothing is drawn.
pub fn mnist_from_drawing(ink: &[f32], width: usize, height: usize) -> Result<Option<Vec<f32>>> {
    if width == 0 || height == 0 || width.checked_mul(height) != Some(ink.len()) {
        crate::invalid!("a drawing of {width}×{height} needs {width}·{height} values, got {}", ink.len());
    }
    if let Some(i) = ink.iter().position(|v| !v.is_finite()) {
        crate::invalid!("the drawing's ink value {i} is {}, not a number in [0, 1]", ink[i]);
    }
    let Some((x0, y0, x1, y1)) = bounding_box(ink, width, height) else { return Ok(None) };
    let (bw, bh) = (x1 - x0, y1 - y0);
    let crop: Vec<f32> =
        (y0..y1).flat_map(|y| ink[y * width + x0..y * width + x1].iter().map(|v| v.clamp(0.0, 1.0))).collect();
    let scale = BOX as f64 / bw.max(bh) as f64;
    let tw = ((bw as f64 * scale).round() as usize).clamp(1, BOX);
    let th = ((bh as f64 * scale).round() as usize).clamp(1, BOX);
    let small = resample(&crop, bw, bh, tw, th);
    // Centre of mass of the scaled digit, in its own pixel coordinates.
    let mass: f64 = small.iter().map(|&v| v as f64).sum();
    if mass <= 0.0 {
        return Ok(None);
    }
    let (mut cx, mut cy) = (0.0, 0.0);
    for (i, &v) in small.iter().enumerate() {
        cx += (i % tw) as f64 * v as f64;
        cy += (i / tw) as f64 * v as f64;
    }
    let centre = (FIELD as f64 - 1.0) / 2.0;
    // Where the scaled box's left/top edge goes, kept inside the field.
    let left = ((centre - cx / mass).round() as i64).clamp(0, (FIELD - tw) as i64) as usize;
    let top = ((centre - cy / mass).round() as i64).clamp(0, (FIELD - th) as i64) as usize;
    let mut out = vec![0.0f32; FIELD * FIELD];
    for y in 0..th {
        for x in 0..tw {
            out[(top + y) * FIELD + left + x] = small[y * tw + x].clamp(0.0, 1.0);
        }
    }
    Ok(Some(out))
}

/// The smallest box `[x0, x1) × [y0, y1)` holding all ink.
fn bounding_box(ink: &[f32], width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (width, height, 0, 0);
    for y in 0..height {
        for x in 0..width {
            if ink[y * width + x] > INK {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
            }
        }
    }
    (x1 > x0).then_some((x0, y0, x1, y1))
}

/// Anti-aliased resampling (separable triangle filter whose support widens with the reduction, as PIL's bilinear
/// resize): `sw×sh` → `tw×th`.
pub(super) fn resample(src: &[f32], sw: usize, sh: usize, tw: usize, th: usize) -> Vec<f32> {
    let rows: Vec<f32> = (0..sh).flat_map(|y| resample_line(&src[y * sw..(y + 1) * sw], tw)).collect();
    let mut out = vec![0.0; tw * th];
    let mut column = vec![0.0; sh];
    for x in 0..tw {
        for y in 0..sh {
            column[y] = rows[y * tw + x];
        }
        for (y, v) in resample_line(&column, th).into_iter().enumerate() {
            out[y * tw + x] = v;
        }
    }
    out
}

fn resample_line(src: &[f32], n: usize) -> Vec<f32> {
    let scale = src.len() as f64 / n as f64;
    let support = scale.max(1.0);
    (0..n)
        .map(|i| {
            let centre = (i as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(src.len());
            let (mut acc, mut norm) = (0.0, 0.0);
            for (j, &v) in src.iter().enumerate().take(hi).skip(lo) {
                let w = (1.0 - ((j as f64 + 0.5 - centre) / support).abs()).max(0.0);
                acc += w * v as f64;
                norm += w;
            }
            if norm > 0.0 {
                (acc / norm) as f32
            } else {
                0.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn centre_of_mass(d: &[f32]) -> (f64, f64) {
        let m: f64 = d.iter().map(|&v| v as f64).sum();
        let cx = d.iter().enumerate().map(|(i, &v)| (i % 28) as f64 * v as f64).sum::<f64>() / m;
        let cy = d.iter().enumerate().map(|(i, &v)| (i / 28) as f64 * v as f64).sum::<f64>() / m;
        (cx, cy)
    }

    /// A solid 40×100 bar drawn off-centre on a 280×280 canvas becomes a solid 8×20 bar centred in the field.
    #[test]
    fn a_bar_is_scaled_to_twenty_pixels_and_centred() -> Result<()> {
        let mut ink = vec![0.0; 280 * 280];
        for y in 150..250 {
            for x in 10..50 {
                ink[y * 280 + x] = 1.0;
            }
        }
        let d = mnist_from_drawing(&ink, 280, 280)?.expect("ink");
        let on: Vec<usize> = (0..784).filter(|&i| d[i] > 0.5).collect();
        assert_eq!(on.len(), 8 * 20);
        assert!(d.iter().all(|&v| v == 0.0 || v == 1.0), "a solid bar stays solid");
        let (cx, cy) = centre_of_mass(&d);
        assert!((cx - 13.5).abs() <= 0.5 && (cy - 13.5).abs() <= 0.5, "({cx}, {cy})");
        Ok(())
    }

    /// Anti-aliasing: a one-pixel line reduced 10× keeps its ink as grey, not as a gap or a full-strength line.
    #[test]
    fn thin_strokes_become_grey() -> Result<()> {
        let mut ink = vec![0.0; 200 * 200];
        for y in 0..200 {
            ink[y * 200 + 100] = 1.0; // vertical line
            ink[y * 200] = 1.0; // left border, to fix the box at 200×200
        }
        let d = mnist_from_drawing(&ink, 200, 200)?.expect("ink");
        let middle = d[14 * 28..15 * 28].iter().copied().fold(0.0f32, f32::max);
        assert!(middle > 0.02 && middle < 0.5, "{middle}");
        Ok(())
    }

    #[test]
    fn empty_and_bad_drawings() -> Result<()> {
        assert_eq!(mnist_from_drawing(&[0.0; 100], 10, 10)?, None);
        assert!(mnist_from_drawing(&[0.0; 99], 10, 10).unwrap_err().to_string().contains("needs 10·10 values"));
        assert!(mnist_from_drawing(&[0.0; 4], usize::MAX, 2).unwrap_err().to_string().contains("got 4"));
        let mut nan = vec![0.0; 100];
        nan[42] = f32::NAN;
        assert!(mnist_from_drawing(&nan, 10, 10).unwrap_err().to_string().contains("ink value 42 is NaN"));
        // A single dot is scaled up to fill the box.
        let mut dot = vec![0.0; 100];
        dot[55] = 1.0;
        let d = mnist_from_drawing(&dot, 10, 10)?.expect("ink");
        assert_eq!(d.iter().filter(|&&v| v > 0.99).count(), 400);
        Ok(())
    }

    /// Resampling keeps a constant line constant and averages when reducing.
    #[test]
    fn resample_line_by_hand() {
        assert_eq!(resample_line(&[0.5; 7], 3), vec![0.5; 3]);
        // 4 → 2: each output's triangle (support 2) over the pixel centres at 0.5, 1.5, 2.5, 3.5.
        let out = resample_line(&[1.0, 1.0, 0.0, 0.0], 2);
        // Centre 1: weights 0.75, 0.75, 0.25 (for pixels 0, 1, 2) → 1.5 / 1.75.
        assert!((out[0] - 1.5 / 1.75).abs() < 1e-6, "{out:?}");
    }
}
