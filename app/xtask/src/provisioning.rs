//! Grafana's provisioning (monitoring/grafana/provisioning/) fits the dashboards and compose: one Prometheus
//! data source with uid `prometheus` (what the dashboards' datasource variable resolves to and the alerts' links
//! assume), the default one, with a url, not editable; and a read-only file provider (`allowUiUpdates: false`,
//! `disableDeletion: true`) whose path is where compose bind-mounts the repository's dashboards/.

use std::path::Path;

use serde_yaml_ng::Value;

use crate::finding::Findings;
use crate::repo::{Repo, COMPOSE, PROVISIONING};

fn items<'a>(doc: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    doc.get(key).and_then(Value::as_sequence).into_iter().flatten()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Where compose mounts `../dashboards` into the grafana service (long or short volume syntax).
pub fn compose_dashboards_mount(compose: &Value) -> Option<String> {
    let volumes = compose.get("services")?.get("grafana")?.get("volumes")?.as_sequence()?;
    volumes.iter().find_map(|v| {
        let (source, target) = match v {
            Value::String(short) => {
                let mut parts = short.split(':');
                (parts.next()?.to_owned(), parts.next()?.to_owned())
            }
            long => (s(long, "source")?.to_owned(), s(long, "target")?.to_owned()),
        };
        (source.trim_end_matches('/').ends_with("dashboards") && !source.contains("provisioning")).then_some(target)
    })
}

fn normal(path: &str) -> &str {
    path.trim_end_matches('/')
}

pub fn check(repo: &Repo) -> Findings {
    let mut out = Findings::default();
    for (folder, files) in [("datasources", &repo.datasources), ("dashboards", &repo.providers)] {
        if files.is_empty() {
            out.add(format!("{PROVISIONING}/{folder}/"), "no provisioning file");
        }
    }
    let prom: Vec<_> = repo
        .datasources
        .iter()
        .flat_map(|f| items(&f.value, "datasources").map(move |d| (f.path.as_str(), d)))
        .filter(|(_, d)| s(d, "uid") == Some("prometheus"))
        .collect();
    if prom.len() != 1 {
        out.add(
            format!("{PROVISIONING}/datasources/"),
            format!(
                "expected exactly one data source with uid `prometheus`, found {}",
                prom.len()
            ),
        );
    }
    for (path, ds) in prom {
        if s(ds, "type") != Some("prometheus") {
            out.add(path, format!("data source `prometheus` has type {:?}", s(ds, "type")));
        }
        if s(ds, "url").is_none_or(str::is_empty) {
            out.add(path, "data source `prometheus` has no url");
        }
        if ds.get("isDefault").and_then(Value::as_bool) != Some(true) {
            out.add(path, "data source `prometheus` should be the default one");
        }
        if ds.get("editable").and_then(Value::as_bool) != Some(false) {
            out.add(path, "data source `prometheus` should not be editable in the UI");
        }
    }
    let files: Vec<_> = repo
        .providers
        .iter()
        .flat_map(|f| items(&f.value, "providers").map(move |p| (f.path.as_str(), p)))
        .filter(|(_, p)| s(p, "type").unwrap_or("file") == "file")
        .collect();
    if files.is_empty() {
        out.add(format!("{PROVISIONING}/dashboards/"), "no file dashboard provider");
    }
    let mount = repo.compose.as_ref().and_then(|c| compose_dashboards_mount(&c.value));
    for (path, p) in files {
        let name = s(p, "name").unwrap_or("?");
        if p.get("allowUiUpdates").and_then(Value::as_bool) != Some(false)
            || p.get("disableDeletion").and_then(Value::as_bool) != Some(true)
        {
            out.add(
                path,
                format!("provider {name:?} must be read-only (allowUiUpdates: false, disableDeletion: true)"),
            );
        }
        let at = p.get("options").and_then(|o| s(o, "path")).unwrap_or("");
        match &mount {
            None => out.add(COMPOSE, "no bind mount of dashboards/ in the grafana service"),
            Some(m) if Path::new(normal(at)) != Path::new(normal(m)) => out.add(
                path,
                format!("provider path {at:?} is not where compose mounts dashboards/ ({m:?})"),
            ),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::real;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn the_real_provisioning_passes() {
        let found = check(&real());
        assert!(found.0.is_empty(), "{:#?}", found.0);
    }

    #[test]
    fn a_datasource_that_is_not_the_editable_default_prometheus_is_caught() {
        let mut repo = real();
        repo.datasources[0].value =
            yaml("datasources: [{uid: prometheus, type: loki, isDefault: false, editable: true}]");
        let found = check(&repo);
        for text in [
            "has type Some(\"loki\")",
            "has no url",
            "should be the default",
            "should not be editable",
        ] {
            assert!(found.mention(text), "{text}: {:#?}", found.0);
        }
        repo.datasources[0].value = yaml("datasources: [{uid: prom}]");
        assert!(check(&repo).mention("exactly one data source with uid `prometheus`, found 0"));
    }

    #[test]
    fn a_writable_provider_or_one_reading_elsewhere_is_caught() {
        let mut repo = real();
        repo.providers[0].value =
            yaml("providers: [{name: p, type: file, allowUiUpdates: true, options: {path: /tmp/d}}]");
        let found = check(&repo);
        assert!(found.mention("must be read-only"));
        assert!(found.mention("is not where compose mounts dashboards/"));
        repo.compose.as_mut().unwrap().value = yaml("services: {grafana: {volumes: ['../other:/x']}}");
        assert!(check(&repo).mention("no bind mount of dashboards/"));
    }

    #[test]
    fn the_short_volume_syntax_is_understood() {
        let compose = yaml("services: {grafana: {volumes: ['../dashboards:/var/lib/grafana/dashboards:ro']}}");
        assert_eq!(
            compose_dashboards_mount(&compose).as_deref(),
            Some("/var/lib/grafana/dashboards")
        );
    }

    #[test]
    fn missing_provisioning_files_and_no_file_provider_are_caught() {
        let mut repo = real();
        repo.datasources.clear();
        repo.providers[0].value = yaml("providers: [{name: p, type: other}]");
        let found = check(&repo);
        assert!(found.mention("datasources/: no provisioning file"));
        assert!(found.mention("no file dashboard provider"));
    }
}
