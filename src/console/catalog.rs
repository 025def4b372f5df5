//! The recorded sessions as the console shows them: metadata, live or not, integrity verdict;
//! filters and full-text search over recorded output; markers for the player.

use std::collections::BTreeSet;
use std::io::Write as _;

use jiff::Timestamp;
use serde::Deserialize;

use crate::app::Bastion;
use crate::audit::{ChainReport, Kind, read_lines, verify_chain};
use crate::ids::SessionId;
use crate::recording::typed::{marker_events, typed_lines};
use crate::recording::{Meta, Verdict, verify_recording};

/// One row of the sessions page.
pub struct Row {
    pub meta: Meta,
    pub live: bool,
    /// `None` for a session without a recording (one that went on unrecorded under
    /// `on_failure = "alert-and-continue"`, or one from a version that recorded only pty
    /// sessions): what is known comes from its signed start and end entries.
    pub verdict: Option<Verdict>,
}

impl Row {
    /// Whether the recording checks out; a session without one has nothing to fail.
    pub fn intact(&self) -> bool {
        self.verdict.as_ref().is_none_or(Verdict::ok)
    }

    pub fn integrity(&self) -> String {
        match &self.verdict {
            Some(v) => v.to_string(),
            None => "no recording; start and end are in the audit chain".into(),
        }
    }

    /// `live`, `success` (exit 0), `failure` (another exit status) or `ended` (no exit status:
    /// ended by a reviewer, a revocation, a timeout or a lost connection).
    pub fn status(&self) -> &'static str {
        status(self.live, self.meta.exit_status)
    }
}

fn status(live: bool, exit_status: Option<u32>) -> &'static str {
    match (live, exit_status) {
        (true, _) => "live",
        (false, Some(0)) => "success",
        (false, Some(_)) => "failure",
        (false, None) => "ended",
    }
}

/// The sessions page's filters, from its query string. Empty fields do not filter.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields, default)]
pub struct Filter {
    pub admin: String,
    pub target: String,
    /// `YYYY-MM-DDTHH:MM` in the policy's time zone, as `<input type=datetime-local>` sends.
    pub from: String,
    pub to: String,
    /// See [`Row::status`].
    pub status: String,
    /// `ok` or `problem`.
    pub integrity: String,
    /// Text to find in the recorded output, case-insensitive.
    pub q: String,
}

/// When a filter field cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(String);

pub(crate) fn local_time(field: &str, text: &str) -> Result<Option<Timestamp>, FilterError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse::<jiff::civil::DateTime>()
        .ok()
        .and_then(|dt| dt.to_zoned(crate::policy::policy_zone()).ok())
        .map(|z| Some(z.timestamp()))
        .ok_or_else(|| FilterError(format!("{field}: use YYYY-MM-DDTHH:MM")))
}

/// The audit chain, verified; verdicts are taken against it.
pub fn chain_report(shared: &Bastion) -> ChainReport {
    let lines = read_lines(shared.audit.path()).unwrap_or_default();
    verify_chain(&lines, shared.audit.verifier())
}

/// The sessions page: the rows the filter lets through, and every admin and target of all
/// sessions for the filter lists.
pub struct Listing {
    pub rows: Vec<Row>,
    pub admins: BTreeSet<String>,
    pub targets: BTreeSet<String>,
}

/// Every session, newest first, with the filter applied. The cheap tests go first: the
/// integrity verdict and the search each read the recording.
pub fn rows(shared: &Bastion, filter: &Filter) -> Result<Listing, FilterError> {
    let (from, to) = (
        local_time("from", &filter.from)?,
        local_time("to", &filter.to)?,
    );
    if !matches!(
        filter.status.as_str(),
        "" | "live" | "success" | "failure" | "ended"
    ) || !matches!(filter.integrity.as_str(), "" | "ok" | "problem")
    {
        return Err(FilterError("unknown status or integrity filter".into()));
    }
    let report = chain_report(shared);
    let metas = shared
        .store
        .list()
        .map_err(|e| FilterError(format!("cannot list recordings: {e}")))?;
    let mut metas: Vec<(Meta, bool)> = metas.into_iter().map(|m| (m, true)).collect();
    metas.extend(unrecorded(&report).into_iter().map(|m| (m, false)));
    metas.sort_by_key(|(m, _)| m.start);
    let (admins, targets) = metas
        .iter()
        .map(|(m, _)| (m.admin.clone(), m.target.clone()))
        .unzip();
    let needle = filter.q.trim().to_lowercase();
    let now = shared.clock.now();
    let mut rows = Vec::new();
    for (meta, recorded) in metas.into_iter().rev() {
        let text_ok = |f: &str, v: &str| f.is_empty() || v.contains(f.trim());
        if !text_ok(&filter.admin, &meta.admin)
            || !text_ok(&filter.target, &meta.target)
            || from.is_some_and(|f| meta.end.unwrap_or(now) < f)
            || to.is_some_and(|t| meta.start > t)
        {
            continue;
        }
        let live = shared.sessions.is_live(meta.id.as_str());
        if (!filter.status.is_empty() && status(live, meta.exit_status) != filter.status)
            || (!needle.is_empty() && !output_contains(shared, &meta.id, &needle))
        {
            continue;
        }
        let row = make_row(shared, &report, meta, recorded);
        let integrity = if row.intact() { "ok" } else { "problem" };
        if !filter.integrity.is_empty() && integrity != filter.integrity {
            continue;
        }
        rows.push(row);
    }
    Ok(Listing {
        rows,
        admins,
        targets,
    })
}

/// `recorded`: the session has a recording's metadata, so its recording is verified (and may be
/// missing).
fn make_row(shared: &Bastion, report: &ChainReport, meta: Meta, recorded: bool) -> Row {
    Row {
        live: shared.sessions.is_live(meta.id.as_str()),
        verdict: recorded.then(|| verify_recording(&shared.store, &meta.id, report)),
        meta,
    }
}

/// Sessions without a recording, from their start and end entries in the chain.
fn unrecorded(report: &ChainReport) -> Vec<Meta> {
    let mut out = Vec::new();
    for start in report.sessions() {
        let Some(id) = start.session.clone().filter(|_| start.seal.is_none()) else {
            continue;
        };
        let field = |k: &str| start.field(k).unwrap_or_default().to_owned();
        let notes = report.notes(&id);
        let end = notes.iter().map(|(e, _)| e).find(|e| e.kind == Kind::End);
        out.push(Meta {
            admin: field("admin"),
            target: field("target"),
            account: field("account"),
            grant: field("grant"),
            source: String::new(),
            start: start.time,
            end: end.map(|e| e.time),
            exit_status: end.and_then(|e| e.field("exit_status")?.parse().ok()),
            end_reason: end.and_then(|e| e.field("reason")).map(str::to_owned),
            pty: false,
            id,
        });
    }
    out
}

/// One session's row: a recorded one, or one known from the audit chain only.
pub fn row(shared: &Bastion, report: &ChainReport, id: &SessionId) -> Option<Row> {
    let (meta, recorded) = match shared.store.read_meta(id) {
        Ok(m) => (m, true),
        Err(_) => (unrecorded(report).into_iter().find(|m| &m.id == id)?, false),
    };
    Some(make_row(shared, report, meta, recorded))
}

/// The events of a recording, streamed from its file: `(time, kind, data)`; lines that do not
/// parse are skipped.
fn events(shared: &Bastion, id: &SessionId) -> impl Iterator<Item = (f64, String, String)> {
    shared.store.events(id).into_iter().flatten()
}

/// Whether what the terminal showed, without escape sequences and in lower case, holds
/// `needle` (lower case); read as a stream, never the whole output.
fn output_contains(shared: &Bastion, id: &SessionId, needle: &str) -> bool {
    text_contains(
        events(shared, id)
            .filter(|(_, kind, _)| kind == "o")
            .map(|(_, _, data)| data),
        needle,
    )
}

/// [`output_contains`] over output events: the escape sequences are stripped as they go by
/// (the stripper keeps its state from one event to the next) and only the last `needle`'s
/// length of text is held, so a match across events or around a sequence is still found.
fn text_contains(outputs: impl Iterator<Item = String>, needle: &str) -> bool {
    let found = std::cell::Cell::new(false);
    let mut strip = strip_ansi_escapes::Writer::new(Finder {
        needle,
        window: String::new(),
        partial: Vec::new(),
        found: &found,
    });
    for data in outputs {
        // Finder never fails, so neither does the stripper.
        if strip.write_all(data.as_bytes()).is_err() || found.get() {
            break;
        }
    }
    let _ = strip.flush();
    found.get()
}

/// The text end of [`text_contains`]: takes stripped output in pieces, lower-cases it and keeps
/// only what a match that began in it could still need.
struct Finder<'a> {
    needle: &'a str,
    window: String,
    /// A character whose bytes have not all come yet.
    partial: Vec<u8>,
    found: &'a std::cell::Cell<bool>,
}

impl std::io::Write for Finder<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.found.get() {
            return Ok(buf.len());
        }
        self.partial.extend_from_slice(buf);
        let end = match std::str::from_utf8(&self.partial) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => self.partial.len(),
        };
        let text = String::from_utf8_lossy(&self.partial[..end]).to_lowercase();
        self.partial.drain(..end);
        self.window.push_str(&text);
        if self.window.contains(self.needle) {
            self.found.set(true);
        }
        let mut cut = self.window.len().saturating_sub(self.needle.len());
        while !self.window.is_char_boundary(cut) {
            cut -= 1;
        }
        self.window.drain(..cut);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Player markers: the start, the target's first output, each command line typed (when input
/// was recorded; not those typed at a prompt that did not echo them, see
/// [`crate::recording::typed`]), each sftp file operation, the end.
pub fn markers(shared: &Bastion, meta: &Meta) -> Vec<(f64, String)> {
    markers_of(meta, &marker_events(events(shared, &meta.id)))
}

pub(crate) fn markers_of(meta: &Meta, events: &[(f64, String, String)]) -> Vec<(f64, String)> {
    let mut out = vec![(0.0, format!("start: {} to {}", meta.admin, meta.target))];
    if let Some((t, _, _)) = events.iter().find(|(_, k, _)| k == "o") {
        out.push((*t, format!("target: {}@{}", meta.account, meta.target)));
    }
    for (t, line) in typed_lines(events, meta.pty) {
        out.push((
            t,
            format!("$ {}", line.chars().take(60).collect::<String>()),
        ));
    }
    // File operations (sftp) and the recording's own notes (a byte budget run out).
    for (t, kind, data) in events {
        if kind == "m" && (data.starts_with("sftp: ") || data.starts_with("recording: ")) {
            out.push((*t, data.chars().take(200).collect()));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    if let (Some((t, _, _)), Some(_)) = (events.last(), meta.end) {
        let why = meta
            .end_reason
            .clone()
            .unwrap_or_else(|| "session ended".into());
        out.push((*t, format!("end: {why}")));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The search streams the output and finds what the whole text held: across events, around
    /// an escape sequence split between events, in any case, multi-byte characters included.
    #[test]
    fn the_search_finds_in_a_stream_what_the_whole_output_holds() {
        let outputs = [
            "$ cat /etc/sha",
            "dow\u{1b}[1",
            ";31mRO",
            "OT\u{1b}[0m:x:0 ÉÉN\r\n",
            &"y".repeat(100_000),
            "\u{1b}]0;title\u{7}tail",
        ];
        let whole = |needle: &str| {
            String::from_utf8_lossy(&strip_ansi_escapes::strip(outputs.concat()))
                .to_lowercase()
                .contains(needle)
        };
        for needle in [
            "/etc/shadow",
            "shadowroot:x",
            "root:x:0 één",
            "ytail",
            "title",
            "[1;31m",
            "y",
            "nothing",
        ] {
            let streamed = text_contains(outputs.iter().map(|s| (*s).to_owned()), needle);
            assert_eq!(streamed, whole(needle), "{needle}");
        }
        assert!(text_contains(
            outputs.iter().map(|s| (*s).to_owned()),
            "ytail"
        ));
        assert!(!text_contains(
            outputs.iter().map(|s| (*s).to_owned()),
            "title"
        ));
    }

    #[test]
    fn markers_show_start_target_typed_lines_and_end() {
        let meta = Meta {
            id: SessionId::parse("20261123T100000Z-0000abcd").unwrap(),
            admin: "alice".into(),
            target: "pacs01".into(),
            account: "beheer".into(),
            grant: "g".into(),
            source: String::new(),
            start: "2026-11-23T10:00:00Z".parse().unwrap(),
            end: Some("2026-11-23T10:01:00Z".parse().unwrap()),
            exit_status: Some(0),
            end_reason: Some("closed".into()),
            pty: true,
        };
        let ev = |t: f64, k: &str, d: &str| (t, k.to_owned(), d.to_owned());
        let events = [
            ev(0.2, "o", "$ "),
            ev(1.0, "i", "lx"),
            ev(1.0, "o", "lx"),
            ev(1.1, "i", "\u{7f}s -l\r"),
            ev(1.1, "o", "\u{8} \u{8}s -l\r\n"),
            ev(1.2, "o", "total 0\r\n"),
            ev(2.0, "i", "\r"),
            ev(2.5, "m", "sftp: SFTP_REMOVE /tmp/x (ok)"),
            ev(2.6, "m", "stream: stderr"),
            ev(3.0, "i", "exit\r"),
            ev(3.0, "o", "exit\r\n"),
            ev(3.1, "o", "logout"),
        ];
        let labels: Vec<(f64, String)> = markers_of(&meta, &events);
        assert_eq!(
            labels,
            vec![
                (0.0, "start: alice to pacs01".into()),
                (0.2, "target: beheer@pacs01".into()),
                (1.1, "$ ls -l".into()),
                (2.5, "sftp: SFTP_REMOVE /tmp/x (ok)".into()),
                (3.0, "$ exit".into()),
                (3.1, "end: closed".into()),
            ]
        );
    }
}
