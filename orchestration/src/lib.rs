//! Orchestration (DESIGN section 6): a YAML blueprint names locations (Docker engines, local
//! processes, Kubernetes) and the peers each runs. This crate reads and checks blueprints
//! (`blueprint`), plans them (`plan`: pure, seeded), issues the network's identities
//! (`identities`), applies docker locations through their engines (`docker`, `image`,
//! `engine`), operates the result (`cluster`: up, status, scale, down) and keeps it healthy
//! (`manage`).

pub mod blueprint;
pub mod cluster;
pub mod docker;
pub mod engine;
pub mod health;
pub mod identities;
pub mod image;
pub mod kubernetes;
pub mod local;
pub mod manage;
pub mod plan;
pub mod site;

pub use blueprint::{Blueprint, BlueprintError, Location, LocationKind, Policy};
pub use cluster::{Cluster, ClusterError};
pub use plan::{Plan, plan};
