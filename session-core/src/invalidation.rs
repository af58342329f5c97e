//! The invalidation protocol: what a write announces to the servers that hold copies
//! of sessions in process (a tiered store), and the channel that carries it.
//!
//! A channel has two topics. The shared one carries [`Invalidation`]s to every server;
//! each server's own one (a name only that server knows) carries the markers strict
//! mode sends itself to learn that everything published before has arrived. A
//! central store may publish invalidations itself, inside its writes (Redis's
//! `PUBLISH` in a script, PostgreSQL's `pg_notify` in a statement): it writes
//! [`Invalidation::encode`]'s text, which [`Invalidation::SESSION_TAG`] and
//! [`Invalidation::USER_TAG`] let a store build inside its own query language.

use std::fmt;

use async_trait::async_trait;

use crate::error::{BoxError, StoreError};
use crate::id::SessionKey;

/// What changed in the central store: a copy of it held anywhere must be dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalidation {
    /// One session changed or ended.
    Session(SessionKey),
    /// Every session of this user ended.
    User(String),
}

impl Invalidation {
    /// What a session's invalidation starts with; the key's text follows.
    pub const SESSION_TAG: &'static str = "k";
    /// What a user's invalidation starts with; the user id follows.
    pub const USER_TAG: &'static str = "u";

    /// The message's text, as a channel carries it.
    ///
    /// ```
    /// use session_core::store::{Invalidation, SessionKey};
    ///
    /// let key = SessionKey::from_bytes([7; 32]);
    /// let text = Invalidation::Session(key).encode();
    /// assert_eq!(Invalidation::decode(text.as_bytes()), Some(Invalidation::Session(key)));
    /// assert_eq!(Invalidation::decode(b"u-alice"), Some(Invalidation::User("-alice".into())));
    /// assert_eq!(Invalidation::decode(b"kno-key"), None);
    /// ```
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// A message read back; `None` for anything [`encode`](Self::encode) does not make.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        if let Some(key) = text.strip_prefix(Self::SESSION_TAG) {
            return SessionKey::parse(key).map(Invalidation::Session);
        }
        text.strip_prefix(Self::USER_TAG)
            .map(|user| Invalidation::User(user.to_owned()))
    }
}

impl fmt::Display for Invalidation {
    /// The message's text: written in place, for stores that format it straight into
    /// the command that publishes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalidation::Session(key) => write!(f, "{}{key}", Self::SESSION_TAG),
            Invalidation::User(user) => write!(f, "{}{user}", Self::USER_TAG),
        }
    }
}

/// What a [`Subscription`] heard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// An invalidation, on the shared topic.
    Invalidation(Invalidation),
    /// A marker this server sent itself, on its own topic.
    Marker(u64),
    /// A message that is none of these (logged and ignored by the tiered store).
    Unreadable,
}

impl Heard {
    /// What a message that arrived on the shared topic, or on this server's own
    /// (`own_topic`), says.
    pub fn decode(own_topic: bool, payload: &[u8]) -> Self {
        let heard = if own_topic {
            std::str::from_utf8(payload)
                .ok()
                .and_then(|text| text.strip_prefix(MARKER_TAG)?.parse().ok())
                .map(Heard::Marker)
        } else {
            Invalidation::decode(payload).map(Heard::Invalidation)
        };
        heard.unwrap_or(Heard::Unreadable)
    }

    /// A marker's text, as [`InvalidationChannel::publish_marker`] sends it.
    pub fn marker(number: u64) -> String {
        format!("{MARKER_TAG}{number}")
    }
}

const MARKER_TAG: &str = "b";

/// A channel that carries invalidations between servers: Redis pub/sub
/// (`session-redis`), PostgreSQL `LISTEN`/`NOTIFY` (`session-sql`), or a broker of
/// your own. A tiered store composes it with any central store.
///
/// Publishing may be retried: an invalidation delivered twice costs a reload, one
/// lost lets other servers serve a stale copy, so a publish that goes unanswered
/// should be sent again on another connection before it is given up.
#[async_trait]
pub trait InvalidationChannel: Send + Sync + 'static {
    /// The shared topic's name, for logs and errors.
    fn name(&self) -> &str;

    /// Publishes `invalidation` on the shared topic, to every server.
    async fn publish(&self, invalidation: &Invalidation) -> Result<(), BoxError>;

    /// Publishes strict mode's marker `number` ([`Heard::marker`]) on this server's
    /// own topic, through the server its subscription listens on.
    async fn publish_marker(&self, number: u64) -> Result<(), BoxError>;

    /// Whether [`publish`](Self::publish) reaches every subscriber. A channel whose
    /// server can change under it (Redis Sentinel) says `false`: an invalidation sent
    /// to a master about to be replaced may reach nobody, so only the central store's
    /// own, published inside its writes, can be relied on.
    fn publishes_invalidations(&self) -> bool {
        true
    }

    /// Subscribes to the shared topic and this server's own. The subscription must
    /// be set up (every message published from now on is heard) when this returns.
    async fn subscribe(&self) -> Result<Box<dyn Subscription>, BoxError>;
}

/// A live subscription of an [`InvalidationChannel`].
#[async_trait]
pub trait Subscription: Send {
    /// The next message; `Ok(None)` or an error once the subscription is lost (a
    /// closed connection, or, where the channel can tell, a server that is no longer
    /// the one to listen to). Cancel-safe: a message half read when the future is
    /// dropped is kept for the next call.
    async fn next(&mut self) -> Result<Option<Heard>, BoxError>;

    /// Whether the subscription's connection still answers: asked after a quiet
    /// spell, since a connection that died without closing brings neither messages
    /// nor errors.
    async fn ping(&mut self) -> Result<(), BoxError>;
}

/// A topic name of this server's own: `shared`, `separator`, then 16 random hex
/// digits, unknown to any other server, so no one else's markers (or a forged one)
/// arrive on it.
pub fn own_topic(shared: &str, separator: &str) -> Result<String, StoreError> {
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|error| StoreError::unavailable(error.to_string()))?;
    let suffix: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
    Ok(format!("{shared}{separator}{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_unreadable() {
        let key = SessionKey::from_bytes([3; 32]);
        for message in [
            Invalidation::Session(key),
            Invalidation::User("alice".into()),
            Invalidation::User(String::new()),
        ] {
            let text = message.encode();
            assert_eq!(text, message.to_string());
            assert_eq!(
                Heard::decode(false, text.as_bytes()),
                Heard::Invalidation(message)
            );
        }
        assert_eq!(
            Heard::decode(true, Heard::marker(42).as_bytes()),
            Heard::Marker(42)
        );
        for garbage in [&b""[..], b"x", b"k", b"kzz", b"\xff", b"b1"] {
            assert_eq!(
                Heard::decode(false, garbage),
                Heard::Unreadable,
                "{garbage:?}"
            );
        }
        for garbage in [&b""[..], b"b", b"bx", b"k1", b"\xffb1"] {
            assert_eq!(
                Heard::decode(true, garbage),
                Heard::Unreadable,
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn own_topics_differ() {
        let a = own_topic("sessions", ":").unwrap();
        let b = own_topic("sessions", ":").unwrap();
        assert!(a.starts_with("sessions:") && a.len() == "sessions:".len() + 16);
        assert_ne!(a, b);
    }
}
