//! What node collectors read: where the host's pseudo-filesystems are, and reading and
//! parsing errors that name the file.
use std::path::{Path, PathBuf};

use crate::metrics::CollectError;

/// Where the host's pseudo-filesystems are visible (`/proc`, or `/host/proc` in a pod).
#[derive(Debug, Clone)]
pub struct HostPaths {
    pub procfs: PathBuf,
    pub rootfs: PathBuf,
}

pub fn read_to_string(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|source| CollectError::Read {
        path: path.to_owned(),
        source,
    })
}

pub fn parse_error(path: &Path, detail: impl Into<String>) -> CollectError {
    CollectError::Parse {
        path: path.to_owned(),
        detail: detail.into(),
    }
}
