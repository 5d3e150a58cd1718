//! The NATS under a [`Cluster`](super::Cluster): one server, or a 3-node JetStream cluster.

use wasmbed_local_nats::NatsUsers;
use wasmbed_schemas::permissions::Principal;
use wasmbed_test_support::{HarnessError, NatsCluster, NatsServer};

/// One `nats-server`, or three routed into a JetStream cluster (streams with three replicas).
pub enum Nats {
    /// One server.
    One(NatsServer),
    /// Three nodes.
    Three(NatsCluster),
}

impl Nats {
    /// What `NATS_URL` takes: the server, or every node comma-separated.
    pub fn url(&self) -> String {
        match self {
            Self::One(server) => server.url(),
            Self::Three(cluster) => cluster.url(),
        }
    }

    /// Replicas of every stream and bucket.
    pub fn replicas(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Three(_) => 3,
        }
    }

    /// The users' passwords.
    pub fn users(&self) -> &NatsUsers {
        match self {
            Self::One(server) => server.users(),
            Self::Three(cluster) => cluster.users(),
        }
    }

    /// A client of the operator (knowing every node).
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        match self {
            Self::One(server) => server.client().await,
            Self::Three(cluster) => cluster.client().await,
        }
    }

    /// A client as `principal` (knowing every node).
    pub async fn client_as(
        &self,
        principal: Principal,
    ) -> Result<async_nats::Client, HarnessError> {
        match self {
            Self::One(server) => server.client_as(principal).await,
            Self::Three(cluster) => cluster.client_as(principal).await,
        }
    }

    /// Where a user was refused a subject, in every server's log.
    pub fn permission_violations(&self) -> Vec<String> {
        match self {
            Self::One(server) => server.permission_violations(),
            Self::Three(cluster) => cluster.permission_violations(),
        }
    }

    /// The single server's process id (none for a cluster).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::One(server) => server.pid(),
            Self::Three(_) => None,
        }
    }

    /// The single server (tests that restart it); panics on a cluster.
    pub fn server(&mut self) -> &mut NatsServer {
        match self {
            Self::One(server) => server,
            Self::Three(_) => panic!("this test needs one nats-server, not a cluster"),
        }
    }

    /// The cluster (tests that kill a node); panics on one server.
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match self {
            Self::Three(cluster) => cluster,
            Self::One(_) => panic!("this test needs a 3-node cluster"),
        }
    }
}
