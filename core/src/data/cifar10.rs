//! CIFAR-10, binary version (Krizhevsky 2009): records of 1 label byte + 3,072 pixel bytes (R, G, B planes).

use super::ImageSet;
use crate::{Error, Result};
use std::io::Read;

pub const CIFAR10_TRAIN_FILES: [&str; 5] =
    ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const CIFAR10_TEST_FILE: &str = "test_batch.bin";

const RECORD: usize = 1 + 3 * 32 * 32;
const RECORDS_PER_BATCH: usize = 10_000;

/// Parses one canonical batch file (10,000 records).
pub fn parse_cifar10_batch(file: &str, bytes: &[u8]) -> Result<ImageSet> {
    if bytes.len() != RECORD * RECORDS_PER_BATCH {
        let whole = bytes.len() / RECORD;
        let rest = bytes.len() % RECORD;
        return Err(Error::data(
            file,
            format!(
                "expected {RECORDS_PER_BATCH} records of {RECORD} bytes ({} bytes), found {} bytes ({whole} whole records{})",
                RECORD * RECORDS_PER_BATCH,
                bytes.len(),
                if rest > 0 { format!(" and {rest} stray bytes: truncated or corrupt") } else { String::new() }
            ),
        ));
    }
    let mut labels = Vec::with_capacity(RECORDS_PER_BATCH);
    let mut pixels = Vec::with_capacity(RECORDS_PER_BATCH * (RECORD - 1));
    for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
        if record[0] > 9 {
            return Err(Error::data(file, format!("record {i} has label {}, outside 0..=9", record[0])));
        }
        labels.push(record[0]);
        pixels.extend_from_slice(&record[1..]);
    }
    ImageSet::new(pixels, labels, 3, 32, 32)
}

/// Reads the training and test sets from the canonical `cifar-10-binary.tar.gz` archive.
pub fn parse_cifar10_tar_gz(archive_name: &str, bytes: &[u8]) -> Result<(ImageSet, ImageSet)> {
    let mut found: Vec<Option<ImageSet>> = vec![None; 6];
    let decoder = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(decoder);
    let corrupt = |e: std::io::Error| Error::data(archive_name, format!("corrupt archive: {e}"));
    for entry in archive.entries().map_err(corrupt)? {
        let entry = entry.map_err(corrupt)?;
        let path = entry.path().map_err(corrupt)?.to_string_lossy().into_owned();
        let base = path.rsplit('/').next().unwrap_or("").to_string();
        let slot = CIFAR10_TRAIN_FILES.iter().chain([&CIFAR10_TEST_FILE]).position(|f| *f == base);
        if let Some(slot) = slot {
            // The entry's header may claim any size: the buffer grows with what arrives, at most one byte more
            // than a batch holds.
            let batch = (RECORD * RECORDS_PER_BATCH) as u64;
            let mut data = Vec::new();
            entry.take(batch + 1).read_to_end(&mut data).map_err(corrupt)?;
            found[slot] = Some(parse_cifar10_batch(&format!("{archive_name}:{path}"), &data)?);
        }
    }
    let mut sets = Vec::with_capacity(6);
    for (slot, set) in found.into_iter().enumerate() {
        let name = CIFAR10_TRAIN_FILES.get(slot).copied().unwrap_or(CIFAR10_TEST_FILE);
        sets.push(set.ok_or_else(|| Error::data(archive_name, format!("{name} is missing from the archive")))?);
    }
    let test = sets.pop().expect("six sets");
    Ok((ImageSet::concat(&sets)?, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_into_planes() {
        let mut bytes = Vec::new();
        for i in 0..RECORDS_PER_BATCH {
            bytes.push((i % 10) as u8);
            bytes.extend((0..RECORD - 1).map(|p| (p % 251) as u8));
        }
        let set = parse_cifar10_batch("b", &bytes).unwrap();
        assert_eq!(set.len(), RECORDS_PER_BATCH);
        assert_eq!(set.labels[..3], [0, 1, 2]);
        assert_eq!(set.image(1)[1024], (1024 % 251) as u8);
        bytes.truncate(bytes.len() - 100);
        let err = parse_cifar10_batch("b.bin", &bytes).unwrap_err().to_string();
        assert!(err.starts_with("b.bin:") && err.contains("truncated"), "{err}");
        bytes.truncate(RECORD * RECORDS_PER_BATCH - RECORD);
        bytes.extend(vec![11u8; RECORD]);
        let err = parse_cifar10_batch("b.bin", &bytes).unwrap_err().to_string();
        assert!(err.contains("record 9999 has label 11"), "{err}");
    }

    #[test]
    fn a_bad_archive_is_an_error() {
        let err = parse_cifar10_tar_gz("c.tar.gz", b"not a gzip stream at all").unwrap_err().to_string();
        assert!(err.starts_with("c.tar.gz: corrupt archive"), "{err}");
    }
}
