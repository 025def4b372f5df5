//! Downloads: a recording as `.cast`, and an evidence bundle for an incident file: the
//! recording, its line index and metadata, its signed audit entries, the key to check them, and
//! a short report.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::catalog::{self, Row};
use super::{App, SessionRequest, action};
use crate::app::Bastion;
use crate::audit::Code;
use crate::ids::SessionId;
use crate::policy::local;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct CastQuery {
    download: Option<u8>,
}

fn attachment(res: &mut Response, name: &str, kind: &'static str) {
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
}

pub async fn cast(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
    Query(q): Query<CastQuery>,
) -> Response {
    let Ok(bytes) = tokio::fs::read(app.shared.store.cast_path(&id)).await else {
        return (StatusCode::NOT_FOUND, "no such recording").into_response();
    };
    let download = q.download == Some(1);
    let code = if download {
        Code::ConsoleDownload
    } else {
        Code::ConsoleView
    };
    action(code, &reviewer, peer)
        .session(&id)
        .detail("file", "recording")
        .emit();
    let mut res = bytes.into_response();
    if download {
        attachment(&mut res, &format!("{id}.cast"), "application/x-asciicast");
    } else {
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-asciicast"),
        );
    }
    res
}

pub async fn bundle(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
) -> Response {
    let shared = app.shared.clone();
    let who = reviewer.0.to_string();
    let made = tokio::task::spawn_blocking({
        let id = id.clone();
        move || make_bundle(&shared, &id, &who)
    })
    .await;
    let bytes = match made {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return (StatusCode::NOT_FOUND, e).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    action(Code::ConsoleDownload, &reviewer, peer)
        .session(&id)
        .detail("file", "evidence bundle")
        .detail("sha256", hex::encode(Sha256::digest(&bytes)))
        .emit();
    let mut res = bytes.into_response();
    attachment(
        &mut res,
        &format!("stapsteen-evidence-{id}.tar"),
        "application/x-tar",
    );
    res
}

/// The bundle as a tar archive under the directory `ID/`.
fn make_bundle(shared: &Bastion, id: &SessionId, reviewer: &str) -> Result<Vec<u8>, String> {
    let report = catalog::chain_report(shared);
    let Some(row) = catalog::row(shared, &report, id) else {
        return Err("no such session".into());
    };
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap_or_default();
    let entries: String = report
        .notes(id)
        .iter()
        .map(|(_, note)| format!("{}\n", serde_json::json!({ "note": note })))
        .collect();
    let mut files: Vec<(&str, Vec<u8>)> = Vec::new();
    if row.verdict.is_some() {
        files.push(("recording.cast", read(shared.store.cast_path(id))));
        files.push(("recording.idx", read(shared.store.index_path(id))));
    }
    let meta = serde_json::to_vec_pretty(&row.meta).map_err(|e| e.to_string())?;
    files.extend([
        ("session.json", meta),
        ("audit-entries.jsonl", entries.into_bytes()),
        (
            "audit-key.vkey",
            format!("{}\n", shared.audit.verifier().vkey).into_bytes(),
        ),
    ]);
    let text = report_text(shared, &row, &files, report.problems.len(), reviewer);
    files.push(("report.txt", text.into_bytes()));
    let mut tar = tar::Builder::new(Vec::new());
    let mtime = shared.clock.now().as_second().max(0).unsigned_abs();
    for (name, data) in &files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(mtime);
        h.set_cksum();
        tar.append_data(&mut h, format!("{id}/{name}"), data.as_slice())
            .map_err(|e| e.to_string())?;
    }
    tar.into_inner().map_err(|e| e.to_string())
}

fn report_text(
    shared: &Bastion,
    row: &Row,
    files: &[(&str, Vec<u8>)],
    chain_problems: usize,
    reviewer: &str,
) -> String {
    let m = &row.meta;
    let mut t = String::new();
    let _ = writeln!(t, "stapsteen evidence bundle for session {}\n", m.id);
    for (k, v) in [
        ("admin", m.admin.clone()),
        ("target", format!("{}@{}", m.account, m.target)),
        ("grant", m.grant.clone()),
        ("source", m.source.clone()),
        ("start", local(m.start)),
        ("end", m.end.map(local).unwrap_or_else(|| "(live)".into())),
        ("end reason", m.end_reason.clone().unwrap_or_default()),
        (
            "exit status",
            m.exit_status.map(|s| s.to_string()).unwrap_or_default(),
        ),
    ] {
        let _ = writeln!(t, "{k:12} {v}");
    }
    let _ = writeln!(t, "\nintegrity    {}", row.integrity());
    let _ = writeln!(
        t,
        "audit chain  {} problem(s) in the whole chain when exported",
        chain_problems
    );
    let _ = writeln!(t, "\nfiles (SHA-256):");
    for (name, data) in files {
        let _ = writeln!(t, "  {}  {name}", hex::encode(Sha256::digest(data)));
    }
    let _ = writeln!(
        t,
        "\nHow to check: audit-entries.jsonl holds this session's entries of the audit chain, each a\n\
         signed note (C2SP signed-note format) that audit-key.vkey verifies. The last entry's chain\n\
         hash covers every line of recording.cast: h0 = SHA-256(\"stapsteen recording v1\\n\" || id || \"\\n\"),\n\
         h(n) = SHA-256(h(n-1) || SHA-256(line n)). recording.idx holds 8 bytes of SHA-256 per line, to\n\
         locate a change; it proves nothing by itself."
    );
    let _ = writeln!(
        t,
        "\nexported by reviewer {reviewer} at {}",
        local(shared.clock.now())
    );
    t
}
