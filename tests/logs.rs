//! docs/security.md 26 in a process of its own: the test sets a tracing subscriber for its
//! thread, and tracing caches per call site whether anyone listens. Beside other tests
//! that hit the same call sites first, with no subscriber, that cache made the
//! subscriber miss events now and then.

use std::sync::{Arc, Mutex};

use session_kit::store::SessionId;
use session_kit::{MemoryStore, SessionLayer};
use session_testkit::{app, Client, InstrumentedStore};

/// A writer that keeps everything it is given.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A full login, use and logout, with every tracing event captured at every level,
/// never logs the id, its key, or the session's data.
#[tokio::test]
async fn ids_and_data_never_reach_the_logs() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let store = InstrumentedStore::new(MemoryStore::new());
    let app = app(SessionLayer::new(store.clone()), None);
    let mut client = Client::new(&app);
    client.post("/login/alice").await;
    let token = client.cookie.clone().expect("a session cookie");
    let key = SessionId::parse(&token).unwrap().key().to_string();
    client.post("/set/secret/hunter2").await;
    client.get("/get/secret").await;
    store.set_failing(true);
    client.get("/get/secret").await;
    store.set_failing(false);
    client.post("/logout").await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("session store call"),
        "nothing was logged:\n{logs}"
    );
    assert!(
        logs.contains("failed"),
        "the failure was not logged:\n{logs}"
    );
    for secret in [&token, &key, "hunter2"] {
        assert!(
            !logs.contains(secret),
            "{secret} appears in the logs:\n{logs}"
        );
    }
    assert_eq!(
        format!("{:?}", SessionId::parse(&token).unwrap()),
        "SessionId(…)"
    );
}
