//! Audit chain entries as C2SP signed notes (<https://c2sp.org/signed-note>), the format of
//! transparency-log checkpoints: a few lines of text, a blank line, and `— name signature` lines.
//!
//! The text of an entry is `key value` lines, in this order, the optional ones only when set:
//!
//! ```text
//! stapsteen audit v1
//! seq 17
//! prev <hex SHA-256 of the previous entry's whole note; 64 zeros for seq 0>
//! time 2026-11-23T12:00:00.123Z
//! kind start|checkpoint|end|open|pruned
//! session <session id>
//! lines <lines of the recording covered>
//! bytes <bytes of the recording covered>
//! chain <hex line-chain hash after those lines>
//! admin|target|account|reason|sha256_in|sha256_out|sha256_err <value>
//! ```
//!
//! The signing key is an Ed25519 key in OpenSSH format, like the host key; its note key name is
//! the key's comment. Anyone with the public key can check a note, also with other tools.

use std::fmt::Write as _;

use ed25519_dalek::{SigningKey, VerifyingKey};
use russh::keys::{PrivateKey, PublicKey};
use sha2::{Digest, Sha256};
use signed_note::{Note, Signer, StandardVerifier, VerifierList};

use crate::ids::SessionId;
use crate::secrets::{Secret, Wipe};

const MAGIC: &str = "stapsteen audit v1";
/// The key name used when the key's comment is not a valid note key name.
const DEFAULT_NAME: &str = "stapsteen";

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("the signing key is not Ed25519")]
    KeyType,
    #[error("cannot sign the entry: {0}")]
    Sign(#[source] signed_note::NoteError),
    #[error("not a signed note: {0}")]
    Malformed(String),
    #[error("signature does not verify with the signing key")]
    BadSignature,
    #[error("entry text: {0}")]
    Text(String),
}

impl Wipe for SigningKey {
    fn wipe(&mut self) {
        // ed25519-dalek wipes the secret scalar in its own Drop (feature `zeroize`).
    }
}

fn note_name(comment: &str) -> &str {
    if signed_note::is_key_name_valid(comment) {
        comment
    } else {
        DEFAULT_NAME
    }
}

/// Signs entries; holds the secret key.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: Secret<SigningKey>,
    verifier: NoteVerifier,
}

impl NoteSigner {
    pub fn new(key: &Secret<PrivateKey>) -> Result<Self, NoteError> {
        let pair = key
            .expose()
            .key_data()
            .ed25519()
            .ok_or(NoteError::KeyType)?;
        let signing = Secret::new(SigningKey::from_bytes(&pair.private.to_bytes()));
        let public = signing.expose().verifying_key();
        let name = note_name(key.expose().comment().as_str_lossy()).to_owned();
        let verifier = NoteVerifier::from_key(&name, &public)?;
        Ok(Self {
            id: verifier.id,
            name,
            key: signing,
            verifier,
        })
    }

    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// The signed note for `text`.
    pub fn sign(&self, text: &str) -> Result<Vec<u8>, NoteError> {
        let mut note = Note::new(text.as_bytes(), &[]).map_err(NoteError::Sign)?;
        note.add_sigs(&[self]).map_err(NoteError::Sign)?;
        Ok(note.to_bytes())
    }
}

impl Signer for NoteSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.expose().sign(msg).to_vec())
    }
}

/// Checks entries; public.
#[derive(Clone)]
pub struct NoteVerifier {
    /// `name+id+key`, the verifier key format of signed notes.
    pub vkey: String,
    id: u32,
}

impl NoteVerifier {
    fn from_key(name: &str, key: &VerifyingKey) -> Result<Self, NoteError> {
        let vkey = signed_note::new_ed25519_verifier_key(name, key);
        let v = StandardVerifier::new(&vkey).map_err(|e| NoteError::Malformed(e.to_string()))?;
        Ok(Self {
            id: signed_note::Verifier::key_id(&v),
            vkey,
        })
    }

    /// From a verifier key (`name+id+key`, as [`NoteVerifier::vkey`] and the evidence bundle's
    /// `audit-key.vkey` hold it).
    pub fn from_vkey(vkey: &str) -> Result<Self, NoteError> {
        let v = StandardVerifier::new(vkey).map_err(|e| NoteError::Malformed(e.to_string()))?;
        Ok(Self {
            id: signed_note::Verifier::key_id(&v),
            vkey: vkey.to_owned(),
        })
    }

    /// From the signing key's OpenSSH public key (`signing_key.pub`).
    pub fn from_public(key: &PublicKey) -> Result<Self, NoteError> {
        let ed = key.key_data().ed25519().ok_or(NoteError::KeyType)?;
        let vk = VerifyingKey::from_bytes(&ed.0).map_err(|_| NoteError::KeyType)?;
        Self::from_key(note_name(key.comment().as_str_lossy()), &vk)
    }

    /// Verifies a note and returns its text.
    pub fn open(&self, note: &[u8]) -> Result<String, NoteError> {
        let n = Note::from_bytes(note).map_err(|e| NoteError::Malformed(e.to_string()))?;
        let v =
            StandardVerifier::new(&self.vkey).map_err(|e| NoteError::Malformed(e.to_string()))?;
        let list = VerifierList::new(vec![Box::new(v)]);
        match n.verify(&list) {
            Ok((verified, _)) if !verified.is_empty() => {}
            _ => return Err(NoteError::BadSignature),
        }
        String::from_utf8(n.text().to_vec()).map_err(|e| NoteError::Malformed(e.to_string()))
    }
}

/// The kind of an audit chain entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The daemon opened the chain (start of service).
    Open,
    /// A session was admitted; written before its target is dialled.
    Start,
    /// The recording reached `lines` lines.
    Checkpoint,
    /// The session ended; `lines` is the final count.
    End,
    /// The session's recording was deleted because its retention period had passed; written
    /// before the files are removed.
    Pruned,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Start => "start",
            Kind::Checkpoint => "checkpoint",
            Kind::End => "end",
            Kind::Pruned => "pruned",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => Kind::Open,
            "start" => Kind::Start,
            "checkpoint" => Kind::Checkpoint,
            "end" => Kind::End,
            "pruned" => Kind::Pruned,
            _ => return None,
        })
    }
}

/// Where a recording stood when an entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seal {
    pub lines: u64,
    pub bytes: u64,
    pub chain: [u8; 32],
}

/// What a caller asks to append; the chain adds seq, prev and time.
#[derive(Debug, Clone)]
pub struct Draft {
    pub kind: Kind,
    pub session: Option<SessionId>,
    pub seal: Option<Seal>,
    /// Extra `key value` lines (admin, target, reason, ...); values are kept to one line.
    pub fields: Vec<(&'static str, String)>,
}

impl Draft {
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            session: None,
            seal: None,
            fields: Vec::new(),
        }
    }
    pub fn session(mut self, id: &SessionId) -> Self {
        self.session = Some(id.clone());
        self
    }
    pub fn seal(mut self, seal: Seal) -> Self {
        self.seal = Some(seal);
        self
    }
    pub fn field(mut self, key: &'static str, value: impl std::fmt::Display) -> Self {
        self.fields.push((key, value.to_string()));
        self
    }
}

/// A parsed, signature-checked entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub prev: [u8; 32],
    pub time: jiff::Timestamp,
    pub kind: Kind,
    pub session: Option<SessionId>,
    pub seal: Option<Seal>,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Keys a caller may add; anything else in a note is an error.
const FIELDS: &[&str] = &[
    "admin",
    "target",
    "account",
    "grant",
    "key",
    "key_flags",
    "key_counter",
    "reason",
    "sha256_in",
    "sha256_out",
    "sha256_err",
    "exit_status",
    "pid",
    "retention_days",
];

/// One line, printable: control characters become `?` (a note may not hold them).
fn one_line(v: &str) -> String {
    v.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The text of entry `seq` after the entry whose note hashes to `prev`.
pub fn render(draft: &Draft, seq: u64, prev: &[u8; 32], time: jiff::Timestamp) -> String {
    let mut t = format!(
        "{MAGIC}\nseq {seq}\nprev {}\ntime {time}\nkind {}\n",
        hex::encode(prev),
        draft.kind.as_str()
    );
    if let Some(s) = &draft.session {
        let _ = writeln!(t, "session {s}");
    }
    if let Some(s) = &draft.seal {
        let _ = writeln!(
            t,
            "lines {}\nbytes {}\nchain {}",
            s.lines,
            s.bytes,
            hex::encode(s.chain)
        );
    }
    for (k, v) in &draft.fields {
        let v = one_line(v);
        let v = if v.is_empty() { "-".to_owned() } else { v };
        let _ = writeln!(t, "{k} {v}");
    }
    t
}

fn hash32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Parses an entry's text (already signature-checked).
pub fn parse(text: &str) -> Result<Entry, NoteError> {
    let err = |m: &str| NoteError::Text(m.to_owned());
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(err("not a stapsteen audit entry"));
    }
    let mut next = |key: &str| -> Result<String, NoteError> {
        let l = lines.next().ok_or_else(|| err(&format!("{key} missing")))?;
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(' '))
            .map(str::to_owned)
            .ok_or_else(|| err(&format!("{key} expected, found {l:?}")))
    };
    let seq = next("seq")?.parse().map_err(|_| err("bad seq"))?;
    let prev = hash32(&next("prev")?).ok_or_else(|| err("bad prev"))?;
    let time = next("time")?.parse().map_err(|_| err("bad time"))?;
    let kind = Kind::parse(&next("kind")?).ok_or_else(|| err("bad kind"))?;
    let mut entry = Entry {
        seq,
        prev,
        time,
        kind,
        session: None,
        seal: None,
        fields: Vec::new(),
    };
    let rest: Vec<&str> = lines.collect();
    let mut rest = rest.as_slice();
    if let Some(v) = rest.first().and_then(|l| l.strip_prefix("session ")) {
        entry.session = Some(SessionId::parse(v).ok_or_else(|| err("bad session id"))?);
        rest = &rest[1..];
    }
    if let [l, b, c, tail @ ..] = rest
        && let Some(l) = l.strip_prefix("lines ")
    {
        let lines = l.parse().map_err(|_| err("bad lines"))?;
        let bytes = b
            .strip_prefix("bytes ")
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| err("bad bytes"))?;
        let chain = c
            .strip_prefix("chain ")
            .and_then(hash32)
            .ok_or_else(|| err("bad chain"))?;
        entry.seal = Some(Seal {
            lines,
            bytes,
            chain,
        });
        rest = tail;
    }
    for l in rest {
        let (k, v) = l.split_once(' ').ok_or_else(|| err("bad field"))?;
        if !FIELDS.contains(&k) {
            return Err(err(&format!("unknown field {k}")));
        }
        entry.fields.push((k.to_owned(), v.to_owned()));
    }
    Ok(entry)
}

/// SHA-256 of a whole note: what the next entry's `prev` holds.
pub fn note_hash(note: &[u8]) -> [u8; 32] {
    Sha256::digest(note).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new(&crate::secrets::generate_key("stapsteen-audit@test")).unwrap()
    }

    #[test]
    fn roundtrip_and_tamper() {
        let s = signer();
        let id = SessionId::generate(jiff::Timestamp::UNIX_EPOCH);
        let draft = Draft::new(Kind::End)
            .session(&id)
            .seal(Seal {
                lines: 3,
                bytes: 99,
                chain: [7; 32],
            })
            .field("reason", "line\nbreak");
        let text = render(&draft, 5, &[1; 32], jiff::Timestamp::UNIX_EPOCH);
        let note = s.sign(&text).unwrap();
        let opened = s.verifier().open(&note).unwrap();
        let e = parse(&opened).unwrap();
        assert_eq!(e.seq, 5);
        assert_eq!(e.session, Some(id));
        assert_eq!(e.seal.unwrap().lines, 3);
        assert_eq!(e.field("reason"), Some("line?break"));
        assert!(
            std::str::from_utf8(&note)
                .unwrap()
                .contains("\n\n— stapsteen-audit@test ")
        );

        let mut bad = note.clone();
        bad[25] ^= 1;
        assert!(s.verifier().open(&bad).is_err());
        assert!(signer().verifier().open(&note).is_err(), "another key");
    }
}
