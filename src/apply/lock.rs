//! One apply at a time per network namespace: two applies racing on one table could each
//! undo the other's half-done work. The lock is an flock on a file named after the
//! namespace's inode under /run/machnet, so it also holds between different route sets
//! and between a machine's name and its `netns:` name.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use rustix::fs::{flock, FlockOperation};

use crate::error::{Error, Result};

/// Where the lock files live (the NixOS module gives its units this RuntimeDirectory).
const LOCK_DIR: &str = "/run/machnet";

/// Held until dropped (closing the file releases the flock).
pub struct ApplyLock {
    _file: File,
}

/// Takes the apply lock for the namespace with `inode`, waiting for another apply to
/// finish if one holds it.
pub fn lock_namespace(inode: u64) -> Result<ApplyLock> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(LOCK_DIR)
        .map_err(|e| Error::io(format!("creating {LOCK_DIR}"), e))?;
    let path = PathBuf::from(LOCK_DIR).join(format!("apply-netns-{inode}.lock"));
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| Error::io(format!("opening the apply lock {}", path.display()), e))?;
    flock(&file, FlockOperation::LockExclusive).map_err(|e| {
        Error::io(
            format!("locking {}", path.display()),
            std::io::Error::from(e),
        )
    })?;
    Ok(ApplyLock { _file: file })
}
