//! The expiry model: points in time, how long a session lives, and the rules the
//! layer and the stores apply to a session's metadata (when a write makes it expire,
//! whether it is live, when a read pushes its idle timeout back).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::record::Meta;

/// A point in time, in whole milliseconds since the Unix epoch: the resolution that
/// Redis TTLs and SQL timestamps share.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current time of the system clock.
    pub fn now() -> Self {
        Self::from(SystemTime::now())
    }

    /// A timestamp from milliseconds since the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// `self` moved `duration` later, saturating at the far future.
    pub fn saturating_add(self, duration: Duration) -> Self {
        let millis = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(millis))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Self(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            Err(before) => Self(-i64::try_from(before.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

/// How long a session lives without requests, and whether its cookie outlives the
/// browser.
///
/// The layer has one (see `SessionLayerBuilder::with_expiry`); a session can carry its
/// own with `Session::set_expiry`, for example a long one after "remember me".
///
/// ```
/// use std::time::Duration;
/// use session_core::Expiry;
///
/// let remember_me = Expiry::on_inactivity(Duration::from_secs(30 * 24 * 3600)).persistent();
/// assert!(remember_me.is_persistent());
/// assert_eq!(remember_me.idle_timeout(), Duration::from_secs(30 * 24 * 3600));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expiry {
    #[serde(rename = "i", with = "whole_seconds")]
    idle_timeout: Duration,
    #[serde(rename = "p", default, skip_serializing_if = "std::ops::Not::not")]
    persistent: bool,
}

impl Expiry {
    /// Ends the session after `idle_timeout` without a request, with a cookie that the
    /// browser drops when it closes. Whole seconds count; zero is raised to one second,
    /// and anything past [`LONGEST`](Self::LONGEST) cut to it.
    pub fn on_inactivity(idle_timeout: Duration) -> Self {
        let seconds = idle_timeout.as_secs().clamp(1, Self::LONGEST.as_secs());
        Self {
            idle_timeout: Duration::from_secs(seconds),
            persistent: false,
        }
    }

    /// The longest idle timeout: 400 days, the longest a browser keeps a cookie
    /// (RFC 6265bis caps `Max-Age` there). A longer one is cut to it, so that no
    /// store is handed an expiry past what it can keep, and every session still
    /// ends.
    pub const LONGEST: Duration = Duration::from_secs(400 * 24 * 3600);

    /// The same expiry with a persistent cookie (`Max-Age`), kept across browser
    /// restarts until the session expires.
    #[must_use]
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }

    /// How long the session lives without a request.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Whether the cookie carries a `Max-Age`.
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }
}

impl Default for Expiry {
    /// Thirty minutes of inactivity, a browser-session cookie: a servlet container's
    /// default.
    fn default() -> Self {
        Self::on_inactivity(Duration::from_secs(30 * 60))
    }
}

mod whole_seconds {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_secs())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // A stored value past the longest (an old or altered record) is cut to it.
        u64::deserialize(d)
            .map(|seconds| Duration::from_secs(seconds.clamp(1, super::Expiry::LONGEST.as_secs())))
    }
}

/// The layer's expiry rule at the moment of one request, for a store that writes a
/// session it has not handed to the layer first
/// ([`SessionStore::save_unloaded`](crate::SessionStore::save_unloaded)).
///
/// A write restarts the session's idle timeout: it then expires its own idle timeout
/// ([`Meta::expiry`], else the layer's) after `now`, but never past its absolute
/// [`deadline`](Meta::deadline).
///
/// ```
/// use std::time::Duration;
/// use session_core::store::{Refresh, Timestamp};
/// use session_core::{Expiry, Meta};
///
/// let now = Timestamp::from_unix_millis(1_000_000);
/// let refresh = Refresh { now, idle_timeout: Duration::from_secs(60) };
/// let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(5)));
/// assert!(refresh.is_live(&meta));
/// assert_eq!(refresh.expires_at(&meta), Timestamp::from_unix_millis(1_060_000));
///
/// meta.expiry = Some(Expiry::on_inactivity(Duration::from_secs(600)));
/// meta.deadline = Some(Timestamp::from_unix_millis(1_300_000));
/// assert_eq!(refresh.expires_at(&meta), Timestamp::from_unix_millis(1_300_000));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refresh {
    /// The time of the request.
    pub now: Timestamp,
    /// The idle timeout of sessions whose metadata sets none.
    pub idle_timeout: Duration,
}

impl Refresh {
    /// The idle timeout that applies to a session with `meta`.
    pub fn idle_timeout_of(&self, meta: &Meta) -> Duration {
        meta.expiry.map_or(self.idle_timeout, |e| e.idle_timeout())
    }

    /// When a session with `meta` written now expires.
    pub fn expires_at(&self, meta: &Meta) -> Timestamp {
        let idle_end = self.now.saturating_add(self.idle_timeout_of(meta));
        meta.deadline
            .map_or(idle_end, |deadline| idle_end.min(deadline))
    }

    /// Whether a session with `meta` is still live now: neither expired nor past its
    /// deadline.
    pub fn is_live(&self, meta: &Meta) -> bool {
        !meta.is_expired(self.now) && !meta.deadline.is_some_and(|deadline| deadline <= self.now)
    }

    /// The touch rule: moving the expiry of a session with `meta` to
    /// `new_expires_at` is worth a write (or a new persistent cookie) only when it
    /// gains at least a quarter of the idle timeout. So a session read again and
    /// again costs one extra write per quarter of its idle timeout, not one per read.
    pub(crate) fn is_worth_pushing(&self, meta: &Meta, new_expires_at: Timestamp) -> bool {
        new_expires_at.saturating_since(meta.expires_at) >= self.idle_timeout_of(meta) / 4
    }

    /// The expiry a request that changed nothing pushes `meta`'s back to, if the
    /// touch rule says it is due.
    pub(crate) fn touch_due(&self, meta: &Meta) -> Option<Timestamp> {
        let target = self.expires_at(meta);
        self.is_worth_pushing(meta, target).then_some(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endless_idle_timeout_is_cut_to_the_longest() {
        assert_eq!(
            Expiry::on_inactivity(Duration::MAX).idle_timeout(),
            Expiry::LONGEST
        );
        assert_eq!(
            Expiry::on_inactivity(Duration::ZERO).idle_timeout(),
            Duration::from_secs(1)
        );
        let stored: Expiry = serde_json::from_str(r#"{"i":18446744073709551615}"#).unwrap();
        assert_eq!(stored.idle_timeout(), Expiry::LONGEST);
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp::from_unix_millis(1_000);
        assert_eq!(
            t.saturating_since(Timestamp::from_unix_millis(2_000)),
            Duration::ZERO
        );
        assert_eq!(t.saturating_add(Duration::MAX).unix_millis(), i64::MAX);
    }
}
