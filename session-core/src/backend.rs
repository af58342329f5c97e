//! Where a layer keeps its sessions: a [`SessionStore`] on the server, or a
//! [`ClientStore`] that seals each session into the client's cookie.

use std::fmt;
use std::sync::Arc;

use crate::client::{ClientSide, ClientStore};
use crate::session_store::SessionStore;

/// Where a [`SessionLayer`](crate::SessionLayer) keeps its sessions. Any
/// [`SessionStore`] converts into one; client-side stores provide their own
/// conversion (through [`Backend::client`]).
#[derive(Clone)]
pub struct Backend(pub(crate) Kind);

#[derive(Clone)]
pub(crate) enum Kind {
    Server(Arc<dyn SessionStore>),
    Client(Arc<ClientSide>),
}

impl Backend {
    /// Sessions sealed into the cookie by `store`.
    pub fn client(store: impl ClientStore) -> Self {
        Self(Kind::Client(Arc::new(ClientSide::new(store))))
    }
}

impl<S: SessionStore> From<S> for Backend {
    fn from(store: S) -> Self {
        Self(Kind::Server(Arc::new(store)))
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Kind::Server(_) => "Backend::Server",
            Kind::Client(_) => "Backend::Client",
        })
    }
}
