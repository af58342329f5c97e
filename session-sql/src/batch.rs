//! Loads that arrive while others are in flight go to the database together, as one
//! query for all their keys.
//!
//! A read-only request costs one query when it is alone. Under load, the database's
//! cost per statement (parsing the protocol messages, a snapshot, starting the
//! executor) dominates a primary-key lookup, and every request paying it caps
//! throughput; so loads queue for one of a few batch slots, and whoever finds a free
//! slot takes every load queued so far. Nothing waits on a timer: an idle store sends
//! each load at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use session_core::store::Record;
use session_core::{StoreError, Timestamp};
use sqlx::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::dialect::{sealed::Dialect, Statements};
use crate::endpoint::Endpoint;
use crate::held::Held;
use crate::{corrupt_as_absent, Row};

/// Batches in flight at once: each holds a pooled connection, so the rest of the pool
/// stays free for writes.
const SLOTS: usize = 4;
/// Keys per query at most.
const MAX_BATCH: usize = 64;

type Answer = Result<Option<Record>, StoreError>;

struct Waiter {
    key: String,
    reply: oneshot::Sender<Answer>,
}

/// The queue of one store's loads, served by a task started on first use (and again
/// if the runtime that ran it has gone).
pub(crate) struct Loads<DB: Dialect> {
    queue: Mutex<Option<mpsc::UnboundedSender<Waiter>>>,
    pool: Pool<DB>,
    endpoint: Option<Arc<Endpoint>>,
    statements: Arc<Statements>,
}

impl<DB: Dialect> Loads<DB> {
    pub(crate) fn new(
        pool: Pool<DB>,
        endpoint: Option<Arc<Endpoint>>,
        statements: Arc<Statements>,
    ) -> Self {
        Self {
            queue: Mutex::new(None),
            pool,
            endpoint,
            statements,
        }
    }

    /// The live record stored under `key`, if any.
    pub(crate) async fn load(&self, key: String) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.enqueue(Waiter { key, reply });
        answer
            .await
            .map_err(|_| StoreError::unavailable("the session load was dropped"))?
    }

    fn enqueue(&self, waiter: Waiter) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let waiter = match queue.as_ref() {
            Some(sender) => match sender.send(waiter) {
                Ok(()) => return,
                Err(mpsc::error::SendError(waiter)) => waiter,
            },
            None => waiter,
        };
        let (sender, waiters) = mpsc::unbounded_channel();
        tokio::spawn(serve(
            waiters,
            self.pool.clone(),
            self.endpoint.clone(),
            self.statements.clone(),
        ));
        // The receiver is alive: it was just made.
        let _ = sender.send(waiter);
        *queue = Some(sender);
    }
}

/// Takes every queued load whenever a slot is free, until the store is dropped.
async fn serve<DB: Dialect>(
    mut waiters: mpsc::UnboundedReceiver<Waiter>,
    pool: Pool<DB>,
    endpoint: Option<Arc<Endpoint>>,
    statements: Arc<Statements>,
) {
    let slots = Arc::new(Semaphore::new(SLOTS));
    loop {
        // A slot first: while all are busy, loads gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = waiters.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match waiters.try_recv() {
                Ok(waiter) => batch.push(waiter),
                Err(_) => break,
            }
        }
        let (pool, endpoint, statements) = (pool.clone(), endpoint.clone(), statements.clone());
        tokio::spawn(async move {
            answer(batch, &pool, endpoint.as_deref(), &statements).await;
            drop(slot);
        });
    }
}

/// Runs one batch's query and answers its waiters. A batch whose waiters have all
/// given up (the layer's store timeout) is given up too, and its connection closed
/// rather than put back ([`Held`]): a connection that died without closing (a
/// partition, a NAT that forgot the flow) answers nothing, and the query would hold
/// its slot until TCP gave up, minutes later; with every slot so held, no load would
/// run at all.
async fn answer<DB: Dialect>(
    batch: Vec<Waiter>,
    pool: &Pool<DB>,
    endpoint: Option<&Endpoint>,
    statements: &Statements,
) {
    let (keys, mut replies): (Vec<String>, Vec<oneshot::Sender<Answer>>) = batch
        .into_iter()
        .map(|waiter| (waiter.key, waiter.reply))
        .unzip();
    let mut distinct: Vec<&str> = keys.iter().map(String::as_str).collect();
    distinct.sort_unstable();
    distinct.dedup();
    let rows = match Held::acquire(pool, endpoint).await {
        Ok(mut connection) => {
            let query = DB::load_query(statements, &distinct, Timestamp::now().unix_millis())
                .fetch_all(DB::on_connection(connection.connection()));
            let abandoned = async {
                for reply in &mut replies {
                    reply.closed().await;
                }
            };
            let rows = tokio::select! {
                rows = query => rows,
                // Dropped with the query cut short, the connection closes.
                () = abandoned => return,
            };
            connection.release();
            rows
        }
        Err(error) => Err(error),
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let error = error.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::unavailable(error.clone())));
            }
            return;
        }
    };
    let found: HashMap<String, (String, String, Option<String>, i64)> = rows
        .into_iter()
        .map(Into::into)
        .map(|(key, data, meta, user_id, expires_at)| (key, (data, meta, user_id, expires_at)))
        .collect();
    for (key, reply) in keys.iter().zip(replies) {
        // Waiters for one key (a hot session) each decode a record of their own.
        let record = found
            .get(key)
            .cloned()
            .and_then(|(data, meta, user_id, expires_at)| {
                let row = Row::from_text(&data, &meta, user_id, expires_at, DB::ENCODES_KEYS);
                corrupt_as_absent(row.and_then(Row::decode))
            });
        let _ = reply.send(Ok(record));
    }
}
