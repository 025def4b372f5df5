//! Weekly time windows such as `Tue 09:00-12:00` or `Mon-Fri 08:00-17:00`, in the policy's
//! time zone (Europe/Amsterdam). A window never crosses midnight; write two windows instead.

use std::fmt;

use jiff::Zoned;
use jiff::civil::{Time, Weekday};

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
        if self.end == Time::MAX {
            return now
                .date()
                .tomorrow()
                .ok()?
                .to_zoned(now.time_zone().clone())
                .ok();
        }
        now.date()
            .to_datetime(self.end)
            .to_zoned(now.time_zone().clone())
            .ok()
    }
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
