//! The command lines an admin typed, from a recording's input (`"i"`) events, for the console's
//! markers; lines typed at a prompt that did not echo them (a password) are left out.
//!
//! The bastion sees only bytes, not the target's terminal modes, so "did not echo" is judged
//! from the output: on a pty, a line counts as echoed when its characters appear, in order
//! (a subsequence, so that line editing and completion do not hide it), in the output written
//! from the line's first keystroke up to the end of the first output line that follows its
//! Enter; escape sequences are removed first. A prompt with echo off shows nothing (or `*`s)
//! there, so its input is left out. Without a pty the target echoes nothing (the admin's own
//! terminal did), so every line counts; a program reading a password there cannot turn the
//! admin's echo off either.
//!
//! This only decides what the markers show: the input events themselves stay in the recording
//! when the grant records input (`record_input`), passwords included.

/// One recording event: time, kind (`o`, `i`, `m`, `r`), data.
pub type CastEvent = (f64, String, String);

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
    for (i, (_, kind, data)) in events.iter().enumerate().skip(line.first) {
        if kind != "o" {
            continue;
        }
        if i > line.enter
            && let Some(at) = data.find('\n')
        {
            window.push_str(&data[..at]);
            break;
        }
        window.push_str(data);
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

    #[test]
    fn a_session_that_ends_after_a_password_shows_nothing() {
        let events = [ev(0.0, "o", "Password: "), ev(1.0, "i", "secret\r")];
        assert!(typed_lines(&events, true).is_empty());
    }
}
