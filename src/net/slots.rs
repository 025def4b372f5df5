//! Places for connections: a total, and a share per source, so one source cannot take them all,
//! and sources that logged in before are not kept out by many that never did.
//!
//! Invariants: a [`Slot`] holds one place of the total and one of its source's share until it is
//! dropped or evicted; the per-source map never keeps an empty entry, so it holds at most as many
//! sources as there are places. When the total is full (places taken with eviction only):
//! - a newcomer from a *trusted* source (one a connection logged in from lately, [`Slots::trust`];
//!   at most [`TRUSTED`] remembered, the least recent forgotten first) takes the oldest place of
//!   the busiest untrusted source, so an attacker without a key, however many addresses it
//!   uses, cannot keep out an admin from an address that logged in before;
//! - any other newcomer takes the oldest place of the busiest source if that source holds at
//!   least two more places than the newcomer's; sources holding evenly are never evicted for
//!   one another.
//!
//! An evicted place passes at once; the evicted connection is told to end (its `evict` hook).

use std::collections::{HashMap, VecDeque};
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

/// Ends the connection holding an evicted place.
pub type Evict = Arc<dyn Fn() + Send + Sync>;

struct Held {
    id: u64,
    _permit: OwnedSemaphorePermit,
    /// `None`: a place that is never evicted ([`Slots::take`]).
    evict: Option<Evict>,
}

/// How many sources that logged in are remembered.
pub const TRUSTED: usize = 4096;

#[derive(Default)]
struct Inner {
    /// The places each source holds, oldest first.
    sources: HashMap<IpAddr, VecDeque<Held>>,
    next: u64,
    /// Sources a connection logged in from, with when (in `next` ticks) it last did.
    trusted: HashMap<IpAddr, u64>,
}

/// Places for connections: a total, and a share per source.
pub struct Slots {
    total: Arc<Semaphore>,
    per_source: usize,
    inner: Arc<Mutex<Inner>>,
}

/// A place given, and the source whose oldest place it was, if one was evicted for it.
pub struct Taken {
    pub slot: Slot,
    pub evicted: Option<IpAddr>,
}

impl Slots {
    pub fn new(total: usize, per_source: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_source,
            inner: Arc::default(),
        }
    }

    /// A slot for a connection from `peer`, or why there is none; it is never evicted.
    pub fn take(&self, peer: IpAddr) -> Result<Slot, Full> {
        self.place(peer, None).map(|t| t.slot)
    }

    /// A slot for a connection from `peer`, taken from the busiest source if the total is full
    /// (`evict` ends this connection should its own place be taken later), or why there is none.
    pub fn take_evicting(&self, peer: IpAddr, evict: Evict) -> Result<Taken, Full> {
        self.place(peer, Some(evict))
    }

    fn place(&self, peer: IpAddr, evict: Option<Evict>) -> Result<Taken, Full> {
        let source = source_of(peer);
        let mut inner = lock(&self.inner);
        let held = inner.sources.get(&source).map_or(0, VecDeque::len);
        if held >= self.per_source {
            return Err(Full::Source);
        }
        let (permit, evicted) = match self.total.clone().try_acquire_owned() {
            Ok(p) => (p, None),
            Err(_) if evict.is_some() => {
                let trusted = inner.trusted.contains_key(&source);
                let (busiest, victim) =
                    evict_busiest(&mut inner, held, trusted).ok_or(Full::Total)?;
                (victim._permit, Some((busiest, victim.evict)))
            }
            Err(_) => return Err(Full::Total),
        };
        inner.next += 1;
        let id = inner.next;
        inner.sources.entry(source).or_default().push_back(Held {
            id,
            _permit: permit,
            evict,
        });
        drop(inner);
        let evicted = evicted.map(|(busiest, end)| {
            if let Some(end) = end {
                end();
            }
            busiest
        });
        Ok(Taken {
            slot: Slot {
                id,
                source,
                inner: self.inner.clone(),
            },
            evicted,
        })
    }

    /// Remembers that a connection from `peer` logged in.
    pub fn trust(&self, peer: IpAddr) {
        let source = source_of(peer);
        let mut inner = lock(&self.inner);
        inner.next += 1;
        let now = inner.next;
        inner.trusted.insert(source, now);
        if inner.trusted.len() > TRUSTED {
            let least_recent = inner
                .trusted
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(s, _)| *s);
            if let Some(s) = least_recent {
                inner.trusted.remove(&s);
            }
        }
    }

    /// Sources holding at least one slot (the map never keeps an empty entry).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        lock(&self.inner).sources.len()
    }
}

/// Takes the oldest place of the source holding the most (of those, the one holding the oldest
/// place): for a `trusted` newcomer, among untrusted sources; for another, if that source holds
/// at least two more than `held` (the newcomer's source).
fn evict_busiest(inner: &mut Inner, held: usize, trusted: bool) -> Option<(IpAddr, Held)> {
    let Inner {
        sources,
        trusted: known,
        ..
    } = inner;
    let (busiest, places) = sources
        .iter_mut()
        .filter(|(source, _)| !trusted || !known.contains_key(*source))
        // Among sources holding as many, the one whose oldest place is oldest.
        .max_by_key(|(_, places)| {
            let oldest = places.front().map_or(u64::MAX, |h| h.id);
            (places.len(), std::cmp::Reverse(oldest))
        })?;
    let enough = trusted || places.len() >= held + 2;
    // A place taken without eviction cannot be ended from here, so it is never taken.
    if !enough || places.front()?.evict.is_none() {
        return None;
    }
    let busiest = *busiest;
    let victim = places.pop_front()?;
    if places.is_empty() {
        sources.remove(&busiest);
    }
    Some((busiest, victim))
}

/// One connection's place; dropping it gives the place back.
pub struct Slot {
    id: u64,
    source: IpAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = lock(&self.inner);
        if let Some(places) = inner.sources.get_mut(&self.source) {
            // An evicted place is gone already.
            places.retain(|h| h.id != self.id);
            if places.is_empty() {
                inner.sources.remove(&self.source);
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

    fn take(slots: &Slots, peer: IpAddr) -> Result<Slot, Full> {
        slots.take_evicting(peer, Arc::new(|| ())).map(|t| t.slot)
    }

    #[test]
    fn a_source_gets_its_share_and_others_still_get_in() {
        let slots = Slots::new(5, 2);
        let a1 = take(&slots, ip("10.0.0.1")).unwrap();
        let _a2 = take(&slots, ip("10.0.0.1")).unwrap();
        assert_eq!(take(&slots, ip("10.0.0.1")).err(), Some(Full::Source));
        let _b = take(&slots, ip("10.0.0.2")).unwrap();
        drop(a1);
        let _a3 = take(&slots, ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn the_total_holds_across_sources_holding_evenly() {
        let slots = Slots::new(2, 2);
        let _a = take(&slots, ip("10.0.0.1")).unwrap();
        let _b = take(&slots, ip("10.0.0.2")).unwrap();
        assert_eq!(take(&slots, ip("10.0.0.3")).err(), Some(Full::Total));
        // A refusal for the total does not count against the source.
        drop(_b);
        let _c1 = take(&slots, ip("10.0.0.3")).unwrap();
        assert_eq!(slots.tracked(), 2);
    }

    #[test]
    fn slots_given_back_leave_no_entry() {
        let slots = Slots::new(8, 8);
        let held: Vec<Slot> = (0..8)
            .map(|i| take(&slots, ip(&format!("10.0.0.{i}"))).unwrap())
            .collect();
        assert_eq!(slots.tracked(), 8);
        drop(held);
        assert_eq!(slots.tracked(), 0);
        assert_eq!(slots.total.available_permits(), 8);
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let slots = Slots::new(10, 1);
        let _a = take(&slots, ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            take(&slots, ip("2001:db8:1:2:ffff::9")).err(),
            Some(Full::Source)
        );
        let _b = take(&slots, ip("2001:db8:1:3::1")).unwrap();
        let _c = take(&slots, ip("10.0.0.1")).unwrap();
        assert_eq!(
            take(&slots, ip("::ffff:10.0.0.1")).err(),
            Some(Full::Source)
        );
    }

    #[test]
    fn a_newcomer_takes_the_oldest_place_of_the_busiest_source() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let slots = Slots::new(4, 2);
        let ended = Arc::new(AtomicUsize::new(0));
        let hook = |n: usize| -> Evict {
            let ended = ended.clone();
            Arc::new(move || {
                ended.store(n, Ordering::SeqCst);
            })
        };
        let a1 = slots.take_evicting(ip("10.0.0.1"), hook(1)).unwrap().slot;
        let _a2 = slots.take_evicting(ip("10.0.0.1"), hook(2)).unwrap().slot;
        let _b1 = slots.take_evicting(ip("10.0.0.2"), hook(3)).unwrap().slot;
        let _b2 = slots.take_evicting(ip("10.0.0.2"), hook(4)).unwrap().slot;
        // Full; a source holding nothing takes the oldest place of a source holding two.
        let c = slots.take_evicting(ip("10.0.0.3"), hook(5)).unwrap();
        assert_eq!(c.evicted, Some(ip("10.0.0.1")));
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert_eq!(slots.total.available_permits(), 0);
        // The evicted connection's slot, dropped later, gives back nothing twice.
        drop(a1);
        assert_eq!(slots.total.available_permits(), 0);
        // Now 10.0.0.1 and 10.0.0.3 hold one each, 10.0.0.2 two: a fourth source evicts
        // from 10.0.0.2, but 10.0.0.3 (one place) cannot take another's for a second one.
        assert_eq!(take(&slots, ip("10.0.0.3")).err(), Some(Full::Total));
        let d = slots.take_evicting(ip("10.0.0.4"), hook(6)).unwrap();
        assert_eq!(d.evicted, Some(ip("10.0.0.2")));
        assert_eq!(ended.load(Ordering::SeqCst), 3);
        // Every source holds one: nobody is evicted for a newcomer.
        assert_eq!(take(&slots, ip("10.0.0.5")).err(), Some(Full::Total));
    }

    #[test]
    fn places_taken_without_eviction_are_never_evicted() {
        let slots = Slots::new(2, 2);
        let _a1 = slots.take(ip("10.0.0.1")).unwrap();
        let _a2 = slots.take(ip("10.0.0.1")).unwrap();
        assert_eq!(slots.take(ip("10.0.0.2")).err(), Some(Full::Total));
    }

    #[test]
    fn a_source_that_logged_in_before_gets_in_past_many_that_never_did() {
        let slots = Slots::new(3, 2);
        let admin = ip("10.0.0.9");
        slots.trust(admin);
        let held: Vec<Slot> = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
            .iter()
            .map(|a| take(&slots, ip(a)).unwrap())
            .collect();
        // Every source holds one: a stranger is refused, the admin's address is not.
        assert_eq!(take(&slots, ip("10.0.0.4")).err(), Some(Full::Total));
        let t = slots.take_evicting(admin, Arc::new(|| ())).unwrap();
        assert_eq!(t.evicted, Some(ip("10.0.0.1")));
        // A trusted source's place is not taken for another trusted source.
        slots.trust(ip("10.0.0.2"));
        slots.trust(ip("10.0.0.3"));
        let other = ip("10.0.0.8");
        slots.trust(other);
        assert_eq!(take(&slots, other).err(), Some(Full::Total));
        drop(held);
    }

    #[test]
    fn the_trusted_sources_are_bounded() {
        let slots = Slots::new(1, 1);
        for i in 0..(TRUSTED + 10) {
            let [a, b] = (i as u16).to_be_bytes();
            slots.trust(IpAddr::from([10, 1, a, b]));
        }
        let inner = lock(&slots.inner);
        assert_eq!(inner.trusted.len(), TRUSTED);
        // The least recent went first.
        assert!(!inner.trusted.contains_key(&IpAddr::from([10, 1, 0, 0])));
    }
}
