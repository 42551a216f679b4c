#!/usr/bin/env bash
# Runs the project's own tool (app/xtask: generate, lint, live) from the debug build of the whole workspace.
# Every script builds the same selection (the workspace, its tests included), so cargo resolves each dependency's
# features once and compiles it once; `cargo run -p xtask` would resolve xtask's features alone and compile the
# shared crates (hyper, reqwest, serde's derive, ...) a second time, minutes on a 2-core machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cargo build --quiet --manifest-path "$root/Cargo.toml" --workspace --bins --tests
exec "${CARGO_TARGET_DIR:-$root/target}/debug/xtask" "$@"
