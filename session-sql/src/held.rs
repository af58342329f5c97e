//! A pooled connection that is closed, not put back, when the statement on it is
//! cancelled.
//!
//! sqlx tests a connection put back in the middle of a statement with a ping that has
//! no time limit. On a connection that died without closing (a partition, a NAT or
//! load balancer that forgot the flow), that ping waits until TCP gives up, minutes
//! later, and the connection keeps its place in the pool meanwhile: once the pool's
//! every place is so held (a few writes cut short by the layer's store timeout), no
//! statement can run at all, though a new connection would work.

use std::io;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::endpoint::Endpoint;

pub(crate) struct Held<DB: Database>(Option<PoolConnection<DB>>);

impl<DB: Database> Held<DB> {
    /// A connection of `pool`; when `endpoint`, the pool's server, is seen to refuse
    /// connections while the pool is opening one, the refusal at once.
    pub(crate) async fn acquire(
        pool: &Pool<DB>,
        endpoint: Option<&Endpoint>,
    ) -> Result<Self, sqlx::Error> {
        let acquired = pool.acquire();
        let connection = match endpoint {
            None => acquired.await?,
            Some(endpoint) => tokio::select! {
                acquired = acquired => acquired?,
                () = endpoint.refused(|| opening_a_connection(pool)) => {
                    return Err(sqlx::Error::Io(io::ErrorKind::ConnectionRefused.into()));
                }
            },
        };
        Ok(Self(Some(connection)))
    }

    /// The connection, for a statement.
    pub(crate) fn connection(&mut self) -> &mut DB::Connection {
        self.0.as_mut().expect("held until released or dropped")
    }

    /// The statements ran to their end, successful or not: the connection goes back
    /// to the pool (which tests it, as for any connection put back).
    pub(crate) fn release(mut self) {
        drop(self.0.take());
    }
}

impl<DB: Database> Drop for Held<DB> {
    fn drop(&mut self) {
        if let Some(cut_short) = self.0.take() {
            // Out of the pool, which opens another in its place; dropped, it closes.
            drop(cut_short.detach());
        }
    }
}

/// Whether an acquire of `pool` that is slow waits for a new connection rather than
/// for one in use: the pool has room for another. (Its idle connections do not say:
/// after an outage they are dead, and an acquire that found one so connects anew.)
fn opening_a_connection<DB: Database>(pool: &Pool<DB>) -> bool {
    pool.size() < pool.options().get_max_connections()
}
