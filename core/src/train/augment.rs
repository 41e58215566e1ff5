//! The seed's CIFAR-10 augmentation: `RandomCrop(32, padding=4)` then `RandomHorizontalFlip()`, on raw pixels.

/// Shifts a planar `C×H×W` image by `(dy, dx)` with zero fill (a crop of the 4-padded image at offset
/// `(4 + dy, 4 + dx)`), then mirrors it horizontally when `flip`.
pub fn random_crop_flip(img: &[u8], c: usize, h: usize, w: usize, dy: i32, dx: i32, flip: bool) -> Vec<u8> {
    let mut out = vec![0u8; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            let sy = y as i32 + dy;
            if sy < 0 || sy >= h as i32 {
                continue;
            }
            for x in 0..w {
                let sx = x as i32 + dx;
                if sx < 0 || sx >= w as i32 {
                    continue;
                }
                let ox = if flip { w - 1 - x } else { x };
                out[(ch * h + y) * w + ox] = img[(ch * h + sy as usize) * w + sx as usize];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_and_flip_by_hand() {
        // 1×2×3 image [[1,2,3],[4,5,6]].
        let img = [1, 2, 3, 4, 5, 6];
        assert_eq!(random_crop_flip(&img, 1, 2, 3, 0, 0, false), img);
        assert_eq!(random_crop_flip(&img, 1, 2, 3, 0, 1, false), [2, 3, 0, 5, 6, 0]);
        assert_eq!(random_crop_flip(&img, 1, 2, 3, -1, 0, false), [0, 0, 0, 1, 2, 3]);
        assert_eq!(random_crop_flip(&img, 1, 2, 3, 0, 0, true), [3, 2, 1, 6, 5, 4]);
    }
}
