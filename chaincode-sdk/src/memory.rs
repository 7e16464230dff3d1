//! An in-memory ledger for unit-testing chaincode without a peer: committed state per
//! chaincode, other chaincodes to call, and the shim's transaction semantics (the same
//! transaction runner); invariant: committed state changes only when a transaction of an
//! `init` or `invoke` call succeeds, and then by exactly its writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::overlay::{self, Writes};
use crate::tx::{self, Backend, EntryPoint, NestedCall, TxInput};
use crate::{Chaincode, ChaincodeError, Creator, Event};

/// How deep chaincode-to-chaincode calls may nest before the innermost call fails.
pub const MAX_CALL_DEPTH: usize = 16;

/// No arguments, for calls such as `world.invoke(&cc, &admin, "InitLedger", NO_ARGS)`.
pub const NO_ARGS: &[&str] = &[];

/// The name [`MemoryWorld::new`] gives the chaincode under test.
pub const DEFAULT_NAME: &str = "main";

/// The in-memory world is what the design calls `MemoryStub`.
pub type MemoryStub = MemoryWorld;

/// A ledger in memory: the committed state of the chaincode under test (and of any chaincode
/// [registered](MemoryWorld::register) for it to call).
///
/// Every call is one transaction with the shim's semantics: reads see the transaction's own
/// writes, writes are committed only if it succeeds, a panic is an error, a query's writes are
/// discarded, and a call into another chaincode commits that chaincode's writes only if the
/// calling transaction succeeds.
pub struct MemoryWorld {
    name: String,
    namespaces: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    chaincodes: BTreeMap<String, Arc<dyn Chaincode>>,
    last_event: Option<Event>,
    transactions: u64,
}

impl Default for MemoryWorld {
    fn default() -> MemoryWorld {
        MemoryWorld::new()
    }
}

impl MemoryWorld {
    /// An empty world whose chaincode under test is named [`DEFAULT_NAME`].
    pub fn new() -> MemoryWorld {
        MemoryWorld::with_name(DEFAULT_NAME)
    }

    /// An empty world whose chaincode under test is named `name` (the name other chaincodes
    /// call it by).
    pub fn with_name(name: &str) -> MemoryWorld {
        MemoryWorld {
            name: name.to_string(),
            namespaces: BTreeMap::new(),
            chaincodes: BTreeMap::new(),
            last_event: None,
            transactions: 0,
        }
    }

    /// Makes `chaincode` callable as `name` through [`crate::Stub::invoke_chaincode`].
    pub fn register(&mut self, name: &str, chaincode: impl Chaincode) -> &mut MemoryWorld {
        self.chaincodes
            .insert(name.to_string(), Arc::new(chaincode) as Arc<dyn Chaincode>);
        self
    }

    /// Sets a committed value of the chaincode under test directly (test setup).
    pub fn set_state(&mut self, key: &str, value: impl Into<Vec<u8>>) {
        let name = self.name.clone();
        self.namespace_mut(&name)
            .insert(key.to_string(), value.into());
    }

    /// The committed value of `key` of the chaincode under test.
    pub fn state(&self, key: &str) -> Option<Vec<u8>> {
        self.state_of(&self.name, key)
    }

    /// The committed value of `key` of the chaincode named `chaincode`.
    pub fn state_of(&self, chaincode: &str, key: &str) -> Option<Vec<u8>> {
        self.namespaces.get(chaincode)?.get(key).cloned()
    }

    /// All committed state of the chaincode under test, sorted by key.
    pub fn states(&self) -> BTreeMap<String, Vec<u8>> {
        self.namespaces.get(&self.name).cloned().unwrap_or_default()
    }

    /// The event set by the latest `init` or `invoke` transaction; `None` if it set none or
    /// failed. Queries leave it alone.
    pub fn last_event(&self) -> Option<&Event> {
        self.last_event.as_ref()
    }

    /// Runs `Chaincode::init` as a deploy transaction.
    pub async fn init<C, A>(
        &mut self,
        chaincode: &C,
        creator: &Creator,
        function: &str,
        args: &[A],
    ) -> Result<Vec<u8>, ChaincodeError>
    where
        C: Chaincode + ?Sized,
        A: AsRef<[u8]>,
    {
        self.transact(chaincode, EntryPoint::Init, creator, function, args, true)
            .await
    }

    /// Runs `Chaincode::invoke` as an ordered transaction.
    pub async fn invoke<C, A>(
        &mut self,
        chaincode: &C,
        creator: &Creator,
        function: &str,
        args: &[A],
    ) -> Result<Vec<u8>, ChaincodeError>
    where
        C: Chaincode + ?Sized,
        A: AsRef<[u8]>,
    {
        self.transact(chaincode, EntryPoint::Invoke, creator, function, args, true)
            .await
    }

    /// Runs `Chaincode::invoke` as a read-only query: whatever it writes is discarded.
    pub async fn query<C, A>(
        &mut self,
        chaincode: &C,
        creator: &Creator,
        function: &str,
        args: &[A],
    ) -> Result<Vec<u8>, ChaincodeError>
    where
        C: Chaincode + ?Sized,
        A: AsRef<[u8]>,
    {
        self.transact(
            chaincode,
            EntryPoint::Invoke,
            creator,
            function,
            args,
            false,
        )
        .await
    }

    async fn transact<C, A>(
        &mut self,
        chaincode: &C,
        entry: EntryPoint,
        creator: &Creator,
        function: &str,
        args: &[A],
        commit: bool,
    ) -> Result<Vec<u8>, ChaincodeError>
    where
        C: Chaincode + ?Sized,
        A: AsRef<[u8]>,
    {
        self.transactions += 1;
        let input = TxInput {
            function: function.to_string(),
            args: args.iter().map(|a| a.as_ref().to_vec()).collect(),
            tx_id: format!("{:064x}", self.transactions),
            creator: creator.clone(),
        };
        let mut nested = BTreeMap::new();
        let mut backend = MemoryBackend {
            committed: &self.namespaces,
            chaincodes: &self.chaincodes,
            namespace: &self.name,
            nested: &mut nested,
            depth: 0,
        };
        let outcome = tx::run_tx(
            chaincode,
            entry,
            &input,
            0,
            &[],
            &Writes::new(),
            &mut backend,
        )
        .await;
        if !commit {
            return outcome.result;
        }
        if outcome.result.is_ok() {
            // Calls back into this chaincode from a nested call come first; the transaction's
            // own writes are its newest.
            let name = self.name.clone();
            nested.entry(name).or_default().extend(outcome.writes);
            for (namespace, writes) in nested {
                let state = self.namespace_mut(&namespace);
                for (key, value) in writes {
                    match value {
                        Some(value) => state.insert(key, value),
                        None => state.remove(&key),
                    };
                }
            }
        }
        self.last_event = outcome.event;
        outcome.result
    }

    fn namespace_mut(&mut self, name: &str) -> &mut BTreeMap<String, Vec<u8>> {
        self.namespaces.entry(name.to_string()).or_default()
    }
}

/// Committed state of one namespace, seen through the pending writes of nested calls.
struct MemoryBackend<'w> {
    committed: &'w BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    chaincodes: &'w BTreeMap<String, Arc<dyn Chaincode>>,
    namespace: &'w str,
    /// Writes of the nested calls of the running top-level transaction, per namespace.
    nested: &'w mut BTreeMap<String, Writes>,
    depth: usize,
}

#[async_trait]
impl Backend for MemoryBackend<'_> {
    async fn read(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError> {
        let committed = self.committed.get(self.namespace);
        let pending = self.nested.get(self.namespace);
        Ok(keys
            .iter()
            .map(|key| match pending.and_then(|p| p.get(*key)) {
                Some(value) => value.clone(),
                None => committed.and_then(|c| c.get(*key)).cloned(),
            })
            .collect())
    }

    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
        let committed: Vec<(String, Vec<u8>)> = self
            .committed
            .get(self.namespace)
            .map(|state| {
                state
                    .iter()
                    .filter(|(key, _)| overlay::in_range(key, start, end))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let layers: Vec<&Writes> = self.nested.get(self.namespace).into_iter().collect();
        Ok(overlay::merge_range(committed, &layers, start, end))
    }

    async fn invoke(&mut self, call: NestedCall<'_>) -> Result<Vec<u8>, ChaincodeError> {
        let failed = |message: String| ChaincodeError::InvokeFailed {
            chaincode: call.chaincode.to_string(),
            function: call.function.to_string(),
            message,
        };
        if self.depth + 1 >= MAX_CALL_DEPTH {
            return Err(failed(format!(
                "chaincode calls nest deeper than {MAX_CALL_DEPTH}"
            )));
        }
        let Some(callee) = self.chaincodes.get(call.chaincode).cloned() else {
            return Err(failed(format!(
                "no chaincode named {:?} is registered in this MemoryWorld",
                call.chaincode
            )));
        };
        let input = TxInput {
            function: call.function.to_string(),
            args: call.args.to_vec(),
            tx_id: call.tx_id.to_string(),
            creator: call.creator.clone(),
        };
        // A failed call leaves no writes behind, its own nor those of the calls it made.
        let before = self.nested.clone();
        // The callee's earlier nested writes in this transaction act as its batch overlay.
        let mut pending = self.nested.remove(call.chaincode).unwrap_or_default();
        let outcome = {
            let mut backend = MemoryBackend {
                committed: self.committed,
                chaincodes: self.chaincodes,
                namespace: call.chaincode,
                nested: &mut *self.nested,
                depth: self.depth + 1,
            };
            tx::run_tx(
                callee.as_ref(),
                EntryPoint::Invoke,
                &input,
                call.tx_index,
                call.succeeded_before,
                &pending,
                &mut backend,
            )
            .await
        };
        if outcome.result.is_ok() {
            // Calls back into the callee came before its own writes, which are its newest.
            let reentrant = self.nested.remove(call.chaincode).unwrap_or_default();
            overlay::apply(&mut pending, reentrant);
            overlay::apply(&mut pending, outcome.writes);
            if !pending.is_empty() {
                self.nested.insert(call.chaincode.to_string(), pending);
            }
        } else {
            *self.nested = before;
        }
        outcome.result.map_err(|error| failed(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Role, Stub};

    /// Writes its first argument's key in its own namespace, then calls "callee" if asked.
    struct Writer;

    #[async_trait]
    impl Chaincode for Writer {
        async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
            stub.put_state("initialized", b"yes".to_vec())?;
            Ok(Vec::new())
        }

        async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
            let args = stub.string_args()?;
            match stub.function() {
                "put" => {
                    stub.put_state(&args[0], args[1].clone().into_bytes())?;
                    Ok(Vec::new())
                }
                "get" => Ok(stub.get_state(&args[0]).await?.unwrap_or_default()),
                "call_then" => {
                    let payload = stub
                        .invoke_chaincode("callee", "put", &[b"k".to_vec(), b"v".to_vec()])
                        .await?;
                    if args[0] == "fail" {
                        return Err(ChaincodeError::message("caller fails"));
                    }
                    Ok(payload)
                }
                "call_get" => {
                    stub.invoke_chaincode("callee", "put", &[b"k".to_vec(), b"v1".to_vec()])
                        .await?;
                    stub.invoke_chaincode("callee", "get", &[b"k".to_vec()])
                        .await
                }
                "recurse" => stub.invoke_chaincode("main", "recurse", &[]).await,
                other => Err(ChaincodeError::UnknownFunction(other.to_string())),
            }
        }
    }

    fn alice() -> Creator {
        Creator::new("alice", "Org1", Role::Client)
    }

    #[tokio::test]
    async fn init_and_invoke_commit_and_query_discards() {
        let mut world = MemoryWorld::new();
        world
            .init(&Writer, &alice(), "", NO_ARGS)
            .await
            .expect("init succeeds");
        assert_eq!(world.state("initialized"), Some(b"yes".to_vec()));
        world
            .query(&Writer, &alice(), "put", &["q", "1"])
            .await
            .expect("query succeeds");
        assert_eq!(world.state("q"), None);
        world
            .invoke(&Writer, &alice(), "put", &["a", "1"])
            .await
            .expect("invoke succeeds");
        assert_eq!(world.state("a"), Some(b"1".to_vec()));
    }

    #[tokio::test]
    async fn nested_writes_commit_only_with_the_caller() {
        let mut world = MemoryWorld::new();
        world.register("callee", Writer);
        world
            .invoke(&Writer, &alice(), "call_then", &["ok"])
            .await
            .expect("caller succeeds");
        assert_eq!(world.state_of("callee", "k"), Some(b"v".to_vec()));

        let mut world = MemoryWorld::new();
        world.register("callee", Writer);
        let error = world
            .invoke(&Writer, &alice(), "call_then", &["fail"])
            .await
            .expect_err("caller fails");
        assert_eq!(error.to_string(), "caller fails");
        assert_eq!(world.state_of("callee", "k"), None);
    }

    #[tokio::test]
    async fn a_later_nested_call_sees_an_earlier_ones_writes() {
        let mut world = MemoryWorld::new();
        world.register("callee", Writer);
        let payload = world
            .invoke(&Writer, &alice(), "call_get", NO_ARGS)
            .await
            .expect("calls succeed");
        assert_eq!(payload, b"v1");
    }

    #[tokio::test]
    async fn unknown_callee_and_runaway_recursion_fail_cleanly() {
        let mut world = MemoryWorld::new();
        let error = world
            .invoke(&Writer, &alice(), "call_then", &["ok"])
            .await
            .expect_err("no callee");
        assert!(error.to_string().contains("no chaincode named"), "{error}");

        world.register("main", Writer);
        let error = world
            .invoke(&Writer, &alice(), "recurse", NO_ARGS)
            .await
            .expect_err("too deep");
        assert!(error.to_string().contains("nest deeper"), "{error}");
    }
}
