//! Audit floods: the refusals anyone on the network can cause (`CONN_LIMIT`, `AUTH_DENIED`,
//! `LOGIN_TIMEOUT`, `CONSOLE_REFUSED`, `CONSOLE_LOGIN_FAILED`), and the refused requests a
//! logged-in client can repeat on new connections (`REQUEST_DENIED`), are limited per source, so a flood
//! of them cannot push journald into its own rate limit, which would drop real events unseen.
//!
//! Invariants: in each window, the first `per_window` events of a code from a source are
//! emitted; the rest are counted, and every count is emitted as one `<CODE>_SUPPRESSED` event
//! when its window ends (at the next event or the next timer tick, whichever is first) or at
//! shutdown, so no refusal goes uncounted. At most `max_sources` sources are tracked per window;
//! events from further sources share one "other" source. Events without a source are never
//! limited, nor are events marked [`Event::never_limited`] (refusals of an enrolled key's verified
//! signature and request floods that close a logged-in connection, which only a key's holder can
//! cause, once per signature). A source is an IPv4 address or an IPv6 /64
//! ([`crate::net::source_of`]).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jiff::Timestamp;

use super::{Code, Event};
use crate::clock::Clock;
use crate::sync::lock;

/// Where limited events come from: an address, or all the sources beyond the tracked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Addr(IpAddr),
    Other,
}

/// Events of one code from one source that were not emitted in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub code: Code,
    pub source: Source,
    pub suppressed: u64,
    pub window: Duration,
}

impl Summary {
    fn event(&self) -> Option<Event> {
        let code = self.code.suppressed()?;
        let mut e = Event::new(code)
            .reason(format!(
                "{} more {} events from this source in {}s were not logged one by one",
                self.suppressed,
                self.code,
                self.window.as_secs()
            ))
            .detail("count", self.suppressed)
            .detail("interval_s", self.window.as_secs());
        e.source = match self.source {
            Source::Addr(ip) => ip.to_string(),
            Source::Other => "other".into(),
        };
        Some(e)
    }
}

/// The pure decision: which limited events are emitted, and what was suppressed.
pub struct Limiter {
    per_window: u64,
    window: Duration,
    max_sources: usize,
    started: Timestamp,
    seen: HashMap<(Code, Source), u64>,
    sources: HashSet<IpAddr>,
}

impl Limiter {
    pub fn new(per_window: u64, window: Duration, max_sources: usize, now: Timestamp) -> Self {
        Self {
            per_window,
            window,
            max_sources,
            started: now,
            seen: HashMap::new(),
            sources: HashSet::new(),
        }
    }

    /// Whether an event of `code` from `source` is emitted, and the summaries of a window that
    /// ended before it.
    pub fn admit(&mut self, code: Code, source: IpAddr, now: Timestamp) -> (bool, Vec<Summary>) {
        let ended = self.roll(now);
        let source = if self.sources.contains(&source) {
            Source::Addr(source)
        } else if self.sources.len() < self.max_sources {
            self.sources.insert(source);
            Source::Addr(source)
        } else {
            Source::Other
        };
        let seen = self.seen.entry((code, source)).or_insert(0);
        *seen = seen.saturating_add(1);
        (*seen <= self.per_window, ended)
    }

    /// The summaries of the window when it has ended; a new one starts.
    pub fn roll(&mut self, now: Timestamp) -> Vec<Summary> {
        match now.duration_since(self.started).unsigned_abs() >= self.window {
            true => {
                self.started = now;
                self.flush()
            }
            false => Vec::new(),
        }
    }

    /// The summaries so far, ending the window (at shutdown).
    pub fn flush(&mut self) -> Vec<Summary> {
        self.sources.clear();
        let mut out: Vec<Summary> = self
            .seen
            .drain()
            .filter(|(_, seen)| *seen > self.per_window)
            .map(|((code, source), seen)| Summary {
                code,
                source,
                suppressed: seen - self.per_window,
                window: self.window,
            })
            .collect();
        out.sort_by_key(|s| (s.code.as_str(), format!("{:?}", s.source)));
        out
    }
}

/// The daemon's limiter, installed once by [`install`]; without it nothing is limited (the
/// command line, tests of other modules).
struct Gate {
    limiter: Mutex<Limiter>,
    clock: Arc<dyn Clock>,
}

static GATE: OnceLock<Gate> = OnceLock::new();

/// Limits audit floods from now on in this process, and returns the task that emits the
/// summaries of windows no later event closes. A second call keeps the first limits.
pub fn install(
    per_window: u64,
    window: Duration,
    max_sources: usize,
    clock: Arc<dyn Clock>,
) -> impl Future<Output = ()> + Send + 'static {
    let now = clock.now();
    let _ = GATE.set(Gate {
        limiter: Mutex::new(Limiter::new(per_window, window, max_sources, now)),
        clock,
    });
    async move {
        // Often enough that a window ends at most a second late, whenever it started.
        let mut tick = tokio::time::interval(window.min(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(g) = GATE.get() {
                let ended = lock(&g.limiter).roll(g.clock.now());
                emit(ended);
            }
        }
    }
}

/// Emits every count still held (at shutdown).
pub fn flush() {
    if let Some(g) = GATE.get() {
        let all = lock(&g.limiter).flush();
        emit(all);
    }
}

/// Whether `event` is emitted; emits the summaries its arrival closes.
pub(super) fn admit(event: &Event) -> bool {
    let Some(g) = GATE.get() else {
        return true;
    };
    let Some(source) = limited_source(event) else {
        return true;
    };
    let (admitted, ended) = lock(&g.limiter).admit(event.code, source, g.clock.now());
    emit(ended);
    admitted
}

/// The source `event` is limited under, or `None` when it is never limited: a code nobody can
/// cause in bulk, an event without a source, or one marked [`Event::never_limited`].
fn limited_source(event: &Event) -> Option<IpAddr> {
    if event.code.suppressed().is_none() || event.never_limited {
        return None;
    }
    let peer = event.source.parse::<SocketAddr>().ok()?;
    Some(crate::net::source_of(peer.ip()))
}

fn emit(summaries: Vec<Summary>) {
    for s in summaries {
        if let Some(e) = s.event() {
            e.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::tests::FakeClock;

    const T0: &str = "2026-01-01T00:00:00Z";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_events_pass_and_the_rest_are_summed_when_the_window_ends() {
        let clock = FakeClock::at(T0);
        let mut l = Limiter::new(3, Duration::from_secs(60), 100, clock.now());
        let a = ip("10.0.0.1");
        let passed: Vec<bool> = (0..10)
            .map(|_| l.admit(Code::AuthDenied, a, clock.now()).0)
            .collect();
        assert_eq!(
            passed,
            [
                true, true, true, false, false, false, false, false, false, false
            ]
        );
        // Another code and another source have counts of their own.
        assert!(l.admit(Code::ConnLimit, a, clock.now()).0);
        assert!(l.admit(Code::AuthDenied, ip("10.0.0.2"), clock.now()).0);
        clock.advance(Duration::from_secs(59));
        assert!(l.roll(clock.now()).is_empty());
        clock.advance(Duration::from_secs(1));
        assert_eq!(
            l.roll(clock.now()),
            [Summary {
                code: Code::AuthDenied,
                source: Source::Addr(a),
                suppressed: 7,
                window: Duration::from_secs(60),
            }]
        );
        // A new window: the source may log again.
        assert!(l.admit(Code::AuthDenied, a, clock.now()).0);
        assert!(l.roll(clock.now()).is_empty());
    }

    #[test]
    fn the_next_event_after_a_window_closes_it() {
        let clock = FakeClock::at(T0);
        let mut l = Limiter::new(1, Duration::from_secs(10), 100, clock.now());
        let a = ip("10.0.0.1");
        l.admit(Code::ConnLimit, a, clock.now());
        l.admit(Code::ConnLimit, a, clock.now());
        clock.advance(Duration::from_secs(11));
        let (passed, ended) = l.admit(Code::ConnLimit, a, clock.now());
        assert!(passed);
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0].suppressed, 1);
    }

    #[test]
    fn sources_beyond_the_tracked_ones_share_one_count() {
        let clock = FakeClock::at(T0);
        let mut l = Limiter::new(2, Duration::from_secs(60), 2, clock.now());
        let passed: Vec<bool> = (1..=6)
            .map(|i| {
                l.admit(Code::ConnLimit, ip(&format!("10.0.0.{i}")), clock.now())
                    .0
            })
            .collect();
        // Two tracked sources, then four others sharing one count of two.
        assert_eq!(passed, [true, true, true, true, false, false]);
        assert_eq!(l.sources.len(), 2);
        let s = l.flush();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].source, s[0].suppressed), (Source::Other, 2));
        assert!(l.seen.is_empty() && l.sources.is_empty());
    }

    #[test]
    fn which_events_are_limited_and_under_what_source() {
        let peer: SocketAddr = "[2001:db8:1:2::7]:50000".parse().unwrap();
        let denied = Event::new(Code::AuthDenied).source(Some(peer));
        assert_eq!(limited_source(&denied), Some(ip("2001:db8:1:2::")));
        // A refusal of an enrolled key's verified signature is never summed up, however much
        // noise its source made before.
        assert_eq!(limited_source(&denied.never_limited()), None);
        assert_eq!(limited_source(&Event::new(Code::AuthDenied)), None);
        let ok = Event::new(Code::AuthOk).source(Some(peer));
        assert_eq!(limited_source(&ok), None);
    }

    #[test]
    fn flush_at_shutdown_counts_everything_held() {
        let clock = FakeClock::at(T0);
        let mut l = Limiter::new(0, Duration::from_secs(60), 10, clock.now());
        for _ in 0..4 {
            assert!(!l.admit(Code::LoginTimeout, ip("::1"), clock.now()).0);
        }
        let s = l.flush();
        assert_eq!(s[0].suppressed, 4);
        let e = s[0].event().unwrap();
        assert_eq!(e.code, Code::LoginTimeoutSuppressed);
        assert_eq!(e.source, "::1");
        assert_eq!(e.detail["count"], 4);
        assert!(l.flush().is_empty());
    }
}
