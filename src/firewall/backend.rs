//! The seam between the enforcer and the kernel: unit tests drive a fake, the daemon runs `nft`.

use nftables::helper::{self, NftablesError};
use nftables::schema::Nftables;

use super::{FirewallError, TABLE};

pub trait Backend: Send + Sync {
    /// Applies one transaction.
    fn apply(&self, rules: &Nftables<'_>) -> Result<(), FirewallError>;
    /// The table as `nft -j list` shows it, or `None` when it does not exist.
    fn list(&self) -> Result<Option<serde_json::Value>, FirewallError>;
}

/// The real kernel, through the `nft` program (`nft -j -f -`).
pub struct Nft;

fn describe(e: NftablesError) -> FirewallError {
    FirewallError::Nft(match e {
        NftablesError::NftFailed { stderr, hint, .. } => {
            format!("{hint}: {}", stderr.trim())
        }
        other => other.to_string(),
    })
}

impl Backend for Nft {
    fn apply(&self, rules: &Nftables<'_>) -> Result<(), FirewallError> {
        let json = serde_json::to_string(rules).map_err(|e| FirewallError::Nft(e.to_string()))?;
        helper::apply_ruleset_raw(&json, helper::DEFAULT_NFT, helper::DEFAULT_ARGS)
            .map(|_| ())
            .map_err(describe)
    }

    fn list(&self) -> Result<Option<serde_json::Value>, FirewallError> {
        match helper::get_current_ruleset_raw(helper::DEFAULT_NFT, ["list", "table", "inet", TABLE])
        {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| FirewallError::Nft(e.to_string())),
            Err(NftablesError::NftFailed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(describe(e)),
        }
    }
}
