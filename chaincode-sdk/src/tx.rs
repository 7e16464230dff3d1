//! One run of ordered transactions, shared by the gRPC shim and the in-memory world: the
//! transaction stub over a [`Backend`] for committed state, and the batch loop; invariant: a
//! transaction's writes and event survive only if it returns `Ok` (a panic is an error), and
//! each transaction sees the writes of the earlier successful ones of its run.

use std::any::Any;
use std::panic::AssertUnwindSafe;

use async_trait::async_trait;
use futures::FutureExt;

use crate::overlay::{self, Writes};
use crate::{Chaincode, ChaincodeError, Creator, Event, Stub};

/// Where committed state (as it was before the run) and other chaincodes are reached.
#[async_trait]
pub(crate) trait Backend: Send {
    /// Committed values of `keys`, in order, in at most one round trip.
    async fn read(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError>;
    /// Committed entries of `[start, end)` (a non-empty range), sorted by key.
    async fn range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError>;
    /// Runs another chaincode's function within the calling transaction.
    async fn invoke(&mut self, call: NestedCall<'_>) -> Result<Vec<u8>, ChaincodeError>;
}

/// A call from a transaction of the run into another chaincode.
pub(crate) struct NestedCall<'a> {
    /// Index, in the run, of the calling transaction.
    pub tx_index: u32,
    /// Indices of the earlier transactions of the run that succeeded.
    pub succeeded_before: &'a [u32],
    pub tx_id: &'a str,
    pub creator: &'a Creator,
    pub chaincode: &'a str,
    pub function: &'a str,
    pub args: &'a [Vec<u8>],
}

/// Which entry point of the chaincode a transaction calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryPoint {
    Init,
    Invoke,
}

/// What a transaction carries into the chaincode.
#[derive(Debug, Clone)]
pub(crate) struct TxInput {
    pub function: String,
    pub args: Vec<Vec<u8>>,
    /// Lowercase hex.
    pub tx_id: String,
    pub creator: Creator,
}

/// How a transaction ended. On error, `writes` is empty and `event` is `None`.
#[derive(Debug)]
pub(crate) struct TxOutcome {
    pub result: Result<Vec<u8>, ChaincodeError>,
    pub writes: Writes,
    pub event: Option<Event>,
}

impl TxOutcome {
    fn failed(error: ChaincodeError) -> TxOutcome {
        TxOutcome {
            result: Err(error),
            writes: Writes::new(),
            event: None,
        }
    }
}

/// The [`Stub`] of one transaction: its own writes over the run's, over the backend.
struct TxStub<'a, B: Backend> {
    input: &'a TxInput,
    tx_index: u32,
    succeeded_before: &'a [u32],
    batch: &'a Writes,
    writes: Writes,
    event: Option<Event>,
    backend: &'a mut B,
    /// The first failure of the peer or the stream seen by this transaction: it fails the
    /// transaction even if the chaincode ignored the error, because what it read is unknown.
    peer_failure: Option<ChaincodeError>,
}

impl<B: Backend> TxStub<'_, B> {
    fn note<T>(&mut self, result: Result<T, ChaincodeError>) -> Result<T, ChaincodeError> {
        if let Err(error @ ChaincodeError::Peer(_)) = &result
            && self.peer_failure.is_none()
        {
            self.peer_failure = Some(error.clone());
        }
        result
    }
}

#[async_trait]
impl<B: Backend> Stub for TxStub<'_, B> {
    fn function(&self) -> &str {
        &self.input.function
    }

    fn args(&self) -> &[Vec<u8>] {
        &self.input.args
    }

    fn tx_id(&self) -> &str {
        &self.input.tx_id
    }

    fn creator(&self) -> &Creator {
        &self.input.creator
    }

    async fn get_state(&mut self, key: &str) -> Result<Option<Vec<u8>>, ChaincodeError> {
        let mut values = self.get_states(&[key]).await?;
        Ok(values.pop().flatten())
    }

    async fn get_states(&mut self, keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError> {
        let mut values = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            overlay::validate_key(key)?;
            match overlay::pending(&[&self.writes, self.batch], key) {
                Some(value) => values.push(value.clone()),
                None => {
                    values.push(None);
                    misses.push(index);
                }
            }
        }
        if misses.is_empty() {
            return Ok(values);
        }
        let miss_keys: Vec<&str> = misses.iter().map(|&i| keys[i]).collect();
        let fetched = self.backend.read(&miss_keys).await;
        let fetched = self.note(fetched)?;
        if fetched.len() != misses.len() {
            let error = ChaincodeError::Peer(format!(
                "asked for {} keys, got {} values",
                misses.len(),
                fetched.len()
            ));
            return self.note(Err(error));
        }
        for (index, value) in misses.into_iter().zip(fetched) {
            values[index] = value;
        }
        Ok(values)
    }

    fn put_state(&mut self, key: &str, value: Vec<u8>) -> Result<(), ChaincodeError> {
        overlay::validate_key(key)?;
        self.writes.insert(key.to_string(), Some(value));
        Ok(())
    }

    fn delete_state(&mut self, key: &str) -> Result<(), ChaincodeError> {
        overlay::validate_key(key)?;
        self.writes.insert(key.to_string(), None);
        Ok(())
    }

    async fn get_state_range(
        &mut self,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
        if overlay::empty_range(start, end) {
            return Ok(Vec::new());
        }
        let committed = self.backend.range(start, end).await;
        let committed = self.note(committed)?;
        Ok(overlay::merge_range(
            committed,
            &[self.batch, &self.writes],
            start,
            end,
        ))
    }

    fn set_event(&mut self, name: &str, payload: Vec<u8>) -> Result<(), ChaincodeError> {
        if name.is_empty() {
            return Err(ChaincodeError::message("an event name must not be empty"));
        }
        self.event = Some(Event {
            name: name.to_string(),
            payload,
        });
        Ok(())
    }

    async fn invoke_chaincode(
        &mut self,
        chaincode: &str,
        function: &str,
        args: &[Vec<u8>],
    ) -> Result<Vec<u8>, ChaincodeError> {
        let result = self
            .backend
            .invoke(NestedCall {
                tx_index: self.tx_index,
                succeeded_before: self.succeeded_before,
                tx_id: &self.input.tx_id,
                creator: &self.input.creator,
                chaincode,
                function,
                args,
            })
            .await;
        self.note(result)
    }
}

/// Runs one transaction over `batch` (the run's pending writes) and `backend`. A panic in the
/// chaincode becomes [`ChaincodeError::Panicked`].
pub(crate) async fn run_tx<C, B>(
    chaincode: &C,
    entry: EntryPoint,
    input: &TxInput,
    tx_index: u32,
    succeeded_before: &[u32],
    batch: &Writes,
    backend: &mut B,
) -> TxOutcome
where
    C: Chaincode + ?Sized,
    B: Backend,
{
    let mut stub = TxStub {
        input,
        tx_index,
        succeeded_before,
        batch,
        writes: Writes::new(),
        event: None,
        backend,
        peer_failure: None,
    };
    let call = async {
        match entry {
            EntryPoint::Init => chaincode.init(&mut stub).await,
            EntryPoint::Invoke => chaincode.invoke(&mut stub).await,
        }
    };
    let result = match AssertUnwindSafe(call).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(ChaincodeError::Panicked(panic_message(panic.as_ref()))),
    };
    let result = match (result, stub.peer_failure) {
        (Ok(_), Some(failure)) => Err(failure),
        (result, _) => result,
    };
    match result {
        Ok(payload) => TxOutcome {
            result: Ok(payload),
            writes: stub.writes,
            event: stub.event,
        },
        Err(error) => TxOutcome::failed(error),
    }
}

/// Runs `inputs` in order; each successful transaction's writes join the run's overlay, which
/// is returned with the outcomes. An input that could not be decoded fails its transaction.
pub(crate) async fn run_batch<C, B>(
    chaincode: &C,
    entry: EntryPoint,
    inputs: Vec<Result<TxInput, ChaincodeError>>,
    backend: &mut B,
) -> (Vec<TxOutcome>, Writes)
where
    C: Chaincode + ?Sized,
    B: Backend,
{
    let mut batch = Writes::new();
    let mut succeeded = Vec::new();
    let mut outcomes = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let index = u32::try_from(index).expect("a batch fits in one gRPC message, so < 2^32 txs");
        let outcome = match input {
            Ok(input) => run_tx(chaincode, entry, &input, index, &succeeded, &batch, backend).await,
            Err(error) => TxOutcome::failed(error),
        };
        if outcome.result.is_ok() {
            overlay::apply(&mut batch, outcome.writes.clone());
            succeeded.push(index);
        }
        outcomes.push(outcome);
    }
    (outcomes, batch)
}

/// The text of a panic payload (what `panic!` was given, when it was a string).
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Role;

    /// A backend whose every read fails and that records the calls it is asked to make.
    #[derive(Default)]
    struct Failing {
        calls: Vec<(u32, Vec<u32>)>,
    }

    #[async_trait]
    impl Backend for Failing {
        async fn read(&mut self, _keys: &[&str]) -> Result<Vec<Option<Vec<u8>>>, ChaincodeError> {
            Err(ChaincodeError::Peer("injected".to_string()))
        }

        async fn range(
            &mut self,
            _start: &str,
            _end: &str,
        ) -> Result<Vec<(String, Vec<u8>)>, ChaincodeError> {
            Ok(Vec::new())
        }

        async fn invoke(&mut self, call: NestedCall<'_>) -> Result<Vec<u8>, ChaincodeError> {
            self.calls
                .push((call.tx_index, call.succeeded_before.to_vec()));
            Ok(Vec::new())
        }
    }

    /// Ignores read errors (which it should not), or fails, or calls out, as told.
    struct Careless;

    #[async_trait]
    impl Chaincode for Careless {
        async fn init(&self, _stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
            Ok(b"init".to_vec())
        }

        async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
            match stub.function() {
                "swallow" => {
                    let _ignored = stub.get_state("k").await;
                    stub.put_state("k", b"v".to_vec())?;
                    Ok(b"fine".to_vec())
                }
                "fail" => Err(ChaincodeError::message("no")),
                _ => {
                    stub.put_state("w", b"1".to_vec())?;
                    stub.invoke_chaincode("other", "f", &[]).await
                }
            }
        }
    }

    fn input(function: &str) -> Result<TxInput, ChaincodeError> {
        Ok(TxInput {
            function: function.to_string(),
            args: Vec::new(),
            tx_id: "00".to_string(),
            creator: Creator::new("alice", "Org1", Role::Client),
        })
    }

    #[tokio::test]
    async fn a_peer_failure_fails_the_transaction_even_if_the_chaincode_ignores_it() {
        let mut backend = Failing::default();
        let (outcomes, batch) = run_batch(
            &Careless,
            EntryPoint::Invoke,
            vec![input("swallow")],
            &mut backend,
        )
        .await;
        assert_eq!(
            outcomes[0].result,
            Err(ChaincodeError::Peer("injected".to_string()))
        );
        assert!(outcomes[0].writes.is_empty());
        assert!(batch.is_empty());
    }

    #[tokio::test]
    async fn nested_calls_learn_which_earlier_transactions_succeeded() {
        let mut backend = Failing::default();
        let inputs = vec![
            input("call"),
            input("fail"),
            Err(ChaincodeError::BadTransaction("undecodable".to_string())),
            input("call"),
        ];
        let (outcomes, batch) =
            run_batch(&Careless, EntryPoint::Invoke, inputs, &mut backend).await;
        let ok: Vec<bool> = outcomes.iter().map(|o| o.result.is_ok()).collect();
        assert_eq!(ok, [true, false, false, true]);
        assert_eq!(backend.calls, vec![(0, vec![]), (3, vec![0])]);
        assert_eq!(batch.get("w"), Some(&Some(b"1".to_vec())));
    }

    #[tokio::test]
    async fn init_entry_point_calls_init() {
        let mut backend = Failing::default();
        let (outcomes, _) =
            run_batch(&Careless, EntryPoint::Init, vec![input("x")], &mut backend).await;
        assert_eq!(outcomes[0].result, Ok(b"init".to_vec()));
    }
}
