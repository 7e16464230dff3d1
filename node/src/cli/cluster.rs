//! `weft cluster`: peer clusters deployed from a blueprint (orchestration). So far: `plan`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use weft_orchestration::{Blueprint, plan};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Check a blueprint and print what `up` would create: identities, genesis, and per
    /// location its network and every node's container or process, ports, volumes and
    /// environment. Pure: the same blueprint and seed print the same plan.
    Plan {
        /// The blueprint (YAML).
        file: PathBuf,
        /// Places the host ports of locations whose base_port the blueprint leaves open.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

pub fn run(command: ClusterCommand) -> Result<()> {
    match command {
        ClusterCommand::Plan { file, seed } => {
            let blueprint =
                Blueprint::load(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let text = plan(&blueprint, seed).to_string();
            // A reader that stops early (`| head`) is not an error.
            match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}
