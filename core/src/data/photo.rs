//! Any picture (a photo, a scan of a handwritten digit) turned into a model input: for CIFAR-10 the centre square
//! resized to 32×32 with PIL's anti-aliased bilinear filter (what torchvision's `CenterCrop` + `Resize` give); for
//! MNIST the picture read as ink on paper and made into a digit exactly as a drawing is (`drawing.rs`: ink box to
//! 20×20, centred by its centre of mass).

use super::drawing::{mnist_from_drawing, resample};
use super::DatasetKind;
use crate::Result;

/// The largest picture accepted, per side (the page scales pictures down to 512 before sending them).
pub const MAX_SIDE: usize = 8192;

/// Ink weaker than this fraction of the strongest (paper grain, shadows, JPEG noise) is background.
const NOISE: f32 = 0.2;
/// A picture whose strongest ink differs less than this from its paper has nothing drawn on it.
const MIN_CONTRAST: f32 = 0.1;

/// `rgba`: `height×width` pixels, 4 bytes each (as a canvas's `ImageData`); transparent parts count as white. The
/// model input of `kind` as `C×H×W` values in [0, 1], or `None` for an MNIST picture with no ink on it.
pub fn input_from_image(kind: DatasetKind, rgba: &[u8], width: usize, height: usize) -> Result<Option<Vec<f32>>> {
    if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
        crate::invalid!("a picture of {width}×{height} pixels: each side must be between 1 and {MAX_SIDE}");
    }
    if rgba.len() != 4 * width * height {
        crate::invalid!("a {width}×{height} RGBA picture needs {} bytes, got {}", 4 * width * height, rgba.len());
    }
    // Colour planes over a white background, in [0, 1].
    let planes: Vec<Vec<f32>> = (0..3)
        .map(|c| {
            rgba.chunks_exact(4)
                .map(|p| {
                    let a = p[3] as f32 / 255.0;
                    a * (p[c] as f32 / 255.0) + (1.0 - a)
                })
                .collect()
        })
        .collect();
    match kind {
        DatasetKind::Cifar10 => Ok(Some(centre_square(&planes, width, height, kind.side()))),
        DatasetKind::Mnist => {
            let luma: Vec<f32> = (0..width * height)
                .map(|i| 0.299 * planes[0][i] + 0.587 * planes[1][i] + 0.114 * planes[2][i])
                .collect();
            match ink(&luma, width, height) {
                Some(ink) => mnist_from_drawing(&ink, width, height),
                None => Ok(None),
            }
        }
    }
}

/// The centred `min(w, h)` square of each plane (offsets rounded down), resized to `side×side`; channel-major.
fn centre_square(planes: &[Vec<f32>], width: usize, height: usize, side: usize) -> Vec<f32> {
    let s = width.min(height);
    let (left, top) = ((width - s) / 2, (height - s) / 2);
    planes
        .iter()
        .flat_map(|plane| {
            let square: Vec<f32> =
                (top..top + s).flat_map(|y| plane[y * width + left..y * width + left + s].to_vec()).collect();
            resample(&square, s, s, side, side)
        })
        .collect()
}

/// Grey values → ink in [0, 1]: the paper is the border's median grey; strokes are whatever differs from it in the
/// other direction (dark on light paper, or light on a dark board), scaled so that the strongest stroke is 1, with
/// weak differences dropped as noise. `None` when nothing stands out.
fn ink(luma: &[f32], width: usize, height: usize) -> Option<Vec<f32>> {
    let mut border: Vec<f32> = (0..width)
        .flat_map(|x| [luma[x], luma[(height - 1) * width + x]])
        .chain((0..height).flat_map(|y| [luma[y * width], luma[y * width + width - 1]]))
        .collect();
    border.sort_by(f32::total_cmp);
    let paper = border[border.len() / 2];
    let raw: Vec<f32> = if paper >= 0.5 {
        luma.iter().map(|&v| ((paper - v) / paper).clamp(0.0, 1.0)).collect()
    } else {
        luma.iter().map(|&v| ((v - paper) / (1.0 - paper)).clamp(0.0, 1.0)).collect()
    };
    let strongest = raw.iter().copied().fold(0.0f32, f32::max);
    if strongest < MIN_CONTRAST {
        return None;
    }
    Some(raw.iter().map(|&v| (v / strongest - NOISE).max(0.0) / (1.0 - NOISE)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A drawing's ink (0 or 1) as an RGBA picture: `ink_rgb` where there is ink, `paper_rgba` elsewhere.
    fn picture(ink: &[f32], ink_rgb: [u8; 3], paper_rgba: [u8; 4]) -> Vec<u8> {
        ink.iter().flat_map(|&v| if v > 0.5 { [ink_rgb[0], ink_rgb[1], ink_rgb[2], 255] } else { paper_rgba }).collect()
    }

    fn seven(w: usize, h: usize) -> Vec<f32> {
        let mut ink = vec![0.0; w * h];
        for x in w / 4..3 * w / 4 {
            for y in h / 5..h / 5 + 6 {
                ink[y * w + x] = 1.0;
            }
        }
        for y in h / 5..4 * h / 5 {
            let x = 3 * w / 4 - (y - h / 5) / 3;
            for dx in 0..6 {
                ink[y * w + x - dx] = 1.0;
            }
        }
        ink
    }

    /// A photographed drawing — dark ink on white paper, chalk on a black board, or a transparent PNG — becomes the
    /// same digit as the drawing itself.
    #[test]
    fn a_picture_of_a_drawing_is_the_drawing() -> Result<()> {
        let (w, h) = (90, 120);
        let ink = seven(w, h);
        let want = mnist_from_drawing(&ink, w, h)?.expect("ink");
        for (ink_rgb, paper) in
            [([0, 0, 0], [255, 255, 255, 255]), ([255, 255, 255], [0, 0, 0, 255]), ([0, 0, 0], [7, 99, 3, 0])]
        {
            let got = input_from_image(DatasetKind::Mnist, &picture(&ink, ink_rgb, paper), w, h)?.expect("ink");
            assert_eq!(got, want, "ink {ink_rgb:?} on {paper:?}");
        }
        // Grey pencil on off-white paper with faint noise: the same digit shape (ink scaled to full strength).
        let mut noisy = picture(&ink, [90, 90, 90], [235, 235, 235, 255]);
        for (i, p) in noisy.chunks_exact_mut(4).enumerate() {
            p[0] = p[0].saturating_sub((i * 7 % 11) as u8);
        }
        let got = input_from_image(DatasetKind::Mnist, &noisy, w, h)?.expect("ink");
        let on = |d: &[f32]| d.iter().map(|&v| v > 0.5).collect::<Vec<_>>();
        assert_eq!(on(&got), on(&want));
        Ok(())
    }

    #[test]
    fn a_blank_picture_has_no_digit() -> Result<()> {
        let blank = [200u8, 200, 200, 255].repeat(40 * 30);
        assert_eq!(input_from_image(DatasetKind::Mnist, &blank, 40, 30)?, None);
        Ok(())
    }

    /// CIFAR-10: a picture already 32×32 is kept as it is; the parts outside the centre square are cut off.
    #[test]
    fn cifar_takes_the_centre_square() -> Result<()> {
        let (w, h) = (32, 32);
        let rgba: Vec<u8> =
            (0..w * h).flat_map(|i| [(i % 251) as u8, (i * 3 % 256) as u8, (i / 7) as u8, 255]).collect();
        let got = input_from_image(DatasetKind::Cifar10, &rgba, w, h)?.expect("image");
        for c in 0..3 {
            for i in 0..w * h {
                assert!((got[c * 1024 + i] - rgba[4 * i + c] as f32 / 255.0).abs() < 1e-6);
            }
        }
        // 64 wide, 32 high: red bands on the left and right 16 columns, blue in the middle.
        let wide: Vec<u8> = (0..64 * 32)
            .flat_map(|i| if (16..48).contains(&(i % 64)) { [0, 0, 255, 255] } else { [255, 0, 0, 255] })
            .collect();
        let got = input_from_image(DatasetKind::Cifar10, &wide, 64, 32)?.expect("image");
        assert!(got[..1024].iter().all(|&v| v == 0.0) && got[2048..].iter().all(|&v| v == 1.0), "only the blue middle");
        Ok(())
    }

    /// PIL's anti-aliased bilinear resize of the centre square (`tests/reference/photo_goldens.py`), reducing a
    /// 97×61 picture and enlarging a 21×26 one, partly transparent.
    #[test]
    fn cifar_resize_equals_pil() -> Result<()> {
        use candle_core::{DType, Device};
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/reference/goldens/photo-cifar10.safetensors");
        let golden = candle_core::safetensors::load(&path, &Device::Cpu)?;
        for name in ["wide", "small"] {
            let rgba = &golden[&format!("{name}_rgba")];
            let (h, w, _) = rgba.dims3()?;
            let bytes = rgba.flatten_all()?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            let bytes: Vec<u8> = bytes.into_iter().map(|v| v as u8).collect();
            let want = golden[&format!("{name}_input")].flatten_all()?.to_vec1::<f32>()?;
            let got = input_from_image(DatasetKind::Cifar10, &bytes, w, h)?.expect("image");
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst <= 2e-6, "{name}: {worst}");
        }
        Ok(())
    }

    #[test]
    fn malformed_pictures_are_errors() {
        let e = |r: Result<Option<Vec<f32>>>| r.unwrap_err().to_string();
        assert!(e(input_from_image(DatasetKind::Cifar10, &[0; 12], 2, 2)).contains("needs 16 bytes, got 12"));
        assert!(e(input_from_image(DatasetKind::Mnist, &[], 0, 5)).contains("between 1 and 8192"));
        assert!(e(input_from_image(DatasetKind::Mnist, &[], 9000, 1)).contains("between 1 and 8192"));
    }
}
