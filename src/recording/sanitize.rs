//! Makes recorded terminal output safe to print on a reviewer's terminal (`recordings cat`).
//!
//! A security boundary: the target and the admin choose every byte of a recording, and a
//! reviewer's terminal acts on control sequences (answers queries, sets the clipboard and the
//! title, switches screens, hides text). So this is an allowlist over a real VT parser state
//! machine (the `vte` crate, the DEC/ANSI parser alacritty uses), not a list of known-bad
//! sequences. What passes:
//!
//! - printable text, UTF-8 included, and the controls LF, CR, HT and BS;
//! - CSI cursor movement and positioning (`A`-`G`, `H`, `f`, `d`, `` ` ``, `a`, `e`, `I`, `Z`,
//!   `s`, `u` without parameters), scrolling and editing (`@`, `L`, `M`, `P`, `X`, `S`, `T`),
//!   erase in display and line (`J`, `K` with 0, 1 or 2; not `CSI 3 J`, which clears the
//!   scrollback), cursor visibility (`CSI ? 25 h/l`), and SGR (`m`: colours and attributes)
//!   without conceal (8), fonts and other rare codes; an SGR sequence loses only its forbidden
//!   codes.
//!
//! Everything else is removed: OSC, DCS, SOS, PM and APC strings, every ESC + final (`ESC Z`,
//! `ESC c`, charset designations, keypad modes, `ESC 7`), every query and report request, every
//! mode change but cursor visibility (alternate screen included: a full-screen program's output
//! then stays on the reviewer's main screen and in its scrollback instead of vanishing when the
//! program exits), scroll margins (`CSI r`: lines scrolled out of a margin are lost, not kept in
//! the scrollback), C1 controls (U+0080-U+009F), other C0 controls, and bidirectional-override
//! characters (they reorder what the reviewer reads).
//!
//! Where something was removed, a marker says what: `⟦removed: OSC 52⟧`, `⟦removed: CSI 6n⟧`,
//! `⟦removed: ESC Z, SGR 8⟧`. Neighbouring removals share one marker (at most 8 named, then
//! `+N more`); a string longer than 64 bytes shows its length (`OSC 52 (4100 bytes)`). NUL, BEL
//! and DEL are dropped without a marker: they change nothing on screen and are common. A string
//! still open at the end of the recording is removed as `unterminated`, and its content is
//! shown after the marker as text, so an unterminated OSC cannot hide the rest of a session.
//!
//! Cursor movement, CR, BS and erasing are kept, so text can still be overwritten as it was on the
//! admin's screen, and colours can still make text hard to read (black on black); the `.cast`
//! file holds every byte.

use std::fmt::Write as _;

use vte::{Params, Parser, Perform};

/// Strings longer than this show their length in the marker.
const LONG_STRING: usize = 64;
/// Removals named in one marker before `+N more`.
const MARKER_ITEMS: usize = 8;

pub fn sanitize(input: &str) -> String {
    sanitize_at(input, 0)
}

/// `depth` 1 sanitizes the content of an unterminated string: it holds no ESC (an ESC would have
/// ended the string), so it cannot end in another string, and recursion stops there.
fn sanitize_at(input: &str, depth: u8) -> String {
    let mut parser = Parser::new();
    let mut s = Sanitizer {
        out: String::with_capacity(input.len()),
        seq: String::new(),
        cur: '\0',
        called: false,
        st_pending: false,
        dcs: None,
        removed: Vec::new(),
        more: 0,
    };
    for c in input.chars() {
        // A terminal that honours C1 controls ends a string at U+009C (ST); vte does not, so it
        // is fed as its 7-bit form `ESC \`, lest the sanitizer swallow text the terminal shows.
        if c == '\u{9c}' && !s.seq.is_empty() {
            s.feed(&mut parser, '\x1b');
            s.feed(&mut parser, '\\');
        } else {
            s.feed(&mut parser, c);
        }
    }
    if !s.seq.is_empty() {
        let seq = std::mem::take(&mut s.seq);
        let kind = Kind::of(&seq);
        if kind.is_string() && depth == 0 {
            s.remove(format!("unterminated {}", describe(&seq, kind)));
            s.flush();
            let content: String = seq.chars().skip(2).collect();
            s.out.push_str(&sanitize_at(&content, depth + 1));
        } else {
            s.remove(format!("incomplete {}", describe(&seq, kind)));
        }
    }
    s.flush();
    s.out
}

struct Sanitizer {
    out: String,
    /// What was fed since the parser left the ground state: the raw sequence so far, less the
    /// C0 controls executed inside it (they do not belong to the sequence).
    seq: String,
    /// The char being fed, and whether the parser has called back for it.
    cur: char,
    called: bool,
    /// A string just ended at an ESC: the `\` that completes its ST is part of it.
    st_pending: bool,
    /// The function of the DCS being skipped (`DCS $q`).
    dcs: Option<String>,
    /// Removals not yet shown, and how many more beyond [`MARKER_ITEMS`].
    removed: Vec<String>,
    more: usize,
}

impl Sanitizer {
    fn feed(&mut self, parser: &mut Parser, c: char) {
        let in_seq = !self.seq.is_empty();
        self.cur = c;
        self.called = false;
        self.seq.push(c);
        let mut buf = [0; 4];
        parser.advance(self, c.encode_utf8(&mut buf).as_bytes());
        if !self.called && c == '\x1b' && in_seq {
            // An ESC aborts any sequence or string (SOS, PM and APC end only this way) without a
            // callback.
            self.seq.pop();
            let aborted = std::mem::replace(&mut self.seq, String::from('\x1b'));
            let kind = Kind::of(&aborted);
            if kind.is_string() {
                self.remove(describe(&aborted, kind));
                self.st_pending = true;
            } else {
                self.st_pending = false;
                self.remove(format!("incomplete {}", describe(&aborted, kind)));
            }
        } else if !self.called
            && self.seq.len() > 2
            && Kind::of(&self.seq) == Kind::Csi
            && ('\x40'..='\x7e').contains(&c)
        {
            // A final byte after a malformed CSI (`CSI 1 ? m`): vte ends it without a callback.
            self.seq.clear();
            self.remove("malformed CSI".into());
        }
    }

    fn remove(&mut self, what: String) {
        if self.removed.len() < MARKER_ITEMS {
            self.removed.push(what);
        } else {
            self.more += 1;
        }
    }

    /// Shows pending removals; called before anything is written, and at the end.
    fn flush(&mut self) {
        if self.removed.is_empty() {
            return;
        }
        self.out.push_str("⟦removed: ");
        self.out.push_str(&self.removed.join(", "));
        if self.more > 0 {
            let _ = write!(self.out, ", +{} more", self.more);
        }
        self.out.push('⟧');
        self.removed.clear();
        self.more = 0;
    }

    fn emit(&mut self, s: &str) {
        self.flush();
        self.out.push_str(s);
    }

    /// A string ended: at an ESC, the sequence that follows starts with it.
    fn end_string(&mut self) {
        if self.cur == '\x1b' {
            self.seq = String::from('\x1b');
            self.st_pending = true;
        } else {
            self.seq.clear();
        }
    }

    fn control(&mut self, byte: u8) {
        match byte {
            b'\n' | b'\r' | b'\t' | 0x08 => {
                let c = char::from(byte);
                self.flush();
                self.out.push(c);
            }
            0x00 | 0x07 => {}
            _ => self.remove(control_name(byte)),
        }
    }
}

impl Perform for Sanitizer {
    fn print(&mut self, c: char) {
        // Only in the ground state.
        self.called = true;
        self.st_pending = false;
        self.seq.clear();
        if c == '\x7f' {
        } else if is_bidi_control(c) {
            self.remove(format!("U+{:04X}", u32::from(c)));
        } else {
            self.flush();
            self.out.push(c);
        }
    }

    fn execute(&mut self, byte: u8) {
        self.called = true;
        self.st_pending = false;
        let in_seq = self.seq.len() > self.cur.len_utf8();
        if in_seq && matches!(byte, 0x18 | 0x1a) {
            // CAN and SUB abort the sequence and return to the ground state.
            self.seq.pop();
            let aborted = std::mem::take(&mut self.seq);
            let kind = Kind::of(&aborted);
            let what = describe(&aborted, kind);
            if kind.is_string() {
                self.remove(what);
            } else {
                self.remove(format!("incomplete {what}"));
            }
        } else if in_seq {
            // A C0 control inside a CSI or ESC sequence acts at once; the sequence goes on.
            self.seq.pop();
        } else {
            self.seq.clear();
        }
        self.control(byte);
    }

    fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, action: char) {
        self.called = true;
        self.st_pending = false;
        let raw = std::mem::take(&mut self.seq);
        let verdict = if ignore {
            Csi::Drop
        } else {
            csi_verdict(params, intermediates, action)
        };
        match verdict {
            Csi::Keep => {
                // The bytes as sent when they are plain ASCII (so `CSI H` stays `CSI H`),
                // else rebuilt from what the parser read.
                if raw.starts_with("\x1b[")
                    && raw.bytes().skip(2).all(|b| (0x20..0x7f).contains(&b))
                {
                    self.emit(&raw);
                } else {
                    let seq = csi_string(params, intermediates, action);
                    self.emit(&seq);
                }
            }
            Csi::Sgr { kept, dropped } => {
                self.remove(format!("SGR {dropped}"));
                if !kept.is_empty() {
                    self.emit(&format!("\x1b[{kept}m"));
                }
            }
            Csi::Drop => {
                let mut what = String::from("CSI ");
                what.push_str(&csi_body(params, intermediates, action));
                if what.len() > 24 {
                    what.truncate(23);
                    what.push('…');
                }
                self.remove(what);
            }
        }
    }

    fn esc_dispatch(&mut self, intermediates: &[u8], _ignore: bool, byte: u8) {
        self.called = true;
        self.seq.clear();
        let st = byte == b'\\' && intermediates.is_empty();
        if !(st && std::mem::take(&mut self.st_pending)) {
            self.st_pending = false;
            let mut what = String::from("ESC ");
            what.extend(intermediates.iter().map(|b| char::from(*b)));
            what.push(char::from(byte));
            self.remove(what);
        }
    }

    fn hook(&mut self, _params: &Params, intermediates: &[u8], _ignore: bool, action: char) {
        self.called = true;
        let mut what = String::from("DCS ");
        what.extend(intermediates.iter().map(|b| char::from(*b)));
        what.push(action);
        self.dcs = Some(what);
    }

    fn put(&mut self, _byte: u8) {
        self.called = true;
    }

    fn unhook(&mut self) {
        self.called = true;
        let bytes = self.seq.len();
        let what = self.dcs.take().unwrap_or_else(|| "DCS".into());
        self.remove(with_length(what, bytes));
        self.end_string();
    }

    fn osc_dispatch(&mut self, _params: &[&[u8]], _bell_terminated: bool) {
        self.called = true;
        let what = describe(&self.seq, Kind::Osc);
        self.remove(what);
        self.end_string();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Esc,
    Csi,
    Osc,
    Dcs,
    Sos,
    Pm,
    Apc,
}

impl Kind {
    /// From a raw sequence's introducer.
    fn of(seq: &str) -> Self {
        match seq.as_bytes().get(1) {
            Some(b'[') => Kind::Csi,
            Some(b']') => Kind::Osc,
            Some(b'P') => Kind::Dcs,
            Some(b'X') => Kind::Sos,
            Some(b'^') => Kind::Pm,
            Some(b'_') => Kind::Apc,
            _ => Kind::Esc,
        }
    }

    fn is_string(self) -> bool {
        !matches!(self, Kind::Esc | Kind::Csi)
    }
}

/// A short name for a removed raw sequence; never any of its content but an OSC's number.
fn describe(seq: &str, kind: Kind) -> String {
    let name = match kind {
        Kind::Esc => return "ESC".into(),
        Kind::Csi => return "CSI".into(),
        Kind::Osc => {
            let number: String = seq
                .chars()
                .skip(2)
                .take_while(char::is_ascii_digit)
                .take(5)
                .collect();
            if number.is_empty() {
                "OSC".into()
            } else {
                format!("OSC {number}")
            }
        }
        Kind::Dcs => "DCS".into(),
        Kind::Sos => "SOS".into(),
        Kind::Pm => "PM".into(),
        Kind::Apc => "APC".into(),
    };
    with_length(name, seq.len())
}

fn with_length(name: String, bytes: usize) -> String {
    if bytes > LONG_STRING {
        format!("{name} ({bytes} bytes)")
    } else {
        name
    }
}

fn control_name(byte: u8) -> String {
    const C0: [&str; 32] = [
        "NUL", "SOH", "STX", "ETX", "EOT", "ENQ", "ACK", "BEL", "BS", "HT", "LF", "VT", "FF", "CR",
        "SO", "SI", "DLE", "DC1", "DC2", "DC3", "DC4", "NAK", "SYN", "ETB", "CAN", "EM", "SUB",
        "ESC", "FS", "GS", "RS", "US",
    ];
    const C1: [&str; 32] = [
        "PAD", "HOP", "BPH", "NBH", "IND", "NEL", "SSA", "ESA", "HTS", "HTJ", "VTS", "PLD", "PLU",
        "RI", "SS2", "SS3", "DCS", "PU1", "PU2", "STS", "CCH", "MW", "SPA", "EPA", "SOS", "SGCI",
        "SCI", "CSI", "ST", "OSC", "PM", "APC",
    ];
    match byte {
        0x00..=0x1f => C0[usize::from(byte)].into(),
        0x80..=0x9f => format!("C1 {}", C1[usize::from(byte - 0x80)]),
        _ => format!("0x{byte:02X}"),
    }
}

/// Bidirectional embedding, override and isolate controls.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

enum Csi {
    Keep,
    /// An SGR sequence with forbidden codes: what is left (may be empty), and what went.
    Sgr {
        kept: String,
        dropped: String,
    },
    Drop,
}

/// The allowlist. Parameters are groups of sub-parameters (`4:3` is one group).
fn csi_verdict(params: &Params, intermediates: &[u8], action: char) -> Csi {
    let groups: Vec<&[u16]> = params.iter().collect();
    let plain = groups.iter().all(|g| g.len() == 1);
    let at_most = |n: usize| plain && groups.len() <= n;
    let first = groups.first().and_then(|g| g.first()).copied().unwrap_or(0);
    let allowed = match (intermediates, action) {
        ([], 'm') => return sgr(&groups),
        // Cursor movement and positioning, tab stops forward and back.
        ([], 'A' | 'B' | 'C' | 'D' | 'E' | 'F' | 'G' | 'd' | '`' | 'a' | 'e' | 'I' | 'Z') => {
            at_most(1)
        }
        ([], 'H' | 'f') => at_most(2),
        // Insert or delete characters and lines, erase characters, scroll. `CSI T` with five
        // parameters is xterm's mouse tracking: one at most.
        ([], '@' | 'L' | 'M' | 'P' | 'X' | 'S' | 'T') => at_most(1),
        // Erase in display and in line; `CSI 3 J` clears the scrollback.
        ([], 'J' | 'K') => at_most(1) && first <= 2,
        // Save and restore the cursor (with parameters these are other functions).
        ([], 's' | 'u') => params.is_empty() || (at_most(1) && first == 0),
        // Cursor visibility.
        ([b'?'], 'h' | 'l') => at_most(1) && first == 25,
        _ => false,
    };
    if allowed { Csi::Keep } else { Csi::Drop }
}

/// SGR codes that only change how text looks, never whether it shows: bold, faint, italic,
/// underline, blink, reverse, strike, their resets (28 reveals), colours, overline. Not 8
/// (conceal), fonts (10-20), or the rare rest.
fn sgr_allowed(code: u16) -> bool {
    matches!(code, 0..=7 | 9 | 21..=27 | 28 | 29 | 30..=37 | 39 | 40..=47 | 49 | 53 | 55 | 59 | 90..=97 | 100..=107)
}

fn sgr(groups: &[&[u16]]) -> Csi {
    let join = |g: &[u16]| g.iter().map(u16::to_string).collect::<Vec<_>>().join(":");
    let mut kept: Vec<String> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    let mut i = 0;
    while let Some(g) = groups.get(i) {
        let code = g.first().copied().unwrap_or(0);
        match (code, g.len()) {
            // Extended colour, `38;5;N` or `38;2;R;G;B`: the colour values are no codes.
            (38 | 48 | 58, 1) => {
                let n = match groups.get(i + 1).and_then(|g| g.first()) {
                    Some(5) => 2,
                    Some(2) => 4,
                    // Terminals differ on where a malformed one ends: drop all of it.
                    _ => {
                        return Csi::Sgr {
                            kept: String::new(),
                            dropped: join_all(groups),
                        };
                    }
                };
                let end = (i + 1 + n).min(groups.len());
                let part = &groups[i..end];
                if part.iter().any(|g| g.len() != 1) {
                    return Csi::Sgr {
                        kept: String::new(),
                        dropped: join_all(groups),
                    };
                }
                kept.extend(part.iter().map(|g| join(g)));
                i = end;
                continue;
            }
            // Colon forms: extended colour, underline style.
            (38 | 48 | 58 | 4, _) => kept.push(join(g)),
            (c, 1) if sgr_allowed(c) => kept.push(join(g)),
            _ => dropped.push(join(g)),
        }
        i += 1;
    }
    if dropped.is_empty() {
        Csi::Keep
    } else {
        Csi::Sgr {
            kept: kept.join(";"),
            dropped: dropped.join(";"),
        }
    }
}

fn join_all(groups: &[&[u16]]) -> String {
    groups
        .iter()
        .map(|g| g.iter().map(u16::to_string).collect::<Vec<_>>().join(":"))
        .collect::<Vec<_>>()
        .join(";")
}

/// What a CSI sequence holds after `CSI `: private marker and intermediates, parameters, final.
fn csi_body(params: &Params, intermediates: &[u8], action: char) -> String {
    let (private, inter): (Vec<u8>, Vec<u8>) = intermediates
        .iter()
        .partition(|b| (0x3c..=0x3f).contains(*b));
    let groups: Vec<&[u16]> = params.iter().collect();
    let mut out: String = private.iter().map(|b| char::from(*b)).collect();
    // vte reads a missing parameter as 0: show none for a lone 0.
    if !(groups.len() == 1 && groups[0] == [0]) {
        out.push_str(&join_all(&groups));
    }
    out.extend(inter.iter().map(|b| char::from(*b)));
    out.push(action);
    out
}

fn csi_string(params: &Params, intermediates: &[u8], action: char) -> String {
    let groups: Vec<&[u16]> = params.iter().collect();
    let mut out = String::from("\x1b[");
    out.extend(intermediates.iter().map(|b| char::from(*b)));
    out.push_str(&join_all(&groups));
    out.push(action);
    out
}

/// Checks that `text` holds nothing outside the allowlist: printable text, LF, CR, HT, BS and
/// allowed CSI sequences, every one complete. For tests and the fuzz target: a second pass over
/// [`sanitize`]'s output with a parser of its own.
pub fn check_sanitized(text: &str) -> Result<(), String> {
    struct Check {
        error: Option<String>,
        called: bool,
        dispatched: bool,
    }
    impl Check {
        fn fail(&mut self, what: String) {
            self.called = true;
            self.error.get_or_insert(what);
        }
    }
    impl Perform for Check {
        fn print(&mut self, c: char) {
            self.called = true;
            if c.is_control() || is_bidi_control(c) {
                self.fail(format!("printed {c:?}"));
            }
        }
        fn execute(&mut self, byte: u8) {
            self.called = true;
            if !matches!(byte, b'\n' | b'\r' | b'\t' | 0x08) {
                self.fail(format!("control 0x{byte:02x}"));
            }
        }
        fn csi_dispatch(&mut self, params: &Params, intermediates: &[u8], ignore: bool, c: char) {
            self.called = true;
            self.dispatched = true;
            if ignore || !matches!(csi_verdict(params, intermediates, c), Csi::Keep) {
                self.fail(format!("CSI {}", csi_body(params, intermediates, c)));
            }
        }
        fn esc_dispatch(&mut self, _: &[u8], _: bool, byte: u8) {
            self.fail(format!("ESC {}", char::from(byte)));
        }
        fn hook(&mut self, _: &Params, _: &[u8], _: bool, _: char) {
            self.fail("DCS".into());
        }
        fn put(&mut self, _: u8) {
            self.fail("DCS content".into());
        }
        fn osc_dispatch(&mut self, _: &[&[u8]], _: bool) {
            self.fail("OSC".into());
        }
    }
    let mut parser = Parser::new();
    let mut check = Check {
        error: None,
        called: false,
        dispatched: false,
    };
    // Every char but those inside a CSI sequence makes the parser call back; a sequence that
    // never does (an SOS, PM or APC string, an unfinished CSI) is an error.
    let mut silent = String::new();
    for c in text.chars() {
        check.called = false;
        check.dispatched = false;
        let mut buf = [0; 4];
        parser.advance(&mut check, c.encode_utf8(&mut buf).as_bytes());
        if check.called {
            if !silent.is_empty() && !check.dispatched {
                return Err(format!("interrupted sequence {}", silent.escape_debug()));
            }
            silent.clear();
        } else {
            silent.push(c);
            if c == '\x1b' && silent.len() > 1 {
                return Err(format!("aborted sequence {}", silent.escape_debug()));
            }
        }
        if let Some(e) = check.error.take() {
            return Err(e);
        }
    }
    if silent.is_empty() {
        Ok(())
    } else {
        Err(format!("unfinished sequence {}", silent.escape_debug()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Sanitizes, checks the output with the second pass, and returns it.
    fn s(input: &str) -> String {
        let out = sanitize(input);
        check_sanitized(&out).unwrap_or_else(|e| panic!("{input:?} -> {out:?}: {e}"));
        assert_eq!(sanitize(&out), out, "not idempotent for {input:?}");
        out
    }

    #[test]
    fn normal_output_passes_unchanged() {
        for text in [
            "plain text\r\n",
            "tab\there, back\x08space\n",
            "\x1b[1;31mred\x1b[0m \x1b[38;5;208morange\x1b[m \x1b[38;2;1;2;3mrgb\x1b[39m",
            "\x1b[4:3mcurly\x1b[24m \x1b[7mreverse\x1b[27m \x1b[9mstruck\x1b[29m \x1b[28mreveal",
            "\x1b[H\x1b[2J\x1b[10;20Hhere\x1b[3A\x1b[2B\x1b[C\x1b[4D\x1b[K\x1b[1K\x1b[0J",
            "\x1b[5G\x1b[3d\x1b[2E\x1b[F\x1b[?25l\x1b[?25h\x1b[s\x1b[u\x1b[2L\x1b[M",
            "\x1b[3P\x1b[4@\x1b[5X\x1b[S\x1b[2T\x1b[10`",
            "UTF-8: ĳzer, 日本語, emoji 🦀, combining e\u{301}\n",
            "progress 50%\r progress 100%\n",
        ] {
            assert_eq!(s(text), text);
        }
    }

    #[test]
    fn strings_are_removed_and_marked() {
        assert_eq!(s("a\x1b]52;c;aGVsbG8=\x07b"), "a⟦removed: OSC 52⟧b");
        assert_eq!(s("a\x1b]0;title\x1b\\b"), "a⟦removed: OSC 0⟧b");
        assert_eq!(
            s("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b"),
            "a⟦removed: OSC 8⟧link⟦removed: OSC 8⟧b"
        );
        // DECRQSS and other device control strings.
        assert_eq!(s("a\x1bP$qm\x1b\\b"), "a⟦removed: DCS $q⟧b");
        assert_eq!(s("a\x1bP1$r\x1b\\b"), "a⟦removed: DCS $r⟧b");
        assert_eq!(
            s("a\x1bXsos\x1b\\b\x1b^pm\x1b\\c\x1b_apc\x1b\\d"),
            "a⟦removed: SOS⟧b⟦removed: PM⟧c⟦removed: APC⟧d"
        );
        let long = format!("a\x1b]52;c;{}\x07b", "A".repeat(100));
        assert_eq!(s(&long), "a⟦removed: OSC 52 (108 bytes)⟧b");
    }

    #[test]
    fn esc_and_final_is_removed() {
        // DECID makes the terminal answer.
        assert_eq!(s("a\x1bZb"), "a⟦removed: ESC Z⟧b");
        // screen/tmux title: ESC k ... ESC \ — the title stays as harmless text.
        assert_eq!(
            s("a\x1bktitle\x1b\\b"),
            "a⟦removed: ESC k⟧title⟦removed: ESC \\⟧b"
        );
        assert_eq!(
            s("\x1bc\x1b(0q\x1b7x\x1b8\x1b=\x1bM"),
            "⟦removed: ESC c, ESC (0⟧q⟦removed: ESC 7⟧x⟦removed: ESC 8, ESC =, ESC M⟧"
        );
    }

    #[test]
    fn queries_are_removed() {
        for (query, name) in [
            ("\x1b[6n", "CSI 6n"),
            ("\x1b[5n", "CSI 5n"),
            ("\x1b[c", "CSI c"),
            ("\x1b[>c", "CSI >c"),
            ("\x1b[=c", "CSI =c"),
            ("\x1b[?u", "CSI ?u"),
            ("\x1b[?1m", "CSI ?1m"),
            ("\x1b[?4m", "CSI ?4m"),
            ("\x1b[>4;2m", "CSI >4;2m"),
            ("\x1b[1$u", "CSI 1$u"),
            ("\x1b[?2026$p", "CSI ?2026$p"),
            ("\x1b[1;1;1;1;1;1*y", "CSI 1;1;1;1;1;1*y"),
            ("\x1b[21t", "CSI 21t"),
            ("\x1b[14t", "CSI 14t"),
            ("\x1b[8;1;1t", "CSI 8;1;1t"),
            ("\x1b[>0q", "CSI >q"),
            ("\x1b[?6n", "CSI ?6n"),
            ("\x1b[x", "CSI x"),
            ("\x1b[=5u", "CSI =5u"),
            ("\x1b[>1u", "CSI >1u"),
            ("\x1b[1;2;3;4;5T", "CSI 1;2;3;4;5T"),
            ("\x1b[2s", "CSI 2s"),
        ] {
            assert_eq!(
                s(&format!("a{query}b")),
                format!("a⟦removed: {name}⟧b"),
                "{query:?}"
            );
        }
    }

    #[test]
    fn hiding_is_removed() {
        assert_eq!(s("\x1b[3J"), "⟦removed: CSI 3J⟧");
        assert_eq!(s("a\x1b[8mhidden\x1b[0m"), "a⟦removed: SGR 8⟧hidden\x1b[0m");
        // Only the conceal code goes; the colour stays.
        assert_eq!(s("\x1b[1;8;31mx"), "⟦removed: SGR 8⟧\x1b[1;31mx");
        // 8 as a colour index is no conceal.
        assert_eq!(s("\x1b[38;5;8mx"), "\x1b[38;5;8mx");
        assert_eq!(s("\x1b[48;2;8;8;8mx"), "\x1b[48;2;8;8;8mx");
        // A malformed extended colour goes whole.
        assert_eq!(s("\x1b[38;9;8mx"), "⟦removed: SGR 38;9;8⟧x");
        // A scroll margin: what scrolls out of it is lost.
        assert_eq!(s("\x1b[10;11r"), "⟦removed: CSI 10;11r⟧");
        // Alternate screen, autowrap off, insert mode, bracketed paste, mouse, keypad.
        assert_eq!(
            s("\x1b[?1049h\x1b[?47h\x1b[?7l\x1b[4h\x1b[?2004h\x1b[?1000h\x1b[?1h"),
            "⟦removed: CSI ?1049h, CSI ?47h, CSI ?7l, CSI 4h, CSI ?2004h, CSI ?1000h, CSI ?1h⟧"
        );
        // Bidi overrides and C1 controls.
        assert_eq!(
            s("a\u{202e}b\u{2066}c"),
            "a⟦removed: U+202E⟧b⟦removed: U+2066⟧c"
        );
        assert_eq!(
            s("a\u{9b}6nb\u{9d}0;t\u{9c}c"),
            "a⟦removed: C1 CSI⟧6nb⟦removed: C1 OSC⟧0;t⟦removed: C1 ST⟧c"
        );
        // Other C0 controls: ENQ asks for the answerback; SO switches character sets.
        assert_eq!(
            s("a\x05b\x0ec\x0fd\x0be"),
            "a⟦removed: ENQ⟧b⟦removed: SO⟧c⟦removed: SI⟧d⟦removed: VT⟧e"
        );
        // Noise is dropped quietly.
        assert_eq!(s("a\x07b\x00c\x7fd"), "abcd");
    }

    #[test]
    fn interrupted_strings_do_not_swallow_what_follows() {
        // CAN and SUB end every sequence and string.
        assert_eq!(s("a\x1b]0;t\x18visible"), "a⟦removed: OSC 0, CAN⟧visible");
        assert_eq!(s("a\x1b]0;t\x1avisible"), "a⟦removed: OSC 0, SUB⟧visible");
        assert_eq!(s("a\x1bPq#0\x18visible"), "a⟦removed: DCS q, CAN⟧visible");
        assert_eq!(s("a\x1b_apc\x18visible"), "a⟦removed: APC, CAN⟧visible");
        assert_eq!(
            s("a\x1b[12\x18visible"),
            "a⟦removed: incomplete CSI, CAN⟧visible"
        );
        // An ESC not followed by `\` ends a string, and starts the next sequence.
        assert_eq!(s("a\x1b]0;t\x1b[31mred"), "a⟦removed: OSC 0⟧\x1b[31mred");
        assert_eq!(s("a\x1b_apc\x1bZvisible"), "a⟦removed: APC, ESC Z⟧visible");
        assert_eq!(s("a\x1bPx\x1bxvisible"), "a⟦removed: DCS x, ESC x⟧visible");
        // ST as C1 (U+009C) ends a string as a terminal honouring C1 ends it.
        assert_eq!(s("a\x1b]0;t\u{9c}visible"), "a⟦removed: OSC 0⟧visible");
        assert_eq!(s("a\x1b_x\u{9c}visible"), "a⟦removed: APC⟧visible");
        // An ESC inside a CSI aborts it.
        assert_eq!(
            s("a\x1b[1\x1b[31mred"),
            "a⟦removed: incomplete CSI⟧\x1b[31mred"
        );
        // A string left open at the end: removed, and its content shown as text.
        assert_eq!(
            s("a\x1b]0;rm -rf /\n"),
            "a⟦removed: unterminated OSC 0⟧0;rm -rf /\n"
        );
        assert_eq!(s("a\x1b_hidden \x1b[31m?"), "a⟦removed: APC⟧\x1b[31m?");
        assert_eq!(
            s("a\x1b_hidden\u{9d}x"),
            "a⟦removed: unterminated APC⟧hidden⟦removed: C1 OSC⟧x"
        );
        assert_eq!(s("a\x1b[1?mvisible"), "a⟦removed: malformed CSI⟧visible");
        assert_eq!(s("a\x1b[12"), "a⟦removed: incomplete CSI⟧");
        assert_eq!(s("a\x1b"), "a⟦removed: incomplete ESC⟧");
    }

    #[test]
    fn controls_inside_a_sequence_act_at_once() {
        assert_eq!(s("\x1b[1\n;31mx"), "\n\x1b[1;31mx");
        assert_eq!(s("\x1b[\x05Hx"), "⟦removed: ENQ⟧\x1b[Hx");
    }

    #[test]
    fn markers_merge_and_stay_short() {
        let many = "\x1b[6n".repeat(20);
        assert_eq!(
            s(&format!("a{many}b")),
            "a⟦removed: CSI 6n, CSI 6n, CSI 6n, CSI 6n, CSI 6n, CSI 6n, CSI 6n, CSI 6n, +12 more⟧b"
        );
        let long = format!("\x1b[{}n", "1;".repeat(20));
        let out = s(&long);
        assert!(out.chars().count() < 40, "{out}");
    }

    #[test]
    fn second_pass_rejects_what_is_not_allowed() {
        for bad in [
            "\x1b]0;t\x07",
            "\x1bZ",
            "\x1b[6n",
            "\x1b[8m",
            "\x1b[3J",
            "\x05",
            "\x1b[1",
            "\x1b_x",
            "\u{9b}",
            "\x1b[1?mx",
        ] {
            assert!(check_sanitized(bad).is_err(), "{bad:?}");
        }
        assert!(check_sanitized("\x1b[1;31mok\x1b[0m\r\n").is_ok());
    }
}
