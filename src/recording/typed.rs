//! The command lines an admin typed, from a recording's input (`"i"`) events, for the console's
//! markers; lines typed at a prompt that did not echo them (a password) are left out.
//!
//! The bastion sees only bytes, not the target's terminal modes, so "did not echo" is judged
//! from the output: on a pty, a line counts as echoed when its characters appear, in order
//! (a subsequence, so that line editing and completion do not hide it), in the output written
//! from the line's first keystroke up to the end of the first output line that follows its
//! Enter (and at most [`AFTER_ENTER`] characters after the Enter's event, so that output without
//! a newline, as a full-screen program's, does not make every later line read the whole rest of
//! the recording); escape sequences are removed first. A prompt with echo off shows nothing (or `*`s)
//! there, so its input is left out. Without a pty the target echoes nothing (the admin's own
//! terminal did), so every line counts; a program reading a password there cannot turn the
//! admin's echo off either.
//!
//! This only decides what the markers show: the input events themselves stay in the recording
//! when the grant records input (`record_input`), passwords included.

/// Output characters after a line's Enter that its window may hold: far more than an echo and
/// the rest of its line, and a bound on the work per line whatever the output is.
const AFTER_ENTER: usize = 4096;

/// One recording event: time, kind (`o`, `i`, `m`, `r`), data.
pub type CastEvent = (f64, String, String);

/// Output kept for one typed line before its Enter, at most: past it, further output waits for
/// the Enter unread, so a line typed while a flood of output ran may be judged not echoed (left
/// out of the markers, as a password would be) but the flood is never held.
const PENDING_OUTPUT_MAX: usize = 1 << 20;

/// Event data [`marker_events`] keeps in all, at most: an admin who types a key and Enter between
/// floods of output puts each flood in a window, and would have the whole recording held. Past
/// it the markers stop, with a note saying so.
const KEPT_MAX: usize = 32 << 20;

/// The events [`typed_lines`] and the console's markers need, taken from a stream of a
/// recording's events in bounded memory: every input event, the first output event, output from
/// a line's first keystroke to the end of its window after Enter (up to [`PENDING_OUTPUT_MAX`]
/// before it), the sftp and recording notes, and the last event (for its time). Output outside
/// every window, most of a recording, is dropped: `typed_lines` reads the same windows from it.
/// At most [`KEPT_MAX`] bytes of data are kept: past them a `recording:` note says the markers
/// stop there.
pub fn marker_events(events: impl IntoIterator<Item = CastEvent>) -> Vec<CastEvent> {
    let mut out = Vec::new();
    let mut seen_output = false;
    // A keystroke since the last Enter, and the output kept for it.
    let mut pending: Option<usize> = None;
    // Characters left in the window after the latest Enter.
    let mut after: Option<usize> = None;
    let mut last = None;
    // Data kept so far; once over [`KEPT_MAX`] nothing more is (`full`).
    let mut held = 0;
    let mut full = false;
    for event in events {
        let (_, kind, data) = &event;
        let keep = match kind.as_str() {
            "i" => {
                for c in data.chars() {
                    if matches!(c, '\r' | '\n') {
                        pending = None;
                        after = Some(AFTER_ENTER);
                    } else {
                        pending.get_or_insert(0);
                    }
                }
                true
            }
            "o" => {
                let mut keep = !seen_output;
                seen_output = true;
                if let Some(kept) = pending.as_mut()
                    && *kept < PENDING_OUTPUT_MAX
                {
                    *kept += data.len();
                    keep = true;
                }
                if let Some(left) = after {
                    let rest = data.split('\n').next().unwrap_or_default();
                    let left = left.saturating_sub(rest.chars().count());
                    after = (left > 0 && rest.len() == data.len()).then_some(left);
                    keep = true;
                }
                keep
            }
            "m" => data.starts_with("sftp: ") || data.starts_with("recording: "),
            _ => false,
        };
        if keep && !full && held + event.2.len() > KEPT_MAX {
            full = true;
            out.push((
                event.0,
                "m".into(),
                format!(
                    "recording: the markers stop here (more than {} MiB of typed lines and \
                     their output to read)",
                    KEPT_MAX >> 20
                ),
            ));
        }
        if keep && !full {
            held += event.2.len();
            out.push(event);
            last = None;
        } else {
            last = Some(event);
        }
    }
    out.extend(last);
    out
}

/// A finished line: when Enter was typed, the text, and where its window starts and ends.
struct Line {
    t: f64,
    text: String,
    first: usize,
    enter: usize,
}

/// Command lines typed, with the time Enter was typed; no-echo lines left out when `pty`.
pub fn typed_lines(events: &[CastEvent], pty: bool) -> Vec<(f64, String)> {
    let mut lines = Vec::new();
    let mut typed = String::new();
    let mut first = None;
    for (i, (t, kind, data)) in events.iter().enumerate() {
        if kind != "i" {
            continue;
        }
        for c in data.chars() {
            first.get_or_insert(i);
            match c {
                '\r' | '\n' => {
                    let text = typed.trim();
                    if !text.is_empty() {
                        lines.push(Line {
                            t: *t,
                            text: text.to_owned(),
                            first: first.unwrap_or(i),
                            enter: i,
                        });
                    }
                    typed.clear();
                    first = None;
                }
                '\u{7f}' | '\u{8}' => {
                    typed.pop();
                }
                c if !c.is_control() => typed.push(c),
                _ => {}
            }
        }
    }
    lines
        .into_iter()
        .filter(|l| !pty || echoed(events, l))
        .map(|l| (l.t, l.text))
        .collect()
}

/// Whether `line` appears in the output of its window (see the module doc).
fn echoed(events: &[CastEvent], line: &Line) -> bool {
    let mut window = String::new();
    let mut after = AFTER_ENTER;
    for (i, (_, kind, data)) in events.iter().enumerate().skip(line.first) {
        if kind != "o" {
            continue;
        }
        if i <= line.enter {
            window.push_str(data);
            continue;
        }
        let rest = data.split('\n').next().unwrap_or_default();
        for c in rest.chars().take(after) {
            window.push(c);
            after = after.saturating_sub(1);
        }
        if after == 0 || rest.len() < data.len() {
            break;
        }
    }
    let shown = String::from_utf8_lossy(&strip_ansi_escapes::strip(window)).into_owned();
    let mut shown = shown.chars();
    line.text.chars().all(|c| shown.any(|s| s == c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: f64, k: &str, d: &str) -> CastEvent {
        (t, k.to_owned(), d.to_owned())
    }

    #[test]
    fn echoed_lines_are_kept_and_edits_applied() {
        let events = [
            ev(0.2, "o", "$ "),
            ev(1.0, "i", "lx"),
            ev(1.0, "o", "lx"),
            ev(1.1, "i", "\u{7f}s -l\r"),
            ev(1.1, "o", "\u{8} \u{8}s \u{1b}[1m-l\u{1b}[0m\r\n"),
            ev(1.2, "o", "total 0\r\n$ "),
        ];
        assert_eq!(typed_lines(&events, true), vec![(1.1, "ls -l".into())]);
    }

    #[test]
    fn no_echo_lines_are_left_out() {
        let events = [
            ev(0.1, "o", "$ "),
            ev(1.0, "i", "sudo -i\r"),
            ev(1.1, "o", "sudo -i\r\n[sudo] password for beheer: "),
            // Typed with echo off: nothing comes back before the newline.
            ev(2.0, "i", "Geheim"),
            ev(2.5, "i", "123\r"),
            ev(2.6, "o", "\r\n"),
            // The following output holds the letters, but after the window.
            ev(2.7, "o", "Geheim 123 root@pacs01:~# "),
            ev(3.0, "i", "id\r"),
            ev(3.1, "o", "id\r\nuid=0(root)\r\n"),
            // Echoed as stars.
            ev(4.0, "i", "pw\r"),
            ev(4.0, "o", "**\r\n"),
        ];
        assert_eq!(
            typed_lines(&events, true),
            vec![(1.0, "sudo -i".into()), (3.0, "id".into())]
        );
        // Without a pty the target echoes nothing, and every line counts.
        assert_eq!(typed_lines(&events, false).len(), 4);
    }

    /// Output without newlines after many lines (a full-screen program, or a hostile target):
    /// each line's window stops a bounded distance after its Enter, so a small recording cannot
    /// make the session page read it once per line.
    #[test]
    fn the_window_after_enter_is_bounded() {
        let far = "z".repeat(AFTER_ENTER);
        let events = [
            ev(1.0, "i", "abc\r"),
            ev(1.1, "o", &far),
            ev(1.2, "o", "abc"),
        ];
        assert!(typed_lines(&events, true).is_empty(), "past the bound");
        // Within the bound it is found.
        let near = [
            ev(1.0, "i", "abc\r"),
            ev(1.1, "o", &far[3..]),
            ev(1.2, "o", "abc"),
        ];
        assert_eq!(typed_lines(&near, true), vec![(1.0, "abc".into())]);
        let events: Vec<CastEvent> = (0..3000)
            .flat_map(|k| [ev(f64::from(k), "i", "ls\r"), ev(f64::from(k), "o", &far)])
            .collect();
        let started = std::time::Instant::now();
        assert!(typed_lines(&events, true).is_empty());
        // Unbounded, this reads 3000 windows of up to 12 MB: minutes, not milliseconds.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    /// An admin who types a key and Enter between floods of output (1 MiB each, 96 MiB in
    /// all) puts every flood in a line's window: the markers' events stay bounded all the same,
    /// say where they stop, and keep the last event for the end's time.
    #[test]
    fn marker_events_stay_bounded_when_every_flood_is_in_a_window() {
        let flood = |k: u32| {
            [
                ev(f64::from(k), "i", "x"),
                ev(f64::from(k), "o", &format!("x{}", "z".repeat(1 << 20))),
                ev(f64::from(k), "i", "\r"),
            ]
        };
        let events = (0..96).flat_map(flood).chain([ev(999.0, "r", "80x24")]);
        let kept = marker_events(events);
        let held: usize = kept.iter().map(|(_, _, d)| d.len()).sum();
        assert!(held <= KEPT_MAX, "{} MiB held", held >> 20);
        assert!(
            kept.iter()
                .any(|(_, k, d)| k == "m" && d.starts_with("recording: the markers stop here")),
            "no note of the cut"
        );
        assert_eq!(kept.last(), Some(&ev(999.0, "r", "80x24")));
        // Below the bound nothing changes: the first line is still found.
        assert_eq!(typed_lines(&kept[..4], true), vec![(0.0, "x".into())]);
    }

    /// The markers' events lose only output no window reads: the same lines either way.
    #[test]
    fn marker_events_keep_every_window() {
        let far = "z".repeat(AFTER_ENTER);
        let mut events = vec![
            ev(0.1, "o", "banner\r\n"),
            ev(0.2, "o", "$ "),
            ev(0.3, "r", "80x24"),
            ev(1.0, "i", "lx"),
            ev(1.0, "o", "lx"),
            ev(1.1, "i", "\u{7f}s -l\r"),
            ev(1.1, "o", "\u{8} \u{8}s -l"),
            ev(1.15, "o", "\r\ntotal 0\r\n"),
            ev(1.2, "o", &far),
            ev(1.3, "m", "stream: stderr"),
            ev(1.4, "m", "sftp: SFTP_REMOVE /tmp/x (ok)"),
            // Not echoed: left out either way.
            ev(2.0, "i", "sudo -i\r"),
            ev(2.1, "o", "[sudo] password: "),
            ev(2.5, "i", "Geheim\r"),
            ev(2.6, "o", "\r\n"),
            ev(2.7, "o", "Geheim root# "),
            ev(3.0, "i", "abc\r"),
            ev(3.1, "o", &far[3..]),
            ev(3.2, "o", "abc"),
            ev(3.3, "o", "more"),
        ];
        for k in 0..50 {
            events.push(ev(4.0 + f64::from(k), "o", "flood\r\n"));
        }
        events.push(ev(60.0, "r", "100x30"));
        let kept = marker_events(events.clone());
        assert!(kept.len() < events.len() - 40, "{}", kept.len());
        assert_eq!(kept.last(), events.last());
        for pty in [true, false] {
            assert_eq!(typed_lines(&kept, pty), typed_lines(&events, pty));
        }
        assert_eq!(
            typed_lines(&kept, true),
            vec![(1.1, "ls -l".into()), (3.0, "abc".into())]
        );
    }

    #[test]
    fn a_session_that_ends_after_a_password_shows_nothing() {
        let events = [ev(0.0, "o", "Password: "), ev(1.0, "i", "secret\r")];
        assert!(typed_lines(&events, true).is_empty());
    }
}
