//! Every parser of outside input under random and hostile bytes: IDX images and labels (raw and gzip), CIFAR-10
//! batches and archives, safetensors checkpoints (header, metadata, tensor table), the page's drawing input and the
//! `--indices` syntax. Properties: no panic, no hang (each case is small and bounded), an `Ok` result is consistent
//! with its input, and bounded memory: while parsing, the thread allocates at most a small multiple of the input's
//! size (or of what a valid input of that kind holds), whatever its header claims.
//!
//! Cases per property: proptest's default (256), or `PROPTEST_CASES`; CI runs the default in a few seconds.

use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use whitebox_core::data::{self, DatasetKind};
use whitebox_core::models::{Arch, ModelSpec};
use whitebox_core::params::{init_model, Checkpoint};

/// Counts the bytes each thread has allocated, and the peak since [`peak_during`] began.
struct Counting;

thread_local! {
    static CURRENT: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    let _ = CURRENT.try_with(|c| {
        let now = c.get() + bytes as isize;
        c.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = CURRENT.try_with(|c| c.set(c.get() - bytes as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the most bytes this thread held at once, above what it held before.
fn peak_during<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let start = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let r = f();
    (r, (PEAK.with(Cell::get) - start).max(0) as usize)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = flate2::write::GzEncoder::new(&mut out, flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap();
    out
}

fn idx(magic: u32, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = magic.to_be_bytes().to_vec();
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

/// A header's claims: mostly plausible, sometimes huge.
fn claim() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..40, Just(u32::MAX), Just(1 << 31), any::<u32>()]
}

/// Overwrites bytes of a valid input, then maybe truncates it.
fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(at, v) in edits {
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = v;
        }
    }
    if let Some(c) = cut {
        bytes.truncate(c % (bytes.len() + 1));
    }
    bytes
}

/// A CAM checkpoint (MNIST, f16), as the page and the CLI load them.
fn checkpoint_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let spec = ModelSpec { arch: Arch::Cam, dataset: DatasetKind::Mnist };
        let (map, _) = init_model(spec, 1, &candle_core::Device::Cpu).unwrap();
        Checkpoint::from_varmap(spec, &map, BTreeMap::new()).unwrap().to_bytes(candle_core::DType::F16).unwrap()
    })
}

/// A safetensors file: the header's length (`u64`), the JSON header, then `data`.
fn safetensors_with(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

proptest! {
    #[test]
    fn idx_images_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let (r, peak) = peak_during(|| data::parse_idx_images("f", &bytes));
        if let Ok((n, rows, cols, px)) = r {
            prop_assert_eq!(px.len(), n * rows * cols);
        }
        prop_assert!(peak <= 2 * bytes.len() + 4096, "{} bytes for a {}-byte file", peak, bytes.len());
    }

    #[test]
    fn idx_headers_claiming_anything(
        count in claim(), rows in claim(), cols in claim(), body in proptest::collection::vec(any::<u8>(), 0..400),
    ) {
        let bytes = idx(0x0803, &[count, rows, cols], &body);
        let (r, peak) = peak_during(|| data::parse_idx_images("f", &bytes));
        let fits = (count as u64) * (rows as u64) * (cols as u64) == body.len() as u64;
        prop_assert_eq!(r.is_ok(), fits && rows > 0 && cols > 0 && rows <= 4096 && cols <= 4096);
        // The count is real: a parsed file's pixels were copied out.
        prop_assert!(r.is_err() || peak >= body.len(), "{} bytes counted for {} pixels", peak, body.len());
        prop_assert!(peak <= 2 * bytes.len() + 4096, "{} bytes", peak);
        let labels = idx(0x0801, &[count], &body);
        let (r, peak) = peak_during(|| data::parse_idx_labels("l", &labels));
        if let Ok(l) = r {
            prop_assert!(l.len() == count as usize && l.iter().all(|&v| v <= 9));
        }
        prop_assert!(peak <= 2 * labels.len() + 4096, "{} bytes", peak);
    }

    #[test]
    fn mnist_sets_from_mutated_gzip_files(
        n in 0u32..4,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
        gz_labels in any::<bool>(),
    ) {
        let images = gzip(&idx(0x0803, &[n, 28, 28], &vec![7; n as usize * 784]));
        let labels = idx(0x0801, &[n], &vec![3; n as usize]);
        let labels = if gz_labels { gzip(&labels) } else { labels };
        let images = mutate(images, &edits, cut);
        let len = images.len() + labels.len();
        let (r, peak) = peak_during(|| data::mnist_set(("i.gz", images), ("l", labels)));
        if let Ok(set) = r {
            prop_assert!(set.len() <= 3 && set.labels.iter().all(|&l| l <= 9));
        }
        // Inflating may produce what a valid file of n images holds, plus the decoder's own state.
        prop_assert!(peak <= 4 * (len + 4 * 784) + (1 << 20), "{} bytes", peak);
    }

    #[test]
    fn gzip_streams_from_random_bytes(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut bytes = vec![0x1f, 0x8b, 8, 0];
        bytes.extend(tail);
        let len = bytes.len();
        let (_, peak) = peak_during(|| data::gunzip_if_needed("f.gz", bytes));
        // A corrupt stream inflates to little; a valid one is bounded by deflate's 1032:1 ratio.
        prop_assert!(peak <= 1100 * len + (1 << 20), "{} bytes", peak);
    }

    #[test]
    fn cifar_batches_of_any_length(len in 0usize..40_000, label in any::<u8>()) {
        let bytes = vec![label; len];
        let (r, peak) = peak_during(|| data::parse_cifar10_batch("b", &bytes));
        prop_assert!(r.is_err(), "a batch of {} bytes", len);
        prop_assert!(peak <= 4096, "{} bytes", peak);
    }

    #[test]
    fn cifar_archives_mutated_or_claiming_anything(
        size in prop_oneof![0u64..5000, Just(30_730_000u64), Just(1 << 40)],
        name in prop_oneof![Just("cifar-10-batches-bin/data_batch_1.bin"), Just("test_batch.bin"), Just("x")],
        body in proptest::collection::vec(any::<u8>(), 0..3000),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_cksum();
        let mut tar_bytes = header.as_bytes().to_vec();
        tar_bytes.extend_from_slice(&body);
        tar_bytes.resize(tar_bytes.len().next_multiple_of(512) + 1024, 0);
        let archive = mutate(gzip(&tar_bytes), &edits, cut);
        let len = archive.len() + tar_bytes.len();
        let (r, peak) = peak_during(|| data::parse_cifar10_tar_gz("a.tar.gz", &archive));
        prop_assert!(r.is_err());
        prop_assert!(peak <= 4 * len + (1 << 20), "{} bytes for a {}-byte archive claiming {}", peak, archive.len(), size);
    }

    #[test]
    fn checkpoints_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let (r, peak) = peak_during(|| Checkpoint::from_bytes("ck", &bytes, &candle_core::Device::Cpu));
        prop_assert!(r.is_err());
        prop_assert!(peak <= 4 * bytes.len() + 65536, "{} bytes", peak);
    }

    #[test]
    fn checkpoints_with_mutated_headers(
        edits in proptest::collection::vec((0usize..600, any::<u8>()), 1..4),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let valid = checkpoint_bytes();
        let header_len = u64::from_le_bytes(valid[..8].try_into().unwrap()) as usize + 8;
        let edits: Vec<(usize, u8)> = edits.into_iter().map(|(at, v)| (at % header_len, v)).collect();
        let bytes = mutate(valid.to_vec(), &edits, cut);
        let (r, peak) = peak_during(|| Checkpoint::from_bytes("ck", &bytes, &candle_core::Device::Cpu));
        if let Ok(ck) = r {
            prop_assert!(ck.tensors.values().all(|t| t.dtype() == candle_core::DType::F32));
        }
        // f16 weights become f32 tensors (2×), with the parser's own copies on top.
        prop_assert!(peak <= 8 * bytes.len() + (1 << 20), "{} bytes", peak);
    }

    #[test]
    fn safetensors_tables_claiming_anything(
        shape in proptest::collection::vec(prop_oneof![0usize..8, Just(1usize << 40), Just(usize::MAX)], 0..4),
        start in prop_oneof![0usize..64, Just(usize::MAX)],
        end in prop_oneof![0usize..64, Just(usize::MAX)],
        dtype in prop_oneof![Just("F32"), Just("F16"), Just("BF16"), Just("U8"), Just("I64"), Just("F64"), Just("XX")],
        meta in prop_oneof![
            Just(r#"{"format":"whitebox-checkpoint-v1","arch":"cam","dataset":"mnist"}"#),
            Just(r#"{"format":"whitebox-checkpoint-v1","arch":"nope","dataset":"mnist"}"#),
            Just("null"),
            Just("7"),
        ],
    ) {
        let shape = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",");
        let header = format!(
            r#"{{"__metadata__":{meta},"features.0.weight":{{"dtype":"{dtype}","shape":[{shape}],"data_offsets":[{start},{end}]}}}}"#
        );
        let bytes = safetensors_with(&header, &[0x3c; 64]);
        let (r, peak) = peak_during(|| Checkpoint::from_bytes("ck", &bytes, &candle_core::Device::Cpu));
        prop_assert!(r.is_err());
        prop_assert!(peak <= 16 * bytes.len() + 65536, "{} bytes", peak);
    }

    #[test]
    fn drawings_of_any_size_and_value(
        width in prop_oneof![0usize..40, Just(usize::MAX), Just(1usize << 33)],
        height in prop_oneof![0usize..40, Just(2usize), Just(usize::MAX)],
        values in proptest::collection::vec(
            prop_oneof![0f32..1.0, any::<f32>(), Just(f32::NAN), Just(f32::INFINITY)], 0..1600),
    ) {
        let (r, peak) = peak_during(|| data::mnist_from_drawing(&values, width, height));
        match r {
            Ok(Some(d)) => prop_assert!(d.len() == 784 && d.iter().all(|v| (0.0..=1.0).contains(v))),
            Ok(None) => {}
            Err(e) => prop_assert!(e.to_string().contains("drawing")),
        }
        prop_assert!(peak <= 8 * values.len() * 4 + 65536, "{} bytes", peak);
    }

    #[test]
    fn indices_in_any_spelling(s in "[0-9., a-z-]{0,24}", len in 0usize..3000) {
        let (r, peak) = peak_during(|| data::parse_indices(&s, len));
        if let Ok(v) = r {
            prop_assert!(!v.is_empty() && v.iter().all(|&i| i < len));
        }
        prop_assert!(peak <= 16 * 8 * len.max(1 << 16) + 65536, "{} bytes", peak);
    }

    #[test]
    fn index_ranges_past_the_end(a in any::<u64>(), b in any::<u64>(), len in 0usize..100) {
        let s = format!("{a}..{b}");
        let (r, peak) = peak_during(|| data::parse_indices(&s, len));
        prop_assert_eq!(r.is_ok(), a < b && b as usize <= len);
        prop_assert!(peak <= 8 * 100 + 4096, "{} bytes", peak);
    }
}
