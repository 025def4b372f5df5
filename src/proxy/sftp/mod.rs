//! The SFTP file audit: watches the sftp subsystem's stream in both directions (requests from
//! the admin, replies from the target, matched by request id and handle) and reports each file
//! operation: open (path, flags), close (bytes read and written, SHA-256 of each), remove,
//! rename, mkdir, rmdir, setstat, symlink, hard link. scp in SFTP mode (OpenSSH 9+) is the same protocol.
//!
//! Invariants: it only observes — the bytes it is shown pass unchanged whatever it makes of
//! them; on anything it cannot follow (malformed or oversized packets, too many outstanding
//! requests or open files) it stops watching that channel and says so once
//! (`SFTP_UNPARSED`). Memory is bounded: one packet per direction ([`packet::MAX_PACKET`]),
//! [`MAX_PENDING`] outstanding requests, [`MAX_FILES`] open files, paths cut at [`MAX_PATH`].
//!
//! A file's SHA-256 covers its bytes in order only when every read (or write) continued where
//! the last one ended, starting at offset 0; otherwise the close says `sequential: false` and
//! gives no hash, rather than a wrong one. A server-side copy (`copy-data`) into or out of a file
//! counts as out of order for both files (its bytes never cross) and is flagged on their close.

pub mod packet;

use std::collections::HashMap;

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

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .take(MAX_PATH)
        .collect()
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
}

/// The audit of one sftp channel.
#[derive(Default)]
pub struct SftpAudit {
    requests: Framer,
    replies: Framer,
    pending: HashMap<u32, Pending>,
    files: HashMap<Vec<u8>, OpenFile>,
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
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&id) {
            return Err(Lost::Pending);
        }
        self.pending.insert(id, p);
        Ok(())
    }

    fn on_request(&mut self, r: Request<'_>) -> Result<(), Lost> {
        let op = |code, details| Pending::Op { code, details };
        match r {
            Request::Init { version } => {
                if version < 3 {
                    return Err(Lost::Version(version));
                }
            }
            Request::Open { id, path, pflags } => self.expect(
                id,
                Pending::Open {
                    path: text(path),
                    pflags,
                },
            )?,
            Request::Close { id, handle } => self.expect(
                id,
                Pending::Close {
                    handle: handle.to_vec(),
                },
            )?,
            Request::Read { id, handle, offset } => {
                if self.files.contains_key(handle) {
                    self.expect(
                        id,
                        Pending::Read {
                            handle: handle.to_vec(),
                            offset,
                        },
                    )?;
                }
            }
            Request::Write {
                id,
                handle,
                offset,
                data,
            } => {
                if let Some(f) = self.files.get_mut(handle) {
                    f.written.add(offset, data);
                    self.expect(
                        id,
                        Pending::Write {
                            handle: handle.to_vec(),
                        },
                    )?;
                }
            }
            Request::Remove { id, path } => {
                self.expect(id, op(Code::SftpRemove, vec![("path", json!(text(path)))]))?
            }
            Request::Rename { id, from, to } => self.expect(
                id,
                op(
                    Code::SftpRename,
                    vec![("from", json!(text(from))), ("to", json!(text(to)))],
                ),
            )?,
            Request::Mkdir { id, path } => {
                self.expect(id, op(Code::SftpMkdir, vec![("path", json!(text(path)))]))?
            }
            Request::Rmdir { id, path } => {
                self.expect(id, op(Code::SftpRmdir, vec![("path", json!(text(path)))]))?
            }
            Request::Setstat { id, path, attrs } => self.expect(
                id,
                op(
                    Code::SftpSetstat,
                    vec![
                        ("path", json!(text(path))),
                        ("set", json!(attrs.describe())),
                    ],
                ),
            )?,
            Request::Fsetstat { id, handle, attrs } => {
                // Only files the audit follows have a path to report.
                if let Some(f) = self.files.get(handle) {
                    let path = f.path.clone();
                    self.expect(
                        id,
                        op(
                            Code::SftpSetstat,
                            vec![("path", json!(path)), ("set", json!(attrs.describe()))],
                        ),
                    )?;
                }
            }
            Request::Symlink {
                id,
                points_to,
                link,
            } => self.expect(
                id,
                op(
                    Code::SftpSymlink,
                    vec![
                        ("path", json!(text(link))),
                        ("points_to", json!(text(points_to))),
                    ],
                ),
            )?,
            Request::Hardlink { id, from, to } => self.expect(
                id,
                op(
                    Code::SftpLink,
                    vec![("from", json!(text(from))), ("to", json!(text(to)))],
                ),
            )?,
            Request::CopyData { from, to } => {
                if let Some(f) = self.files.get_mut(from) {
                    f.read.sequential = false;
                    f.copied = true;
                }
                if let Some(f) = self.files.get_mut(to) {
                    f.written.sequential = false;
                    f.copied = true;
                }
            }
            Request::Other { id } => {
                // A reused id must not be matched to an older request's reply.
                self.pending.remove(&id);
            }
        }
        Ok(())
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
                if let Some(Pending::Open { path, pflags }) = self.pending.remove(&id) {
                    if self.files.len() >= MAX_FILES && !self.files.contains_key(handle) {
                        return Err(Lost::Files);
                    }
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
                        },
                    );
                }
                return Ok(());
            }
            Reply::Data { id, data } => {
                if let Some(Pending::Read { handle, offset }) = self.pending.remove(&id)
                    && let Some(f) = self.files.get_mut(&handle)
                {
                    f.read.add(offset, data);
                }
                return Ok(());
            }
            Reply::Other { id } => (id, None),
        };
        let Some(pending) = self.pending.remove(&id) else {
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
            Pending::Read { .. } => {}
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
