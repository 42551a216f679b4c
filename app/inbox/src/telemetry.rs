//! Logging: plain text or JSON lines (`INBOX_LOG_FORMAT=json`) on stdout, filtered by `INBOX_LOG_LEVEL`
//! (tracing directives, default `info`).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once per process; fails on a filter that does not parse.
pub fn init(json: bool, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| {
        format!("INBOX_LOG_LEVEL={level:?} is invalid: expected tracing directives such as info or inbox=debug ({e})")
    })?;
    // Colours only for a terminal: under the supervisor or in a container the log is a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}
