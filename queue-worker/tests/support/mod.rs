//! What the worker's integration tests share: a worker started on a queue, calling functions
//! through a test's own `FunctionCaller`.

use std::sync::Arc;

use courier_queue::WorkQueue;
use courier_queue_worker::{FunctionCaller, Worker, WorkerConfig, WorkerMetrics};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts a worker over `queue` with `config`, calling functions through `caller`, with its
/// own metrics registry. Cancel the token to stop it; the handle ends once it has drained.
pub(crate) fn start_worker(
    queue: Arc<dyn WorkQueue>,
    config: WorkerConfig,
    caller: Arc<dyn FunctionCaller>,
) -> (CancellationToken, JoinHandle<()>) {
    let worker = Worker::with_caller(
        queue,
        config,
        WorkerMetrics::register(&prometheus::Registry::new()).unwrap(),
        Some(caller),
    )
    .unwrap();
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    (stop, running)
}
