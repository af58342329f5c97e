//! The store contract, one function per rule: [`store`] checks a store's methods
//! directly, [`layer`] the same guarantees through a `SessionLayer` and an in-process
//! client. [`conformance_tests!`](crate::conformance_tests) runs every rule that
//! [`RULES`] lists; each panics with a message naming the rule it checks.

pub mod layer;
pub mod store;

use std::time::Duration;

use serde_json::Value;
use session_core::store::{Changes, Data, Record};
use session_core::{Meta, Timestamp};

pub use layer::*;
pub use store::*;

/// Calls `$callback!` with the name of every rule, in the order they run: the one
/// list that [`conformance_tests!`](crate::conformance_tests) and [`RULES`] are made
/// from (a test checks that every public rule of the modules is in it).
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_rule {
    ($callback:path, $($args:tt)*) => {
        $callback!($($args)*
            load_of_unknown_key_is_none
            create_then_load_round_trips
            load_without_waiting_agrees_with_load
            create_never_overwrites
            save_applies_changes_not_snapshots
            save_stores_metadata
            save_unloaded_restarts_the_idle_timeout
            save_unloaded_never_creates_or_revives
            writes_never_create
            delete_removes_the_record
            expired_records_are_never_returned
            touch_extends_expiry
            update_is_atomic
            update_can_decline
            user_index_lists_and_ends_sessions
            user_index_skips_expired_sessions
            a_login_racing_log_out_everywhere_is_never_lost
            a_user_with_many_sessions_is_listed_up_to_the_limit_and_all_end
            attacker_chosen_id_is_never_adopted
            stored_key_is_not_a_cookie
            cycle_id_keeps_data_and_ends_the_old_id
            forced_collision_never_overwrites
            stale_save_after_logout_does_not_resurrect
            stale_unread_save_after_logout_does_not_resurrect
            an_unread_write_is_one_store_call
            parallel_requests_keep_disjoint_keys
            concurrent_increments_are_not_lost
            timeouts_follow_stored_times
            logout_ends_the_session_everywhere
            logout_everywhere_ends_every_session_of_the_user
            session_cap_ends_older_sessions
            login_of_another_user_starts_empty
            capped_concurrent_logins_leave_exactly_the_cap
            requests_overlapping_a_login_leave_its_cookie
            a_shadowing_cookie_does_not_hide_the_session
            an_endless_expiry_is_cut_to_the_longest
            data_no_store_can_hold_is_refused_before_any_store_call
            oversized_data_is_refused_and_nothing_is_kept
            load_error_is_not_no_session
        );
    };
}

macro_rules! rule_names {
    ($($rule:ident)*) => {
        /// The names of the contract's rules, in the order
        /// [`conformance_tests!`](crate::conformance_tests) runs them.
        pub const RULES: &[&str] = &[$(stringify!($rule)),*];
    };
}
__for_each_rule!(rule_names,);

/// A record with `data`, expiring `ttl` from now.
pub(crate) fn record(data: Value, ttl: Duration) -> Record {
    let now = Timestamp::now();
    Record {
        data: serde_json::from_value::<Data>(data).expect("an object"),
        meta: Meta::new(now, now.saturating_add(ttl)),
    }
}

pub(crate) fn data_of(record: &Record) -> Value {
    serde_json::to_value(&record.data).expect("data serialises")
}

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) fn changes(set: Value, removed: &[&str], cleared: bool) -> Changes {
    Changes {
        cleared,
        removed: removed.iter().map(|k| (*k).to_owned()).collect(),
        set: serde_json::from_value(set).expect("an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::RULES;

    /// Every public rule of the two modules is in the list, and nothing else: a rule
    /// written but not listed would never run.
    #[test]
    fn the_rule_list_names_every_rule() {
        let mut written: Vec<&str> = [include_str!("store.rs"), include_str!("layer.rs")]
            .iter()
            .flat_map(|source| source.lines())
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split('<').next())
            .collect();
        let mut listed = RULES.to_vec();
        written.sort_unstable();
        listed.sort_unstable();
        assert_eq!(written, listed);
    }
}
