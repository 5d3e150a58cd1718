//! [`NatsCluster`]: three real `nats-server -js` processes on loopback, routed into one
//! JetStream cluster, each with its own store, all with the project's users and permissions.
//! Any node can be killed (SIGKILL), restarted on its store, or stopped.

use std::time::Duration;

use wasmbed_local_nats::{
    ClusterConfig, NatsProcess, NatsProcessError, NatsUsers, connect_options, find_binary,
    start_cluster, write_secured_config,
};
use wasmbed_schemas::permissions::Principal;

use crate::{HarnessError, workspace_root};

/// The cluster's name (routes only join servers of the same name).
pub const CLUSTER_NAME: &str = "wasmbed";

/// A 3-node JetStream cluster of a test's own, killed on drop.
pub struct NatsCluster {
    nodes: Vec<NatsProcess>,
    users: NatsUsers,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Starts three routed nodes and waits until JetStream has a meta leader.
    pub async fn start() -> Result<Self, HarnessError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::try_start().await {
                Ok(cluster) => return Ok(cluster),
                // A port found free was taken by a parallel test before a node bound it.
                Err(HarnessError::Process(NatsProcessError::NotReady(..))) if attempt < 3 => {}
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_start() -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("wasmbed-nats-cluster-")
            .tempdir()?;
        let binary = find_binary(&workspace_root())?;
        let users = NatsUsers::generate()?;
        let read = |name: &str| std::fs::read_to_string(workspace_root().join("nats").join(name));
        let config_file = write_secured_config(
            dir.path(),
            &read("nats-server.conf")?,
            &read("permissions.conf")?,
            Some(Principal::Operator),
        )?;
        let nodes = start_cluster(&ClusterConfig {
            binary,
            client_ports: vec![0; 3],
            dir: dir.path().to_path_buf(),
            config_file: Some(config_file),
            env: users.env(),
            name: CLUSTER_NAME.into(),
        })
        .await?;
        let cluster = Self { nodes, users, dir };
        cluster.wait_healthy(Duration::from_secs(20)).await?;
        Ok(cluster)
    }

    /// Waits until every running node passes its full health check (a meta leader is known,
    /// streams and consumers are current).
    pub async fn wait_healthy(&self, within: Duration) -> Result<(), HarnessError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let mut all = true;
            for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
                all &= node.healthy().await;
            }
            if all {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Process(NatsProcessError::NotReady(
                    within,
                    "the cluster did not become healthy".into(),
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The running nodes' client addresses.
    pub fn addresses(&self) -> Vec<async_nats::ServerAddr> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .filter_map(|n| n.url().parse().ok())
            .collect()
    }

    /// Every node's URL, comma-separated (what `NATS_URL` takes for a cluster).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(NatsProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The users' passwords.
    pub fn users(&self) -> &NatsUsers {
        &self.users
    }

    /// Lines of the nodes' logs where a user was refused a subject.
    pub fn permission_violations(&self) -> Vec<String> {
        (1..=self.nodes.len())
            .flat_map(|n| {
                let log = self.dir.path().join(format!("node-{n}/nats-server.log"));
                crate::permission_violations(&std::fs::read_to_string(log).unwrap_or_default())
            })
            .collect()
    }

    /// A client of the operator, knowing every node (it moves to another when one goes).
    pub async fn client(&self) -> Result<async_nats::Client, HarnessError> {
        Ok(async_nats::connect(self.addresses()).await?)
    }

    /// A client as `principal`, knowing every node.
    pub async fn client_as(
        &self,
        principal: Principal,
    ) -> Result<async_nats::Client, HarnessError> {
        Ok(
            connect_options(principal, Some(self.users.password(principal)))
                .connect(self.addresses())
                .await?,
        )
    }

    /// Kills node `i` (SIGKILL): nothing flushed.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Stops node `i` cleanly (it leaves the cluster in order).
    pub async fn stop(&mut self, i: usize) {
        self.nodes[i].stop(Duration::from_secs(10)).await;
    }

    /// Starts node `i` again on its ports and store (after a kill or a stop).
    pub async fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        Ok(self.nodes[i].restart().await?)
    }
}
