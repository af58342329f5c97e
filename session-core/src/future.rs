//! The response future of [`SessionService`](crate::SessionService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project_lite::pin_project;
use tokio::task::JoinHandle;

use crate::error::StoreErrorKind;
use crate::session::Session;
use crate::transport::IdUpdate;

type Outcome = Result<Option<IdUpdate>, StoreErrorKind>;

pin_project! {
    /// Response future of [`SessionService`](crate::SessionService).
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// The handler is running.
        Handler { #[pin] future: F, session: Option<Session> },
        /// The session is being saved, by a task of its own: a response future
        /// dropped now (the client went away) must not cancel the writes halfway,
        /// least of all a logout's delete. Only requests whose store calls did not
        /// complete at once get here, and a call that waits dwarfs the task.
        Finishing { task: JoinHandle<Outcome>, session: Session, response: Option<Response<B>> },
    }
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(future: F, session: Session) -> Self {
        Self {
            state: State::Handler {
                future,
                session: Some(session),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default + Send + 'static,
{
    type Output = Result<Response<B>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            match self.as_mut().project().state.project() {
                StateProj::Handler { future, session } => {
                    let response = ready!(future.poll(cx))?;
                    let Some(session) = session.take().filter(Session::is_used) else {
                        return Poll::Ready(Ok(response));
                    };
                    if let Some(outcome) = session.try_finish() {
                        return Poll::Ready(Ok(crate::service::respond(
                            &session, response, outcome,
                        )));
                    }
                    // Most store calls complete at once (an in-process store): polled
                    // here first, they cost no task.
                    let mut finishing: Pin<Box<dyn Future<Output = Outcome> + Send>> = {
                        let session = session.clone();
                        Box::pin(async move { session.finish().await })
                    };
                    if let Poll::Ready(outcome) = finishing.as_mut().poll(cx) {
                        return Poll::Ready(Ok(crate::service::respond(
                            &session, response, outcome,
                        )));
                    }
                    let task = tokio::spawn(finishing);
                    self.as_mut().project().state.set(State::Finishing {
                        task,
                        session,
                        response: Some(response),
                    });
                }
                StateProj::Finishing {
                    task,
                    session,
                    response,
                } => {
                    let outcome = match ready!(Pin::new(task).poll(cx)) {
                        Ok(outcome) => outcome,
                        Err(error) if error.is_panic() => {
                            std::panic::resume_unwind(error.into_panic())
                        }
                        // The runtime is shutting down.
                        Err(_) => Err(StoreErrorKind::Other),
                    };
                    let response = response.take().expect("polled after completion");
                    return Poll::Ready(Ok(crate::service::respond(session, response, outcome)));
                }
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
