//! The recorded sessions as the console shows them: metadata, live or not, integrity verdict;
//! filters and full-text search over recorded output; markers for the player.

use jiff::Timestamp;
use serde::Deserialize;

use super::index::{self, Index};
use crate::app::Bastion;
use crate::audit::{ChainReport, Kind};
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
    /// Which page of rows, from 0 (newest first).
    pub page: usize,
}

impl Filter {
    /// The filter's fields by name (not the page), as in its query string.
    pub fn fields(&self) -> [(&'static str, &str); 7] {
        [
            ("admin", &self.admin),
            ("target", &self.target),
            ("from", &self.from),
            ("to", &self.to),
            ("status", &self.status),
            ("integrity", &self.integrity),
            ("q", &self.q),
        ]
    }
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

/// One row of the sessions list, from the index.
pub struct Listed {
    pub row: index::Listed,
    pub live: bool,
}

impl Listed {
    /// See [`Row::status`].
    pub fn status(&self) -> &'static str {
        status(self.live, self.row.meta.exit_status)
    }
}

/// One page of the sessions list: the rows the filter lets through, every admin and target of
/// all sessions for the filter lists, and what verifying the audit chain found.
pub struct Listing {
    pub rows: Vec<Listed>,
    pub admins: Vec<String>,
    pub targets: Vec<String>,
    pub problems: Vec<String>,
    /// There is a page after this one.
    pub more: bool,
    /// The index has not read the whole chain yet (it is being built).
    pub behind: bool,
}

/// Highest page number asked for (50 rows a page: millions of sessions).
const MAX_PAGE: usize = 1_000_000;

/// Longest search text, in characters: a line pasted from a terminal fits, and a search's
/// cost grows with its length.
const MAX_SEARCH: usize = 1000;

/// The search text, refused when the full-text index cannot take it (a NUL ends FTS5's reading
/// of its query) or it is longer than [`MAX_SEARCH`].
fn search_text(q: &str) -> Result<String, FilterError> {
    if q.contains('\0') {
        return Err(FilterError("search: no NUL characters".into()));
    }
    if q.chars().count() > MAX_SEARCH {
        return Err(FilterError(format!(
            "search: at most {MAX_SEARCH} characters"
        )));
    }
    Ok(q.to_owned())
}

/// The filter as an index query.
pub fn query(shared: &Bastion, filter: &Filter) -> Result<index::Query, FilterError> {
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
    // The page links add one to it: a number near the top of `usize` would overflow there.
    if filter.page > MAX_PAGE {
        return Err(FilterError(format!("page: at most {MAX_PAGE}")));
    }
    Ok(index::Query {
        admin: filter.admin.clone(),
        target: filter.target.clone(),
        from: from.map(|t| t.as_microsecond()),
        to: to.map(|t| t.as_microsecond()),
        now: shared.clock.now().as_microsecond(),
        status: filter.status.clone(),
        integrity: filter.integrity.clone(),
        q: search_text(&filter.q)?,
        page: filter.page,
    })
}

/// A page of sessions, newest first, with the filter applied. The index first reads what is
/// new in the chain, up to [`index::PAGE_BUDGET`] entries (the background task reads the rest).
/// Blocks: call it off the async workers.
pub fn listing(shared: &Bastion, index: &Index, filter: &Filter) -> Result<Listing, ListingError> {
    let q = query(shared, filter)?;
    let behind = index.update(index::PAGE_BUDGET)?.more;
    let live = shared.sessions.live_ids();
    let page = index.page(&q, &live)?;
    let rows = page
        .rows
        .into_iter()
        .map(|row| Listed {
            live: shared.sessions.is_live(row.meta.id.as_str()),
            row,
        })
        .collect();
    Ok(Listing {
        rows,
        admins: page.admins,
        targets: page.targets,
        problems: page.problems,
        more: page.more,
        behind,
    })
}

/// Why a page of sessions cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Index(#[from] index::IndexError),
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
pub(crate) fn unrecorded(report: &ChainReport) -> Vec<Meta> {
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

    #[test]
    fn search_text_without_nul_and_not_too_long() {
        assert_eq!(search_text("rm -rf /data").unwrap(), "rm -rf /data");
        assert!(search_text("ab\0cd").is_err());
        assert!(search_text(&"é".repeat(MAX_SEARCH)).is_ok());
        assert!(search_text(&"x".repeat(MAX_SEARCH + 1)).is_err());
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
