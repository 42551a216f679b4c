//! nftables, the tool of the partition and cut-off drills: a drill loads its rules as a table and deletes the
//! table to heal.

use crate::gameday::error::Error;

/// Loads an nftables script (`nft -f -`, the script on stdin).
pub async fn load(script: &str) -> Result<(), Error> {
    nft(&["-f", "-"], script)
        .await
        .map(drop)
        .map_err(|e| Error::Nft(format!("{e} (script: {script:?})")))
}

/// The packets the `counter` rules of `table` (inet) have counted, summed.
pub async fn counted(table: &str) -> Result<u64, Error> {
    let listing = nft(&["list", "table", "inet", table], "").await.map_err(Error::Nft)?;
    Ok(packets(&listing))
}

/// Runs `nft ARGS` with `stdin`; its standard output, or why it failed.
async fn nft(args: &[&str], stdin: &str) -> Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new("nft")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
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
