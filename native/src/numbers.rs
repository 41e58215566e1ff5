//! Parsers for the CLI's numeric flags: every float flag is a finite number in its range, so that `--noise nan` or
//! `--lr inf` is a usage error naming the flag (clap adds the flag's name to the message), not a run that computes
//! NaN for hours.

use whitebox_core::attribution::limits;

fn finite(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| format!("'{s}' is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{v} is not a finite number"))
    }
}

fn within(s: &str, ok: impl Fn(f64) -> bool, range: &str) -> Result<f64, String> {
    let v = finite(s)?;
    if ok(v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside {range}"))
    }
}

/// A learning rate: > 0.
pub fn positive(s: &str) -> Result<f64, String> {
    within(s, |v| v > 0.0, "(0, ∞)")
}

/// Weight decay: ≥ 0.
pub fn non_negative(s: &str) -> Result<f64, String> {
    within(s, |v| v >= 0.0, "[0, ∞)")
}

/// SGD momentum: in [0, 1).
pub fn momentum(s: &str) -> Result<f64, String> {
    within(s, |v| (0.0..1.0).contains(&v), "[0, 1)")
}

/// A fraction of pixels: in [0, 1].
pub fn fraction(s: &str) -> Result<f64, String> {
    within(s, |v| (0.0..=1.0).contains(&v), "[0, 1]")
}

/// A sample of a data set: in (0, 1].
pub fn sample(s: &str) -> Result<f64, String> {
    within(s, |v| v > 0.0 && v <= 1.0, "(0, 1]")
}

/// An ensemble's noise level: in [0, core's limit].
pub fn noise(s: &str) -> Result<f64, String> {
    within(s, |v| (0.0..=limits::NOISE).contains(&v), &format!("[0, {}]", limits::NOISE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_and_out_of_range_numbers_are_errors() {
        for bad in ["nan", "NaN", "inf", "-inf", "infinity", "1e999", "x", ""] {
            for f in [positive, non_negative, momentum, fraction, sample, noise] {
                assert!(f(bad).is_err(), "{bad}");
            }
        }
        assert_eq!(
            (positive("0.5"), fraction("1"), momentum("0.9"), noise(" 0.15 ")),
            (Ok(0.5), Ok(1.0), Ok(0.9), Ok(0.15))
        );
        assert!(positive("0").is_err() && non_negative("-1e-9").is_err() && momentum("1").is_err());
        assert!(fraction("1.01").is_err() && sample("0").is_err() && noise("10.5").is_err());
        assert_eq!(non_negative("0"), Ok(0.0));
    }
}
