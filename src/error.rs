//! The crate's error type for everything above a single tensor operation.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown architecture `{name}`; known: {known}")]
    UnknownArch { name: String, known: String },
    #[error("invalid option for {arch}: {msg}")]
    InvalidOption { arch: String, msg: String },
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// A failure shared by several inputs (e.g. a forward pass over a batch).
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;
