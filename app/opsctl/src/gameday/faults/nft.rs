//! nftables, the partition drills' tool: each loads a table of its own and deletes it to heal.

use crate::gameday::error::Error;

/// Loads an nftables script (`nft -f -`, the script on stdin).
pub async fn load(script: &str) -> Result<(), Error> {
    use tokio::io::AsyncWriteExt;
    let failed = |e: std::io::Error| Error::Nft(e.to_string());
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).await.map_err(failed)?;
    }
    let output = child.wait_with_output().await.map_err(failed)?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Nft(format!(
            "{} (script: {script:?})",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}
