//! Reads of the config cache and the delivery log (lists, delivery-log pages, the
//! inventory) scan RocksDB: they run on the blocking pool, never on the async workers that
//! serve every other request, and within bounds: at most `admin.reads_in_flight_per_org`
//! under way per org (429 beyond, at once, so one tenant's loop queues nothing in front of
//! the others) and `admin.max_reads_in_flight` in all (more wait their turn).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::budget::InFlight;
use crate::admin::problem::Problem;
use crate::settings::AdminSettings;

pub struct Reads {
    per_org: InFlight,
    all: Arc<Semaphore>,
}

impl Reads {
    pub fn from_settings(admin: &AdminSettings) -> Self {
        Reads {
            per_org: InFlight::new(admin.reads_in_flight_per_org),
            all: Arc::new(Semaphore::new(admin.max_reads_in_flight.max(1))),
        }
    }

    /// Runs `work` with `stores` on the blocking pool, as one read of `org`.
    pub async fn run<S, T>(
        &self,
        org: &str,
        stores: S,
        work: impl FnOnce(&S) -> Result<T, Problem> + Send + 'static,
    ) -> Result<T, Problem>
    where
        S: Send + 'static,
        T: Send + 'static,
    {
        let held = self.per_org.take(org).ok_or_else(|| {
            Problem::too_many(
                "Too many reads",
                format!(
                    "quota admin.reads_in_flight_per_org: at most {} reads under way per org",
                    self.per_org.most()
                ),
            )
        })?;
        let permit = self
            .all
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Problem::unavailable("reads are closed"))?;
        // The places go with the work: a caller that hangs up does not free them early.
        tokio::task::spawn_blocking(move || {
            let _places = (held, permit);
            work(&stores)
        })
        .await
        .map_err(|_| Problem::unavailable("the read stopped"))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use std::sync::mpsc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_org_past_its_reads_is_refused_and_others_are_served() {
        let reads = Arc::new(Reads::from_settings(&AdminSettings {
            reads_in_flight_per_org: 1,
            max_reads_in_flight: 4,
            ..AdminSettings::default()
        }));
        let (release, wait) = mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let slow = {
            let reads = reads.clone();
            tokio::spawn(async move {
                reads
                    .run("acme", (), move |_| {
                        let _ = started.send(());
                        wait.recv().map_err(|_| Problem::unavailable("gone"))
                    })
                    .await
            })
        };
        running.await.unwrap();
        let refused = reads.run("acme", (), |_| Ok(())).await.unwrap_err();
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(refused.detail.contains("admin.reads_in_flight_per_org"));
        assert_eq!(reads.run("globex", 7, |n| Ok(*n + 1)).await.unwrap(), 8);
        release.send(()).unwrap();
        slow.await.unwrap().unwrap();
        assert!(
            reads.run("acme", (), |_| Ok(())).await.is_ok(),
            "given back when done"
        );
    }
}
