//! Weekly time windows such as `Tue 09:00-12:00` or `Mon-Fri 08:00-17:00`, in the policy's
//! time zone (Europe/Amsterdam). A window never crosses midnight; write two windows instead.

use std::fmt;

use jiff::Zoned;
use jiff::civil::{DateTime, Time, Weekday};
use jiff::tz::AmbiguousOffset;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeeklyWindow {
    /// Days the window is open, Monday first.
    days: [bool; 7],
    start: Time,
    end: Time,
    text: String,
}

const DAYS: [(&str, Weekday); 7] = [
    ("Mon", Weekday::Monday),
    ("Tue", Weekday::Tuesday),
    ("Wed", Weekday::Wednesday),
    ("Thu", Weekday::Thursday),
    ("Fri", Weekday::Friday),
    ("Sat", Weekday::Saturday),
    ("Sun", Weekday::Sunday),
];

fn day_index(s: &str) -> Option<usize> {
    DAYS.iter().position(|(n, _)| n.eq_ignore_ascii_case(s))
}

fn parse_time(s: &str) -> Option<Time> {
    if s == "24:00" {
        return Some(Time::MAX);
    }
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

impl WeeklyWindow {
    /// Parses `DAYS HH:MM-HH:MM`, where DAYS is `Tue`, `Mon-Fri` or `Mon,Wed,Fri`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid window {s:?}: expected e.g. \"Tue 09:00-12:00\" or \"Mon-Fri 08:00-17:00\""
            )
        };
        let (days_s, times) = s.trim().split_once(' ').ok_or_else(bad)?;
        let mut days = [false; 7];
        for part in days_s.split(',') {
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day_index(a).ok_or_else(bad)?, day_index(b).ok_or_else(bad)?);
                    if a > b {
                        return Err(bad());
                    }
                    days.iter_mut().take(b + 1).skip(a).for_each(|d| *d = true);
                }
                None => {
                    let i = day_index(part).ok_or_else(bad)?;
                    if let Some(d) = days.get_mut(i) {
                        *d = true;
                    }
                }
            }
        }
        let (a, b) = times.trim().split_once('-').ok_or_else(bad)?;
        let (start, end) = (
            parse_time(a).ok_or_else(bad)?,
            parse_time(b).ok_or_else(bad)?,
        );
        if start >= end {
            return Err(format!(
                "invalid window {s:?}: the end must be after the start on the same day"
            ));
        }
        Ok(Self {
            days,
            start,
            end,
            text: s.trim().to_owned(),
        })
    }

    /// If `now` lies inside this window, the moment it closes.
    pub fn open_until(&self, now: &Zoned) -> Option<Zoned> {
        let day = now.weekday().to_monday_zero_offset();
        let open = self.days.get(usize::try_from(day).ok()?).copied()?;
        let t = now.time();
        if !open || t < self.start || t >= self.end {
            return None;
        }
        let end = if self.end == Time::MAX {
            now.date().tomorrow().ok()?.to_datetime(Time::midnight())
        } else {
            now.date().to_datetime(self.end)
        };
        closing(now, end)
    }
}

/// The first moment after `now` at which the wall clock reaches `end`: in an hour that repeats
/// (October) the occurrence still ahead of `now`, in an hour that is skipped (March) the moment
/// of the jump, when the clock passes `end` without showing it.
fn closing(now: &Zoned, end: DateTime) -> Option<Zoned> {
    let tz = now.time_zone();
    let at = match tz.to_ambiguous_timestamp(end).offset() {
        AmbiguousOffset::Unambiguous { offset } => offset.to_timestamp(end).ok()?,
        AmbiguousOffset::Fold { before, after } => {
            let (a, b) = (
                before.to_timestamp(end).ok()?,
                after.to_timestamp(end).ok()?,
            );
            let (first, second) = (a.min(b), a.max(b));
            if first > now.timestamp() {
                first
            } else {
                second
            }
        }
        AmbiguousOffset::Gap { before, .. } => {
            // Read with the offset from before the jump, `end` lies after it: the jump is the
            // last transition before that.
            let past = before.to_timestamp(end).ok()?;
            tz.preceding(past).next()?.timestamp()
        }
    };
    Some(at.to_zoned(tz.clone()))
}

impl fmt::Display for WeeklyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Zoned {
        format!("{s}[Europe/Amsterdam]").parse().unwrap()
    }

    #[test]
    fn tuesday_morning() {
        let w = WeeklyWindow::parse("Tue 09:00-12:00").unwrap();
        // 2026-11-24 is a Tuesday.
        assert_eq!(
            w.open_until(&at("2026-11-24T10:00")).unwrap(),
            at("2026-11-24T12:00")
        );
        assert!(w.open_until(&at("2026-11-24T12:00")).is_none());
        assert!(w.open_until(&at("2026-11-24T08:59")).is_none());
        assert!(w.open_until(&at("2026-11-25T10:00")).is_none());
    }

    #[test]
    fn ranges_and_lists() {
        let w = WeeklyWindow::parse("Mon-Fri 08:00-24:00").unwrap();
        assert!(w.open_until(&at("2026-11-27T23:30")).is_some()); // Friday
        assert!(w.open_until(&at("2026-11-28T10:00")).is_none()); // Saturday
        let w = WeeklyWindow::parse("Mon,Sun 00:00-01:00").unwrap();
        assert!(w.open_until(&at("2026-11-29T00:30")).is_some()); // Sunday
    }

    #[test]
    fn the_policy_zone_is_compiled_in() {
        let tz = crate::policy::policy_zone();
        assert_eq!(tz.iana_name(), Some("Europe/Amsterdam"));
        let summer = "2026-07-01T12:00Z".parse::<jiff::Timestamp>().unwrap();
        assert_eq!(tz.to_offset(summer).seconds(), 7200);
    }

    #[test]
    fn daylight_saving_transitions_end_windows_exactly() {
        // 2026-10-25 (Sunday): 03:00 CEST becomes 02:00 CET, so 02:00-03:00 happens twice.
        let w = WeeklyWindow::parse("Sun 01:00-02:30").unwrap();
        let first: Zoned = "2026-10-25T02:10+02:00[Europe/Amsterdam]".parse().unwrap();
        let second: Zoned = "2026-10-25T02:10+01:00[Europe/Amsterdam]".parse().unwrap();
        let end = |z: &Zoned| w.open_until(z).unwrap().timestamp().to_string();
        // In the first 02:xx the window ends at the first 02:30 (00:30 UTC)...
        assert_eq!(end(&first), "2026-10-25T00:30:00Z");
        // ...and in the repeated hour at the second 02:30 (01:30 UTC), never in the past.
        assert_eq!(end(&second), "2026-10-25T01:30:00Z");
        assert!(w.open_until(&second).unwrap() > second);
        // 2026-03-29 (Sunday): 02:00 CET jumps to 03:00 CEST; 02:30 never happens, and the
        // window ends at the jump (01:00 UTC), not half an hour later.
        let w = WeeklyWindow::parse("Sun 01:00-02:30").unwrap();
        let before: Zoned = "2026-03-29T01:45+01:00[Europe/Amsterdam]".parse().unwrap();
        assert_eq!(
            w.open_until(&before).unwrap().timestamp().to_string(),
            "2026-03-29T01:00:00Z"
        );
        // A window ending on the hour of an ordinary day is unchanged.
        let w = WeeklyWindow::parse("Sun 01:00-04:00").unwrap();
        assert_eq!(
            w.open_until(&before).unwrap().timestamp().to_string(),
            "2026-03-29T02:00:00Z"
        );
    }

    #[test]
    fn rejects() {
        for bad in [
            "Tue",
            "Tue 12:00-09:00",
            "Xyz 09:00-10:00",
            "Fri-Mon 09:00-10:00",
            "Tue 9:00-10:00",
        ] {
            assert!(WeeklyWindow::parse(bad).is_err(), "{bad}");
        }
    }
}
