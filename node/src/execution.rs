//! Executes an ordered batch: drops transactions already committed, runs each run of
//! consecutive transactions for one chaincode as one batch on its instance, handles the
//! `_lifecycle` system chaincode (deploy and upgrade) in the peer itself, and appends the
//! resulting block. Everything a validator decides here depends only on the ordered batch and
//! the committed state, so every honest validator produces the same block.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use weft_proto::package::validate_name;
use weft_proto::tx::{LIFECYCLE_CHAINCODE, LIFECYCLE_DEPLOY, LIFECYCLE_LIST};
use weft_proto::{Role, TxId};

use crate::chaincode::session::{
    ExecutionKind, NestedCall, NestedInvoker, Outcome, OutcomeStatus, SessionError,
};
use crate::chaincode::{ChaincodeError, ChaincodeManager, Definition};
use crate::ledger::{Ledger, LedgerError};
use crate::state::view::OverlayView;
use crate::state::{BlockOverlay, StateView};
use crate::storage::StoreError;
use crate::types::{
    Block, ChaincodeEvent, KvWrite, NamespaceWrites, Transaction, TxResult, TxStatus,
};

/// Writes made by nested calls, by the index (in its batch) of the calling transaction.
type NestedWrites = Arc<Mutex<HashMap<usize, Vec<(String, KvWrite)>>>>;

/// How deep chaincode may call chaincode.
const MAX_CALL_DEPTH: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("chaincode {0} is not deployed: deploy it with `weft chaincode deploy`")]
    NotDeployed(String),
    #[error("{0}")]
    Chaincode(String),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Transaction ids with what only this validator knows of why they failed, newest last.
type LocalDetails = VecDeque<(TxId, Arc<str>)>;

/// How many transactions' local failure details a validator remembers (a few blocks' worth;
/// transactions failing together share one detail).
const LOCAL_DETAILS: usize = 4096;

#[derive(Clone)]
pub struct Executor {
    ledger: Arc<Ledger>,
    chaincodes: Arc<ChaincodeManager>,
    /// Why recent transactions failed for reasons of this validator's own (its instance's id
    /// and last log lines, a package or runtime missing here), newest last: kept off the
    /// ledger, whose results must be the same on every validator, and told to a client that
    /// waits for the transaction on this validator.
    local_details: Arc<Mutex<LocalDetails>>,
    /// Chaincode found deployed ([`Executor::is_deployed`]).
    deployed_names: Arc<RwLock<HashSet<String>>>,
}

impl Executor {
    pub fn new(ledger: Arc<Ledger>, chaincodes: Arc<ChaincodeManager>) -> Executor {
        Executor {
            ledger,
            chaincodes,
            local_details: Arc::default(),
            deployed_names: Arc::default(),
        }
    }

    /// What this validator alone knows of why `tx_id` failed, if it failed for a reason of
    /// its own recently.
    pub fn local_detail(&self, tx_id: &TxId) -> Option<String> {
        self.local_details
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .rev()
            .find(|(id, _)| id == tx_id)
            .map(|(_, detail)| detail.to_string())
    }

    /// The committed results of `transactions` when their chaincode could not run them; the
    /// error's validator-local part is logged once and remembered for
    /// [`Executor::local_detail`] under each transaction's id.
    fn failed(
        &self,
        transactions: &[Transaction],
        chaincode: &str,
        error: &ChaincodeError,
    ) -> Vec<TxResult> {
        let message = committed_failure(chaincode, error);
        if let Some(detail) = local_detail(error) {
            tracing::warn!(chaincode, transactions = transactions.len(), detail = %detail, "transactions failed on this validator");
            self.remember_detail(transactions.iter().map(Transaction::id), detail.into());
        }
        transactions
            .iter()
            .map(|tx| TxResult::failed(tx.id(), message.0, message.1.clone()))
            .collect()
    }

    fn remember_detail(&self, ids: impl Iterator<Item = TxId>, detail: Arc<str>) {
        let mut details = self.local_details.lock().unwrap_or_else(|p| p.into_inner());
        for id in ids {
            if details.len() == LOCAL_DETAILS {
                details.pop_front();
            }
            details.push_back((id, detail.clone()));
        }
    }

    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    pub fn chaincodes(&self) -> &Arc<ChaincodeManager> {
        &self.chaincodes
    }

    fn lifecycle_view(&self, overlay: &BlockOverlay) -> OverlayView {
        OverlayView::new(
            self.ledger.clone(),
            LIFECYCLE_CHAINCODE,
            overlay.namespace(LIFECYCLE_CHAINCODE),
        )
    }

    fn definition_in(&self, view: &dyn StateView, name: &str) -> Option<Definition> {
        let raw = view.get(name.as_bytes()).ok()??;
        serde_json::from_slice(&raw).ok()
    }

    /// The committed definition of `name`.
    pub fn deployed(&self, name: &str) -> Option<Definition> {
        self.definition_in(&self.lifecycle_view(&BlockOverlay::default()), name)
    }

    /// Whether `name` is deployed (committed), as the client API asks of every submission. A
    /// definition once committed is never removed (`_lifecycle` only deploys and upgrades), so
    /// a name found once is remembered and not looked up again (a state read and a JSON
    /// decode, 5-6 us per transaction over four validators); a name not found is looked up
    /// each time.
    pub fn is_deployed(&self, name: &str) -> bool {
        let names = &self.deployed_names;
        if names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
        {
            return true;
        }
        let found = self.deployed(name).is_some();
        if found {
            names
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_string());
        }
        found
    }

    /// Every committed definition (to start instances eagerly at start-up).
    pub fn all_deployed(&self) -> Vec<Definition> {
        self.lifecycle_view(&BlockOverlay::default())
            .range(b"", b"")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect()
    }

    /// Executes an ordered batch and appends its block.
    pub async fn execute_block(
        &self,
        sequence: u64,
        transactions: Vec<Transaction>,
    ) -> Result<Arc<Block>, LedgerError> {
        let mut seen = HashSet::new();
        let mut kept = Vec::with_capacity(transactions.len());
        for tx in transactions {
            if seen.insert(tx.id()) && self.ledger.tx_location(&tx.id())?.is_none() {
                kept.push(tx);
            } else {
                tracing::debug!(tx_id = %tx.id(), "dropping an ordered transaction that is already committed");
            }
        }
        let mut overlay = BlockOverlay::default();
        let mut results = Vec::with_capacity(kept.len());
        let segments =
            kept.chunk_by(|a, b| a.chaincode == b.chaincode && a.chaincode != LIFECYCLE_CHAINCODE);
        for segment in segments {
            let name = &segment[0].chaincode;
            if name == LIFECYCLE_CHAINCODE {
                let result = self.deploy(&segment[0], &overlay).await;
                apply(&mut overlay, &result);
                results.push(result);
                continue;
            }
            match self.definition_in(&self.lifecycle_view(&overlay), name) {
                None => results.extend(segment.iter().map(|tx| {
                    TxResult::failed(
                        tx.id(),
                        TxStatus::ChaincodeNotFound,
                        format!("chaincode {name} is not deployed"),
                    )
                })),
                Some(definition) => {
                    let segment_results =
                        self.run_segment(&definition, segment, &mut overlay).await;
                    results.extend(segment_results);
                }
            }
        }
        // The append ends in a synced write: off the async workers, which meanwhile carry
        // consensus messages and client requests.
        let ledger = self.ledger.clone();
        tokio::task::spawn_blocking(move || ledger.append(sequence, kept, results))
            .await
            .map_err(|e| {
                LedgerError::Store(StoreError::Backend(format!(
                    "appending block {sequence} did not finish: {e}"
                )))
            })?
    }

    /// Runs transactions of one chaincode as one batch; if the instance crashes or hangs, runs
    /// them again one by one on a fresh instance so that only the culprit fails.
    async fn run_segment(
        &self,
        definition: &Definition,
        transactions: &[Transaction],
        overlay: &mut BlockOverlay,
    ) -> Vec<TxResult> {
        let nested = NestedWrites::default();
        let invoker = Arc::new(SegmentInvoker {
            executor: self.clone(),
            overlay: overlay.clone(),
            transactions: transactions.to_vec(),
            caller: definition.name.clone(),
            depth: 1,
            tx_index: None,
            nested: nested.clone(),
        });
        let view = Arc::new(OverlayView::new(
            self.ledger.clone(),
            &definition.name,
            overlay.namespace(&definition.name),
        ));
        let outcome = self
            .chaincodes
            .execute(
                definition,
                ExecutionKind::Invoke,
                transactions,
                view,
                Some(invoker),
            )
            .await;
        match outcome {
            Ok(outcomes) => {
                let mut nested =
                    std::mem::take(&mut *nested.lock().unwrap_or_else(|p| p.into_inner()));
                let mut results = Vec::with_capacity(outcomes.len());
                let mut touched = HashSet::new();
                for (index, (tx, outcome)) in transactions.iter().zip(outcomes).enumerate() {
                    let calls = nested.remove(&index).unwrap_or_default();
                    if outcome.status == OutcomeStatus::Ok {
                        touched.extend(calls.iter().map(|(ns, _)| ns.clone()));
                    }
                    let result = result_of(tx, &definition.name, outcome, calls);
                    apply(overlay, &result);
                    results.push(result);
                }
                for ns in touched {
                    self.chaincodes.bump_epoch(&ns);
                }
                results
            }
            Err(error) if transactions.len() > 1 && is_instance_failure(&error) => {
                tracing::warn!(chaincode = %definition.name, error = %error, "re-running the batch one transaction at a time");
                let mut results = Vec::with_capacity(transactions.len());
                for tx in transactions {
                    let single =
                        Box::pin(self.run_segment(definition, std::slice::from_ref(tx), overlay))
                            .await;
                    results.extend(single);
                }
                results
            }
            Err(error) => self.failed(transactions, &definition.name, &error),
        }
    }

    async fn deploy(&self, tx: &Transaction, overlay: &BlockOverlay) -> TxResult {
        let fail = |status, message: String| TxResult::failed(tx.id(), status, message);
        if tx.creator.role != Role::Admin {
            return fail(
                TxStatus::Forbidden,
                format!(
                    "only an admin may deploy chaincode; {} has the role {}",
                    tx.creator.name, tx.creator.role
                ),
            );
        }
        if tx.function != LIFECYCLE_DEPLOY {
            return fail(
                TxStatus::ChaincodeError,
                format!(
                    "{LIFECYCLE_CHAINCODE} has no function {:?}; it has: {LIFECYCLE_DEPLOY}",
                    tx.function
                ),
            );
        }
        let text = |i: usize| {
            tx.args
                .get(i)
                .and_then(|a| std::str::from_utf8(a).ok())
                .map(str::to_string)
        };
        let (Some(name), Some(version), Some(hash)) = (text(0), text(1), text(2)) else {
            return fail(
                TxStatus::ChaincodeError,
                "deploy takes: name, version, package hash, then optionally the init function and its arguments".into(),
            );
        };
        if let Err(reason) = validate_name(&name) {
            return fail(TxStatus::ChaincodeError, reason);
        }
        let package = match self.chaincodes.package(&hash) {
            Ok(p) => p,
            // Whether this validator holds the package is its own fact: the same words
            // everywhere, the reason in its log and its answer to a waiting client.
            Err(error) => {
                return self
                    .failed(std::slice::from_ref(tx), &name, &error)
                    .remove(0);
            }
        };
        if package.manifest.name != name || package.manifest.version != version {
            return fail(
                TxStatus::ChaincodeError,
                format!(
                    "package {hash} holds {}:{}, not {name}:{version}",
                    package.manifest.name, package.manifest.version
                ),
            );
        }
        let definition = Definition {
            name: name.clone(),
            version,
            package_hash: hash,
        };
        if self
            .definition_in(&self.lifecycle_view(overlay), &name)
            .as_ref()
            == Some(&definition)
        {
            return fail(
                TxStatus::ChaincodeError,
                format!(
                    "{name}:{} with this package is already deployed",
                    definition.version
                ),
            );
        }
        // The first init argument, if any, names the init function (as in Fabric's deploy);
        // the rest are its arguments.
        let init_tx = match tx.args.get(3).map(|f| std::str::from_utf8(f)) {
            Some(Ok(function)) => {
                tx.calling(&tx.chaincode, function.to_string(), tx.args[4..].to_vec())
            }
            Some(Err(_)) => {
                return fail(
                    TxStatus::ChaincodeError,
                    "the init function name is not UTF-8".into(),
                );
            }
            None => tx.calling(&tx.chaincode, "init".into(), Vec::new()),
        };
        let view = Arc::new(OverlayView::new(
            self.ledger.clone(),
            &name,
            overlay.namespace(&name),
        ));
        let outcome = self
            .chaincodes
            .execute(
                &definition,
                ExecutionKind::Init,
                std::slice::from_ref(&init_tx),
                view,
                None,
            )
            .await;
        let outcome = match outcome {
            Ok(mut outcomes) => outcomes.remove(0),
            Err(error) => {
                return self
                    .failed(std::slice::from_ref(tx), &name, &error)
                    .remove(0);
            }
        };
        let mut result = result_of(tx, &name, outcome, Vec::new());
        if result.status == TxStatus::Valid {
            let record = serde_json::to_vec(&definition).expect("a definition always serialises");
            result.writes.insert(
                0,
                NamespaceWrites {
                    chaincode: LIFECYCLE_CHAINCODE.into(),
                    writes: vec![KvWrite {
                        key: Bytes::from(name.clone().into_bytes()),
                        value: Some(Bytes::from(record)),
                    }],
                },
            );
            tracing::info!(chaincode = %name, version = %definition.version, "chaincode deployed");
        }
        result
    }

    /// Runs a read-only call against the committed state.
    pub async fn query(&self, tx: &Transaction) -> Result<Bytes, QueryError> {
        if tx.chaincode == LIFECYCLE_CHAINCODE {
            return self.lifecycle_query(tx);
        }
        let definition = self
            .deployed(&tx.chaincode)
            .ok_or_else(|| QueryError::NotDeployed(tx.chaincode.clone()))?;
        let view = Arc::new(OverlayView::committed(self.ledger.clone(), &tx.chaincode));
        let mut outcomes = self
            .chaincodes
            .execute(
                &definition,
                ExecutionKind::Query,
                std::slice::from_ref(tx),
                view,
                None,
            )
            .await
            .map_err(|e| QueryError::Chaincode(e.to_string()))?;
        let outcome = outcomes.remove(0);
        match outcome.status {
            OutcomeStatus::Ok => Ok(outcome.payload),
            OutcomeStatus::Error => Err(QueryError::Chaincode(outcome.message)),
        }
    }

    /// The lifecycle's read-only calls: `list` answers every deployed definition as JSON.
    fn lifecycle_query(&self, tx: &Transaction) -> Result<Bytes, QueryError> {
        if tx.function != LIFECYCLE_LIST {
            return Err(QueryError::Chaincode(format!(
                "{LIFECYCLE_CHAINCODE} has no query {:?}; it has: {LIFECYCLE_LIST}",
                tx.function
            )));
        }
        serde_json::to_vec(&self.all_deployed())
            .map(Bytes::from)
            .map_err(|e| QueryError::Chaincode(format!("cannot encode the definitions: {e}")))
    }
}

fn is_instance_failure(error: &ChaincodeError) -> bool {
    matches!(error, ChaincodeError::Session { .. })
}

/// The committed status and message of a transaction whose chaincode could not run it. They
/// must be the same on every validator that meets the same failure, so nothing that names this
/// validator's instance (process or container id, its log lines), storage, runtime or settings
/// (its execution timeout) is in them: that is [`local_detail`].
fn committed_failure(chaincode: &str, error: &ChaincodeError) -> (TxStatus, String) {
    let local = |what: &str| {
        (
            TxStatus::ChaincodeCrashed,
            format!(
                "chaincode {chaincode} {what}; the validator's log (and its answer to a client that waited on it there) says why"
            ),
        )
    };
    match error {
        ChaincodeError::Session {
            source: SessionError::Timeout(_),
            ..
        } => (
            TxStatus::ExecutionTimeout,
            format!(
                "chaincode {chaincode} did not finish this transaction within the execution timeout; it was restarted"
            ),
        ),
        ChaincodeError::Session { source, .. } => (
            TxStatus::ChaincodeCrashed,
            format!(
                "chaincode {chaincode} failed while running this transaction ({source}); it was restarted"
            ),
        ),
        ChaincodeError::LaunchFailed { .. } => local("could not be started"),
        ChaincodeError::NotInstalled(_) | ChaincodeError::Package(_) | ChaincodeError::Io(_) => {
            local("is not installed on this validator")
        }
        ChaincodeError::Runtime(_) => local("could not be run by this validator's runtime"),
    }
}

/// What only this validator knows of a failure to run chaincode, if anything.
fn local_detail(error: &ChaincodeError) -> Option<String> {
    match error {
        ChaincodeError::Session { .. } => None,
        other => Some(other.to_string()),
    }
}

/// The result of a transaction from its chaincode's outcome and the writes of its calls.
fn result_of(
    tx: &Transaction,
    chaincode: &str,
    outcome: Outcome,
    calls: Vec<(String, KvWrite)>,
) -> TxResult {
    if outcome.status == OutcomeStatus::Error {
        let message = if outcome.message.is_empty() {
            "the chaincode returned an error without a message".to_string()
        } else {
            outcome.message
        };
        return TxResult::failed(tx.id(), TxStatus::ChaincodeError, message);
    }
    let mut writes = Vec::new();
    if !outcome.writes.is_empty() {
        writes.push(NamespaceWrites {
            chaincode: chaincode.to_string(),
            writes: outcome.writes,
        });
    }
    let mut by_namespace: BTreeMap<String, BTreeMap<Bytes, Option<Bytes>>> = BTreeMap::new();
    for (ns, write) in calls {
        by_namespace
            .entry(ns)
            .or_default()
            .insert(write.key, write.value);
    }
    for (ns, entries) in by_namespace {
        writes.push(NamespaceWrites {
            chaincode: ns,
            writes: entries
                .into_iter()
                .map(|(key, value)| KvWrite { key, value })
                .collect(),
        });
    }
    TxResult {
        tx_id: tx.id(),
        status: TxStatus::Valid,
        message: String::new(),
        payload: outcome.payload,
        event: outcome.event.map(|(name, payload)| ChaincodeEvent {
            chaincode: chaincode.to_string(),
            name,
            payload,
        }),
        writes,
    }
}

fn apply(overlay: &mut BlockOverlay, result: &TxResult) {
    if result.status != TxStatus::Valid {
        return;
    }
    for ns in &result.writes {
        for w in &ns.writes {
            overlay.apply(&ns.chaincode, w.key.clone(), w.value.clone());
        }
    }
}

/// Serves the nested calls of one segment: each call sees the block's writes so far, the
/// writes of calls made by earlier transactions of the segment that succeeded, and those its
/// own transaction made before.
struct SegmentInvoker {
    executor: Executor,
    overlay: BlockOverlay,
    transactions: Vec<Transaction>,
    caller: String,
    depth: usize,
    /// Set for calls made from inside a nested call: the top-level transaction's index.
    tx_index: Option<usize>,
    nested: NestedWrites,
}

#[async_trait]
impl NestedInvoker for SegmentInvoker {
    async fn invoke(&self, call: NestedCall) -> Result<Bytes, String> {
        let index = self.tx_index.unwrap_or(call.tx_index);
        let tx = self
            .transactions
            .get(if self.tx_index.is_some() { 0 } else { index })
            .ok_or_else(|| format!("transaction index {index} is not in this batch"))?;
        if call.chaincode == self.caller || call.chaincode == LIFECYCLE_CHAINCODE {
            return Err(format!("{} may not call {}", self.caller, call.chaincode));
        }
        if self.depth >= MAX_CALL_DEPTH {
            return Err(format!(
                "chaincode calls are limited to a depth of {MAX_CALL_DEPTH}"
            ));
        }
        let definition = self
            .executor
            .definition_in(
                &self.executor.lifecycle_view(&self.overlay),
                &call.chaincode,
            )
            .ok_or_else(|| format!("chaincode {} is not deployed", call.chaincode))?;
        let mut pending = (*self.overlay.namespace(&call.chaincode)).clone();
        {
            let nested = self.nested.lock().unwrap_or_else(|p| p.into_inner());
            let mut visible: Vec<usize> = if self.tx_index.is_some() {
                Vec::new()
            } else {
                call.succeeded_before.clone()
            };
            visible.push(index);
            visible.sort_unstable();
            visible.dedup();
            for i in visible {
                for (ns, w) in nested.get(&i).into_iter().flatten() {
                    if *ns == call.chaincode {
                        pending.insert(w.key.clone(), w.value.clone());
                    }
                }
            }
        }
        let nested_tx = tx.calling(&call.chaincode, call.function, call.args);
        let view = Arc::new(OverlayView::new(
            self.executor.ledger.clone(),
            &call.chaincode,
            Arc::new(pending),
        ));
        let child = Arc::new(SegmentInvoker {
            executor: self.executor.clone(),
            overlay: self.overlay.clone(),
            transactions: vec![tx.clone()],
            caller: call.chaincode.clone(),
            depth: self.depth + 1,
            tx_index: Some(index),
            nested: self.nested.clone(),
        });
        let mut outcomes = self
            .executor
            .chaincodes
            .execute(
                &definition,
                ExecutionKind::Nested,
                std::slice::from_ref(&nested_tx),
                view,
                Some(child),
            )
            .await
            .map_err(|error| {
                // What the calling chaincode sees may end up in its committed result: the same
                // words on every validator, the local detail kept here under the caller's id.
                if let Some(detail) = local_detail(&error) {
                    tracing::warn!(chaincode = %call.chaincode, detail = %detail, "a nested call failed on this validator");
                    self.executor
                        .remember_detail(std::iter::once(tx.id()), detail.into());
                }
                committed_failure(&call.chaincode, &error).1
            })?;
        let outcome = outcomes.remove(0);
        match outcome.status {
            OutcomeStatus::Ok => {
                let mut nested = self.nested.lock().unwrap_or_else(|p| p.into_inner());
                nested.entry(index).or_default().extend(
                    outcome
                        .writes
                        .into_iter()
                        .map(|w| (call.chaincode.clone(), w)),
                );
                Ok(outcome.payload)
            }
            OutcomeStatus::Error => Err(outcome.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, Store};

    fn definition_v1() -> Definition {
        Definition {
            name: "cc".into(),
            version: "1".into(),
            package_hash: "ab".repeat(32),
        }
    }

    #[test]
    fn a_chaincode_is_deployed_once_its_definition_commits_and_stays_deployed() {
        let dir = tempfile::tempdir().expect("dir");
        let (genesis, _, _) = crate::test_support::validator_network_with_ca(4, "deployed");
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let ledger = Arc::new(Ledger::open(store, &genesis).expect("open"));
        let chaincodes =
            crate::test_support::chaincode_manager(dir.path(), std::time::Duration::from_secs(5));
        let executor = Executor::new(ledger.clone(), Arc::new(chaincodes));
        // Not yet deployed: asked twice, so a miss is not remembered.
        assert!(!executor.is_deployed("cc"));
        assert!(!executor.is_deployed("cc"));
        let definition = definition_v1();
        let id = TxId([7; 32]);
        let mut deploy = TxResult::failed(id, TxStatus::Valid, "");
        deploy.writes = vec![NamespaceWrites {
            chaincode: LIFECYCLE_CHAINCODE.into(),
            writes: vec![KvWrite {
                key: Bytes::from_static(b"cc"),
                value: Some(serde_json::to_vec(&definition).expect("json").into()),
            }],
        }];
        let signed = crate::types::SignedTransaction {
            id,
            payload: Bytes::new(),
            signer: Bytes::new(),
            signature: Bytes::new(),
        };
        let deployment = |signed| Transaction::decoded_for_tests(signed, "deploy", &[]);
        ledger
            .append(1, vec![deployment(signed.clone())], vec![deploy.clone()])
            .expect("append");
        assert!(executor.is_deployed("cc"));
        assert_eq!(executor.deployed("cc"), Some(definition));
        // Remembered, by every clone of the executor.
        let names = |e: &Executor| e.deployed_names.read().expect("names").clone();
        assert_eq!(names(&executor.clone()), HashSet::from(["cc".to_string()]));
        assert!(!executor.is_deployed("other"));
        assert!(
            !names(&executor).contains("other"),
            "a miss is not remembered"
        );
        // An upgrade (another deployment transaction): still deployed, the new definition
        // served.
        let upgraded = Definition {
            version: "2".into(),
            ..definition_v1()
        };
        let (mut signed, mut deploy) = (signed, deploy);
        signed.id = TxId([8; 32]);
        deploy.tx_id = signed.id;
        deploy.writes[0].writes[0].value =
            Some(serde_json::to_vec(&upgraded).expect("json").into());
        ledger
            .append(2, vec![deployment(signed)], vec![deploy])
            .expect("append");
        assert!(executor.is_deployed("cc"));
        assert_eq!(executor.deployed("cc"), Some(upgraded));
    }

    fn launch_failed(instance: &str, logs: &str) -> ChaincodeError {
        ChaincodeError::LaunchFailed {
            chaincode: "cc:1.0".to_string(),
            instance: instance.to_string(),
            reason: "exited (exit code 4) before registering".to_string(),
            logs: logs.to_string(),
        }
    }

    #[test]
    fn a_local_failure_commits_the_same_result_everywhere_and_keeps_its_detail_local() {
        // Two validators, two instances, two logs: one committed status and message.
        let here = launch_failed("pid 101", "12:00:01 starting at 127.0.0.1:7051");
        let there = launch_failed("container 5f3a", "12:00:02 starting at 10.0.0.2:7051");
        let committed = committed_failure("cc", &here);
        assert_eq!(committed, committed_failure("cc", &there));
        assert_eq!(committed.0, TxStatus::ChaincodeCrashed);
        assert!(
            committed.1.contains("chaincode cc could not be started"),
            "{}",
            committed.1
        );
        assert!(!committed.1.contains("pid 101"), "{}", committed.1);
        let detail = local_detail(&here).expect("the local detail is kept");
        assert!(
            detail.contains("pid 101") && detail.contains("starting at 127.0.0.1"),
            "{detail}"
        );

        // Every other local failure: the same words everywhere, the error text kept locally.
        let others = [
            ChaincodeError::NotInstalled("abc".to_string()),
            ChaincodeError::Io("disk full at /var/lib/weft".to_string()),
            ChaincodeError::Runtime(crate::chaincode::runtime::RuntimeError::Start {
                chaincode: "cc".to_string(),
                reason: "no such file /tmp/x".to_string(),
            }),
        ];
        for error in &others {
            let (status, message) = committed_failure("cc", error);
            assert_eq!(status, TxStatus::ChaincodeCrashed);
            assert!(
                !message.contains("/var/lib") && !message.contains("/tmp/x"),
                "{message}"
            );
            assert_eq!(local_detail(error), Some(error.to_string()));
        }

        // A timeout does not name this validator's own limit; a crash mid-transaction has no
        // local part.
        let timeout = ChaincodeError::Session {
            chaincode: "cc".to_string(),
            source: SessionError::Timeout(std::time::Duration::from_millis(1234)),
        };
        let (status, message) = committed_failure("cc", &timeout);
        assert_eq!(status, TxStatus::ExecutionTimeout);
        assert!(!message.contains("1.234"), "{message}");
        let crashed = ChaincodeError::Session {
            chaincode: "cc".to_string(),
            source: SessionError::Closed,
        };
        assert!(
            committed_failure("cc", &crashed)
                .1
                .contains("it was restarted")
        );
        assert_eq!(local_detail(&crashed), None);
    }
}
