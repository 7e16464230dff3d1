//! What the bench submits: asset-transfer (a mix of CreateAsset of new assets, signed by their
//! owner alice, and TransferAsset of assets created during setup, signed by the admin, whom the
//! contract lets move any asset: an owner could move each asset only once per step) or the
//! no-op chaincode (no state at all, to measure what the ledger itself costs). Every
//! transaction is signed before the clock starts.

use anyhow::Result;
use clap::ValueEnum;
use weft_proto::tx::string_args;
use weft_proto::{TxId, WeftClient, pb};

/// The chaincode and functions a bench run submits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// asset-transfer: CreateAsset and TransferAsset, mixed by --create-percent.
    AssetTransfer,
    /// The no-op chaincode: no state read or written.
    Noop,
}

impl Workload {
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::AssetTransfer => "asset-transfer",
            Workload::Noop => "noop",
        }
    }

    /// The chaincode this workload calls (also its example binary's name).
    pub fn chaincode(self) -> &'static str {
        self.as_str()
    }
}

/// One pre-signed transaction.
pub struct Planned {
    pub id: TxId,
    pub tx: pb::SignedTx,
}

/// Signs what one step submits. `step` and `run` make asset ids unique across steps and
/// runs; `assets` is how many assets setup created (TransferAsset moves those).
pub struct Plan {
    pub workload: Workload,
    pub create_percent: u32,
    pub assets: usize,
    pub run: String,
}

impl Plan {
    /// The asset ids setup creates for TransferAsset to move.
    pub fn setup_ids(&self) -> Vec<String> {
        (0..self.assets)
            .map(|i| format!("{}-setup-{i}", self.run))
            .collect()
    }

    /// Signed CreateAsset transactions for the setup assets (owned by the signer, alice).
    pub fn setup(&self, client: &WeftClient) -> Vec<pb::SignedTx> {
        self.setup_ids()
            .iter()
            .map(|id| {
                client
                    .sign(
                        Workload::AssetTransfer.chaincode(),
                        "CreateAsset",
                        &string_args(&[id.as_str(), "blue", "1", "alice", "10"]),
                    )
                    .1
            })
            .collect()
    }

    /// `count` signed transactions for step `step`: creates (and no-ops) signed by `owner`,
    /// transfers by `admin`. Deterministic in kind and order: of every 100 consecutive
    /// transactions, `create_percent` create (spread evenly, not bunched).
    pub fn sign(
        &self,
        owner: &WeftClient,
        admin: &WeftClient,
        step: usize,
        count: usize,
    ) -> Result<Vec<Planned>> {
        let chaincode = self.workload.chaincode();
        let mut planned = Vec::with_capacity(count);
        for i in 0..count {
            let (signer, function, args) = match self.workload {
                Workload::Noop => (owner, "Noop", string_args(&[i.to_string()])),
                Workload::AssetTransfer if self.is_create(i) => {
                    let id = format!("{}-{step}-{i}", self.run);
                    let args = string_args(&[id.as_str(), "red", "2", "alice", "20"]);
                    (owner, "CreateAsset", args)
                }
                Workload::AssetTransfer => {
                    anyhow::ensure!(
                        self.assets > 0,
                        "TransferAsset needs assets created at setup (--assets above 0)"
                    );
                    let asset = format!("{}-setup-{}", self.run, i % self.assets);
                    let new_owner = format!("owner-{step}-{i}");
                    let args = string_args(&[asset.as_str(), new_owner.as_str()]);
                    (admin, "TransferAsset", args)
                }
            };
            let (id, tx) = signer.sign(chaincode, function, &args);
            planned.push(Planned { id, tx });
        }
        Ok(planned)
    }

    /// Whether transaction `i` of a step is a CreateAsset: Bresenham-style, so that any 100
    /// consecutive ones hold `create_percent` creates.
    fn is_create(&self, i: usize) -> bool {
        let p = u64::from(self.create_percent.min(100));
        let i = i as u64;
        (i + 1) * p / 100 > i * p / 100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(create_percent: u32) -> Plan {
        Plan {
            workload: Workload::AssetTransfer,
            create_percent,
            assets: 10,
            run: "r".into(),
        }
    }

    #[test]
    fn the_mix_holds_in_every_hundred() {
        for percent in [0, 1, 30, 50, 99, 100] {
            let p = plan(percent);
            for start in [0usize, 7, 250] {
                let creates = (start..start + 100).filter(|&i| p.is_create(i)).count();
                assert_eq!(creates, percent as usize, "{percent}% from {start}");
            }
        }
        // 50% alternates rather than bunching.
        let p = plan(50);
        let kinds: Vec<bool> = (0..6).map(|i| p.is_create(i)).collect();
        assert_eq!(kinds, [false, true, false, true, false, true]);
    }
}
