//! The stack's declared facts, each in one file of the repository and parsed here for every tool that needs it
//! (opsctl's defaults, the game day's thresholds, the generator in `xtask`). The files are embedded at build time,
//! so a binary always carries the facts of the revision it was built from.
//!
//! One module per fact file; a new fact is a new module and one line below.

pub mod alertmanager;
pub mod slo;
pub mod topology;

use std::path::{Path, PathBuf};

/// The repository's root, for tools run from a checkout (`xtask`): the declared files live at fixed paths under it.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the crate lives in the repository")
}
