//! The console's pages, rendered on the server (maud escapes every value).

use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::catalog::{self, Filter, Row};
use super::{App, Peer, Reviewer, SessionRequest, action};
use crate::audit::Code;
use crate::policy::local;

const WARN_WITHIN: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

fn layout(title: &str, reviewer: Option<&Reviewer>, player: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · stapsteen review console" }
                link rel="stylesheet" href="/assets/console.css";
                @if player {
                    link rel="stylesheet" href="/assets/asciinema-player.css";
                    script src="/assets/asciinema-player.min.js" defer {}
                }
                script src="/assets/console.js" defer {}
            }
            body {
                header {
                    span { strong { "stapsteen" } " review console" }
                    @if let Some(r) = reviewer {
                        nav {
                            a href="/sessions" { "Sessions" }
                            a href="/access" { "Access" }
                            span.who { (r.0) }
                            form method="post" action="/logout" { button type="submit" { "Log out" } }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Why {
    why: String,
}

pub async fn login(Query(q): Query<Why>) -> Markup {
    let note = match q.why.as_str() {
        "expired" => Some("Your console session expired after being idle. Log in again."),
        "removed" => Some("You are no longer a reviewer in the policy."),
        "logout" => Some("You have logged out."),
        "login" => Some("Log in first."),
        _ => None,
    };
    layout(
        "Log in",
        None,
        false,
        html! {
            @if let Some(n) = note { p.notice #why { (n) } }
            form #login {
                label { "Reviewer name " input #name name="name" autocomplete="username" required; }
                button type="submit" { "Log in with security key" }
            }
            p #status role="status" {}
            p { "First time? " a href="/enrol" { "Enrol your security key" } " with the code from your administrator." }
        },
    )
}

pub async fn enrol() -> Markup {
    layout(
        "Enrol a security key",
        None,
        false,
        html! {
            form #enrol {
                label { "Reviewer name " input #name name="name" autocomplete="username" required; }
                label { "Enrolment code " input #code name="code" autocomplete="off" required; }
                button type="submit" { "Enrol security key" }
            }
            p #status role="status" {}
        },
    )
}

fn verdict(row: &Row) -> Markup {
    mark(row.intact(), &row.integrity())
}

fn mark(ok: bool, text: &str) -> Markup {
    let class = if ok { "ok" } else { "problem" };
    html! { span class=(format!("verdict {class}")) { (text) } }
}

/// The sessions page `page` with the same filters.
fn page_link(filter: &Filter, page: usize) -> String {
    // Only for its query encoder; the host is never used.
    let Ok(mut url) = webauthn_rs::prelude::Url::parse("https://console.invalid/sessions") else {
        return "/sessions".into();
    };
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in filter.fields() {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("page", &page.to_string());
    }
    format!("/sessions?{}", url.query().unwrap_or_default())
}

pub async fn sessions(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Extension(reviewer): Extension<Reviewer>,
    Query(filter): Query<Filter>,
) -> Response {
    let (shared, index) = (app.shared.clone(), app.index.clone());
    let f = filter.clone();
    let found = tokio::task::spawn_blocking(move || catalog::listing(&shared, &index, &f)).await;
    let mut event = action(Code::ConsoleView, &reviewer, peer).detail("page", "sessions");
    for (k, v) in filter.fields() {
        if !v.is_empty() {
            event = event.detail(k, v.chars().take(200).collect::<String>());
        }
    }
    if filter.page > 0 {
        event = event.detail("page_number", filter.page);
    }
    event.emit();
    let catalog::Listing {
        rows,
        admins,
        targets,
        problems,
        more,
        behind,
    } = match found {
        Ok(Ok(x)) => x,
        Ok(Err(catalog::ListingError::Filter(e))) => {
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        Ok(Err(e)) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let option = |value: &str, label: &str, current: &str| {
        html! { option value=(value) selected[value == current] { (label) } }
    };
    layout(
        "Sessions",
        Some(&reviewer),
        false,
        html! {
            form.filters method="get" action="/sessions" {
                label { "Admin " select name="admin" { (option("", "any", &filter.admin)) @for a in &admins { (option(a, a, &filter.admin)) } } }
                label { "Target " select name="target" { (option("", "any", &filter.target)) @for t in &targets { (option(t, t, &filter.target)) } } }
                label { "From " input type="datetime-local" name="from" value=(filter.from); }
                label { "To " input type="datetime-local" name="to" value=(filter.to); }
                label { "Status " select name="status" {
                    @for (v, l) in [("", "any"), ("live", "live"), ("success", "exit 0"), ("failure", "exit ≠ 0"), ("ended", "ended without exit status")] { (option(v, l, &filter.status)) }
                } }
                label { "Integrity " select name="integrity" {
                    @for (v, l) in [("", "any"), ("ok", "intact"), ("problem", "problem")] { (option(v, l, &filter.integrity)) }
                } }
                label { "Output contains " input type="search" name="q" value=(filter.q); }
                button type="submit" { "Filter" }
            }
            @if !problems.is_empty() {
                div.notice.problem #chain-problems {
                    p { "Verifying the audit chain found problems; run " code { "stapsteen audit verify" } " for all of them:" }
                    ul { @for p in &problems { li { (p) } } }
                }
            }
            @if behind {
                p.notice #indexing { "The index is still reading the audit chain; older sessions may be missing from this list for now." }
            }
            table #sessions {
                thead { tr { th { "Session" } th { "Admin" } th { "Target" } th { "Start" } th { "End" } th { "Status" } th { "Integrity" } } }
                tbody {
                    @for r in &rows {
                        @let m = &r.row.meta;
                        tr class=(r.status()) {
                            td { a href=(format!("/sessions/{}", m.id)) { (m.id) } }
                            td { (m.admin) }
                            td { (m.account) "@" (m.target) }
                            td { (local(m.start)) }
                            td { @if let Some(e) = m.end { (local(e)) } }
                            td.status { (r.status()) @if let Some(x) = m.exit_status { " (" (x) ")" } }
                            td { (mark(r.row.ok, &r.row.integrity)) }
                        }
                    }
                }
            }
            @if rows.is_empty() { p { "No sessions match." } }
            nav.pages {
                @if filter.page > 0 {
                    a rel="prev" href=(page_link(&filter, filter.page - 1)) { "← Newer" }
                }
                " Page " (filter.page + 1) " "
                @if more {
                    a rel="next" href=(page_link(&filter, filter.page + 1)) { "Older →" }
                }
            }
        },
    )
    .into_response()
}

pub async fn session(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
) -> Response {
    let (shared, index) = (app.shared.clone(), app.index.clone());
    let lookup = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        // The session's own entries, as the index verified them: not the whole chain.
        let report = index.current_report(&lookup).ok()?;
        let row = catalog::row(&shared, &report, &lookup)?;
        let markers = catalog::markers(&shared, &row.meta);
        Some((row, markers))
    })
    .await
    .ok()
    .flatten();
    let Some((row, markers)) = found else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    action(Code::ConsoleView, &reviewer, peer)
        .session(&id)
        .detail("page", if row.live { "live" } else { "replay" })
        .emit();
    let m = &row.meta;
    let markers_json = serde_json::to_string(&markers).unwrap_or_else(|_| "[]".into());
    layout(
        &format!("Session {id}"),
        Some(&reviewer),
        true,
        html! {
            dl.facts {
                dt { "Admin" } dd #admin { (m.admin) }
                dt { "Target" } dd { (m.account) "@" (m.target) }
                dt { "Grant" } dd { (m.grant) }
                dt { "From" } dd { (m.source) }
                dt { "Start" } dd { (local(m.start)) }
                dt { "End" } dd { @if let Some(e) = m.end { (local(e)) } @else { "—" } }
                dt { "Status" } dd #status { (row.status()) @if let Some(r) = &m.end_reason { ": " (r) } }
                dt { "Integrity" } dd #integrity { (verdict(&row)) }
            }
            @if row.verdict.is_none() {
                p.notice { "This session has no recording to replay (it went on unrecorded after a storage failure, or was made by a version that recorded only terminal sessions); its start and end are in the audit chain." }
            } @else if row.live {
                div #player data-live=(format!("/sessions/{id}/live")) data-markers="[]" {}
            } @else {
                div #player data-src=(format!("/sessions/{id}/cast")) data-markers=(markers_json) {}
                ol.markers {
                    @for (t, label) in &markers { li { (format!("{t:.1}s")) " " (label) } }
                }
            }
            @if row.live {
                form #kill method="post" action=(format!("/sessions/{id}/kill")) {
                    label { "Reason (required) " input #reason name="reason" required minlength="3" maxlength="500"; }
                    button.danger type="submit" { "End this session now" }
                }
            }
            p.downloads {
                @if row.verdict.is_some() {
                    a href=(format!("/sessions/{id}/cast?download=1")) download { "Download recording (.cast)" }
                    " · "
                }
                a href=(format!("/sessions/{id}/evidence")) download { "Download evidence bundle (.tar)" }
            }
        },
    )
    .into_response()
}

pub async fn access(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Extension(reviewer): Extension<Reviewer>,
) -> Markup {
    action(Code::ConsoleView, &reviewer, peer)
        .detail("page", "access")
        .emit();
    let policy = app.shared.policy();
    let now = app.shared.clock.now();
    let soon = now.checked_add(WARN_WITHIN).unwrap_or(now);
    layout(
        "Access now",
        Some(&reviewer),
        false,
        html! {
            p { "Who can reach what at " (local(now)) ", from the policy in force. Access that ends within 24 hours is highlighted." }
            table #access {
                thead { tr { th { "Admin" } th { "Target" } th { "Account" } th { "Grant" } th { "Until" } } }
                tbody {
                    @for admin in &policy.admins {
                        @for a in policy.reachable(admin.name.as_str(), now) {
                            @let expiring = a.until.is_some_and(|u| u <= soon);
                            tr class=[expiring.then_some("expiring")] {
                                td { (admin.name) @if let Some(n) = &admin.full_name { br; small { (n) } } }
                                td { (a.target.name) " (" (a.target.address) ")" }
                                td { (a.account) }
                                td { (a.grant) }
                                td { @match a.until { Some(u) => (local(u)), None => "open-ended" } }
                            }
                        }
                    }
                }
            }
            h2 { "Grants not open now" }
            @let closed: Vec<_> = policy.grants.iter().filter(|g| g.open_until(now).is_none()).collect();
            @if closed.is_empty() { p { "None: every grant is open now." } }
            ul {
                @for g in closed { li { (g.name) } }
            }
        },
    )
}
