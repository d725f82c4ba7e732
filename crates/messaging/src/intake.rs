//! Group commit for the webhook endpoint.
//!
//! Each Stripe delivery must be durable before it is answered, and a commit
//! per delivery is what bounds intake under load. Requests therefore hand
//! their verified events to a few writer tasks; a writer takes everything
//! waiting (up to a batch), stores it with [`inbox::receive_many`] — one
//! transaction, and one statement on PostgreSQL — and only then answers each
//! request. An idle server writes a lone event at once; a busy one writes
//! many per commit. If the write fails, every request of the batch gets the
//! error (and Stripe retries), so nothing is answered 2xx unstored.

use std::sync::Arc;

use kanpa_ledger::Db;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::inbox::{self, IncomingEvent, Intake, Via};

/// Events one writer stores in one transaction at most.
pub const MAX_BATCH: usize = 256;

struct Waiting {
    event: IncomingEvent,
    via: Via,
    answer: oneshot::Sender<Result<Intake, Arc<sqlx::Error>>>,
}

/// The door to the writer tasks; cheap to clone. The writers stop when the
/// last clone is dropped.
#[derive(Clone)]
pub struct GroupIntake {
    queue: mpsc::Sender<Waiting>,
}

/// Why an event was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("storing the event failed: {0}")]
    Database(Arc<sqlx::Error>),
    #[error("the inbox writers have stopped")]
    Stopped,
}

impl GroupIntake {
    /// Starts `writers` writer tasks on the current runtime: one suits
    /// SQLite (a single writer connection anyway), two let PostgreSQL commit
    /// one batch while the next is gathered.
    pub fn start(db: Db, writers: usize) -> GroupIntake {
        let (queue, waiting) = mpsc::channel(MAX_BATCH * 4);
        let waiting = Arc::new(Mutex::new(waiting));
        for _ in 0..writers.max(1) {
            tokio::spawn(write_batches(db.clone(), waiting.clone()));
        }
        GroupIntake { queue }
    }

    /// Stores the event (and its job) durably; returns once committed.
    pub async fn receive(&self, event: IncomingEvent, via: Via) -> Result<Intake, IntakeError> {
        let (answer, answered) = oneshot::channel();
        self.queue.send(Waiting { event, via, answer }).await.map_err(|_| IntakeError::Stopped)?;
        answered.await.map_err(|_| IntakeError::Stopped)?.map_err(IntakeError::Database)
    }
}

async fn write_batches(db: Db, waiting: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
    loop {
        let mut batch = Vec::new();
        {
            let mut waiting = waiting.lock().await;
            let Some(first) = waiting.recv().await else { return };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match waiting.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
        }
        let events: Vec<(&IncomingEvent, Via)> = batch.iter().map(|w| (&w.event, w.via)).collect();
        let result = inbox::receive_many(&db, &events).await;
        metrics::histogram!("kanpa_stripe_intake_batch_size").record(batch.len() as f64);
        match result {
            Ok(intakes) => {
                for (waiting, intake) in batch.into_iter().zip(intakes) {
                    let _ = waiting.answer.send(Ok(intake));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "storing webhook events failed");
                let e = Arc::new(e);
                for waiting in batch {
                    let _ = waiting.answer.send(Err(e.clone()));
                }
            }
        }
    }
}
