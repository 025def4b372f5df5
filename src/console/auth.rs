//! WebAuthn enrolment and login, and logout. The browser side is `web/console.js`.
//!
//! Enrolment needs a one-time code from `stapsteen console enrol NAME`; the code is checked when
//! the ceremony starts and consumed when the key is stored. Login is username-first: the
//! browser is asked for an assertion from one of that reviewer's keys, with user verification.

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::json;
use webauthn_rs::prelude::{
    AuthenticatorAttachment, PublicKeyCredential, RegisterPublicKeyCredential, WebauthnError,
};

use super::logins::Busy;
use super::{App, Peer, Reviewer, clear_cookie, token};
use crate::audit::{Code, Event};
use crate::policy::Reviewer as PolicyReviewer;

/// A refusal as JSON `{"error": ...}` with an audit event.
fn refuse(code: Code, peer: Peer, reviewer: &str, status: StatusCode, why: &str) -> Response {
    refusal(code, peer, reviewer, why).emit();
    answer(status, why)
}

fn answer(status: StatusCode, why: &str) -> Response {
    (status, Json(json!({ "error": why }))).into_response()
}

fn refusal(code: Code, peer: Peer, reviewer: &str, why: &str) -> Event {
    Event::new(code)
        .source(Some(peer.0))
        .detail("reviewer", reviewer.chars().take(64).collect::<String>())
        .reason(why)
}

/// The named reviewer's entry in the policy in force, if there is one.
fn reviewer_in_policy(app: &App, name: &str) -> Option<PolicyReviewer> {
    app.shared.policy().reviewer(name).cloned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolStart {
    name: String,
    code: String,
}

pub async fn enrol_start(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<EnrolStart>,
) -> Response {
    let failed = |why: &str| {
        refuse(
            Code::ConsoleEnrolFailed,
            peer,
            &req.name,
            StatusCode::FORBIDDEN,
            why,
        )
    };
    let Some(entry) = reviewer_in_policy(&app, &req.name) else {
        return failed("not a reviewer in the policy");
    };
    let name = entry.name;
    let reviewers = app.reviewers.lock().await;
    let now = app.shared.clock.now();
    if let Err(e) = reviewers.check_code(&name, &req.code, now, false, entry.enrolment.as_ref()) {
        return failed(&e.to_string());
    }
    let (user_id, existing) = match (reviewers.user_id(&name), reviewers.enrolled(&name)) {
        (Ok(id), Ok(e)) => (id, e),
        (Err(e), _) | (_, Err(e)) => return failed(&e.to_string()),
    };
    let exclude = existing.map(|e| e.keys.iter().map(|k| k.cred_id().clone()).collect());
    let display = entry.full_name.unwrap_or_else(|| name.to_string());
    let (mut options, state) =
        match app
            .webauthn
            .start_passkey_registration(user_id, name.as_str(), &display, exclude)
        {
            Ok(x) => x,
            Err(e) => return failed(&format!("WebAuthn: {e}")),
        };
    // Security keys, not phones or platform authenticators, are what reviewers are issued.
    if let Some(sel) = options.public_key.authenticator_selection.as_mut() {
        sel.authenticator_attachment = Some(AuthenticatorAttachment::CrossPlatform);
    }
    let ceremony = match app
        .enrolling
        .put(&name.clone(), peer.0.ip(), (name, user_id, state))
    {
        Ok(c) => c,
        Err(busy) => return failed(&busy_reason(busy, "enrolments")),
    };
    Json(json!({ "ceremony": ceremony, "options": options })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolFinish {
    ceremony: String,
    code: String,
    credential: RegisterPublicKeyCredential,
}

pub async fn enrol_finish(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<EnrolFinish>,
) -> Response {
    let Some((name, user_id, state)) = app.enrolling.take(&req.ceremony) else {
        return refuse(
            Code::ConsoleEnrolFailed,
            peer,
            "",
            StatusCode::FORBIDDEN,
            "unknown or expired enrolment; start again",
        );
    };
    let failed = |why: &str| {
        refuse(
            Code::ConsoleEnrolFailed,
            peer,
            name.as_str(),
            StatusCode::FORBIDDEN,
            why,
        )
    };
    let key = match app
        .webauthn
        .finish_passkey_registration(&req.credential, &state)
    {
        Ok(k) => k,
        Err(e) => return failed(&format!("WebAuthn: {e}")),
    };
    let reviewers = app.reviewers.lock().await;
    let now = app.shared.clock.now();
    let from_policy = reviewer_in_policy(&app, name.as_str()).and_then(|r| r.enrolment);
    if let Err(e) = reviewers.check_code(&name, &req.code, now, true, from_policy.as_ref()) {
        return failed(&e.to_string());
    }
    if let Err(e) = reviewers.save_key(&name, user_id, key.clone()) {
        return failed(&format!("cannot store the key: {e}"));
    }
    Event::new(Code::ConsoleEnrolled)
        .source(Some(peer.0))
        .detail("reviewer", name.to_string())
        .detail("credential", hex::encode(key.cred_id().as_ref()))
        .emit();
    Json(json!({ "enrolled": name.as_str() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStart {
    name: String,
}

pub async fn login_start(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<LoginStart>,
) -> Response {
    let failed = |why: &str| {
        refuse(
            Code::ConsoleLoginFailed,
            peer,
            &req.name,
            StatusCode::FORBIDDEN,
            why,
        )
    };
    let Some(name) = reviewer_in_policy(&app, &req.name).map(|r| r.name) else {
        return failed("not a reviewer in the policy, or no key enrolled");
    };
    let keys = match app.reviewers.lock().await.enrolled(&name) {
        Ok(Some(e)) if !e.keys.is_empty() => e.keys,
        Ok(_) => return failed("not a reviewer in the policy, or no key enrolled"),
        Err(e) => return failed(&e.to_string()),
    };
    let (options, state) = match app.webauthn.start_passkey_authentication(&keys) {
        Ok(x) => x,
        Err(e) => return failed(&format!("WebAuthn: {e}")),
    };
    let ceremony = match app
        .logging_in
        .put(&name.clone(), peer.0.ip(), (name, state))
    {
        Ok(c) => c,
        Err(busy) => return failed(&busy_reason(busy, "logins")),
    };
    Json(json!({ "ceremony": ceremony, "options": options })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginFinish {
    ceremony: String,
    credential: PublicKeyCredential,
}

pub async fn login_finish(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Json(req): Json<LoginFinish>,
) -> Response {
    let Some((name, state)) = app.logging_in.take(&req.ceremony) else {
        return refuse(
            Code::ConsoleLoginFailed,
            peer,
            "",
            StatusCode::FORBIDDEN,
            "unknown or expired login; start again",
        );
    };
    let failed = |why: &str| {
        refuse(
            Code::ConsoleLoginFailed,
            peer,
            name.as_str(),
            StatusCode::FORBIDDEN,
            why,
        )
    };
    // A refusal only the key's holder can cause (a verified assertion without the PIN, a
    // counter that went back): never summed away among a source's other refusals.
    let by_key = |why: &str| {
        refusal(Code::ConsoleLoginFailed, peer, name.as_str(), why)
            .never_limited()
            .emit();
        answer(StatusCode::FORBIDDEN, why)
    };
    let result = match app
        .webauthn
        .finish_passkey_authentication(&req.credential, &state)
    {
        Ok(r) if r.user_verified() => r,
        Ok(_) => return by_key("the security key did not verify the user (PIN or biometric)"),
        Err(e @ WebauthnError::CredentialPossibleCompromise) => {
            return by_key(&format!("WebAuthn: {e}"));
        }
        Err(e) => return failed(&format!("WebAuthn: {e}")),
    };
    if reviewer_in_policy(&app, name.as_str()).is_none() {
        return failed("not a reviewer in the policy");
    }
    {
        let reviewers = app.reviewers.lock().await;
        let Ok(Some(enrolled)) = reviewers.enrolled(&name) else {
            return failed("no key enrolled");
        };
        for mut key in enrolled.keys {
            if key.update_credential(&result) == Some(true)
                && let Err(e) = reviewers.save_key(&name, enrolled.user_id, key)
            {
                return failed(&format!("cannot store the key's counter: {e}"));
            }
        }
    }
    let token = app.logins.create(name.clone());
    Event::new(Code::ConsoleLogin)
        .source(Some(peer.0))
        .detail("reviewer", name.to_string())
        .detail("credential", hex::encode(result.cred_id().as_ref()))
        .emit();
    let cookie = format!(
        "{}={}; Path=/; Secure; HttpOnly; SameSite=Strict",
        super::COOKIE,
        token.expose()
    );
    let mut res = Json(json!({ "reviewer": name.as_str() })).into_response();
    match HeaderValue::from_str(&cookie) {
        Ok(v) => {
            res.headers_mut().insert(header::SET_COOKIE, v);
            res
        }
        Err(_) => failed("cannot set the login cookie"),
    }
}

pub async fn logout(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    Extension(reviewer): Extension<Reviewer>,
    headers: axum::http::HeaderMap,
) -> Response {
    if let Some(t) = token(&headers) {
        app.logins.end(t);
    }
    super::action(Code::ConsoleLogout, &reviewer, peer).emit();
    let mut res = Redirect::to("/login?why=logout").into_response();
    res.headers_mut().insert(header::SET_COOKIE, clear_cookie());
    res
}

/// Why a ceremony of `what` ("logins", "enrolments") was not started.
fn busy_reason(busy: Busy, what: &str) -> String {
    match busy {
        Busy::Source => {
            format!("too many {what} in progress from this address; try again in two minutes")
        }
        Busy::Total => format!("too many {what} in progress; try again in two minutes"),
    }
}
