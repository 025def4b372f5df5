//! Watching a running session and ending it.
//!
//! The live view is a server-sent event stream in the form the player's `eventsource` driver
//! reads: first the asciicast header with the screen so far (`init`), then each new event line as
//! the recorder writes it, then `{"state":"offline"}` when the session ends or the viewer's
//! console login does. Watching is not activity: a login left watching ends after the console's
//! idle timeout like any other.

use std::convert::Infallible;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::logins::Check;
use super::{App, SessionRequest, action, token};
use crate::audit::Code;

const POLL: Duration = Duration::from_millis(200);

pub async fn stream(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
    headers: HeaderMap,
) -> Response {
    if !app.shared.sessions.is_live(id.as_str()) {
        return (StatusCode::NOT_FOUND, "not a live session").into_response();
    }
    action(Code::ConsoleView, &reviewer, peer)
        .session(&id)
        .detail("page", "live stream")
        .emit();
    let (tx, rx) = mpsc::channel::<Sse>(256);
    let path = app.shared.store.cast_path(&id);
    let login = token(&headers).map(str::to_owned).unwrap_or_default();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        let mut header_sent = false;
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        loop {
            // Watching is not activity: the login's idle timeout, a logout or a removed
            // reviewer ends the stream.
            let watching = matches!(app.watch_login(&login), Check::Valid(_));
            let still_live = watching && app.shared.sessions.is_live(id.as_str());
            if file.read_to_end(&mut pending).await.is_err() || tx.is_closed() {
                return;
            }
            let complete = pending
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let text: Vec<u8> = pending.drain(..complete).collect();
            let mut lines = text.split(|b| *b == b'\n').filter(|l| !l.is_empty());
            if !header_sent {
                let Some(header) = lines.next() else {
                    if !still_live {
                        return;
                    }
                    tokio::time::sleep(POLL).await;
                    continue;
                };
                let Some(first) = first_frame(header, &mut lines) else {
                    return;
                };
                header_sent = true;
                if tx.send(Sse::default().data(first)).await.is_err() {
                    return;
                }
            } else {
                for l in lines {
                    let data = String::from_utf8_lossy(l).into_owned();
                    if tx.send(Sse::default().data(data)).await.is_err() {
                        return;
                    }
                }
            }
            if !still_live {
                let _ = tx.send(Sse::default().data(r#"{"state":"offline"}"#)).await;
                return;
            }
            // A torn last line waits in `pending` for the rest.
            tokio::time::sleep(POLL).await;
        }
    });
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    axum::response::sse::Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The header with the output so far as `init` and its time, so the viewer starts with the
/// screen as it is now.
fn first_frame<'a>(header: &[u8], events: impl Iterator<Item = &'a [u8]>) -> Option<String> {
    let mut header: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut init = String::new();
    let mut time = 0.0;
    for l in events {
        if let Ok((t, kind, data)) = serde_json::from_slice::<(f64, String, String)>(l) {
            time = t;
            if kind == "o" {
                init.push_str(&data);
            }
        }
    }
    let obj = header.as_object_mut()?;
    obj.insert("init".into(), init.into());
    obj.insert("time".into(), time.into());
    Some(header.to_string())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kill {
    reason: String,
}

pub async fn kill(
    State(app): State<App>,
    SessionRequest { id, reviewer, peer }: SessionRequest,
    Form(form): Form<Kill>,
) -> Response {
    // The reason is shown on the admin's terminal: no control characters.
    let reason: String = form
        .reason
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_owned();
    let event = action(Code::ConsoleKill, &reviewer, peer).session(&id);
    if !(3..=500).contains(&reason.chars().count()) {
        event
            .reason("refused: a reason of 3 to 500 characters is required")
            .emit();
        return (
            StatusCode::BAD_REQUEST,
            "a reason of 3 to 500 characters is required",
        )
            .into_response();
    }
    let message = format!("session ended by reviewer {}: {reason}", reviewer.0);
    match app.shared.sessions.kill(id.as_str(), &message) {
        Some(admin) => {
            event.admin(admin).reason(&reason).emit();
            Redirect::to(&format!("/sessions/{id}")).into_response()
        }
        None => {
            event.reason("refused: not a live session").emit();
            (StatusCode::NOT_FOUND, "not a live session").into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_first_frame_carries_the_screen_so_far_and_its_time() {
        let header = br#"{"version":2,"width":80,"height":24}"#;
        let events: [&[u8]; 3] = [
            br#"[0.5,"o","one "]"#,
            br#"[0.7,"i","x"]"#,
            br#"[1.5,"o","two"]"#,
        ];
        let frame: serde_json::Value =
            serde_json::from_str(&first_frame(header, events.into_iter()).unwrap()).unwrap();
        assert_eq!(frame["init"], "one two");
        assert_eq!(frame["time"], 1.5);
        assert_eq!(frame["width"], 80);
        assert!(first_frame(b"not json", std::iter::empty()).is_none());
    }
}
