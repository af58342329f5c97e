//! Turns for the updates this process makes of one field of one session.
//!
//! `update` is optimistic: it reads the field, computes the new value and sets it
//! only if the field still holds what was read, else tries again with what it holds
//! now. N updates of one field at once would each round cost a script of every one
//! still waiting, won by one of them: about N²/2 scripts in all, and N round trips for
//! the last. The updates one process makes of a field take turns here instead, so
//! Redis sees at most one per process at a time: N scripts on one server, and across
//! S servers about N·S/2, since an update can still lose to another server's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as FairMutex, OwnedMutexGuard};

/// The fields that have an update running or waiting in this process.
#[derive(Default)]
pub(crate) struct Turns {
    fields: Mutex<HashMap<String, Field>>,
}

struct Field {
    /// Tokio's mutex, for its first-come, first-served order: no update waits behind
    /// later ones.
    turn: Arc<FairMutex<()>>,
    /// Updates holding or waiting for `turn`; the entry goes when the last one does.
    updates: usize,
}

impl Turns {
    /// Waits until the updates of `field` (a session's hash key and field name, as one
    /// string) that started earlier in this process have finished.
    pub(crate) async fn take(&self, field: String) -> Turn<'_> {
        let turn = {
            let mut fields = self.fields();
            let entry = fields.entry(field.clone()).or_insert_with(|| Field {
                turn: Arc::default(),
                updates: 0,
            });
            entry.updates += 1;
            Arc::clone(&entry.turn)
        };
        // Made before the wait, so that an update dropped while waiting (its store
        // timeout passed) still leaves the entry.
        let leave = Leave { turns: self, field };
        Turn {
            _held: turn.lock_owned().await,
            _leave: leave,
        }
    }

    fn fields(&self) -> MutexGuard<'_, HashMap<String, Field>> {
        self.fields.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.fields().len()
    }
}

/// One update's turn at a field, until dropped.
pub(crate) struct Turn<'a> {
    // Fields drop in order: the turn passes on before the entry is left.
    _held: OwnedMutexGuard<()>,
    _leave: Leave<'a>,
}

struct Leave<'a> {
    turns: &'a Turns,
    field: String,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut fields = self.turns.fields();
        if let Some(entry) = fields.get_mut(&self.field) {
            entry.updates -= 1;
            if entry.updates == 0 {
                fields.remove(&self.field);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll};

    use futures_util::task::noop_waker_ref;

    use super::*;

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(noop_waker_ref()))
    }

    /// A turn at `field` that nothing else holds: it starts at once.
    fn take_now<'a>(turns: &'a Turns, field: &str) -> Turn<'a> {
        match poll_once(pin!(turns.take(field.into()))) {
            Poll::Ready(turn) => turn,
            Poll::Pending => panic!("an update waited for a field nobody held"),
        }
    }

    #[test]
    fn updates_of_one_field_take_turns_in_order_and_leave_nothing_behind() {
        let turns = Turns::default();
        let first = take_now(&turns, "s\0a");
        let mut second = pin!(turns.take("s\0a".into()));
        let mut third = pin!(turns.take("s\0a".into()));
        assert!(poll_once(second.as_mut()).is_pending());
        assert!(poll_once(third.as_mut()).is_pending());
        let other = pin!(turns.take("s\0b".into()));
        assert!(
            poll_once(other).is_ready(),
            "another field waited for this one"
        );

        drop(first);
        assert!(
            poll_once(third.as_mut()).is_pending(),
            "the third went first"
        );
        let Poll::Ready(second) = poll_once(second) else {
            panic!("the second update did not get its turn");
        };
        drop(second);
        assert!(poll_once(third).is_ready());
        assert_eq!(turns.len(), 0, "finished updates left entries");
    }

    #[test]
    fn an_update_dropped_while_waiting_leaves_its_entry() {
        let turns = Turns::default();
        let first = take_now(&turns, "s\0a");
        {
            let mut waiting = Box::pin(turns.take("s\0a".into()));
            assert!(poll_once(waiting.as_mut()).is_pending());
        }
        drop(first);
        assert_eq!(turns.len(), 0, "a dropped waiter left its entry");
    }
}
