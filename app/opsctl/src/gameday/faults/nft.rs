//! nftables, the tool of the partition and cut-off drills: a drill loads its rules as a table and deletes the
//! table to heal.

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

/// The packets the `counter` rules of `table` (inet) have counted, summed.
pub async fn counted(table: &str) -> Result<u64, Error> {
    let output = tokio::process::Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .await
        .map_err(|e| Error::Nft(e.to_string()))?;
    if !output.status.success() {
        return Err(Error::Nft(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
    }
    Ok(packets(&String::from_utf8_lossy(&output.stdout)))
}

/// The sum of every `counter packets N` in `nft list` output.
fn packets(listing: &str) -> u64 {
    listing
        .split("counter packets ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_counters_of_a_listing_are_summed() {
        let listing =
            "table inet t {\n  chain output {\n    ip daddr 127.0.4.1 counter packets 12 bytes 720 drop\n    \
                       ip saddr 127.0.4.1 counter packets 3 bytes 180 drop\n  }\n}\n";
        assert_eq!(super::packets(listing), 15);
        assert_eq!(super::packets("table inet t {\n}\n"), 0);
    }
}
