//! The one error type of `whitebox-core`: every fallible function returns [`Result`].

/// What went wrong, with enough context to act on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data file is malformed: wrong magic number, dimensions, record count or length.
    #[error("{file}: {problem}")]
    Data { file: String, problem: String },
    /// A checkpoint does not fit the architecture it is loaded into.
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    /// An argument is out of range or inconsistent with another one.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The GPU failed: no adapter, a device lost or out of memory, a kernel or read-back error.
    #[error("GPU: {0}")]
    Gpu(String),
    /// An error from the tensor library.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn data(file: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Data { file: file.into(), problem: problem.into() }
    }
}

/// Returns early with [`Error::InvalidArgument`].
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err($crate::Error::InvalidArgument(format!($($arg)*)))
    };
}
