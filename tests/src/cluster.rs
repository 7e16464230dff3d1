//! `weft cluster` for the tests: its arguments, and the cluster's status read through the
//! orchestration library (the same code `weft cluster status` prints).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use weft_orchestration::Blueprint;
use weft_orchestration::cluster::{Cluster, NodeStatus};
use weft_orchestration::health::Health;

/// `weft cluster SUBCOMMAND... FILE --state STATE`.
pub fn args(file: &Path, state: &Path, subcommand: &[&str]) -> Vec<String> {
    let mut args = vec!["cluster".to_string()];
    args.extend(subcommand.iter().map(|s| s.to_string()));
    args.extend([
        file.display().to_string(),
        "--state".into(),
        state.display().to_string(),
    ]);
    args
}

/// `weft cluster manage` looking every second, in the background until dropped.
pub fn spawn_manager(file: &Path, state: &Path) -> tokio::process::Child {
    tokio::process::Command::new(crate::weft_binary())
        .args(args(file, state, &["manage", "--interval", "1s"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start weft cluster manage")
}

/// The blueprint `file` with its state in `state`.
pub fn open(file: &Path, state: &Path) -> Cluster {
    let blueprint = Blueprint::load(file).expect("the blueprint");
    Cluster::open(blueprint, state, None).expect("the cluster's state")
}

/// Every planned node's status.
pub async fn status(file: &Path, state: &Path) -> Vec<NodeStatus> {
    open(file, state).status().await.expect("status")
}

/// One line per node, for assertion messages.
pub fn describe(rows: &[NodeStatus]) -> String {
    rows.iter()
        .map(|r| {
            format!(
                "{} {} {} height {:?} view {:?} tip {:?}",
                r.node,
                r.container,
                r.health.as_str(),
                r.height,
                r.view,
                r.tip.as_deref().map(|t| &t[..12.min(t.len())])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The row of `node`.
pub fn row<'a>(rows: &'a [NodeStatus], node: &str) -> &'a NodeStatus {
    rows.iter()
        .find(|r| r.node == node)
        .unwrap_or_else(|| panic!("no row for {node}:\n{}", describe(rows)))
}

/// Waits until every node runs, is ready and holds the same tip at the same height.
pub async fn wait_level(
    file: &Path,
    state: &Path,
    within: Duration,
    what: &str,
) -> Vec<NodeStatus> {
    let started = Instant::now();
    loop {
        let rows = status(file, state).await;
        let level = rows.iter().all(|r| {
            r.running
                && r.health == Health::Ready
                && r.height.is_some()
                && r.height == rows[0].height
                && r.tip == rows[0].tip
        });
        if level {
            return rows;
        }
        assert!(
            started.elapsed() < within,
            "{what}: the nodes are not level within {within:?}:\n{}",
            describe(&rows)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Removes whatever carries the blueprint's labels (and its peers' chaincode containers) when
/// dropped, so that a failing test leaves nothing on the engine.
pub struct Teardown {
    pub blueprint: String,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default()
        };
        for label in [
            format!("label=weft.blueprint={}", self.blueprint),
            format!("label=weft.network={}", self.blueprint),
        ] {
            for id in run(&["ps", "-aq", "--filter", &label]).split_whitespace() {
                run(&["rm", "-f", id]);
            }
        }
        let label = format!("label=weft.blueprint={}", self.blueprint);
        for id in run(&["network", "ls", "-q", "--filter", &label]).split_whitespace() {
            run(&["network", "rm", id]);
        }
        for id in run(&["volume", "ls", "-q", "--filter", &label]).split_whitespace() {
            run(&["volume", "rm", "-f", id]);
        }
    }
}
