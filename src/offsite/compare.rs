//! Comparison of the local audit chain and recordings with the off-site copy, for `verify`.

use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::{Offsite, OffsiteError};
use crate::audit::{ChainReport, NoteVerifier, parse_entry};
use crate::ids::SessionId;
use crate::recording::RecordingStore;

/// What the comparison found: `findings` are tampering, `notes` are not (a backlog).
#[derive(Debug, Default)]
pub struct Comparison {
    pub findings: Vec<String>,
    pub notes: Vec<String>,
}

/// Runs of consecutive numbers, as "seq 4" or "seq 4 to 9".
fn ranges(seqs: &[u64]) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < seqs.len() {
        let mut j = i;
        while j + 1 < seqs.len() && seqs[j + 1] == seqs[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            format!("seq {}", seqs[i])
        } else {
            format!("seq {} to {}", seqs[i], seqs[j])
        });
        i = j + 1;
    }
    out
}

/// Every off-site entry from seq `from` on (where local verification started) against the
/// local chain.
pub async fn compare_chain(
    offsite: &Offsite,
    local: &ChainReport,
    verifier: &NoteVerifier,
    from: u64,
) -> Result<Comparison, OffsiteError> {
    let mut c = Comparison::default();
    let mut remote = offsite.note_seqs().await?;
    remote.retain(|seq| *seq >= from);
    let mut gone = Vec::new();
    for seq in &remote {
        let Some(note) = offsite.get(&Offsite::note_name(*seq)).await? else {
            continue;
        };
        if verifier
            .open(&note)
            .and_then(|t| parse_entry(&t))
            .map(|e| e.seq)
            .ok()
            != Some(*seq)
        {
            c.findings.push(format!(
                "off-site seq {seq} does not verify with the signing key"
            ));
            continue;
        }
        match local.entry(*seq) {
            Some((_, n)) if n.as_bytes() == note.as_slice() => {}
            Some(_) => c
                .findings
                .push(format!("seq {seq} differs from the off-site copy")),
            None => gone.push(*seq),
        }
    }
    for r in ranges(&gone) {
        c.findings
            .push(format!("{r} exist off-site but not here (deleted here)"));
    }
    let last_remote = remote.last().copied();
    let backlog = local
        .entries
        .iter()
        .filter(|(e, _)| last_remote.is_none_or(|l| e.seq > l))
        .count();
    c.notes.push(format!(
        "off-site copy at {}: {} entries compared, {backlog} not sent yet",
        offsite.endpoint,
        remote.len()
    ));
    Ok(c)
}

/// A recording against its off-site copy: `Err(finding)`, or `Ok(what was seen)`.
pub async fn compare_recording(
    offsite: &Offsite,
    store: &RecordingStore,
    id: &SessionId,
) -> Result<Result<&'static str, &'static str>, OffsiteError> {
    // Both sides are hashed as streams, never held whole.
    let remote = offsite.digest(&Offsite::recording_name(id, "cast")).await?;
    let local = file_digest(&store.cast_path(id)).await.ok();
    Ok(match (local, remote) {
        (_, None) => Ok("no off-site copy yet"),
        (Some(l), Some(r)) if l == r => Ok("off-site copy identical"),
        (Some(_), Some(_)) => Err("differs from the off-site copy"),
        (None, Some(_)) => Err("deleted here; the off-site copy exists"),
    })
}

/// The SHA-256 of a local file, read a piece at a time.
async fn file_digest(path: &std::path::Path) -> std::io::Result<[u8; 32]> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut digest = Sha256::new();
    let mut buf = vec![0; 64 << 10];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(digest.finalize().into());
        }
        digest.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ranges() {
        assert_eq!(
            super::ranges(&[1, 2, 3, 7, 9, 10]),
            ["seq 1 to 3", "seq 7", "seq 9 to 10"]
        );
    }
}
