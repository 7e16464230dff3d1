//! Where a location's nodes run, behind one interface for `up`, `status`, `down` and the
//! management loop: containers on a Docker engine, or processes on this machine.

use crate::ClusterError;
use crate::docker::{Change, DockerLocation, NodeFiles};
use crate::local::LocalLocation;
use crate::plan::{LocationPlan, NodePlan};

/// A node as its site reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeState {
    pub node: String,
    pub running: bool,
    /// The container's state (`running`, `exited`, ...), or `running (pid N)` / `stopped`.
    pub state: String,
}

pub enum Site {
    Docker {
        engine: DockerLocation,
        /// The peer image new containers run (unset where nothing is created).
        image: Option<String>,
        /// The gid owning the engine's socket.
        group: u32,
    },
    Local(LocalLocation),
}

impl Site {
    pub fn location(&self) -> &LocationPlan {
        match self {
            Site::Docker { engine, .. } => &engine.location,
            Site::Local(local) => &local.location,
        }
    }

    /// Makes `node` run as planned (see `DockerLocation::ensure_node` and
    /// `LocalLocation::ensure_node`).
    pub async fn ensure_node(
        &self,
        node: &NodePlan,
        files: &NodeFiles,
    ) -> Result<Change, ClusterError> {
        match self {
            Site::Docker {
                engine,
                image,
                group,
            } => {
                let image = image.as_deref().ok_or_else(|| {
                    ClusterError::Refused("no peer image to start containers from".into())
                })?;
                Ok(engine.ensure_node(node, image, *group, files).await?)
            }
            Site::Local(local) => Ok(local.ensure_node(node)?),
        }
    }

    /// Starts a stopped node again as it was (its container as created, whatever image this
    /// `weft` would use now); makes it anew only if it is missing.
    pub async fn restart(
        &self,
        node: &NodePlan,
        files: &NodeFiles,
    ) -> Result<Change, ClusterError> {
        if let (Site::Docker { engine, .. }, Some(container)) = (self, &node.container)
            && engine
                .docker
                .inspect_container(container, None)
                .await
                .is_ok()
        {
            engine.start(container).await?;
            return Ok(Change::Started);
        }
        self.ensure_node(node, files).await
    }

    /// The state of every node this site runs or ran.
    pub async fn states(&self) -> Result<Vec<NodeState>, ClusterError> {
        match self {
            Site::Docker { engine, .. } => Ok(engine
                .containers()
                .await?
                .into_iter()
                .map(|c| NodeState {
                    node: c.node,
                    running: c.running,
                    state: c.state,
                })
                .collect()),
            Site::Local(local) => Ok(local
                .location
                .nodes
                .iter()
                .filter(|n| local.node_dir(&n.name).exists())
                .map(|n| match local.running(&n.name) {
                    Some(pid) => NodeState {
                        node: n.name.clone(),
                        running: true,
                        state: format!("pid {pid}"),
                    },
                    None => NodeState {
                        node: n.name.clone(),
                        running: false,
                        state: "stopped".into(),
                    },
                })
                .collect()),
        }
    }

    /// The last lines the node wrote.
    pub async fn logs(&self, node: &NodePlan, lines: usize) -> String {
        match self {
            Site::Docker { engine, .. } => match &node.container {
                Some(container) => engine.logs(container, lines).await,
                None => String::new(),
            },
            Site::Local(local) => local.logs(&node.name, lines),
        }
    }

    /// Kills the node at once, as a crash would.
    pub async fn kill(&self, node: &NodePlan) {
        match self {
            Site::Docker { engine, .. } => {
                if let Some(container) = &node.container {
                    let _ = engine.kill(container).await;
                }
            }
            Site::Local(local) => local.kill(&node.name),
        }
    }

    /// Removes the node and its ledger.
    pub async fn remove_node(&self, node: &NodePlan) -> Result<(), ClusterError> {
        match self {
            Site::Docker { engine, .. } => Ok(engine.remove_node(node).await?),
            Site::Local(local) => Ok(local.remove_node(&node.name)?),
        }
    }

    /// Removes the nodes the plan no longer names; returns their names.
    pub async fn remove_unplanned(&self) -> Result<Vec<String>, ClusterError> {
        match self {
            Site::Docker { engine, .. } => Ok(engine.remove_unplanned().await?),
            Site::Local(local) => Ok(local.remove_unplanned()?),
        }
    }
}
