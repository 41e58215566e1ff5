//! MNIST in the IDX format of LeCun, Bottou, Bengio & Haffner (1998), raw or gzip-compressed.

use super::ImageSet;
use crate::{Error, Result};
use std::io::Read;

/// The four canonical file names (gzip-compressed), train images and labels then test images and labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The most a gzip-compressed data file may inflate to: MNIST's largest file is 47 MB, EMNIST's 88 MB. A larger
/// stream (a "gzip bomb": a few kilobytes that inflate to gigabytes) is an error, not an exhausted memory.
pub const MAX_INFLATED: u64 = 256 << 20;

/// Decompresses `bytes` when they start with the gzip magic number; returns them unchanged otherwise. The output
/// may not exceed [`MAX_INFLATED`] bytes.
pub fn gunzip_if_needed(file: &str, bytes: Vec<u8>) -> Result<Vec<u8>> {
    gunzip_limited(file, bytes, MAX_INFLATED)
}

/// [`gunzip_if_needed`] with another limit on the inflated size.
pub fn gunzip_limited(file: &str, bytes: Vec<u8>, limit: u64) -> Result<Vec<u8>> {
    if bytes.len() < 2 || bytes[0] != 0x1f || bytes[1] != 0x8b {
        return Ok(bytes);
    }
    let mut out = Vec::with_capacity((bytes.len() as u64 * 4).min(limit) as usize);
    flate2::read::GzDecoder::new(bytes.as_slice())
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::data(file, format!("corrupt gzip stream: {e}")))?;
    if out.len() as u64 > limit {
        return Err(Error::data(file, format!("the gzip stream inflates to more than {limit} bytes: not a data file")));
    }
    Ok(out)
}

fn be_u32(file: &str, bytes: &[u8], at: usize, what: &str) -> Result<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| Error::data(file, format!("file too short to hold the {what} ({} bytes)", bytes.len())))
}

/// Parses an IDX3 image file: returns `(count, rows, cols, pixels)`.
pub fn parse_idx_images(file: &str, bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    let magic = be_u32(file, bytes, 0, "magic number")?;
    if magic != IDX_IMAGES_MAGIC {
        return Err(Error::data(
            file,
            format!("wrong magic number {magic:#010x}, expected {IDX_IMAGES_MAGIC:#010x} (IDX images)"),
        ));
    }
    let count = be_u32(file, bytes, 4, "image count")? as usize;
    let rows = be_u32(file, bytes, 8, "row count")? as usize;
    let cols = be_u32(file, bytes, 12, "column count")? as usize;
    if rows == 0 || cols == 0 || rows > 4096 || cols > 4096 {
        return Err(Error::data(file, format!("implausible image size {rows}x{cols}")));
    }
    let expected = count
        .checked_mul(rows * cols)
        .and_then(|n| n.checked_add(16))
        .ok_or_else(|| Error::data(file, format!("header claims {count} images of {rows}x{cols}: too large")))?;
    if bytes.len() != expected {
        return Err(Error::data(
            file,
            format!(
                "header claims {count} images of {rows}x{cols} ({expected} bytes) but the file has {} bytes{}",
                bytes.len(),
                if bytes.len() < expected { " (truncated)" } else { "" }
            ),
        ));
    }
    Ok((count, rows, cols, bytes[16..].to_vec()))
}

/// Parses an IDX1 label file; every label must be a digit 0..=9.
pub fn parse_idx_labels(file: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    let magic = be_u32(file, bytes, 0, "magic number")?;
    if magic != IDX_LABELS_MAGIC {
        return Err(Error::data(
            file,
            format!("wrong magic number {magic:#010x}, expected {IDX_LABELS_MAGIC:#010x} (IDX labels)"),
        ));
    }
    let count = be_u32(file, bytes, 4, "label count")? as usize;
    if bytes.len() != count + 8 {
        return Err(Error::data(
            file,
            format!("header claims {count} labels ({} bytes) but the file has {} bytes", count + 8, bytes.len()),
        ));
    }
    let labels = bytes[8..].to_vec();
    if let Some((i, l)) = labels.iter().enumerate().find(|(_, &l)| l > 9) {
        return Err(Error::data(file, format!("label {i} is {l}, outside 0..=9")));
    }
    Ok(labels)
}

/// Builds an [`ImageSet`] from an image file and a label file (raw or gzip), checking that their counts agree.
pub fn mnist_set(images: (&str, Vec<u8>), labels: (&str, Vec<u8>)) -> Result<ImageSet> {
    let (image_name, image_bytes) = images;
    let (label_name, label_bytes) = labels;
    let image_bytes = gunzip_if_needed(image_name, image_bytes)?;
    let label_bytes = gunzip_if_needed(label_name, label_bytes)?;
    let (count, rows, cols, pixels) = parse_idx_images(image_name, &image_bytes)?;
    let labels = parse_idx_labels(label_name, &label_bytes)?;
    if labels.len() != count {
        return Err(Error::data(label_name, format!("{} labels for {count} images in {image_name}", labels.len())));
    }
    if rows != 28 || cols != 28 {
        return Err(Error::data(image_name, format!("MNIST images are 28x28, found {rows}x{cols}")));
    }
    ImageSet::new(pixels, labels, 1, rows, cols)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx_images(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IDX_IMAGES_MAGIC, count, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    #[test]
    fn parses_a_hand_made_file() {
        let bytes = idx_images(2, 2, 3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let (n, r, c, px) = parse_idx_images("x", &bytes).unwrap();
        assert_eq!((n, r, c), (2, 2, 3));
        assert_eq!(px, (1..=12).collect::<Vec<u8>>());
    }

    #[test]
    fn rejects_truncation_wrong_magic_and_bad_labels() {
        let bytes = idx_images(2, 2, 3, &[0; 11]);
        let err = parse_idx_images("imgs", &bytes).unwrap_err().to_string();
        assert!(err.starts_with("imgs:") && err.contains("truncated"), "{err}");
        let mut bad = idx_images(1, 1, 1, &[0]);
        bad[3] = 0x01;
        let err = parse_idx_images("imgs", &bad).unwrap_err().to_string();
        assert!(err.contains("wrong magic number"), "{err}");
        let err = parse_idx_images("imgs", &[0, 0]).unwrap_err().to_string();
        assert!(err.contains("too short"), "{err}");
        let mut labels = IDX_LABELS_MAGIC.to_be_bytes().to_vec();
        labels.extend_from_slice(&2u32.to_be_bytes());
        labels.extend_from_slice(&[3, 12]);
        let err = parse_idx_labels("labels", &labels).unwrap_err().to_string();
        assert!(err.contains("label 1 is 12"), "{err}");
        labels.pop();
        let err = parse_idx_labels("labels", &labels).unwrap_err().to_string();
        assert!(err.contains("claims 2 labels"), "{err}");
    }

    #[test]
    fn corrupt_gzip_is_an_error_not_a_short_read() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::fast());
            enc.write_all(&[7u8; 5000]).unwrap();
            enc.finish().unwrap();
        }
        assert_eq!(gunzip_if_needed("f", gz.clone()).unwrap(), vec![7u8; 5000]);
        gz.truncate(gz.len() / 2);
        let err = gunzip_if_needed("f.gz", gz).unwrap_err().to_string();
        assert!(err.starts_with("f.gz: corrupt gzip"), "{err}");
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let mut gz = Vec::new();
        {
            use std::io::Write;
            let mut enc = flate2::write::GzEncoder::new(&mut gz, flate2::Compression::best());
            enc.write_all(&[0u8; 1 << 20]).unwrap();
            enc.finish().unwrap();
        }
        assert!(gz.len() < 2048, "1 MiB of zeros compress to {} bytes", gz.len());
        assert_eq!(gunzip_limited("f.gz", gz.clone(), 1 << 20).unwrap().len(), 1 << 20);
        let err = gunzip_limited("f.gz", gz, (1 << 20) - 1).unwrap_err().to_string();
        assert!(err.contains("inflates to more than 1048575 bytes"), "{err}");
    }
}
