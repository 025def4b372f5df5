//! Removes terminal control sequences that could act on a reviewer's terminal when a recording
//! is printed: OSC (titles, clipboard OSC 52, hyperlinks), DCS, SOS, PM, APC strings, and CSI
//! queries that make the terminal answer (device status, attributes, window reports). Colours
//! and cursor movement stay, so output still reads as it looked.

/// CSI final bytes that make a terminal reply or change window state.
const CSI_DROPPED: &[char] = &['n', 'c', 't', 'q', 'p', 'x'];

enum State {
    Text,
    Esc,
    Csi(String),
    /// Inside a string sequence (OSC, DCS, ...); `true` right after an ESC.
    Str(bool),
}

pub fn sanitize(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut state = State::Text;
    for c in input.chars() {
        state = match state {
            State::Text => match c {
                '\x1b' => State::Esc,
                '\u{9b}' => State::Csi(String::new()),
                '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => State::Str(false),
                c if c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\x08') => State::Text,
                c => {
                    out.push(c);
                    State::Text
                }
            },
            State::Esc => match c {
                '[' => State::Csi(String::new()),
                ']' | 'P' | 'X' | '^' | '_' => State::Str(false),
                c if ('@'..='~').contains(&c) || c.is_ascii_digit() => {
                    // Two-character escapes such as ESC 7 / ESC 8 (save/restore cursor).
                    out.push('\x1b');
                    out.push(c);
                    State::Text
                }
                _ => State::Text,
            },
            State::Csi(mut body) => {
                if ('@'..='~').contains(&c) {
                    if !CSI_DROPPED.contains(&c) && body.len() <= 64 {
                        out.push_str("\x1b[");
                        out.push_str(&body);
                        out.push(c);
                    }
                    State::Text
                } else if c.is_control() {
                    State::Text
                } else {
                    body.push(c);
                    State::Csi(body)
                }
            }
            State::Str(after_esc) => match c {
                '\x07' | '\u{9c}' => State::Text,
                '\\' if after_esc => State::Text,
                '\x1b' => State::Str(true),
                _ => State::Str(false),
            },
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_dangerous_keeps_colour() {
        assert_eq!(sanitize("a\x1b]52;c;aGVsbG8=\x07b"), "ab");
        assert_eq!(sanitize("a\x1b]0;title\x1b\\b"), "ab");
        assert_eq!(sanitize("a\x1bP1$r\x1b\\b"), "ab");
        assert_eq!(sanitize("a\x1b[6nb\x1b[21tc"), "abc");
        assert_eq!(
            sanitize("\x1b[1;31mred\x1b[0m\r\n"),
            "\x1b[1;31mred\x1b[0m\r\n"
        );
        assert_eq!(sanitize("x\u{9d}0;t\u{9c}y\x05z"), "xyz");
    }
}
