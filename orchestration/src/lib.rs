//! Orchestration (DESIGN section 6): a YAML blueprint names locations (Docker engines, local
//! processes, Kubernetes) and the peers each runs. This crate reads and checks blueprints
//! (`blueprint`) and plans them (`plan`: pure, seeded); applying and managing build on it.

pub mod blueprint;
pub mod plan;

pub use blueprint::{Blueprint, BlueprintError, Location, LocationKind, Policy};
pub use plan::{Plan, plan};
