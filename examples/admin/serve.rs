//! Serving the app as a production server would: a client gets `HEADERS` to send a
//! request's headers (a connection that drips them a byte at a time is closed, so
//! such clients cannot pile up) and `REQUEST` for the whole exchange, its body
//! included (then a 408). `axum::serve` has neither limit.

use std::future::Future;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;

/// How long a client may take.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timeouts {
    /// To send a request's headers.
    pub(crate) headers: Duration,
    /// For the whole request, from its headers to the end of the response's.
    pub(crate) request: Duration,
}

impl Timeouts {
    /// nginx's defaults for headers and bodies are 60 s; an admin site needs less.
    pub(crate) const PRODUCTION: Self = Self {
        headers: Duration::from_secs(10),
        request: Duration::from_secs(30),
    };
}

/// Serves `app` on `listener` until `shutdown` completes, then lets the requests in
/// flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) {
    let app = app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeouts.request,
    ));
    let connections = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(timeouts.headers);
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended");
            }
        });
    }
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::post;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// A server with short limits, and a connection to it.
    async fn connected() -> TcpStream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/echo", post(|body: String| async move { body }));
        let timeouts = Timeouts {
            headers: Duration::from_millis(300),
            request: Duration::from_millis(300),
        };
        tokio::spawn(serve(listener, app, timeouts, std::future::pending()));
        TcpStream::connect(address).await.unwrap()
    }

    /// Everything the server sends until it closes the connection, or `None` if it
    /// is still open after five seconds, far past the limits.
    async fn until_closed(stream: &mut TcpStream) -> Option<String> {
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        match read.await {
            Ok(_) => Some(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) => None,
        }
    }

    /// A client that sends its headers a byte at a time is cut off.
    #[tokio::test]
    async fn a_client_dripping_its_headers_is_closed() {
        let mut stream = connected().await;
        let (mut reader, mut writer) = stream.split();
        let drip = async {
            for byte in b"POST /echo HTTP/1.1\r\nHost: a\r\nX-Slow: "
                .iter()
                .cycle()
                .take(200)
            {
                if writer.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        let closed = async {
            let mut answer = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut answer))
                .await
                .is_ok()
        };
        let (_, closed) = tokio::join!(drip, closed);
        assert!(closed, "the connection was still open after 5 s");
    }

    /// A request whose body never comes in full gets a 408.
    #[tokio::test]
    async fn a_request_past_its_time_gets_408() {
        let mut stream = connected().await;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly part")
            .await
            .unwrap();
        let answer = until_closed(&mut stream)
            .await
            .expect("an answer within 5 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    /// A request in time is served.
    #[tokio::test]
    async fn a_request_in_time_is_served() {
        let mut stream = connected().await;
        stream
            .write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
            .await
            .unwrap();
        let answer = until_closed(&mut stream).await.expect("an answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hi"),
            "{answer}"
        );
    }
}
