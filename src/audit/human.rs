//! Audit events as short lines for a person watching a terminal (the demo): the time, the code,
//! then only the fields that have a value. Production keeps the JSON lines and journald fields
//! of [`super::init`], whose every field is always present for machines.

use std::fmt;
use std::io::Write;

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

use super::TARGET;

/// Installs the global subscriber with human lines on stderr (see [`super::init`] for the filter).
pub fn init_human() {
    let _ = tracing_subscriber::registry()
        .with(super::filter())
        .with(HumanLines)
        .try_init();
}

struct HumanLines;

impl<S: tracing::Subscriber> Layer<S> for HumanLines {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let time = jiff::Zoned::now().strftime("%H:%M:%S").to_string();
        let meta = event.metadata();
        let line = if meta.target() == TARGET {
            audit_line(&time, &fields)
        } else {
            let message = fields.get("message").unwrap_or_default();
            format!("{time} {} {}: {message}", meta.level(), meta.target())
        };
        // Nowhere to report a failed write to stderr.
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

#[derive(Default)]
struct Fields(Vec<(&'static str, String)>);

impl Fields {
    /// The field's value, `None` when absent or empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name(), value.to_owned()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name(), format!("{value:?}")));
    }
}

/// `16:02:11 AUTH_OK alice from 127.0.0.1:40022 key SHA256:… counter=2 flags=up,uv`, with the
/// reason last.
fn audit_line(time: &str, f: &Fields) -> String {
    let mut line = format!("{time} {}", f.get("code").unwrap_or("?"));
    let mut add = |label: &str, value: Option<&str>| {
        if let Some(v) = value {
            line.push(' ');
            line.push_str(label);
            line.push_str(v);
        }
    };
    add("", f.get("admin"));
    add("from ", f.get("source"));
    add("key ", f.get("fingerprint"));
    match (f.get("account"), f.get("target_host")) {
        (Some(account), Some(host)) => add("to ", Some(&format!("{account}@{host}"))),
        (None, host) => add("to ", host),
        (account, None) => add("account ", account),
    }
    add("session ", f.get("session"));
    let detail: serde_json::Map<String, serde_json::Value> = f
        .get("detail")
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    for (key, value) in &detail {
        // The signed note and the content hashes are for `audit verify` and a SIEM, not for
        // reading.
        if ["note", "sha256_in", "sha256_out", "sha256_err"].contains(&key.as_str()) {
            continue;
        }
        if let Some(v) = shown(value) {
            add("", Some(&format!("{key}={v}")));
        }
    }
    add("— ", f.get("reason"));
    line
}

/// A detail value as text; `None` for an empty one.
fn shown(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) if s.contains(char::is_whitespace) => Some(value.to_string()),
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) if a.is_empty() => None,
        serde_json::Value::Object(o) if o.is_empty() => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&'static str, &str)]) -> Fields {
        Fields(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect())
    }

    #[test]
    fn empty_fields_are_left_out_and_the_reason_comes_last() {
        let f = fields(&[
            ("code", "AUTH_OK"),
            ("admin", "alice"),
            ("source", ""),
            ("fingerprint", "SHA256:abc"),
            ("target_host", ""),
            ("account", ""),
            ("session", ""),
            ("reason", ""),
            (
                "detail",
                r#"{"flags":"up,uv","counter":2,"key_comment":"","pty":false,"x":null}"#,
            ),
        ]);
        assert_eq!(
            audit_line("16:02:11", &f),
            "16:02:11 AUTH_OK alice key SHA256:abc counter=2 flags=up,uv pty=false"
        );
        let f = fields(&[
            ("code", "TARGET_DENIED"),
            ("admin", "alice"),
            ("target_host", "demo"),
            ("account", "root"),
            ("reason", "no_grant"),
            ("detail", r#"{"command":"echo hi","note":"signed\nnote"}"#),
        ]);
        assert_eq!(
            audit_line("09:00:00", &f),
            "09:00:00 TARGET_DENIED alice to root@demo command=\"echo hi\" — no_grant"
        );
    }
}
