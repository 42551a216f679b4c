//! The Kubernetes manifests that restate a file of the stack, generated from it so that they cannot drift:
//!
//! - `kubernetes/monitoring/prometheus-rules.yaml`: one `PrometheusRule` per rule file of `alerts/`, its `spec`
//!   the file itself (comments and all), indented; the Prometheus Operator loads the same groups Prometheus does.
//! - `kubernetes/chart-config/alertmanager.yaml`: `monitoring/alertmanager/alertmanager.yml` with the two things
//!   that differ in a cluster: the inbox is a Service of the app's namespace (not 127.0.0.1), and the webhook token
//!   is the Secret the chart mounts under `/etc/alertmanager/secrets/`.
//!
//! - the file lists of `dashboards/kustomization.yaml` and `runbooks/kustomization.yaml` (regions `dashboards`,
//!   `runbooks`), which make their ConfigMaps from the files themselves: kustomize takes no globs.

use std::path::Path;

use serde_yaml_ng::Value;

use crate::generated::{replace_region, Error, Output};

pub const RULES: &str = "kubernetes/monitoring/prometheus-rules.yaml";
pub const ALERTMANAGER: &str = "kubernetes/chart-config/alertmanager.yaml";
/// Its `namespace` is the app's and the inbox's: the webhook URLs name it.
pub const BASE_KUSTOMIZATION: &str = "kubernetes/base/kustomization.yaml";
const ALERTS_DIR: &str = "alerts";
const ALERTMANAGER_SOURCE: &str = "monitoring/alertmanager/alertmanager.yml";
/// Its `global.evaluation_interval` is every rule group's on Kubernetes too (the chart's default is 30 s): the
/// rules' `for` and the game day's bounds were chosen for it.
const PROMETHEUS_YML: &str = "monitoring/prometheus/prometheus.yml";
const DASHBOARDS: &str = "dashboards/kustomization.yaml";
const RUNBOOKS: &str = "runbooks/kustomization.yaml";

/// Where the inbox listens in the native stack and compose (the webhook URLs of alertmanager.yml)...
const NATIVE_INBOX: &str = "http://127.0.0.1:";
/// ...and the token file, relative to Alertmanager's configuration there.
const NATIVE_TOKEN_FILE: &str = "credentials_file: secrets/webhook.token";
/// The Secret holding the inbox's token (key `token`), in both namespaces: the inbox reads it, and the chart mounts
/// it into Alertmanager at /etc/alertmanager/secrets/<name>/ because the chart's values list it
/// (kubernetes/chart-config/kube-prometheus-stack.values.yaml, `alertmanager.alertmanagerSpec.secrets`).
pub const TOKEN_SECRET: &str = "inbox-webhook-token";
/// The inbox's Service, in the app's namespace (kubernetes/base).
pub const INBOX_SERVICE: &str = "inbox";
/// Where the commented integrations of alertmanager.yml read their secrets natively and in compose (one file
/// each)...
const NATIVE_SECRETS_DIR: &str = "/etc/alertmanager/secrets/";
/// ...and the Secret whose keys are those files on Kubernetes: the chart mounts each listed Secret in a folder of
/// its own.
pub const INTEGRATIONS_SECRET: &str = "alertmanager-integrations";

pub fn generate(root: &Path) -> Result<Vec<Output>, Error> {
    let mut files = Vec::new();
    for name in file_names(root, ALERTS_DIR, ".yml")? {
        let text = read(&root.join(ALERTS_DIR).join(&name))?;
        files.push((name, text));
    }
    let namespace = namespace(&read(&root.join(BASE_KUSTOMIZATION))?)?;
    let interval = evaluation_interval(&read(&root.join(PROMETHEUS_YML))?)?;
    let dashboards = file_names(root, "dashboards", ".json")?;
    let runbooks = file_names(root, "runbooks", ".md")?;
    Ok(vec![
        Output {
            path: RULES.into(),
            contents: prometheus_rules(&files, &interval)?,
        },
        Output {
            path: ALERTMANAGER.into(),
            contents: alertmanager(&read(&root.join(ALERTMANAGER_SOURCE))?, &namespace)?,
        },
        replace_region(root, DASHBOARDS, "dashboards", &dashboard_generators(&dashboards))?,
        replace_region(root, RUNBOOKS, "runbooks", &list(&runbooks, "      "))?,
    ])
}

/// The names of the files of `dir` that end in `suffix`, sorted.
fn file_names(root: &Path, dir: &str, suffix: &str) -> Result<Vec<String>, Error> {
    let full = root.join(dir);
    let io = |source| Error::Io {
        path: full.clone(),
        source,
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&full).map_err(io)? {
        let name = entry.map_err(io)?.file_name().to_string_lossy().into_owned();
        if name.ends_with(suffix) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// One ConfigMap per dashboard, named after its file.
fn dashboard_generators(files: &[String]) -> String {
    files
        .iter()
        .map(|f| {
            format!(
                "  - name: dashboard-{}\n    files:\n      - {f}\n",
                f.trim_end_matches(".json")
            )
        })
        .collect()
}

fn list(items: &[String], indent: &str) -> String {
    items.iter().map(|i| format!("{indent}- {i}\n")).collect()
}

fn evaluation_interval(prometheus_yml: &str) -> Result<String, Error> {
    let doc: Value =
        serde_yaml_ng::from_str(prometheus_yml).map_err(|e| Error::Source(format!("{PROMETHEUS_YML}: {e}")))?;
    doc["global"]["evaluation_interval"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| Error::Source(format!("{PROMETHEUS_YML}: no global.evaluation_interval")))
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The `namespace` of the base kustomization.
fn namespace(kustomization: &str) -> Result<String, Error> {
    let doc: Value =
        serde_yaml_ng::from_str(kustomization).map_err(|e| Error::Source(format!("{BASE_KUSTOMIZATION}: {e}")))?;
    doc.get("namespace")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Source(format!("{BASE_KUSTOMIZATION}: no `namespace`")))
}

/// One PrometheusRule document per rule file (`(file name, text)`, in order). A rule file is a mapping with the
/// one key `groups`, which is what a PrometheusRule's `spec` is: the file is its spec, indented, comments kept, and
/// every group without an `interval` of its own gets `interval` (the native stack's evaluation interval).
fn prometheus_rules(files: &[(String, String)], interval: &str) -> Result<String, Error> {
    let mut out = String::from(
        "# GENERATED by `make generate` from alerts/*.yml: edit those files, not this one.\n\
         # One PrometheusRule per rule file, its spec the file itself. The `release` label the chart selects on is\n\
         # added by kubernetes/components/release-label.\n",
    );
    for (name, text) in files {
        let stem = name.trim_end_matches(".yml");
        let parsed: Value =
            serde_yaml_ng::from_str(text).map_err(|e| Error::Source(format!("{ALERTS_DIR}/{name}: {e}")))?;
        let keys: Vec<&str> = parsed
            .as_mapping()
            .map(|m| m.keys().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if keys != ["groups"] {
            return Err(Error::Source(format!(
                "{ALERTS_DIR}/{name}: a rule file has the one key `groups` (found {keys:?})"
            )));
        }
        out.push_str(&format!(
            "---\n# From {ALERTS_DIR}/{name}.\napiVersion: monitoring.coreos.com/v1\nkind: PrometheusRule\n\
             metadata:\n  name: sre-stack-{stem}\nspec:\n"
        ));
        let spec = with_group_intervals(text, interval);
        let expected = expected_spec(&parsed, interval);
        let written: Value = serde_yaml_ng::from_str(&spec).map_err(|e| Error::Source(format!("{name}: {e}")))?;
        if written != expected {
            return Err(Error::Source(format!(
                "{ALERTS_DIR}/{name}: a group's `- name:` is not at two spaces under `groups:`, so no `interval` \
                 could be added to it (keep the layout of the other rule files)"
            )));
        }
        for line in spec.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str("  ");
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// The rule file's text with `interval: <interval>` after the `- name:` line of every group that has none. Groups
/// are the items at two spaces under `groups:`, as every file of alerts/ writes them; the caller checks the result
/// parses to [`expected_spec`].
fn with_group_intervals(text: &str, interval: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("  - name:") {
            let group_end = lines[i + 1..]
                .iter()
                .position(|l| l.starts_with("  - ") || (!l.is_empty() && !l.starts_with(' ') && !l.starts_with('#')))
                .map_or(lines.len(), |p| i + 1 + p);
            if !lines[i + 1..group_end].iter().any(|l| l.starts_with("    interval:")) {
                out.push_str(&format!("    interval: {interval}\n"));
            }
        }
    }
    out
}

/// The rule file's parsed contents, with `interval` set on every group without one.
fn expected_spec(parsed: &Value, interval: &str) -> Value {
    let mut spec = parsed.clone();
    if let Some(groups) = spec.get_mut("groups").and_then(Value::as_sequence_mut) {
        for group in groups {
            if let Some(g) = group.as_mapping_mut() {
                if !g.contains_key("interval") {
                    g.insert("interval".into(), interval.into());
                }
            }
        }
    }
    spec
}

/// alertmanager.yml for the chart's Alertmanager: the inbox by its Service's name, the token from the mounted
/// Secret. Fails if the source no longer has what is rewritten, so that a change there cannot leave a webhook
/// pointing at 127.0.0.1 in a cluster.
fn alertmanager(source: &str, namespace: &str) -> Result<String, Error> {
    let err = |what: &str| Error::Source(format!("{ALERTMANAGER_SOURCE}: {what}"));
    if !source.contains(NATIVE_INBOX) {
        return Err(err(&format!("no webhook to {NATIVE_INBOX}… (the inbox)")));
    }
    if !source.contains(NATIVE_TOKEN_FILE) {
        return Err(err(&format!("no `{NATIVE_TOKEN_FILE}` (the inbox's token)")));
    }
    let body = source
        .replace(
            NATIVE_SECRETS_DIR,
            &format!("{NATIVE_SECRETS_DIR}{INTEGRATIONS_SECRET}/"),
        )
        .replace(NATIVE_INBOX, &format!("http://{INBOX_SERVICE}.{namespace}.svc:"))
        .replace(
            NATIVE_TOKEN_FILE,
            &format!("credentials_file: /etc/alertmanager/secrets/{TOKEN_SECRET}/token"),
        );
    // The native stack's words about where the inbox and its token are do not hold here: say what does.
    let header = format!(
        "# GENERATED by `make generate` from {ALERTMANAGER_SOURCE}: edit that file, not this one.\n\
         # For kube-prometheus-stack (kubernetes/chart-config): the webhooks reach the inbox's Service in namespace\n\
         # {namespace}, and the token is the Secret {TOKEN_SECRET} (key `token`) that the chart mounts at\n\
         # /etc/alertmanager/secrets/{TOKEN_SECRET}/. The commented integrations below read theirs from the\n\
         # Secret {INTEGRATIONS_SECRET}, one key per file they name: create it and add it to the chart's\n\
         # alertmanager.alertmanagerSpec.secrets before uncommenting one.\n\n"
    );
    let out = header + &body;
    let parsed: Value = serde_yaml_ng::from_str(&out).map_err(|e| err(&e.to_string()))?;
    if parsed.get("receivers").is_none() {
        return Err(err("no `receivers`"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    const RULE_FILE: &str = "# About these rules.\ngroups:\n  - name: g\n    rules:\n      - alert: A\n        \
                             expr: |\n          up == 0\n\n        for: 1m\n";

    #[test]
    fn each_rule_file_becomes_a_prometheus_rule_whose_spec_is_its_groups() {
        let out = prometheus_rules(
            &[("a.yml".into(), RULE_FILE.into()), ("b.yml".into(), RULE_FILE.into())],
            "5s",
        )
        .unwrap();
        let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&out)
            .map(|d| Value::deserialize(d).unwrap())
            .filter(|d| !d.is_null())
            .collect();
        assert_eq!(docs.len(), 2);
        let mut source: Value = serde_yaml_ng::from_str(RULE_FILE).unwrap();
        source["groups"][0]
            .as_mapping_mut()
            .unwrap()
            .insert("interval".into(), "5s".into());
        for (doc, stem) in docs.iter().zip(["a", "b"]) {
            assert_eq!(doc["kind"], Value::from("PrometheusRule"));
            assert_eq!(doc["metadata"]["name"], Value::from(format!("sre-stack-{stem}")));
            assert_eq!(
                doc["spec"], source,
                "the spec is the rule file plus the interval, block scalars included"
            );
        }
        assert!(out.contains("  # About these rules."), "comments are kept");
    }

    #[test]
    fn a_rule_file_with_more_than_groups_is_refused() {
        let e = prometheus_rules(&[("a.yml".into(), format!("{RULE_FILE}extra: 1\n"))], "5s").unwrap_err();
        assert!(e.to_string().contains("one key `groups`"), "{e}");
    }

    #[test]
    fn a_group_keeps_its_own_interval_and_the_others_get_the_native_one() {
        let text = "groups:\n  - name: a\n    interval: 1m\n    rules: []\n  - name: b\n    rules: []\n";
        let spec: Value = serde_yaml_ng::from_str(&with_group_intervals(text, "5s")).unwrap();
        assert_eq!(spec["groups"][0]["interval"], Value::from("1m"));
        assert_eq!(spec["groups"][1]["interval"], Value::from("5s"));
    }

    #[test]
    fn a_group_written_at_another_indentation_is_refused_not_left_without_interval() {
        let text = "groups:\n- name: a\n  rules: []\n";
        let e = prometheus_rules(&[("a.yml".into(), text.into())], "5s").unwrap_err();
        assert!(e.to_string().contains("two spaces"), "{e}");
    }

    #[test]
    fn each_dashboard_is_a_config_map_named_after_its_file() {
        assert_eq!(
            dashboard_generators(&["a.json".into()]),
            "  - name: dashboard-a\n    files:\n      - a.json\n"
        );
    }

    const ROUTING: &str = "route:\n  receiver: pager\nreceivers:\n  - name: pager\n    webhook_configs:\n      \
                           - url: http://127.0.0.1:8082/hook/pager\n        http_config:\n          authorization:\n            \
                           credentials_file: secrets/webhook.token\n";

    #[test]
    fn the_alertmanager_config_reaches_the_inbox_service_with_the_mounted_token() {
        let out = alertmanager(ROUTING, "sre").unwrap();
        let doc: Value = serde_yaml_ng::from_str(&out).unwrap();
        let webhook = &doc["receivers"][0]["webhook_configs"][0];
        assert_eq!(webhook["url"], Value::from("http://inbox.sre.svc:8082/hook/pager"));
        assert_eq!(
            webhook["http_config"]["authorization"]["credentials_file"],
            Value::from("/etc/alertmanager/secrets/inbox-webhook-token/token")
        );
        assert!(!out.contains("127.0.0.1"));
    }

    #[test]
    fn the_integrations_read_their_secrets_from_one_mounted_secret() {
        let source = format!(
            "{ROUTING}    # pagerduty_configs:\n    #   - routing_key_file: /etc/alertmanager/secrets/pd-key\n"
        );
        let out = alertmanager(&source, "sre").unwrap();
        assert!(out.contains("routing_key_file: /etc/alertmanager/secrets/alertmanager-integrations/pd-key\n"));
        assert!(
            out.contains("/etc/alertmanager/secrets/inbox-webhook-token/token\n"),
            "the token is not moved"
        );
    }

    #[test]
    fn a_source_without_what_is_rewritten_is_refused() {
        let moved = ROUTING.replace("127.0.0.1", "inbox");
        assert!(alertmanager(&moved, "sre")
            .unwrap_err()
            .to_string()
            .contains("no webhook"));
        let token = ROUTING.replace("secrets/webhook.token", "/run/token");
        assert!(alertmanager(&token, "sre").unwrap_err().to_string().contains("token"));
    }

    #[test]
    fn the_namespace_is_the_base_kustomization_s() {
        assert_eq!(namespace("resources: []\nnamespace: sre-stack\n").unwrap(), "sre-stack");
        assert!(namespace("resources: []\n").is_err());
    }
}
