//! Orchestration (DESIGN section 6): a YAML blueprint names locations (Docker engines, local
//! processes, Kubernetes) and the peers each runs. This crate reads and checks blueprints
//! (`blueprint`); planning, applying and managing them build on it.

pub mod blueprint;

pub use blueprint::{Blueprint, BlueprintError, Location, LocationKind, Policy};
