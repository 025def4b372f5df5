//! Watching a running session and ending it.
//!
//! The live view is a server-sent event stream in the form the player's `eventsource` driver
//! reads: first the asciicast header with the screen so far (`init`), then each new event line as
//! the recorder writes it, then `{"state":"offline"}` when the session ends or the viewer's
//! console login does. Watching is not activity: a login left watching ends after the console's
//! idle timeout like any other.
//!
//! The recording is read line by line, never whole: the first frame keeps only the latest
//! [`INIT_MAX`] bytes of output (from a line start), which is the screen as it is now unless a
//! full-screen program drew part of it further back.

use std::convert::Infallible;
use std::io::BufRead as _;
use std::time::Duration;

use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::logins::Check;
use super::{App, SessionRequest, action, token};
use crate::audit::Code;

const POLL: Duration = Duration::from_millis(200);
/// Output the first frame replays at most.
const INIT_MAX: usize = 256 << 10;

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
        // Watching is not activity: the login's idle timeout, a logout or a removed reviewer
        // ends the stream.
        let watching = || {
            matches!(app.watch_login(&login), Check::Valid(_))
                && app.shared.sessions.is_live(id.as_str())
        };
        // The first frame, from the whole lines written so far (read on a blocking thread);
        // none until the header is there.
        let (frame, offset) = loop {
            let still_live = watching();
            if tx.is_closed() {
                return;
            }
            let p = path.clone();
            match tokio::task::spawn_blocking(move || first_frame(&p)).await {
                Ok(Ok(Some(found))) => break found,
                Ok(Ok(None)) if still_live => tokio::time::sleep(POLL).await,
                _ => return,
            }
        };
        if tx.send(Sse::default().data(frame)).await.is_err() {
            return;
        }
        let Ok(mut file) = tokio::fs::File::open(&path).await else {
            return;
        };
        if file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            return;
        }
        let mut file = tokio::io::BufReader::new(file);
        // The line being read: a torn last one waits here for the rest.
        let mut line = Vec::new();
        loop {
            let still_live = watching();
            if tx.is_closed() {
                return;
            }
            loop {
                match file.read_until(b'\n', &mut line).await {
                    Ok(0) => break,
                    Ok(_) if line.last() == Some(&b'\n') => {}
                    Ok(_) => break,
                    Err(_) => return,
                }
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                if !text.is_empty() {
                    let data = String::from_utf8_lossy(text).into_owned();
                    if tx.send(Sse::default().data(data)).await.is_err() {
                        return;
                    }
                }
                line.clear();
            }
            if !still_live {
                let _ = tx.send(Sse::default().data(r#"{"state":"offline"}"#)).await;
                return;
            }
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

/// The first frame from the whole lines of the recording so far, and the offset where they end;
/// `None` while it has no header line. Read line by line: it holds one line and the frame.
fn first_frame(path: &std::path::Path) -> std::io::Result<Option<(String, u64)>> {
    let mut file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut frame = FirstFrame::default();
    let mut line = Vec::new();
    let mut offset = 0;
    loop {
        line.clear();
        let n = file.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        offset += n as u64;
        if !frame.push(&line[..n - 1]) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the recording's header is not a JSON object",
            ));
        }
    }
    Ok(frame.finish().map(|f| (f, offset)))
}

/// The header with the output so far as `init` and its time, so the viewer starts with the
/// screen as it is now; built line by line.
#[derive(Default)]
struct FirstFrame {
    header: Option<serde_json::Map<String, serde_json::Value>>,
    init: String,
    time: f64,
}

impl FirstFrame {
    /// Takes the next line (without its newline); false if the header is not a JSON object.
    fn push(&mut self, line: &[u8]) -> bool {
        if self.header.is_none() {
            if line.is_empty() {
                return true;
            }
            match serde_json::from_slice(line) {
                Ok(serde_json::Value::Object(h)) => self.header = Some(h),
                _ => return false,
            }
            return true;
        }
        if let Ok((t, kind, data)) = serde_json::from_slice::<(f64, String, String)>(line) {
            self.time = t;
            if kind == "o" {
                self.init.push_str(&data);
                if self.init.len() > INIT_MAX {
                    self.keep_tail();
                }
            }
        }
        true
    }

    /// Keeps the latest half of [`INIT_MAX`], from the first line start in it.
    fn keep_tail(&mut self) {
        let mut cut = self.init.len() - INIT_MAX / 2;
        while !self.init.is_char_boundary(cut) {
            cut += 1;
        }
        if let Some(nl) = self.init[cut..].find('\n') {
            cut += nl + 1;
        }
        self.init.drain(..cut);
    }

    fn finish(self) -> Option<String> {
        let mut header = self.header?;
        header.insert("init".into(), self.init.into());
        header.insert("time".into(), self.time.into());
        Some(serde_json::Value::Object(header).to_string())
    }
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

    fn frame(lines: &[&[u8]]) -> Option<serde_json::Value> {
        let mut f = FirstFrame::default();
        for l in lines {
            if !f.push(l) {
                return None;
            }
        }
        Some(serde_json::from_str(&f.finish()?).unwrap())
    }

    #[test]
    fn the_first_frame_carries_the_screen_so_far_and_its_time() {
        let frame = frame(&[
            br#"{"version":2,"width":80,"height":24}"#,
            br#"[0.5,"o","one "]"#,
            br#"[0.7,"i","x"]"#,
            br#"[1.5,"o","two"]"#,
        ])
        .unwrap();
        assert_eq!(frame["init"], "one two");
        assert_eq!(frame["time"], 1.5);
        assert_eq!(frame["width"], 80);
        assert!(self::frame(&[b"not json"]).is_none());
    }

    #[test]
    fn the_first_frame_is_read_from_the_whole_lines_written_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.cast");
        std::fs::write(&path, b"").unwrap();
        assert!(first_frame(&path).unwrap().is_none(), "no header yet");
        let whole = "{\"version\":2}\n[0.5,\"o\",\"one\"]\n";
        std::fs::write(&path, format!("{whole}[0.9,\"o\",\"to")).unwrap();
        let (frame, offset) = first_frame(&path).unwrap().unwrap();
        let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            (frame["init"].as_str(), frame["time"].as_f64()),
            (Some("one"), Some(0.5))
        );
        assert_eq!(
            offset,
            whole.len() as u64,
            "the torn line is read with what follows"
        );
        std::fs::write(&path, "[1,2]\n").unwrap();
        assert!(first_frame(&path).is_err());
    }

    #[test]
    fn the_first_frame_keeps_the_latest_output_from_a_line_start() {
        let mut f = FirstFrame::default();
        assert!(f.push(br#"{"version":2,"width":80,"height":24}"#));
        let line = format!("{}\r\n", "é".repeat(49));
        let event = serde_json::json!([1.0, "o", line]).to_string();
        for _ in 0..(4 * INIT_MAX / line.len()) {
            assert!(f.push(event.as_bytes()));
        }
        assert!(f.push(br#"[2.0,"o","LAST"]"#));
        assert!(f.init.len() <= INIT_MAX && f.init.len() > INIT_MAX / 4);
        assert!(f.init.starts_with('é') && f.init.ends_with("\r\nLAST"));
        let frame: serde_json::Value = serde_json::from_str(&f.finish().unwrap()).unwrap();
        assert_eq!(frame["time"], 2.0);
    }
}
