//! An RGB canvas: blit scaled images, write labels with an 8×8 bitmap font, encode as PNG.

use crate::{Error, Result};
use font8x8::UnicodeFonts;

pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<[u8; 3]>,
}

impl Canvas {
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Self {
        Canvas { width, height, pixels: vec![background; width * height] }
    }

    /// Draws a `w×h` image at `(x, y)`, each pixel as a `scale×scale` block (clipped to the canvas).
    pub fn blit(&mut self, image: &[[u8; 3]], w: usize, h: usize, x: usize, y: usize, scale: usize) {
        for (i, px) in image.iter().enumerate().take(w * h) {
            let (ix, iy) = (i % w, i / w);
            for dy in 0..scale {
                for dx in 0..scale {
                    let (cx, cy) = (x + ix * scale + dx, y + iy * scale + dy);
                    if cx < self.width && cy < self.height {
                        self.pixels[cy * self.width + cx] = *px;
                    }
                }
            }
        }
    }

    /// Writes `text` with its top-left corner at `(x, y)`, 8·scale pixels per character.
    pub fn text(&mut self, text: &str, x: usize, y: usize, scale: usize, color: [u8; 3]) {
        for (k, ch) in text.chars().enumerate() {
            let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        for dy in 0..scale {
                            for dx in 0..scale {
                                let (cx, cy) = (x + (k * 8 + col) * scale + dx, y + row * scale + dy);
                                if cx < self.width && cy < self.height {
                                    self.pixels[cy * self.width + cx] = color;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    pub fn encode_png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header().map_err(|e| Error::InvalidArgument(format!("png: {e}")))?;
            let flat: Vec<u8> = self.pixels.iter().flatten().copied().collect();
            writer.write_image_data(&flat).map_err(|e| Error::InvalidArgument(format!("png: {e}")))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blit_text_and_png_round_trip() -> Result<()> {
        let mut c = Canvas::new(20, 10, [0, 0, 0]);
        c.blit(&[[255, 0, 0], [0, 255, 0]], 2, 1, 1, 1, 2);
        // Pixel (0, 0) covers x, y ∈ [1, 3), pixel (1, 0) covers x ∈ [3, 5).
        let at = |x: usize, y: usize| c.pixels[y * 20 + x];
        assert_eq!(
            (at(0, 1), at(1, 1), at(2, 2), at(3, 2), at(4, 1), at(5, 1)),
            ([0; 3], [255, 0, 0], [255, 0, 0], [0, 255, 0], [0, 255, 0], [0; 3])
        );
        c.text("I", 10, 0, 1, [9, 9, 9]);
        assert!(c.pixels.contains(&[9, 9, 9]));
        let png = c.encode_png()?;
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let mut reader = decoder.read_info().map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        assert_eq!((info.width, info.height), (20, 10));
        assert_eq!(&buf[(20 + 1) * 3..(20 + 1) * 3 + 3], &[255, 0, 0]);
        Ok(())
    }
}
