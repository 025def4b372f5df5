//! SFTP version 3 packets (draft-ietf-secsh-filexfer-02, what OpenSSH speaks), as far as the
//! file audit needs them: the framing, and the requests and replies that name or move files.
//! Everything else decodes as `Other` with its request id.
//!
//! Bounds: a packet longer than [`MAX_PACKET`] is an error, so at most one packet of that size
//! is buffered per direction; a handle longer than [`MAX_HANDLE`] is an error.

/// OpenSSH's sftp-server refuses packets over 256 KiB; a little room for the header.
pub const MAX_PACKET: usize = 256 * 1024 + 1024;
/// OpenSSH's handles are 4 bytes; the draft allows up to 256.
pub const MAX_HANDLE: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketError {
    #[error("SFTP packet of {0} bytes is longer than {MAX_PACKET}")]
    TooLong(u32),
    #[error("empty SFTP packet")]
    Empty,
    #[error("SFTP packet type {0} is cut short")]
    Short(u8),
    #[error("SFTP handle longer than {MAX_HANDLE} bytes")]
    LongHandle,
}

/// Cuts a byte stream into packets, holding back at most one incomplete packet.
#[derive(Default)]
pub struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    /// Adds `data` and calls `each` with the body (type byte onwards) of every whole packet.
    pub fn push<E: From<PacketError>>(
        &mut self,
        data: &[u8],
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.buf.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            let rest = &self.buf[at..];
            let Some(len) = rest.get(..4) else {
                break Ok(());
            };
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            if len as usize > MAX_PACKET {
                break Err(PacketError::TooLong(len).into());
            }
            if len == 0 {
                break Err(PacketError::Empty.into());
            }
            let Some(body) = rest.get(4..4 + len as usize) else {
                break Ok(());
            };
            if let Err(e) = each(body) {
                break Err(e);
            }
            at += 4 + len as usize;
        };
        self.buf.drain(..at.min(self.buf.len()));
        if result.is_err() {
            self.buf = Vec::new();
        }
        result
    }
}

/// Reads the fields of one packet body.
struct Reader<'a> {
    kind: u8,
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PacketError> {
        if self.data.len() < n {
            return Err(PacketError::Short(self.kind));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, PacketError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, PacketError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }

    fn string(&mut self) -> Result<&'a [u8], PacketError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    fn handle(&mut self) -> Result<&'a [u8], PacketError> {
        let h = self.string()?;
        if h.len() > MAX_HANDLE {
            return Err(PacketError::LongHandle);
        }
        Ok(h)
    }

    fn attrs(&mut self) -> Result<Attrs, PacketError> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & 0x1 != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & 0x2 != 0 {
            a.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & 0x4 != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & 0x8 != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & 0x8000_0000 != 0 {
            for _ in 0..self.u32()? {
                self.string()?;
                self.string()?;
            }
        }
        Ok(a)
    }
}

/// The attributes a request sets (v3).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub permissions: Option<u32>,
    /// atime, mtime.
    pub times: Option<(u32, u32)>,
}

impl Attrs {
    /// What is set, e.g. `mode 0644 uid 0 gid 0`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.size {
            parts.push(format!("size {s}"));
        }
        if let Some((u, g)) = self.uid_gid {
            parts.push(format!("uid {u} gid {g}"));
        }
        if let Some(p) = self.permissions {
            parts.push(format!("mode {:04o}", p & 0o7777));
        }
        if let Some((a, m)) = self.times {
            parts.push(format!("atime {a} mtime {m}"));
        }
        parts.join(" ")
    }
}

/// A request from the admin's client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request<'a> {
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: &'a [u8],
        pflags: u32,
    },
    Close {
        id: u32,
        handle: &'a [u8],
    },
    Read {
        id: u32,
        handle: &'a [u8],
        offset: u64,
    },
    Write {
        id: u32,
        handle: &'a [u8],
        offset: u64,
        data: &'a [u8],
    },
    Remove {
        id: u32,
        path: &'a [u8],
    },
    Rename {
        id: u32,
        from: &'a [u8],
        to: &'a [u8],
    },
    Mkdir {
        id: u32,
        path: &'a [u8],
    },
    Rmdir {
        id: u32,
        path: &'a [u8],
    },
    Setstat {
        id: u32,
        path: &'a [u8],
        attrs: Attrs,
    },
    Fsetstat {
        id: u32,
        handle: &'a [u8],
        attrs: Attrs,
    },
    /// In the order OpenSSH sends them (the reverse of the draft's).
    Symlink {
        id: u32,
        points_to: &'a [u8],
        link: &'a [u8],
    },
    Hardlink {
        id: u32,
        from: &'a [u8],
        to: &'a [u8],
    },
    /// `copy-data`: the target copies between two open files; the bytes never cross.
    CopyData {
        from: &'a [u8],
        to: &'a [u8],
    },
    /// Anything else that carries a request id (stat, readdir, realpath, other extensions).
    Other {
        id: u32,
    },
}

pub fn request(body: &[u8]) -> Result<Request<'_>, PacketError> {
    let (&kind, data) = body.split_first().ok_or(PacketError::Empty)?;
    let mut r = Reader { kind, data };
    if kind == 1 {
        return Ok(Request::Init { version: r.u32()? });
    }
    let id = r.u32()?;
    Ok(match kind {
        3 => Request::Open {
            id,
            path: r.string()?,
            pflags: r.u32()?,
        },
        4 => Request::Close {
            id,
            handle: r.handle()?,
        },
        5 => Request::Read {
            id,
            handle: r.handle()?,
            offset: r.u64()?,
        },
        6 => Request::Write {
            id,
            handle: r.handle()?,
            offset: r.u64()?,
            data: r.string()?,
        },
        9 => Request::Setstat {
            id,
            path: r.string()?,
            attrs: r.attrs()?,
        },
        10 => Request::Fsetstat {
            id,
            handle: r.handle()?,
            attrs: r.attrs()?,
        },
        13 => Request::Remove {
            id,
            path: r.string()?,
        },
        14 => Request::Mkdir {
            id,
            path: r.string()?,
        },
        15 => Request::Rmdir {
            id,
            path: r.string()?,
        },
        18 => Request::Rename {
            id,
            from: r.string()?,
            to: r.string()?,
        },
        20 => Request::Symlink {
            id,
            points_to: r.string()?,
            link: r.string()?,
        },
        200 => match r.string()? {
            b"posix-rename@openssh.com" => Request::Rename {
                id,
                from: r.string()?,
                to: r.string()?,
            },
            b"lsetstat@openssh.com" => Request::Setstat {
                id,
                path: r.string()?,
                attrs: r.attrs()?,
            },
            b"hardlink@openssh.com" => Request::Hardlink {
                id,
                from: r.string()?,
                to: r.string()?,
            },
            b"copy-data" => {
                let from = r.handle()?;
                // Read offset and length, then the destination and its offset.
                r.u64()?;
                r.u64()?;
                Request::CopyData {
                    from,
                    to: r.handle()?,
                }
            }
            _ => Request::Other { id },
        },
        _ => Request::Other { id },
    })
}

/// A reply from the target's sftp-server.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply<'a> {
    Version {
        version: u32,
    },
    Status {
        id: u32,
        code: u32,
        message: &'a [u8],
    },
    Handle {
        id: u32,
        handle: &'a [u8],
    },
    Data {
        id: u32,
        data: &'a [u8],
    },
    Other {
        id: u32,
    },
}

pub fn reply(body: &[u8]) -> Result<Reply<'_>, PacketError> {
    let (&kind, data) = body.split_first().ok_or(PacketError::Empty)?;
    let mut r = Reader { kind, data };
    if kind == 2 {
        return Ok(Reply::Version { version: r.u32()? });
    }
    let id = r.u32()?;
    Ok(match kind {
        101 => {
            let code = r.u32()?;
            // The message is optional in practice (some servers send only the code).
            let message = r.string().unwrap_or_default();
            Reply::Status { id, code, message }
        }
        102 => Reply::Handle {
            id,
            handle: r.handle()?,
        },
        103 => Reply::Data {
            id,
            data: r.string()?,
        },
        _ => Reply::Other { id },
    })
}

/// The name of a status code, as the draft spells it.
pub fn status_name(code: u32) -> String {
    match code {
        0 => "ok".into(),
        1 => "eof".into(),
        2 => "no such file".into(),
        3 => "permission denied".into(),
        4 => "failure".into(),
        5 => "bad message".into(),
        6 => "no connection".into(),
        7 => "connection lost".into(),
        8 => "operation unsupported".into(),
        n => format!("status {n}"),
    }
}

/// Open flags (`pflags`) as words, e.g. `write,creat,trunc`.
pub fn pflags_names(pflags: u32) -> String {
    let names = [
        (0x01, "read"),
        (0x02, "write"),
        (0x04, "append"),
        (0x08, "creat"),
        (0x10, "trunc"),
        (0x20, "excl"),
    ];
    let mut out: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| pflags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    let unknown = pflags & !0x3f;
    let extra = format!("0x{unknown:x}");
    if unknown != 0 {
        out.push(&extra);
    }
    out.join(",")
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A packet: length, type, then `fields` (already encoded).
    pub fn packet(kind: u8, fields: &[&[u8]]) -> Vec<u8> {
        let body: Vec<u8> = std::iter::once(&[kind][..])
            .chain(fields.iter().copied())
            .flatten()
            .copied()
            .collect();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend(body);
        out
    }

    pub fn string(s: &[u8]) -> Vec<u8> {
        let mut out = (s.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(s);
        out
    }

    #[test]
    fn frames_across_chunks_and_refuses_long_packets() {
        let mut f = Framer::default();
        let p = packet(
            3,
            &[&7u32.to_be_bytes(), &string(b"/etc/x"), &1u32.to_be_bytes()],
        );
        let two: Vec<u8> = [p.clone(), p.clone()].concat();
        let mut seen = Vec::new();
        for chunk in two.chunks(3) {
            f.push(chunk, |b| {
                seen.push(request(b).map(|r| format!("{r:?}")));
                Ok::<(), PacketError>(())
            })
            .unwrap();
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(
            request(&p[4..]).unwrap(),
            Request::Open {
                id: 7,
                path: b"/etc/x",
                pflags: 1
            }
        );
        let mut f = Framer::default();
        let err = f
            .push(&u32::MAX.to_be_bytes(), |_| Ok::<(), PacketError>(()))
            .unwrap_err();
        assert_eq!(err, PacketError::TooLong(u32::MAX));
    }

    #[test]
    fn short_packets_are_errors_and_unknown_types_are_other() {
        assert_eq!(
            request(&[3, 0, 0, 0, 1, 0, 0, 0, 9]),
            Err(PacketError::Short(3))
        );
        assert_eq!(request(&[99, 0, 0, 0, 5]), Ok(Request::Other { id: 5 }));
        assert_eq!(
            reply(&[101, 0, 0, 0, 5, 0, 0, 0, 0]).unwrap(),
            Reply::Status {
                id: 5,
                code: 0,
                message: b""
            }
        );
        assert_eq!(pflags_names(0x1a), "write,creat,trunc");
    }
}
