//! Places for connections: a total, and a share per source, so one source cannot take them all.
//!
//! Invariant: a [`Slot`] holds one place of the total and one of its source's share until it is
//! dropped; the per-source map never keeps an empty entry, so it holds at most as many sources
//! as there are places.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::source_of;
use crate::sync::lock;

/// Why a connection got no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Total,
    Source,
}

/// Places for connections: a total, and a share per source.
pub struct Slots {
    total: Arc<Semaphore>,
    per_source: usize,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Slots {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            sources: Arc::default(),
        }
    }

    /// A slot for a connection from `peer`, or why there is none.
    pub fn take(&self, peer: IpAddr) -> Result<Slot, Full> {
        let source = source_of(peer);
        let mut sources = lock(&self.sources);
        let held = sources.get(&source).copied().unwrap_or(0);
        if held >= self.per_source {
            return Err(Full::Source);
        }
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Full::Total)?;
        sources.insert(source, held + 1);
        Ok(Slot {
            _total: total,
            source,
            sources: self.sources.clone(),
        })
    }

    /// Sources holding at least one slot (the map never keeps an empty entry).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.sources).len()
    }
}

/// One connection's place; dropping it gives the place back.
pub struct Slot {
    _total: OwnedSemaphorePermit,
    source: IpAddr,
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut sources = lock(&self.sources);
        if let Some(n) = sources.get_mut(&self.source) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                sources.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_share_and_others_still_get_in() {
        let slots = Slots::new(5, 2);
        let a1 = slots.take(ip("10.0.0.1")).unwrap();
        let _a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.1")).err(), Some(Full::Source));
        let _b = slots.take(ip("10.0.0.2")).unwrap();
        drop(a1);
        let _a3 = slots.take(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_total_holds_across_sources() {
        let slots = Slots::new(2, 2);
        let _a = slots.take(ip("10.0.0.1")).unwrap();
        let _b = slots.take(ip("10.0.0.2")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.3")).err(), Some(Full::Total));
        // A refusal for the total does not count against the source.
        drop(_b);
        let _c1 = slots.take(ip("10.0.0.3")).unwrap();
        assert_eq!(slots.tracked(), 2);
    }

    #[test]
    fn slots_given_back_leave_no_entry() {
        let slots = Slots::new(8, 8);
        let held: Vec<Slot> = (0..8)
            .map(|i| slots.take(ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(slots.tracked(), 8);
        drop(held);
        assert_eq!(slots.tracked(), 0);
        assert_eq!(slots.total.available_permits(), 8);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = Slots::new(10, 1);
        let _a = slots.take(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            slots.take(ip("2001:db8:1:2:ffff::9")).err(),
            Some(Full::Source)
        );
        let _b = slots.take(ip("2001:db8:1:3::1")).unwrap();
        let _c = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("::ffff:10.0.0.1")).err(), Some(Full::Source));
    }
}
