//! A lease: one instance of a service acts, the others wait, and a holder that loses the lease
//! stops acting before anyone else can take it.
//!
//! The lease is a key of the KV bucket `wasmbed-leases` whose values expire after the bucket's
//! `max_age` (the lease's time to live). An instance takes it with a create (which succeeds only
//! while the key does not exist) and keeps it with updates that expect its last revision, one
//! every third of the TTL. The revision of the create is the holder's **term** (a fencing
//! token: it only grows from one holder to the next).
//!
//! Why the holder stops first: it counts its lease as held only until the start of its last
//! successful renewal plus the TTL minus a margin. The server stores that renewal after it was
//! sent, and the key expires a full TTL after it is stored, so the holder has given up at least
//! the margin before the key can expire and another instance can create it.

use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use wasmbed_eventlog::EventLog;

use wasmbed_schemas::subject::LEASES_BUCKET;

/// How long a lease outlives its last renewal. Every lease shares it: it is the bucket's
/// `max_age`.
pub const LEASE_TTL: Duration = Duration::from_secs(4);

/// Why a lease could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("the leases bucket: {0}")]
pub struct LeaseError(String);

/// A lease being contended for or held, until dropped (which releases it).
pub struct Lease {
    name: String,
    state: watch::Receiver<Option<u64>>,
    contended: watch::Receiver<bool>,
    task: JoinHandle<()>,
    kv: kv::Store,
}

impl Lease {
    /// Starts contending for lease `name` as `holder` (a name for people: host and process).
    pub async fn start(log: &EventLog, name: &str, holder: String) -> Result<Self, LeaseError> {
        let js = log.jetstream();
        let kv = match js.get_key_value(LEASES_BUCKET).await {
            Ok(kv) => kv,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: LEASES_BUCKET.to_owned(),
                    history: 1,
                    max_age: LEASE_TTL,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    num_replicas: log.replicas(),
                    ..Default::default()
                })
                .await
                .map_err(|e| LeaseError(e.to_string()))?,
        };
        let (tx, rx) = watch::channel(None);
        let (answered, contended) = watch::channel(false);
        let task = tokio::spawn(contend(kv.clone(), name.to_owned(), holder, tx, answered));
        Ok(Self {
            name: name.to_owned(),
            state: rx,
            contended,
            task,
            kv,
        })
    }

    /// The term while held (the revision that took it), `None` while another holds it.
    pub fn term(&self) -> Option<u64> {
        *self.state.borrow()
    }

    /// Changes of [`Lease::term`].
    pub fn watch(&self) -> watch::Receiver<Option<u64>> {
        self.state.clone()
    }

    /// Turns true once the bucket first answered whether this instance could take the lease
    /// (before that, a `None` term says nothing about who holds it).
    pub fn contended(&self) -> watch::Receiver<bool> {
        self.contended.clone()
    }

    /// Gives the lease up: stops renewing and, if held, deletes the key so another instance
    /// takes over at once instead of after the TTL.
    pub async fn release(self) {
        self.task.abort();
        if self.term().is_some()
            && let Err(e) = self.kv.delete(&self.name).await
        {
            warn!(lease = %self.name, error = %e, "lease not released; it expires by itself");
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A name for the holder of `service`'s lease, for people reading the bucket or the logs: the
/// host (containers all run as pid 1), the process, and a count (several instances may share a
/// process in tests).
pub fn holder_name(service: &str) -> String {
    static INSTANCES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown host".to_owned());
    let n = INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    format!("{service} on {host} pid {} #{n}", std::process::id())
}

/// A renewal may take at most this much of the TTL.
fn renew_every() -> Duration {
    LEASE_TTL / 4
}

/// How often an instance without the lease tries to take it: a dead holder's key expires a
/// TTL after its last renewal, and is taken at most this much later.
fn contend_every() -> Duration {
    LEASE_TTL / 16
}

/// Given up this long before the key can expire.
fn margin() -> Duration {
    LEASE_TTL / 4
}

async fn contend(
    kv: kv::Store,
    name: String,
    holder: String,
    state: watch::Sender<Option<u64>>,
    answered: watch::Sender<bool>,
) {
    let value: bytes::Bytes = holder.clone().into();
    // (term, revision, held until)
    let mut held: Option<(u64, u64, Instant)> = None;
    loop {
        match held {
            None => {
                let attempt = Instant::now();
                match tokio::time::timeout(renew_every(), kv.create(&name, value.clone())).await {
                    Ok(Ok(revision)) => {
                        let until = attempt + LEASE_TTL - margin();
                        held = Some((revision, revision, until));
                        info!(lease = %name, %holder, term = revision, "lease taken");
                        let _ = state.send(Some(revision));
                        answered.send_replace(true);
                    }
                    Ok(Err(e)) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        debug!(lease = %name, "lease held elsewhere");
                        answered.send_replace(true);
                    }
                    Ok(Err(e)) => debug!(lease = %name, error = %e, "taking the lease failed"),
                    Err(_) => debug!(lease = %name, "taking the lease timed out"),
                }
                tokio::time::sleep(contend_every()).await;
            }
            Some((term, revision, until)) => {
                let attempt = Instant::now();
                let renewed =
                    tokio::time::timeout(renew_every(), kv.update(&name, value.clone(), revision))
                        .await;
                match renewed {
                    Ok(Ok(next)) => held = Some((term, next, attempt + LEASE_TTL - margin())),
                    Ok(Err(e)) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        // Someone else's value is there (ours expired, or it was deleted): ours
                        // is gone for good.
                        warn!(lease = %name, error = %e, "lease lost");
                        held = None;
                        let _ = state.send(None);
                        continue;
                    }
                    // The bucket cannot answer now (its leader is being elected): like a
                    // timeout, the lease counts as held until `until`.
                    Ok(Err(e)) => debug!(lease = %name, error = %e, "renewal failed"),
                    Err(_) => debug!(lease = %name, "renewal timed out"),
                }
                if let Some((_, _, until)) = held
                    && Instant::now() >= until
                {
                    warn!(lease = %name, "lease not renewed in time; given up");
                    held = None;
                    let _ = state.send(None);
                    continue;
                }
                let next = (attempt + renew_every()).min(until);
                tokio::time::sleep_until(next).await;
            }
        }
    }
}

/// Completes when the lease behind `term` ends (or its sender goes): what a holder's work is
/// raced against, so that it stops at once, even in the middle of an await.
pub async fn lost(mut term: watch::Receiver<Option<u64>>) {
    while term.borrow().is_some() {
        if term.changed().await.is_err() {
            return;
        }
    }
}

/// Completes when `stop` turns true or the lease behind `term` ends (or either sender goes):
/// what a holder's work waits on to stop at once.
pub async fn stopped_or_lost(
    mut stop: watch::Receiver<bool>,
    mut term: watch::Receiver<Option<u64>>,
) {
    loop {
        if *stop.borrow() || term.borrow().is_none() {
            return;
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { return },
            r = term.changed() => if r.is_err() { return },
        }
    }
}

/// Waits until the lease behind `term` is held (`true`) or `stop` turns true or a sender goes
/// (`false`): what a holder's work waits on to start.
pub async fn held_unless_stopped(
    stop: &mut watch::Receiver<bool>,
    term: &mut watch::Receiver<Option<u64>>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        if term.borrow().is_some() {
            return true;
        }
        tokio::select! {
            r = stop.changed() => if r.is_err() { return false },
            r = term.changed() => if r.is_err() { return false },
        }
    }
}
