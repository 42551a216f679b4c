//! The game day's judgement, as pure functions of what it observed: the bound each alert must fire and resolve
//! within (from the rule's `for`, the intervals and the scenario's own figures), the verdict on one alert's row,
//! and whether a delivery of an inhibited alert broke its inhibition. No I/O and no clock: the runner measures, this
//! module decides, and the unit tests cover every case.

use std::fmt;

use serde::{Serialize, Serializer};

use super::catalog::ClearOn;

/// Time allowed on top of the intervals: Prometheus's resend delay, the webhook, and the game day's polling.
pub const SLACK_SECONDS: u64 = 20;

/// How long past its source's end a delivery of an inhibited alert still counts as delivered while inhibited:
/// the game day sees the source end only at its next poll.
pub const INHIBITION_GRACE_MS: u64 = 2_000;

/// The intervals the bounds are made of, read from the running Prometheus and Alertmanager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Timing {
    pub scrape_seconds: u64,
    pub evaluation_seconds: u64,
    pub group_wait_seconds: u64,
    pub group_interval_seconds: u64,
}

/// An alert's bounds, in seconds: from the fault to firing (to its notification when it notifies), and from the
/// fault's removal to resolving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub fire: u64,
    pub resolve: u64,
}

/// The bounds of an alert whose rule has `for_seconds`, whose expression needs `detect` seconds after the fault to
/// become true and `clear` seconds after its removal to become false; `notifies` when its receiver sends
/// notifications (the group wait and interval apply to those only).
pub fn bounds(timing: Timing, for_seconds: u64, detect: u64, clear: u64, notifies: bool) -> Bounds {
    let base = timing.scrape_seconds + timing.evaluation_seconds + SLACK_SECONDS;
    Bounds {
        fire: detect + for_seconds + base + if notifies { timing.group_wait_seconds } else { 0 },
        resolve: clear + base + if notifies { timing.group_interval_seconds } else { 0 },
    }
}

/// When to stop waiting (Unix ms): two minutes past the longest bound, only to tell "slow" from "never".
pub fn deadline(from_ms: u64, bounds: impl Iterator<Item = u64>) -> u64 {
    from_ms + bounds.max().unwrap_or(0) * 1000 + 120_000
}

/// What the game day saw of one expected alert, in seconds (fired and notified from the fault's start, resolved
/// from its removal).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub fired: Option<f64>,
    pub notified: Option<f64>,
    pub resolved: Option<f64>,
    /// The receiver the firing notification went to, when it was not the expected one.
    pub wrong_receiver: Option<String>,
    /// A notification of an alert whose receiver sends none arrived.
    pub notified_unexpectedly: bool,
}

/// How the alert fired against its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fire {
    InTime,
    Late,
    Never,
    /// It fired in Prometheus, but no notification arrived.
    Undelivered,
}

/// How it resolved against its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    InTime,
    Late,
    Never,
}

/// The verdict on one alert of a scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub fire: Fire,
    pub resolve: Resolve,
    pub wrong_receiver: Option<String>,
    pub notified_unexpectedly: bool,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.fire == Fire::InTime
            && self.resolve == Resolve::InTime
            && self.wrong_receiver.is_none()
            && !self.notified_unexpectedly
    }

    /// The inventory's notes for this verdict, in the order the report has always listed them.
    pub fn notes(&self) -> Vec<Note> {
        let mut notes = Vec::new();
        if let Some(r) = &self.wrong_receiver {
            notes.push(Note::NotifiedInstead(r.clone()));
        }
        match self.fire {
            Fire::Never => notes.push(Note::NeverFired),
            Fire::Undelivered => notes.push(Note::NeverReachedReceiver),
            Fire::Late => notes.push(Note::SlowerThanBound),
            Fire::InTime => {}
        }
        if self.notified_unexpectedly {
            notes.push(Note::InfoNotified);
        }
        match (self.fire, self.resolve) {
            (Fire::Never, _) | (_, Resolve::InTime) => {}
            (_, Resolve::Never) => notes.push(Note::NeverResolved),
            (_, Resolve::Late) => notes.push(Note::ResolvedSlower),
        }
        notes
    }
}

/// Judges one alert. `notifies` when its receiver sends notifications; `group_wait` is Alertmanager's, taken off the
/// bound when the fault itself stops delivery ([`ClearOn::Firing`]): then the bound applies to Prometheus, and the
/// notification need only arrive (after the fault is removed).
pub fn judge(observed: &Observed, bounds: Bounds, clear_on: ClearOn, notifies: bool, group_wait: u64) -> Verdict {
    let within = |v: Option<f64>, bound: u64| v.is_some_and(|v| v <= bound as f64);
    let fire = if observed.fired.is_none() {
        Fire::Never
    } else if notifies && observed.notified.is_none() {
        Fire::Undelivered
    } else {
        let in_time = match (clear_on, notifies) {
            (ClearOn::Firing, true) => within(observed.fired, bounds.fire.saturating_sub(group_wait)),
            (ClearOn::Delivered, true) => within(observed.notified, bounds.fire),
            (_, false) => within(observed.fired, bounds.fire),
        };
        if in_time {
            Fire::InTime
        } else {
            Fire::Late
        }
    };
    let resolve = match observed.resolved {
        None => Resolve::Never,
        Some(_) if within(observed.resolved, bounds.resolve) => Resolve::InTime,
        Some(_) => Resolve::Late,
    };
    Verdict {
        fire,
        resolve,
        wrong_receiver: observed.wrong_receiver.clone(),
        notified_unexpectedly: observed.notified_unexpectedly,
    }
}

/// Whether the fire phase is over: every alert fired in the game day's Prometheus, and those that notify also
/// reached the inbox unless the fault itself stops delivery. A notification alone does not end it: the other
/// Prometheus replica may fire first (their scrapes and evaluations are up to an interval apart each), and its
/// notification can arrive before this one's alert is seen firing (on CI: PostgresDown notified at 70 s, the fault
/// removed at once, and "never fired").
pub fn fire_phase_done(clear_on: ClearOn, notifies: bool, fired: bool, notified: bool) -> bool {
    match (clear_on, notifies) {
        (ClearOn::Delivered, true) => fired && notified,
        _ => fired,
    }
}

/// When a firing notification of an inhibited alert arrived, relative to its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// While the source was active (or before it was seen to end): the inhibition failed.
    WhileInhibited,
    /// After the source ended: the target's own window may still hold the fault.
    After,
}

/// Classifies a delivery at `received_ms` of an alert inhibited by a source that ended at `source_ended_ms` (as
/// the game day saw it; `None` while still active). A target that won the race to Alertmanager against its source
/// counts as delivered while inhibited too.
pub fn delivery(received_ms: u64, source_ended_ms: Option<u64>) -> Delivery {
    match source_ended_ms {
        Some(ended) if received_ms >= ended.saturating_sub(INHIBITION_GRACE_MS) => Delivery::After,
        _ => Delivery::WhileInhibited,
    }
}

/// A remark on an inventory row. Printed (and serialized) as the sentence the report shows; the verdict never
/// reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// The fault ramped up for this many seconds, added to the bound.
    RampIncluded(u64),
    /// This many Alertmanager peers were out while the notification was on its way: the bound includes this many
    /// seconds of peer timeout.
    PeerTimeoutIncluded {
        peers: u32,
        seconds: u64,
    },
    NotifiedInstead(String),
    NeverFired,
    NeverReachedReceiver,
    SlowerThanBound,
    InfoNotified,
    NeverResolved,
    ResolvedSlower,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::RampIncluded(s) => write!(f, "the bound includes the fault's {s} s ramp"),
            Note::PeerTimeoutIncluded { peers, seconds } => {
                write!(
                    f,
                    "the bound includes {seconds} s of peer timeout (Alertmanager peers out: {peers})"
                )
            }
            Note::NotifiedInstead(r) => write!(f, "notified to {r} instead"),
            Note::NeverFired => f.write_str("never fired"),
            Note::NeverReachedReceiver => f.write_str("never reached a receiver"),
            Note::SlowerThanBound => f.write_str("slower than its bound"),
            Note::InfoNotified => f.write_str("notified, but info alerts must not be"),
            Note::NeverResolved => f.write_str("never resolved"),
            Note::ResolvedSlower => f.write_str("resolved slower than its bound"),
        }
    }
}

impl Serialize for Note {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        scrape_seconds: 5,
        evaluation_seconds: 5,
        group_wait_seconds: 10,
        group_interval_seconds: 30,
    };

    /// A notifying alert with `for: 60s`: fire bound 0 + 60 + 5 + 5 + 20 + 10 = 100 s, resolve bound 300 + 5 + 5 +
    /// 20 + 30 = 360 s.
    fn ticket() -> Bounds {
        bounds(TIMING, 60, 0, 300, true)
    }

    fn seen(fired: f64, notified: f64, resolved: f64) -> Observed {
        Observed {
            fired: Some(fired),
            notified: Some(notified),
            resolved: Some(resolved),
            ..Observed::default()
        }
    }

    #[test]
    fn bounds_add_detection_for_the_intervals_and_the_slack() {
        assert_eq!(
            ticket(),
            Bounds {
                fire: 100,
                resolve: 360
            }
        );
        // Alerts that notify nobody wait for neither group_wait nor group_interval.
        assert_eq!(bounds(TIMING, 60, 30, 0, false), Bounds { fire: 120, resolve: 30 });
    }

    #[test]
    fn an_alert_delivered_within_its_bound_and_resolved_within_its_bound_passes() {
        let v = judge(&seen(70.0, 85.0, 40.0), ticket(), ClearOn::Delivered, true, 10);
        assert_eq!((v.fire, v.resolve), (Fire::InTime, Resolve::InTime));
        assert!(v.passed());
        assert!(v.notes().is_empty());
    }

    #[test]
    fn exactly_at_the_bound_is_in_time_and_a_moment_later_is_late() {
        let at = judge(&seen(90.0, 100.0, 360.0), ticket(), ClearOn::Delivered, true, 10);
        assert!(at.passed(), "{at:?}");
        let late = judge(&seen(90.0, 100.5, 360.5), ticket(), ClearOn::Delivered, true, 10);
        assert_eq!((late.fire, late.resolve), (Fire::Late, Resolve::Late));
        assert!(!late.passed());
        assert_eq!(late.notes(), vec![Note::SlowerThanBound, Note::ResolvedSlower]);
    }

    #[test]
    fn a_notification_late_by_its_delivery_fails_even_when_prometheus_fired_in_time() {
        let v = judge(&seen(50.0, 130.0, 40.0), ticket(), ClearOn::Delivered, true, 10);
        assert_eq!(v.fire, Fire::Late);
        assert!(!v.passed());
    }

    #[test]
    fn an_alert_that_never_fires_fails_with_one_note() {
        let v = judge(&Observed::default(), ticket(), ClearOn::Delivered, true, 10);
        assert_eq!((v.fire, v.resolve), (Fire::Never, Resolve::Never));
        assert!(!v.passed());
        assert_eq!(v.notes(), vec![Note::NeverFired]);
    }

    #[test]
    fn an_alert_that_fires_but_reaches_no_receiver_fails() {
        let observed = Observed {
            fired: Some(70.0),
            resolved: Some(10.0),
            ..Observed::default()
        };
        let v = judge(&observed, ticket(), ClearOn::Delivered, true, 10);
        assert_eq!(v.fire, Fire::Undelivered);
        assert_eq!(v.notes(), vec![Note::NeverReachedReceiver]);
        assert!(!v.passed());
    }

    #[test]
    fn an_alert_that_fires_in_time_but_never_resolves_fails() {
        let observed = Observed {
            resolved: None,
            ..seen(70.0, 85.0, 0.0)
        };
        let v = judge(&observed, ticket(), ClearOn::Delivered, true, 10);
        assert_eq!((v.fire, v.resolve), (Fire::InTime, Resolve::Never));
        assert_eq!(v.notes(), vec![Note::NeverResolved]);
        assert!(!v.passed());
    }

    #[test]
    fn a_notification_to_the_wrong_receiver_fails_in_time_or_not() {
        let observed = Observed {
            wrong_receiver: Some("pager".to_string()),
            ..seen(70.0, 85.0, 40.0)
        };
        let v = judge(&observed, ticket(), ClearOn::Delivered, true, 10);
        assert_eq!(v.fire, Fire::InTime);
        assert!(!v.passed());
        assert_eq!(v.notes(), vec![Note::NotifiedInstead("pager".to_string())]);
    }

    #[test]
    fn an_alert_of_a_silent_receiver_is_judged_in_prometheus_and_fails_when_notified() {
        let info = bounds(TIMING, 0, 0, 0, false);
        assert_eq!(info, Bounds { fire: 30, resolve: 30 });
        let observed = Observed {
            fired: Some(30.0),
            resolved: Some(12.0),
            ..Observed::default()
        };
        assert!(judge(&observed, info, ClearOn::Delivered, false, 10).passed());
        let notified = Observed {
            notified_unexpectedly: true,
            ..observed
        };
        let v = judge(&notified, info, ClearOn::Delivered, false, 10);
        assert!(!v.passed());
        assert_eq!(v.notes(), vec![Note::InfoNotified]);
    }

    #[test]
    fn when_the_fault_stops_delivery_the_bound_applies_to_prometheus_less_the_group_wait() {
        // alertmanager-down: the page can only arrive once Alertmanager is back, long after the bound.
        let b = ticket();
        let fired_in_time = seen(90.0, 400.0, 40.0);
        assert!(judge(&fired_in_time, b, ClearOn::Firing, true, 10).passed());
        let fired_late = seen(90.5, 400.0, 40.0);
        assert_eq!(judge(&fired_late, b, ClearOn::Firing, true, 10).fire, Fire::Late);
        let never_delivered = Observed {
            notified: None,
            ..fired_in_time
        };
        assert_eq!(
            judge(&never_delivered, b, ClearOn::Firing, true, 10).fire,
            Fire::Undelivered
        );
    }

    #[test]
    fn the_fire_phase_waits_for_delivery_only_when_delivery_works() {
        assert!(!fire_phase_done(ClearOn::Delivered, true, true, false));
        assert!(fire_phase_done(ClearOn::Delivered, true, true, true));
        // Delivered from the other Prometheus replica before this one fires: not done yet.
        assert!(!fire_phase_done(ClearOn::Delivered, true, false, true));
        assert!(fire_phase_done(ClearOn::Firing, true, true, false));
        assert!(fire_phase_done(ClearOn::Delivered, false, true, false));
        assert!(!fire_phase_done(ClearOn::Delivered, false, false, false));
    }

    #[test]
    fn a_delivery_while_the_source_is_active_breaks_the_inhibition() {
        assert_eq!(delivery(10_000, None), Delivery::WhileInhibited);
        // The source was seen ending at 20 s: a delivery up to 2 s before that is the poll's lag, not a failure.
        assert_eq!(delivery(17_999, Some(20_000)), Delivery::WhileInhibited);
        assert_eq!(delivery(18_000, Some(20_000)), Delivery::After);
        assert_eq!(delivery(25_000, Some(20_000)), Delivery::After);
        assert_eq!(delivery(0, Some(1_000)), Delivery::After);
    }

    #[test]
    fn the_wait_ends_two_minutes_past_the_longest_bound() {
        assert_eq!(deadline(1_000, [100, 360].into_iter()), 1_000 + 360_000 + 120_000);
        assert_eq!(deadline(1_000, std::iter::empty()), 121_000);
    }

    #[test]
    fn notes_print_and_serialize_as_the_report_sentences() {
        assert_eq!(
            Note::RampIncluded(42).to_string(),
            "the bound includes the fault's 42 s ramp"
        );
        assert_eq!(
            serde_json::to_string(&Note::NotifiedInstead("pager".into())).unwrap(),
            r#""notified to pager instead""#
        );
    }
}
