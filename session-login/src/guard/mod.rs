//! The login guard: a layer that lets only requests of logged-in sessions through.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RequireLoginLayer;
pub use service::RequireLogin;

pub(crate) use layer::Config;
