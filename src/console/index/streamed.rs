//! The search of output the index does not hold whole (more than [`super::sessions::MAX_TEXT`]
//! of it, or a session not yet settled): streamed from the recording at query time, as the
//! console searched before the index, so printing a lot first hides nothing printed after.

use std::cell::Cell;
use std::io::Write;

use crate::ids::SessionId;
use crate::recording::RecordingStore;

/// Whether what the terminal showed, without escape sequences and in lower case, holds
/// `needle` (lower case); read as a stream, never the whole output.
pub fn output_contains(store: &RecordingStore, id: &SessionId, needle: &str) -> bool {
    let Ok(events) = store.events(id) else {
        return false;
    };
    text_contains(
        events
            .filter(|(_, kind, _)| kind == "o")
            .map(|(_, _, data)| data),
        needle,
    )
}

/// [`output_contains`] over output events: the escape sequences are stripped as they go by
/// (the stripper keeps its state from one event to the next) and only the last `needle`'s
/// length of text is held, so a match across events or around a sequence is still found.
fn text_contains(outputs: impl Iterator<Item = String>, needle: &str) -> bool {
    let found = Cell::new(false);
    let mut strip = strip_ansi_escapes::Writer::new(Finder {
        needle,
        window: String::new(),
        partial: Vec::new(),
        found: &found,
    });
    for data in outputs {
        // Finder never fails, so neither does the stripper.
        if strip.write_all(data.as_bytes()).is_err() || found.get() {
            break;
        }
    }
    let _ = strip.flush();
    found.get()
}

/// The text end of [`text_contains`]: takes stripped output in pieces, lower-cases it and keeps
/// only what a match that began in it could still need.
struct Finder<'a> {
    needle: &'a str,
    window: String,
    /// A character whose bytes have not all come yet.
    partial: Vec<u8>,
    found: &'a Cell<bool>,
}

impl Write for Finder<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.found.get() {
            return Ok(buf.len());
        }
        self.partial.extend_from_slice(buf);
        let end = match std::str::from_utf8(&self.partial) {
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            _ => self.partial.len(),
        };
        let text = String::from_utf8_lossy(&self.partial[..end]).to_lowercase();
        self.partial.drain(..end);
        self.window.push_str(&text);
        if self.window.contains(self.needle) {
            self.found.set(true);
        }
        let mut cut = self.window.len().saturating_sub(self.needle.len());
        while !self.window.is_char_boundary(cut) {
            cut -= 1;
        }
        self.window.drain(..cut);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_match_across_events_and_escape_sequences_is_found() {
        let outputs = ["ab", "c\x1b[1mde", "\x1b[0mf É", "X"];
        let find = |n: &str| text_contains(outputs.iter().map(|s| (*s).to_owned()), n);
        assert!(find("abcdef"));
        assert!(find("f éx"));
        assert!(!find("abd"));
    }
}
