//! Embeds the source revision as `APP_REVISION` for `app_build_info` and `/status`: the `APP_REVISION` variable of
//! the build environment if set (container builds have no `.git`), else `git rev-parse --short HEAD`, else
//! `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=APP_REVISION");
    let revision = std::env::var("APP_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_revision)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=APP_REVISION={}", revision.trim());
}

fn git_revision() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    // Rebuild when HEAD moves: HEAD itself changes on checkout, the branch's ref file on commit.
    let git_dir = Command::new("git").args(["rev-parse", "--git-dir"]).output().ok()?;
    let git_dir = String::from_utf8(git_dir.stdout).ok()?;
    let git_dir = Path::new(git_dir.trim());
    println!("cargo:rerun-if-changed={}", git_dir.join("HEAD").display());
    if let Ok(head) = std::fs::read_to_string(git_dir.join("HEAD")) {
        if let Some(reference) = head.strip_prefix("ref: ") {
            // Emitted only for files that exist: cargo treats a missing one as changed and would rebuild every time.
            for file in [git_dir.join(reference.trim()), git_dir.join("packed-refs")] {
                if file.exists() {
                    println!("cargo:rerun-if-changed={}", file.display());
                }
            }
        }
    }
    String::from_utf8(out.stdout).ok()
}
