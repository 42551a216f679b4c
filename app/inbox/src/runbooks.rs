//! `GET /runbooks/{name}.md`: serves the repository's runbooks so the `runbook_url` of every alert resolves in
//! the running stack.

use std::path::Path;

use axum::extract::{Path as UrlPath, State};
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::routes::SharedState;

/// The `Content-Type` runbooks are served with.
pub const CONTENT_TYPE: &str = "text/markdown; charset=utf-8";

/// Serves `<runbooks_dir>/<file>` when `file` is a plain `Name.md`.
pub async fn get(
    State(state): State<SharedState>,
    UrlPath(file): UrlPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    if !is_runbook_name(&file) {
        // Covers `..`, percent-encoded slashes (the extractor decodes them), hidden files and other extensions.
        return Err(ApiError::NotFound(format!("no runbook named {file:?}")));
    }
    let body = read(&state.runbooks_dir, &file).await?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}

async fn read(dir: &Path, file: &str) -> Result<String, ApiError> {
    // Blocking file I/O belongs on the blocking pool; this avoids pulling in tokio's `fs` feature for one call.
    let path = dir.join(file);
    let read = tokio::task::spawn_blocking(move || std::fs::read_to_string(path))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    match read {
        Ok(body) => Ok(body),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory
            ) =>
        {
            Err(ApiError::NotFound(format!("no runbook named {file:?}")))
        }
        Err(e) => Err(ApiError::Internal(Box::new(e))),
    }
}

/// A runbook file name: letters, digits, `-` and `_`, then `.md`. Anything else could leave the folder.
pub fn is_runbook_name(file: &str) -> bool {
    file.strip_suffix(".md").is_some_and(|stem| {
        !stem.is_empty()
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::is_runbook_name;

    #[test]
    fn only_plain_markdown_names_are_runbooks() {
        for good in ["RedisDown.md", "README.md", "app-slo_burn.md"] {
            assert!(is_runbook_name(good), "{good}");
        }
        for bad in [
            "../secret.md",
            "..md",
            ".md",
            "a/b.md",
            "RedisDown",
            "RedisDown.md.bak",
            "x.MD",
            "..%2Fx.md",
            ".hidden.md",
            "a b.md",
        ] {
            assert!(!is_runbook_name(bad), "{bad}");
        }
    }
}
