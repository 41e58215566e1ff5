//! The `--indices` syntax that selects images of a data set: `0..8`, `3,5,7`, `..100`, `9990..`, or a mix.

use crate::{Error, Result};

/// `0..8`, `3,5,7`, `..100`, `9990..` or `5` (comma-separated parts, each an index or a half-open range) → the
/// indices, in the order given, each below `len`. Nothing is allocated beyond what `len` allows: a range past the
/// end is an error before it is expanded.
pub fn parse_indices(s: &str, len: usize) -> Result<Vec<usize>> {
    let bad = |what: String| Error::InvalidArgument(format!("--indices '{s}': {what}"));
    let number = |t: &str, part: &str| {
        t.trim().parse::<usize>().map_err(|_| bad(format!("'{part}' is not an index or a range such as 0..8")))
    };
    let out_of_range = |i: usize| bad(format!("index {i} is out of range: the set has {len} images"));
    // Repeated ranges may select an image more than once, up to this many selections in all.
    let most = len.saturating_mul(16).max(1 << 20);
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once("..") {
            let a = if a.trim().is_empty() { 0 } else { number(a, part)? };
            let b = if b.trim().is_empty() { len } else { number(b, part)? };
            if b > len {
                return Err(out_of_range(b - 1));
            }
            if a > b {
                return Err(bad(format!("the range '{part}' runs backwards")));
            }
            if out.len() + (b - a) > most {
                return Err(bad(format!("selects more than {most} images")));
            }
            out.extend(a..b);
        } else {
            let i = number(part, part)?;
            if i >= len {
                return Err(out_of_range(i));
            }
            out.push(i);
        }
    }
    if out.is_empty() {
        return Err(bad("no image selected".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_by_hand() {
        assert_eq!(parse_indices("0..3", 10).unwrap(), [0, 1, 2]);
        assert_eq!(parse_indices("3, 5,7", 10).unwrap(), [3, 5, 7]);
        assert_eq!(parse_indices("..2,8..", 10).unwrap(), [0, 1, 8, 9]);
        assert_eq!(parse_indices(" 4 ", 10).unwrap(), [4]);
    }

    #[test]
    fn bad_forms_are_errors() {
        for (s, says) in [
            ("10", "index 10 is out of range"),
            ("0..11", "index 10 is out of range"),
            ("0..99999999999999999", "out of range"),
            ("5..2", "runs backwards"),
            ("a", "'a' is not an index"),
            ("1...3", "is not an index"),
            ("-1", "is not an index"),
            ("", "no image selected"),
            (",,", "no image selected"),
            ("3..3", "no image selected"),
        ] {
            let err = parse_indices(s, 10).unwrap_err().to_string();
            assert!(err.contains(says), "{s}: {err}");
        }
    }
}
