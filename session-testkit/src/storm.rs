//! "Log out everywhere" at scale (docs/security.md 34): a user with many sessions,
//! and an attacker who knows the password logging in as fast as the store lets them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use session_core::store::Record;
use session_core::{Meta, SessionKey, SessionStore, Timestamp};

use crate::random_key;

/// Logins running at once in the storm.
const STORM: usize = 4;

/// A live session of `user`, expiring in an hour, to create as a login would.
pub fn login_record(user: &str) -> Record {
    let now = Timestamp::now();
    let mut meta = Meta::new(now, now.saturating_add(Duration::from_secs(3600)));
    meta.user_id = Some(user.to_owned());
    Record {
        data: Default::default(),
        meta,
    }
}

/// Ends every session of `user`, who already has `existing` (made by the caller, as
/// fast as its store allows), while logins of `user` keep coming: the call must
/// return, count at least the `existing` sessions and every login that returned
/// before it began, and leave none of those alive; what logins made since may live.
/// Cleans up after itself. Returns how many logins the storm made.
pub async fn log_out_everywhere_against_a_login_storm<S: SessionStore>(
    store: Arc<S>,
    user: &str,
    existing: usize,
) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let storm: Vec<_> = (0..STORM)
        .map(|_| {
            let (store, stop, user) = (store.clone(), stop.clone(), user.to_owned());
            tokio::spawn(async move {
                let record = login_record(&user);
                let mut created = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let key = random_key();
                    store.create(&key, &record).await.expect("a login");
                    created.push((key, Instant::now()));
                    // A store in process never waits: let the user's call run too.
                    tokio::task::yield_now().await;
                }
                created
            })
        })
        .collect();
    // The storm is well under way before the user ends it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    let ended = store
        .delete_user_sessions(user)
        .await
        .expect("log out everywhere");
    let took = began.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut logins: Vec<(SessionKey, Instant)> = Vec::new();
    for task in storm {
        logins.extend(task.await.expect("the storm ran"));
    }
    let before: Vec<&SessionKey> = logins
        .iter()
        .filter(|(_, at)| *at < began)
        .map(|(key, _)| key)
        .collect();
    assert!(
        !before.is_empty(),
        "the storm made no login before the call"
    );
    assert!(
        ended >= existing + before.len(),
        "{ended} ended, of {existing} sessions and {} logins before the call",
        before.len()
    );
    for key in before {
        assert_eq!(
            store.load(key).await.expect("load"),
            None,
            "a login from before log out everywhere survived it"
        );
    }
    for listed in store.user_sessions(user).await.expect("list") {
        assert!(
            logins
                .iter()
                .any(|(key, at)| *key == listed.key && *at >= began),
            "a session from before log out everywhere is still listed"
        );
    }
    store.delete_user_sessions(user).await.expect("clean up");
    eprintln!(
        "log out everywhere: {ended} sessions in {took:?}, against {} logins",
        logins.len()
    );
    logins.len()
}
