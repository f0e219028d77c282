//! The one way sluice spawns long-lived tasks: named, inside a tracing span, tracked for
//! shutdown. A task of the pipeline's core (a source, the log's upkeep) that fails stops every
//! task; a task in its own failure domain (a sink) stops alone.

use std::error::Error;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// A task that ended with an error.
#[derive(Debug)]
pub struct TaskFailure {
    pub task: String,
    pub error: Box<dyn Error + Send + Sync>,
}

/// Tracks a pipeline's tasks and the token that stops them.
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
    failures: Arc<Mutex<Vec<TaskFailure>>>,
}

impl Tasks {
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Cancelled when shutdown starts (a signal, or any task failing).
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Spawns `future` as the task `name` inside `span`. If it fails, every task is told to stop
    /// and the failure is kept for [`Tasks::shutdown`] to report.
    pub fn spawn<F, E>(
        &self,
        name: impl Into<String>,
        span: tracing::Span,
        future: F,
    ) -> JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn Error + Send + Sync>> + Send + 'static,
    {
        self.spawn_in(
            name.into(),
            span,
            future,
            None::<fn(String) -> std::future::Ready<()>>,
        )
    }

    /// Spawns `future` in its own failure domain: if it fails (or panics), `on_failure` gets
    /// the message and the other tasks go on; the failure is still reported at shutdown.
    pub fn spawn_isolated<F, E, H, HF>(
        &self,
        name: impl Into<String>,
        span: tracing::Span,
        future: F,
        on_failure: H,
    ) -> JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn Error + Send + Sync>> + Send + 'static,
        H: FnOnce(String) -> HF + Send + 'static,
        HF: Future<Output = ()> + Send + 'static,
    {
        self.spawn_in(name.into(), span, future, Some(on_failure))
    }

    fn spawn_in<F, E, H, HF>(
        &self,
        name: String,
        span: tracing::Span,
        future: F,
        isolated: Option<H>,
    ) -> JoinHandle<()>
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Box<dyn Error + Send + Sync>> + Send + 'static,
        H: FnOnce(String) -> HF + Send + 'static,
        HF: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        let failures = Arc::clone(&self.failures);
        // The work runs in its own task so that a panic is caught here, reported like an
        // error, and handled like one instead of leaving the pipeline running without it.
        #[allow(clippy::disallowed_methods)] // this is the spawn helper
        let work = tokio::spawn(future.instrument(span.clone()));
        // The handle ends when the task has ended and its failure (if any) is handled.
        self.tracker.spawn(
            async move {
                let error: Box<dyn Error + Send + Sync> = match work.await {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error.into(),
                    Err(join) if join.is_panic() => format!(
                        "panicked: {} (a bug: please report it)",
                        panic_message(&*join.into_panic())
                    )
                    .into(),
                    Err(_) => return,
                };
                match isolated {
                    Some(on_failure) => {
                        tracing::error!(task = %name, error = %error,
                            "task failed; it stays stopped until sluice is restarted, the rest of the pipeline goes on");
                        on_failure(error.to_string()).await;
                    }
                    None => {
                        tracing::error!(task = %name, error = %error, "task failed; stopping the pipeline");
                        cancel.cancel();
                    }
                }
                failures
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(TaskFailure { task: name, error });
            }
            .instrument(span),
        )
    }

    /// Waits until every task has ended or failed, or until `cancel` fires.
    pub async fn wait_cancelled(&self) {
        self.cancel.cancelled().await;
    }

    /// Stops everything: cancels, waits up to `deadline` for tasks to finish their shutdown
    /// sequence, and returns the failures. Tasks still running after the deadline are left to
    /// be dropped with the runtime (their work is not acknowledged, so nothing is lost).
    pub async fn shutdown(&self, deadline: Duration) -> Result<Vec<TaskFailure>, Vec<TaskFailure>> {
        self.cancel.cancel();
        self.tracker.close();
        let finished = tokio::time::timeout(deadline, self.tracker.wait())
            .await
            .is_ok();
        let failures =
            std::mem::take(&mut *self.failures.lock().unwrap_or_else(|p| p.into_inner()));
        if finished {
            Ok(failures)
        } else {
            tracing::warn!(
                deadline_s = deadline.as_secs(),
                "tasks did not stop in time; aborting them"
            );
            Err(failures)
        }
    }
}

/// Spawns work that belongs to the caller (a connection's driver, a batch applied in the
/// background, a snapshot reader) inside the caller's tracing span, so its logs say whose work
/// it is. Long-lived pipeline tasks go through [`Tasks`] instead.
pub fn spawn_in_span<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    #[allow(clippy::disallowed_methods)] // this is the spawn helper
    tokio::spawn(future.in_current_span())
}

/// The message a panic was raised with (`panic!` with a literal or a formatted string).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}
