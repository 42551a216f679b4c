//! The registry of generated files, and writing or checking them.
//!
//! A generator returns whole files. A file that is only partly generated (a table in README.md, a block of a YAML
//! file) is produced with [`replace_region`]: the lines between a line containing `BEGIN generated:NAME` and one
//! containing `END generated:NAME` are the generator's, the rest is hand-written and kept. The marker lines are
//! comments in the file's own syntax (`<!-- BEGIN generated:alerts -->`, `# BEGIN generated:scrape-jobs`).

use std::fmt;
use std::path::{Path, PathBuf};

/// One generated file: its path under the repository root and its whole contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub path: PathBuf,
    pub contents: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: no region `{name}` (a line containing `BEGIN generated:{name}`, then one containing `END generated:{name}`)")]
    NoRegion { path: PathBuf, name: String },
    #[error("{0}")]
    Source(String),
}

/// Every generator, in the order they run. Each reads its sources under `root`.
pub fn all(root: &Path) -> Result<Vec<Output>, Error> {
    let mut outputs = Vec::new();
    outputs.extend(crate::topology::generate(root)?);
    outputs.extend(crate::slo::generate(root)?);
    outputs.extend(crate::slo_dashboard::generate(root)?);
    outputs.extend(crate::slo_runbooks::generate(root)?);
    outputs.extend(crate::alert_tables::generate(root)?);
    outputs.extend(crate::kubernetes::generate(root)?);
    merge_same_paths(root, outputs)
}

/// Several generators may each fill regions of one file (README.md has the topology's, the SLOs' and the
/// alerts'), each starting from the file on disk: their outputs are combined into one, each region taken from the
/// output that changed it, so that no generator undoes another's edit.
fn merge_same_paths(root: &Path, outputs: Vec<Output>) -> Result<Vec<Output>, Error> {
    let mut merged: Vec<Output> = Vec::new();
    for output in outputs {
        let Some(first) = merged.iter_mut().find(|o| o.path == output.path) else {
            merged.push(output);
            continue;
        };
        let path = output.path.display().to_string();
        let on_disk = regions(&std::fs::read_to_string(root.join(&output.path)).unwrap_or_default());
        for (name, body) in regions(&output.contents) {
            // The regions this output changed from the file on disk are its generator's.
            if !on_disk.iter().any(|(n, b)| *n == name && *b == body) {
                first.contents = replace_region_in(&first.contents, &path, &name, &body)?;
            }
        }
    }
    Ok(merged)
}

/// Every generated region of `text`: (name, the lines between its markers).
fn regions(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in text.split_inclusive('\n') {
        match open.as_mut() {
            Some((name, body)) => {
                if line.contains(&format!("END generated:{name}")) {
                    out.push(open.take().unwrap());
                } else {
                    body.push_str(line);
                }
            }
            None => {
                if let Some(i) = line.find("BEGIN generated:") {
                    let name: String = line[i + "BEGIN generated:".len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                        .collect();
                    open = Some((name, String::new()));
                }
            }
        }
    }
    out
}

/// What `generate` did: files written (or, with `--check`, stale) and files already up to date.
#[derive(Debug, Default)]
pub struct Report {
    pub stale: Vec<PathBuf>,
    pub fresh: usize,
    pub checked: bool,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for path in &self.stale {
            if self.checked {
                writeln!(
                    f,
                    "stale: {} (run `make generate` and commit the result)",
                    path.display()
                )?;
            } else {
                writeln!(f, "wrote {}", path.display())?;
            }
        }
        writeln!(
            f,
            "{} generated file(s) up to date, {} {}",
            self.fresh,
            self.stale.len(),
            if self.checked { "stale" } else { "written" }
        )
    }
}

/// Generators read their sources from disk, and some sources are themselves generated (the alert tables read
/// alerts/slo.yml, which comes from monitoring/slos.yml): `generate` therefore runs them again until nothing
/// changes. `--check` needs one pass: any stale file fails it, and a chained one shows at the next `generate`.
pub fn run(root: &Path, check: bool) -> Result<Report, Error> {
    if check {
        return write_or_check(root, all(root)?, true);
    }
    let mut written: Vec<PathBuf> = Vec::new();
    for _ in 0..4 {
        let report = write_or_check(root, all(root)?, false)?;
        if report.stale.is_empty() {
            let fresh = report.fresh.saturating_sub(written.len());
            return Ok(Report {
                stale: written,
                fresh,
                checked: false,
            });
        }
        for path in report.stale {
            if !written.contains(&path) {
                written.push(path);
            }
        }
    }
    Err(Error::Source(
        "the generators do not settle: a generated file changes at every run".to_owned(),
    ))
}

fn write_or_check(root: &Path, outputs: Vec<Output>, check: bool) -> Result<Report, Error> {
    let mut report = Report {
        checked: check,
        ..Report::default()
    };
    for output in outputs {
        let path = root.join(&output.path);
        let current = match std::fs::read_to_string(&path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(Error::Io { path, source }),
        };
        if current.as_deref() == Some(output.contents.as_str()) {
            report.fresh += 1;
            continue;
        }
        if !check {
            std::fs::write(&path, &output.contents).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
        report.stale.push(output.path);
    }
    Ok(report)
}

/// Reads `path` (relative to `root`) and replaces the generated region `name` with `body`: every line between the
/// BEGIN and END marker lines, markers kept.
pub fn replace_region(root: &Path, path: &str, name: &str, body: &str) -> Result<Output, Error> {
    let full = root.join(path);
    let text = std::fs::read_to_string(&full).map_err(|source| Error::Io {
        path: full.clone(),
        source,
    })?;
    Ok(Output {
        path: PathBuf::from(path),
        contents: replace_region_in(&text, path, name, body)?,
    })
}

/// [`replace_region`] on a file's text already in hand (`path` only names it in errors): for a file with several
/// generated regions, each replaced in the previous one's result.
pub fn replace_region_in(text: &str, path: &str, name: &str, body: &str) -> Result<String, Error> {
    let begin = format!("BEGIN generated:{name}");
    let end = format!("END generated:{name}");
    let no_region = || Error::NoRegion {
        path: PathBuf::from(path),
        name: name.to_owned(),
    };
    let start = text.find(&begin).ok_or_else(no_region)?;
    let body_start = start + text[start..].find('\n').ok_or_else(no_region)? + 1;
    let end_at = body_start + text[body_start..].find(&end).ok_or_else(no_region)?;
    // The END marker's whole line is kept: back up to its start.
    let body_end = text[..end_at].rfind('\n').map_or(0, |i| i + 1).max(body_start);
    let mut contents = String::with_capacity(text.len() + body.len());
    contents.push_str(&text[..body_start]);
    contents.push_str(body);
    if !body.is_empty() && !body.ends_with('\n') {
        contents.push('\n');
    }
    contents.push_str(&text[body_end..]);
    Ok(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_generators_filling_regions_of_one_file_are_merged() {
        let disk = "a\n<!-- BEGIN generated:x -->\nold x\n<!-- END generated:x -->\n\
                    <!-- BEGIN generated:y -->\nold y\n<!-- END generated:y -->\n";
        let one = replace_region_in(disk, "f", "x", "new x").unwrap();
        let two = replace_region_in(disk, "f", "y", "new y").unwrap();
        let dir = std::env::temp_dir().join(format!("xtask-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), disk).unwrap();
        let merged = merge_same_paths(
            &dir,
            vec![
                Output {
                    path: "f".into(),
                    contents: one,
                },
                Output {
                    path: "f".into(),
                    contents: two,
                },
            ],
        )
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(merged.len(), 1);
        assert_eq!(
            regions(&merged[0].contents),
            [
                ("x".to_string(), "new x\n".to_string()),
                ("y".to_string(), "new y\n".to_string())
            ]
        );
    }

    #[test]
    fn a_region_is_replaced_and_the_rest_kept() {
        let dir = std::env::temp_dir().join(format!("xtask-region-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("doc.md"),
            "intro\n<!-- BEGIN generated:t -->\nold\n<!-- END generated:t -->\nend\n",
        )
        .unwrap();
        let out = replace_region(&dir, "doc.md", "t", "new 1\nnew 2").unwrap();
        assert_eq!(
            out.contents,
            "intro\n<!-- BEGIN generated:t -->\nnew 1\nnew 2\n<!-- END generated:t -->\nend\n"
        );
        assert!(matches!(
            replace_region(&dir, "doc.md", "other", ""),
            Err(Error::NoRegion { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn check_reports_a_stale_file_and_writes_nothing_and_generate_writes_it() {
        let dir = std::env::temp_dir().join(format!("xtask-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stale"), "old").unwrap();
        std::fs::write(dir.join("fresh"), "same").unwrap();
        let outputs = || {
            vec![
                Output {
                    path: "stale".into(),
                    contents: "new".into(),
                },
                Output {
                    path: "fresh".into(),
                    contents: "same".into(),
                },
            ]
        };
        let report = write_or_check(&dir, outputs(), true).unwrap();
        assert_eq!((report.stale, report.fresh), (vec![PathBuf::from("stale")], 1));
        assert_eq!(std::fs::read_to_string(dir.join("stale")).unwrap(), "old");
        write_or_check(&dir, outputs(), false).unwrap();
        assert_eq!(std::fs::read_to_string(dir.join("stale")).unwrap(), "new");
        assert!(write_or_check(&dir, outputs(), true).unwrap().stale.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
