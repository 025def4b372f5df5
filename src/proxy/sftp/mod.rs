//! The SFTP file audit: watches the sftp subsystem's stream in both directions (requests from
//! the admin, replies from the target, matched by request id and handle) and reports each file
//! operation: open (path, flags), close (bytes read and written, SHA-256 of each), remove,
//! rename, mkdir, rmdir, setstat, symlink, hard link. scp in SFTP mode (OpenSSH 9+) is the same protocol.
//!
//! Invariants: it only observes — the bytes it is shown pass unchanged whatever it makes of
//! them; on anything it cannot follow (malformed or oversized packets, too many outstanding
//! requests or open files) it stops watching that channel and says so once
//! (`SFTP_UNPARSED`). What it cannot tell apart is something it cannot follow, never a guess: a
//! request id reused while its request awaits a reply (which reply is whose?), a request naming a
//! handle the audit does not know while an OPEN awaits its reply (the target hands out
//! predictable handles, so the request may act on the file being opened), and a handle the
//! target gives while it is still open. A handle whose close was asked for is no longer that
//! file's: the target may give it to the next file opened.
//!
//! Memory is bounded: one packet per direction ([`packet::MAX_PACKET`]), [`MAX_PENDING`]
//! outstanding requests, [`MAX_FILES`] open files and directories, paths cut at [`MAX_PATH`].
//!
//! A file's SHA-256 covers its bytes in order only when every read (or write) continued where
//! the last one ended, starting at offset 0; otherwise the close says `sequential: false` and
//! gives no hash, rather than a wrong one. A server-side copy (`copy-data`) into or out of a file
//! counts as out of order for both files (its bytes never cross) and is flagged on their close.

pub mod packet;

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::audit::{Code, Event};
use packet::{Framer, PacketError, Reply, Request, pflags_names, status_name};

/// Requests awaiting their reply; the OpenSSH client keeps up to 64 in flight.
pub const MAX_PENDING: usize = 1024;
/// Files open at once.
pub const MAX_FILES: usize = 256;
/// Characters of a path kept in events.
pub const MAX_PATH: usize = 4096;

/// One file operation (or the end of watching), for the audit log and the recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub code: Code,
    /// The operation's outcome: `ok` or the status the target gave.
    pub status: String,
    pub details: Vec<(&'static str, Value)>,
}

impl Found {
    /// The recording's marker, e.g. `sftp: SFTP_OPEN /etc/hosts read (ok)`.
    pub fn label(&self) -> String {
        let mut out = format!("sftp: {}", self.code);
        for (k, v) in &self.details {
            match v {
                Value::String(s) if ["path", "from", "to"].contains(k) => {
                    out.push(' ');
                    out.push_str(s);
                }
                Value::String(s) if s.is_empty() => {}
                _ => out.push_str(&format!(
                    " {k}={}",
                    v.as_str().map_or(v.to_string(), str::to_owned)
                )),
            }
        }
        out.push_str(&format!(" ({})", self.status));
        out
    }

    /// The audit event: `template`'s fields (the session's), this code and details.
    pub fn event(self, template: Event) -> Event {
        let mut e = template.with_code(self.code).reason(&self.status);
        for (k, v) in self.details {
            e = e.detail(k, v);
        }
        e
    }
}

/// A path as text, cut at [`MAX_PATH`] characters: UTF-8 as it is, but a byte that is not
/// UTF-8 as `\xNN`, and a backslash or control character escaped as well, so that two names are
/// never shown alike (a lossy conversion shows every bad byte as the same `\u{fffd}`) and a
/// name cannot start a new line in a marker.
fn text(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.chars().take(MAX_PATH).collect()
}

/// Bytes one way through an open file, hashed while they come in order.
struct Tally {
    bytes: u64,
    next: u64,
    sequential: bool,
    sha: Sha256,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            bytes: 0,
            next: 0,
            sequential: true,
            sha: Sha256::new(),
        }
    }
}

impl Tally {
    fn add(&mut self, offset: u64, data: &[u8]) {
        if offset != self.next {
            self.sequential = false;
        }
        self.next = offset.saturating_add(data.len() as u64);
        self.bytes += data.len() as u64;
        if self.sequential {
            self.sha.update(data);
        }
    }

    fn details(&self, way: &str, out: &mut Vec<(&'static str, Value)>) {
        let (bytes, seq, sha): (&'static str, &'static str, &'static str) = match way {
            "read" => ("read_bytes", "read_sequential", "read_sha256"),
            _ => ("write_bytes", "write_sequential", "write_sha256"),
        };
        out.push((bytes, json!(self.bytes)));
        out.push((seq, json!(self.sequential)));
        let hash = if self.sequential {
            hex::encode(self.sha.clone().finalize())
        } else {
            String::new()
        };
        out.push((sha, json!(hash)));
    }
}

struct OpenFile {
    path: String,
    pflags: u32,
    read: Tally,
    written: Tally,
    /// Writes the target refused.
    failed_writes: u64,
    /// Part of a server-side copy (`copy-data`).
    copied: bool,
    /// Its close was asked for: later requests naming the handle are not about this file.
    closing: bool,
}

impl OpenFile {
    fn close(&self, status: String) -> Found {
        let mut details = vec![
            ("path", json!(self.path)),
            ("flags", json!(pflags_names(self.pflags))),
        ];
        if self.pflags & 0x1 != 0 || self.read.bytes > 0 {
            self.read.details("read", &mut details);
        }
        if self.pflags & 0x2 != 0 || self.written.bytes > 0 {
            self.written.details("write", &mut details);
        }
        if self.failed_writes > 0 {
            details.push(("failed_writes", json!(self.failed_writes)));
        }
        if self.copied {
            details.push(("server_side_copy", json!(true)));
        }
        Found {
            code: Code::SftpClose,
            status,
            details,
        }
    }
}

/// What a request awaits from its reply.
enum Pending {
    Open {
        path: String,
        pflags: u32,
    },
    Opendir,
    Read {
        handle: Vec<u8>,
        offset: u64,
    },
    Write {
        handle: Vec<u8>,
    },
    Close {
        handle: Vec<u8>,
    },
    /// An operation reported with its status.
    Op {
        code: Code,
        details: Vec<(&'static str, Value)>,
    },
    /// A request the audit does not report; its id is in flight all the same.
    Untracked,
}

/// The audit of one sftp channel.
#[derive(Default)]
pub struct SftpAudit {
    requests: Framer,
    replies: Framer,
    pending: HashMap<u32, Pending>,
    files: HashMap<Vec<u8>, OpenFile>,
    /// Directory handles the target gave (OPENDIR): known, but not files.
    dirs: HashSet<Vec<u8>>,
    /// OPEN requests awaiting their reply.
    opening: usize,
    stopped: bool,
}

/// Why watching stopped.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error("{0}")]
    Packet(#[from] PacketError),
    #[error("more than {MAX_PENDING} requests without a reply")]
    Pending,
    #[error("more than {MAX_FILES} files open at once")]
    Files,
    #[error("SFTP version {0} (only version 3 is audited)")]
    Version(u32),
    #[error("request id {0} reused while its request awaits a reply")]
    Reused(u32),
    #[error("a request names a handle the target has not given while a file is being opened")]
    EarlyHandle,
    #[error("the target gave a handle that is still open")]
    HandleInUse,
}

impl SftpAudit {
    /// Bytes from the admin to the target.
    pub fn request(&mut self, data: &[u8]) -> Vec<Found> {
        self.watch(data, true)
    }

    /// Bytes from the target to the admin.
    pub fn reply(&mut self, data: &[u8]) -> Vec<Found> {
        self.watch(data, false)
    }

    fn watch(&mut self, data: &[u8], from_admin: bool) -> Vec<Found> {
        if self.stopped {
            return Vec::new();
        }
        let mut found = Vec::new();
        let mut framer = std::mem::take(if from_admin {
            &mut self.requests
        } else {
            &mut self.replies
        });
        let framed = framer.push(data, |body| {
            if from_admin {
                let r = packet::request(body)?;
                self.on_request(r)
            } else {
                let r = packet::reply(body)?;
                self.on_reply(r, &mut found)
            }
        });
        match framed {
            Err(why) => found.push(self.stop(&why.to_string(), from_admin)),
            Ok(()) if from_admin => self.requests = framer,
            Ok(()) => self.replies = framer,
        }
        found
    }

    /// Stops watching; the event says why and what was still open.
    fn stop(&mut self, why: &str, from_admin: bool) -> Found {
        self.stopped = true;
        let open: Vec<String> = self.files.values().map(|f| f.path.clone()).collect();
        self.pending.clear();
        self.files.clear();
        self.dirs.clear();
        self.opening = 0;
        self.requests = Framer::default();
        self.replies = Framer::default();
        Found {
            code: Code::SftpUnparsed,
            status: why.to_owned(),
            details: vec![
                (
                    "direction",
                    json!(if from_admin { "request" } else { "reply" }),
                ),
                ("open_files", json!(open)),
            ],
        }
    }

    /// Files still open when the session ends: their totals so far.
    pub fn finish(&mut self) -> Vec<Found> {
        let mut out: Vec<Found> = self
            .files
            .drain()
            .map(|(_, f)| f.close("not closed: the session ended".into()))
            .collect();
        out.sort_by(|a, b| format!("{:?}", a.details).cmp(&format!("{:?}", b.details)));
        out
    }

    fn expect(&mut self, id: u32, p: Pending) -> Result<(), Lost> {
        if self.pending.contains_key(&id) {
            return Err(Lost::Reused(id));
        }
        if self.pending.len() >= MAX_PENDING {
            return Err(Lost::Pending);
        }
        if matches!(p, Pending::Open { .. }) {
            self.opening += 1;
        }
        self.pending.insert(id, p);
        Ok(())
    }

    /// The request `id` awaited, now that its reply came.
    fn take(&mut self, id: u32) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if matches!(p, Pending::Open { .. }) {
            self.opening = self.opening.saturating_sub(1);
        }
        Some(p)
    }

    /// The open file a request's `handle` names, if the audit follows one. A handle it does not
    /// know fails at the target, unless an OPEN awaits its reply: then it may be that file's.
    fn file(&mut self, handle: &[u8]) -> Result<Option<&mut OpenFile>, Lost> {
        if self.files.get(handle).is_some_and(|f| !f.closing) {
            return Ok(self.files.get_mut(handle));
        }
        if self.opening > 0 && !self.dirs.contains(handle) {
            return Err(Lost::EarlyHandle);
        }
        Ok(None)
    }

    fn on_request(&mut self, r: Request<'_>) -> Result<(), Lost> {
        let op = |code, details| Pending::Op { code, details };
        let Some(id) = r.id() else {
            return match r {
                Request::Init { version } if version < 3 => Err(Lost::Version(version)),
                _ => Ok(()),
            };
        };
        let pending = match r {
            Request::Init { .. } | Request::Other { .. } => Pending::Untracked,
            Request::Open { path, pflags, .. } => Pending::Open {
                path: text(path),
                pflags,
            },
            Request::Opendir { .. } => Pending::Opendir,
            Request::Close { handle, .. } => {
                if let Some(f) = self.file(handle)? {
                    f.closing = true;
                }
                self.dirs.remove(handle);
                Pending::Close {
                    handle: handle.to_vec(),
                }
            }
            Request::Read { handle, offset, .. } => match self.file(handle)? {
                Some(_) => Pending::Read {
                    handle: handle.to_vec(),
                    offset,
                },
                None => Pending::Untracked,
            },
            Request::Write {
                handle,
                offset,
                data,
                ..
            } => match self.file(handle)? {
                Some(f) => {
                    f.written.add(offset, data);
                    Pending::Write {
                        handle: handle.to_vec(),
                    }
                }
                None => Pending::Untracked,
            },
            Request::Remove { path, .. } => op(Code::SftpRemove, vec![("path", json!(text(path)))]),
            Request::Rename { from, to, .. } => op(
                Code::SftpRename,
                vec![("from", json!(text(from))), ("to", json!(text(to)))],
            ),
            Request::Mkdir { path, .. } => op(Code::SftpMkdir, vec![("path", json!(text(path)))]),
            Request::Rmdir { path, .. } => op(Code::SftpRmdir, vec![("path", json!(text(path)))]),
            Request::Setstat { path, attrs, .. } => op(
                Code::SftpSetstat,
                vec![
                    ("path", json!(text(path))),
                    ("set", json!(attrs.describe())),
                ],
            ),
            // Only files the audit follows have a path to report.
            Request::Fsetstat { handle, attrs, .. } => match self.file(handle)? {
                Some(f) => op(
                    Code::SftpSetstat,
                    vec![
                        ("path", json!(f.path.clone())),
                        ("set", json!(attrs.describe())),
                    ],
                ),
                None => Pending::Untracked,
            },
            Request::Symlink {
                points_to, link, ..
            } => op(
                Code::SftpSymlink,
                vec![
                    ("path", json!(text(link))),
                    ("points_to", json!(text(points_to))),
                ],
            ),
            Request::Hardlink { from, to, .. } => op(
                Code::SftpLink,
                vec![("from", json!(text(from))), ("to", json!(text(to)))],
            ),
            Request::CopyData { from, to, .. } => {
                if let Some(f) = self.file(from)? {
                    f.read.sequential = false;
                    f.copied = true;
                }
                if let Some(f) = self.file(to)? {
                    f.written.sequential = false;
                    f.copied = true;
                }
                Pending::Untracked
            }
        };
        self.expect(id, pending)
    }

    fn on_reply(&mut self, r: Reply<'_>, found: &mut Vec<Found>) -> Result<(), Lost> {
        let (id, status) = match r {
            Reply::Version { version } => {
                return if version == 3 {
                    Ok(())
                } else {
                    Err(Lost::Version(version))
                };
            }
            Reply::Status { id, code, .. } => (id, Some(code)),
            Reply::Handle { id, handle } => {
                let pending = self.take(id);
                if matches!(pending, Some(Pending::Open { .. } | Pending::Opendir)) {
                    if self.files.contains_key(handle) || self.dirs.contains(handle) {
                        return Err(Lost::HandleInUse);
                    }
                    if self.files.len() + self.dirs.len() >= MAX_FILES {
                        return Err(Lost::Files);
                    }
                }
                if let Some(Pending::Opendir) = pending {
                    self.dirs.insert(handle.to_vec());
                }
                if let Some(Pending::Open { path, pflags }) = pending {
                    found.push(Found {
                        code: Code::SftpOpen,
                        status: "ok".into(),
                        details: vec![
                            ("path", json!(path)),
                            ("flags", json!(pflags_names(pflags))),
                        ],
                    });
                    self.files.insert(
                        handle.to_vec(),
                        OpenFile {
                            path,
                            pflags,
                            read: Tally::default(),
                            written: Tally::default(),
                            failed_writes: 0,
                            copied: false,
                            closing: false,
                        },
                    );
                }
                return Ok(());
            }
            Reply::Data { id, data } => {
                if let Some(Pending::Read { handle, offset }) = self.take(id)
                    && let Some(f) = self.files.get_mut(&handle)
                {
                    f.read.add(offset, data);
                }
                return Ok(());
            }
            Reply::Other { id } => (id, None),
        };
        let Some(pending) = self.take(id) else {
            return Ok(());
        };
        let status_text = status.map_or_else(|| "unexpected reply".into(), status_name);
        match pending {
            Pending::Open { path, pflags } => found.push(Found {
                code: Code::SftpOpen,
                status: status_text,
                details: vec![
                    ("path", json!(path)),
                    ("flags", json!(pflags_names(pflags))),
                ],
            }),
            Pending::Close { handle } => {
                if let Some(f) = self.files.remove(&handle) {
                    found.push(f.close(status_text));
                }
            }
            Pending::Write { handle } => {
                if status != Some(0)
                    && let Some(f) = self.files.get_mut(&handle)
                {
                    f.failed_writes += 1;
                }
            }
            // EOF, or an error: nothing was read.
            Pending::Read { .. } | Pending::Opendir | Pending::Untracked => {}
            Pending::Op { code, details } => found.push(Found {
                code,
                status: status_text,
                details,
            }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::packet::tests::{packet, string};
    use super::*;

    fn u32b(n: u32) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn u64b(n: u64) -> Vec<u8> {
        n.to_be_bytes().to_vec()
    }

    fn status(id: u32, code: u32) -> Vec<u8> {
        packet(101, &[&u32b(id), &u32b(code), &string(b""), &string(b"")])
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn detail<'a>(f: &'a Found, k: &str) -> &'a Value {
        &f.details.iter().find(|(n, _)| *n == k).unwrap().1
    }

    #[test]
    fn upload_and_download_are_totalled_and_hashed() {
        let mut a = SftpAudit::default();
        assert!(a.request(&packet(1, &[&u32b(3)])).is_empty());
        assert!(a.reply(&packet(2, &[&u32b(3)])).is_empty());
        // Upload: open for write, two writes, close.
        a.request(&packet(
            3,
            &[&u32b(1), &string(b"/tmp/up"), &u32b(0x1a), &u32b(0)],
        ));
        let f = a.reply(&packet(102, &[&u32b(1), &string(b"H1")]));
        assert_eq!(f[0].code, Code::SftpOpen);
        assert_eq!(detail(&f[0], "flags"), "write,creat,trunc");
        a.request(&packet(
            6,
            &[&u32b(2), &string(b"H1"), &u64b(0), &string(b"hello ")],
        ));
        a.request(&packet(
            6,
            &[&u32b(3), &string(b"H1"), &u64b(6), &string(b"world")],
        ));
        a.reply(&[status(2, 0), status(3, 0)].concat());
        a.request(&packet(4, &[&u32b(4), &string(b"H1")]));
        let f = a.reply(&status(4, 0));
        assert_eq!(f[0].code, Code::SftpClose);
        assert_eq!(detail(&f[0], "write_bytes"), 11);
        assert_eq!(detail(&f[0], "write_sha256"), &json!(sha(b"hello world")));
        assert!(f[0].label().contains("/tmp/up"), "{}", f[0].label());

        // Download with pipelined reads, the replies cut at odd places; one read out of order.
        a.request(&packet(
            3,
            &[&u32b(5), &string(b"/tmp/up"), &u32b(1), &u32b(0)],
        ));
        a.reply(&packet(102, &[&u32b(5), &string(b"H2")]));
        for (id, off) in [(6, 0), (7, 4), (8, 11)] {
            a.request(&packet(
                5,
                &[&u32b(id), &string(b"H2"), &u64b(off), &u32b(4)],
            ));
        }
        let replies = [
            packet(103, &[&u32b(6), &string(b"hell")]),
            packet(103, &[&u32b(7), &string(b"o wo")]),
            status(8, 1),
        ]
        .concat();
        for c in replies.chunks(5) {
            assert!(a.reply(c).is_empty());
        }
        a.request(&packet(4, &[&u32b(9), &string(b"H2")]));
        let f = a.reply(&status(9, 0));
        assert_eq!(detail(&f[0], "read_bytes"), 8);
        assert_eq!(detail(&f[0], "read_sha256"), &json!(sha(b"hello wo")));

        a.request(&packet(3, &[&u32b(10), &string(b"/x"), &u32b(1), &u32b(0)]));
        a.reply(&packet(102, &[&u32b(10), &string(b"H3")]));
        a.request(&packet(
            5,
            &[&u32b(11), &string(b"H3"), &u64b(100), &u32b(4)],
        ));
        a.reply(&packet(103, &[&u32b(11), &string(b"abcd")]));
        a.request(&packet(4, &[&u32b(12), &string(b"H3")]));
        let f = a.reply(&status(12, 0));
        assert_eq!(detail(&f[0], "read_sequential"), false);
        assert_eq!(detail(&f[0], "read_sha256"), "");

        // A server-side copy between two open files: no hash for either.
        a.request(&packet(
            3,
            &[&u32b(13), &string(b"/src"), &u32b(1), &u32b(0)],
        ));
        a.request(&packet(
            3,
            &[&u32b(14), &string(b"/dst"), &u32b(0x1a), &u32b(0)],
        ));
        a.reply(
            &[
                packet(102, &[&u32b(13), &string(b"S")]),
                packet(102, &[&u32b(14), &string(b"D")]),
            ]
            .concat(),
        );
        a.request(&packet(
            200,
            &[
                &u32b(15),
                &string(b"copy-data"),
                &string(b"S"),
                &u64b(0),
                &u64b(0),
                &string(b"D"),
                &u64b(0),
            ],
        ));
        a.request(
            &[
                packet(4, &[&u32b(16), &string(b"S")]),
                packet(4, &[&u32b(17), &string(b"D")]),
            ]
            .concat(),
        );
        let f = a.reply(&[status(15, 0), status(16, 0), status(17, 0)].concat());
        assert_eq!(f.len(), 2);
        assert_eq!(detail(&f[0], "server_side_copy"), true);
        assert_eq!(detail(&f[1], "write_sha256"), "");
    }

    #[test]
    fn operations_carry_their_status() {
        let mut a = SftpAudit::default();
        a.request(&packet(13, &[&u32b(1), &string(b"/gone")]));
        a.request(&packet(
            200,
            &[
                &u32b(2),
                &string(b"posix-rename@openssh.com"),
                &string(b"/a"),
                &string(b"/b"),
            ],
        ));
        a.request(&packet(14, &[&u32b(3), &string(b"/d"), &u32b(0)]));
        a.request(&packet(
            9,
            &[&u32b(4), &string(b"/b"), &u32b(4), &u32b(0o600)],
        ));
        a.request(&packet(
            20,
            &[&u32b(5), &string(b"/etc/shadow"), &string(b"/tmp/s")],
        ));
        a.request(&packet(
            200,
            &[
                &u32b(6),
                &string(b"hardlink@openssh.com"),
                &string(b"/a"),
                &string(b"/h"),
            ],
        ));
        let replies: Vec<u8> = (1..=6)
            .flat_map(|id| status(id, if id == 1 { 2 } else { 0 }))
            .collect();
        let f = a.reply(&replies);
        let codes: Vec<Code> = f.iter().map(|f| f.code).collect();
        assert_eq!(
            codes,
            [
                Code::SftpRemove,
                Code::SftpRename,
                Code::SftpMkdir,
                Code::SftpSetstat,
                Code::SftpSymlink,
                Code::SftpLink
            ]
        );
        assert_eq!(detail(&f[4], "points_to"), "/etc/shadow");
        assert_eq!(detail(&f[4], "path"), "/tmp/s");
        assert_eq!(f[0].status, "no such file");
        assert_eq!(detail(&f[1], "to"), "/b");
        assert_eq!(detail(&f[3], "set"), "mode 0600");
    }

    #[test]
    fn malformed_input_stops_watching_once() {
        let mut a = SftpAudit::default();
        a.request(&packet(3, &[&u32b(1), &string(b"/f"), &u32b(1), &u32b(0)]));
        a.reply(&packet(102, &[&u32b(1), &string(b"H")]));
        let f = a.request(&packet(3, &[&u32b(2), &u32b(99)]));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].code, Code::SftpUnparsed);
        assert_eq!(detail(&f[0], "open_files"), &json!(["/f"]));
        assert!(a.request(b"\xff\xff\xff\xff").is_empty());
        assert!(a.reply(&status(1, 0)).is_empty());

        let mut a = SftpAudit::default();
        let f = a.reply(&u32b(u32::MAX));
        assert!(f[0].status.contains("longer than"), "{}", f[0].status);
    }

    fn open(id: u32, path: &[u8], pflags: u32) -> Vec<u8> {
        packet(3, &[&u32b(id), &string(path), &u32b(pflags), &u32b(0)])
    }

    fn write(id: u32, handle: &[u8], offset: u64, data: &[u8]) -> Vec<u8> {
        packet(
            6,
            &[&u32b(id), &string(handle), &u64b(offset), &string(data)],
        )
    }

    fn codes(found: &[Found]) -> Vec<Code> {
        found.iter().map(|f| f.code).collect()
    }

    /// What a hostile client can do to hide a file: each one is reported as not followed,
    /// never as an operation on another file or with a wrong hash.
    #[test]
    fn what_it_cannot_tell_apart_stops_it() {
        // An id reused while in flight: the first OPEN's handle would be given the second's path.
        let mut a = SftpAudit::default();
        let mut f = a.request(&open(5, b"/etc/cron.d/evil", 0x1a));
        f.extend(a.request(&open(5, b"/tmp/harmless", 0x1)));
        f.extend(a.reply(&packet(102, &[&u32b(5), &string(b"\0\0\0\0")])));
        assert_eq!(codes(&f), [Code::SftpUnparsed], "{f:?}");
        assert!(f[0].status.contains("reused"), "{}", f[0].status);
        // ...or by a request the audit does not report (a STAT), which dropped the OPEN.
        let mut a = SftpAudit::default();
        let mut f = a.request(&open(5, b"/etc/cron.d/evil", 0x1a));
        f.extend(a.request(&packet(17, &[&u32b(5), &string(b"/")])));
        assert_eq!(codes(&f), [Code::SftpUnparsed], "{f:?}");

        // A write to the handle the target is about to give (OpenSSH's are predictable),
        // sent before the OPEN's reply: the file would close with 0 bytes and the empty hash.
        let mut a = SftpAudit::default();
        let mut f = a.request(
            &[
                open(1, b"/etc/cron.d/evil", 0x1a),
                write(2, b"\0\0\0\0", 0, b"* * * * * root sh"),
                packet(4, &[&u32b(3), &string(b"\0\0\0\0")]),
            ]
            .concat(),
        );
        f.extend(a.reply(&packet(102, &[&u32b(1), &string(b"\0\0\0\0")])));
        assert_eq!(codes(&f), [Code::SftpUnparsed], "{f:?}");
        assert!(f[0].status.contains("handle"), "{}", f[0].status);

        // A handle closed, a file opened, a write to the old handle before the replies: the
        // target gives the new file the old handle, so the write is the new file's.
        let mut a = SftpAudit::default();
        a.request(&open(1, b"/tmp/ok", 0x1a));
        a.reply(&packet(102, &[&u32b(1), &string(b"H")]));
        let f = a.request(
            &[
                packet(4, &[&u32b(2), &string(b"H")]),
                open(3, b"/etc/cron.d/evil", 0x1a),
                write(4, b"H", 0, b"* * * * * root sh"),
            ]
            .concat(),
        );
        assert_eq!(codes(&f), [Code::SftpUnparsed], "{f:?}");

        // Positive control: a write to a closed handle with no OPEN in flight fails at the
        // target and changes nothing; the audit goes on.
        let mut a = SftpAudit::default();
        a.request(&open(1, b"/tmp/ok", 0x1a));
        a.reply(&packet(102, &[&u32b(1), &string(b"H")]));
        a.request(&write(2, b"H", 0, b"abc"));
        a.request(&packet(4, &[&u32b(3), &string(b"H")]));
        assert!(a.request(&write(4, b"H", 3, b"late")).is_empty());
        let f = a.reply(&[status(2, 0), status(3, 0), status(4, 4)].concat());
        assert_eq!(codes(&f), [Code::SftpClose], "{f:?}");
        assert_eq!(detail(&f[0], "write_bytes"), 3);
        assert_eq!(detail(&f[0], "write_sha256"), &json!(sha(b"abc")));
        // A listing's handle, pipelined with an OPEN, is not mistaken for an early one.
        a.request(&packet(11, &[&u32b(5), &string(b"/tmp")]));
        a.reply(&packet(102, &[&u32b(5), &string(b"D")]));
        let mut f = a.request(&open(6, b"/tmp/ok", 0x1));
        f.extend(a.request(&packet(12, &[&u32b(7), &string(b"D")])));
        f.extend(a.request(&packet(4, &[&u32b(8), &string(b"D")])));
        f.extend(a.reply(&packet(102, &[&u32b(6), &string(b"H")])));
        assert_eq!(codes(&f), [Code::SftpOpen], "{f:?}");
        // The target giving a handle still open is not followed either.
        let f = a.request(&open(9, b"/tmp/two", 0x1));
        assert!(f.is_empty());
        let f = a.reply(&packet(102, &[&u32b(9), &string(b"H")]));
        assert_eq!(codes(&f), [Code::SftpUnparsed], "{f:?}");
    }

    /// Names that differ only in bytes that are not UTF-8, or that hold a newline, are shown
    /// apart and on one line.
    #[test]
    fn paths_are_shown_exactly() {
        assert_eq!(text(b"/etc/hosts"), "/etc/hosts");
        assert_eq!(text("/tmp/caf\u{e9}".as_bytes()), "/tmp/caf\u{e9}");
        assert_eq!(text(b"/etc/cron.d/\xff"), "/etc/cron.d/\\xff");
        assert_ne!(text(b"/x/\xff"), text(b"/x/\xfe"));
        assert_ne!(text(b"/x/\xff"), text(b"/x/\\xff"));
        assert_eq!(text(b"/tmp/a\n(ok)"), "/tmp/a\\n(ok)");
    }

    #[test]
    fn outstanding_requests_are_bounded() {
        let mut a = SftpAudit::default();
        let mut found = Vec::new();
        for id in 0..=MAX_PENDING as u32 {
            found.extend(a.request(&packet(13, &[&u32b(id), &string(b"/x")])));
        }
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].code, Code::SftpUnparsed);
        assert!(a.pending.is_empty());
    }
}
