//! Progress bars and notes on standard error, silent under `--quiet`. Results go to standard output.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

pub fn set_quiet(q: bool) {
    QUIET.store(q, Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A bar of `len` steps with a message, e.g. `bar(469, "epoch 1/10")`.
pub fn bar(len: u64, message: impl Into<String>) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(8));
    pb.set_style(
        ProgressStyle::with_template("{msg:>14} [{bar:32}] {pos}/{len} {per_sec} eta {eta} {prefix}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(message.into());
    pb
}

/// A bar counting bytes.
pub fn bytes_bar(len: Option<u64>, message: impl Into<String>) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr_with_hz(8));
    pb.set_style(
        ProgressStyle::with_template("{msg:>28} [{bar:32}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(message.into());
    pb
}

/// A line of information on standard error (hidden under `--quiet`).
pub fn note(msg: impl AsRef<str>) {
    if !quiet() {
        eprintln!("{}", msg.as_ref());
    }
}

/// A spinner with a message, for work without a known length.
pub fn spinner(message: impl Into<String>) -> ProgressBar {
    if quiet() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(8));
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
    pb.set_message(message.into());
    pb.enable_steady_tick(std::time::Duration::from_millis(120));
    pb
}
