//! The contract every stub must honour, as code: [`ProbeChaincode`] exercises each [`Stub`]
//! operation, and [`run_contract_suite`] drives it through a [`Harness`] and asserts Weft's
//! transaction semantics; invariant: the suite passes on the in-memory world and on the gRPC
//! shim alike, so a unit test on [`crate::MemoryWorld`] means what it would on a peer.
//!
//! A harness runs the probe as the chaincode under test and makes [`EchoChaincode`] callable
//! under the name [`ECHO`].

use async_trait::async_trait;
use serde_json::json;

use crate::{Chaincode, ChaincodeError, Creator, Event, ReadHint, Stub};

/// What the probe's "get" returns for a key that does not exist.
pub const NONE: &str = "<none>";

/// The name a harness gives [`EchoChaincode`].
pub const ECHO: &str = "echo";

/// The functions of [`ProbeChaincode`].
pub const PROBE_FUNCTIONS: &[&str] = &[
    "put",
    "get",
    "getmany",
    "del",
    "range",
    "put_then_fail",
    "event",
    "event_then_fail",
    "whoami",
    "txid",
    "args",
    "call",
    "panic",
    "script",
];

/// A chaincode whose functions each exercise one part of the stub (arguments are UTF-8):
///
/// | function | does | returns |
/// | --- | --- | --- |
/// | `put k v` | put | `v` |
/// | `get k` | get | the value or `<none>` |
/// | `getmany k...` | one `get_states` | JSON array of values or `null` |
/// | `del k` | delete | `ok` |
/// | `range [start [end]]` | range scan | JSON `[[key, value], ...]` |
/// | `put_then_fail k v` | put, then fails | an error |
/// | `event name payload` | set_event | `ok` |
/// | `event_then_fail name payload` | set_event, then fails | an error |
/// | `whoami` | creator | JSON `{"name", "organization", "role"}` |
/// | `txid` | tx id | the hex id |
/// | `args a...` | echo | JSON array of the arguments |
/// | `call cc fn a...` | invoke_chaincode | the callee's payload |
/// | `panic` | put `panic/k`, then panics | (an error) |
/// | `script "cmd a b" ...` | runs each command in one transaction | JSON array of results |
///
/// `init` runs the same functions when given one of them, and otherwise returns `initialized`.
pub struct ProbeChaincode;

#[async_trait]
impl Chaincode for ProbeChaincode {
    async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        if PROBE_FUNCTIONS.contains(&stub.function()) {
            self.invoke(stub).await
        } else {
            Ok(b"initialized".to_vec())
        }
    }

    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        let function = stub.function().to_string();
        let args = stub.string_args()?;
        if function == "script" {
            let mut results = Vec::with_capacity(args.len());
            for command in &args {
                let mut words = command.split_whitespace().map(str::to_string);
                let name = words.next().unwrap_or_default();
                let rest: Vec<String> = words.collect();
                let result = probe(stub, &name, &rest).await?;
                results.push(String::from_utf8_lossy(&result).into_owned());
            }
            return Ok(json!(results).to_string().into_bytes());
        }
        probe(stub, &function, &args).await
    }

    /// `get` reads its key, `getmany` its first two (the rest cost a round trip), so the suite
    /// run on a peer reads through values the peer sent ahead as well as through requests.
    fn read_hints(&self) -> Vec<ReadHint> {
        vec![
            ReadHint::arg("get", 0),
            ReadHint::arg("getmany", 0),
            ReadHint::arg("getmany", 1),
        ]
    }
}

fn expect_args(
    function: &str,
    args: &[String],
    count: usize,
    usage: &str,
) -> Result<(), ChaincodeError> {
    if args.len() == count {
        Ok(())
    } else {
        Err(ChaincodeError::BadArguments(format!(
            "{function} takes {usage}, got {} arguments",
            args.len()
        )))
    }
}

async fn probe(
    stub: &mut dyn Stub,
    function: &str,
    args: &[String],
) -> Result<Vec<u8>, ChaincodeError> {
    match function {
        "put" => {
            expect_args(function, args, 2, "a key and a value")?;
            stub.put_state(&args[0], args[1].clone().into_bytes())?;
            Ok(args[1].clone().into_bytes())
        }
        "get" => {
            expect_args(function, args, 1, "a key")?;
            Ok(stub
                .get_state(&args[0])
                .await?
                .unwrap_or_else(|| NONE.as_bytes().to_vec()))
        }
        "getmany" => {
            let keys: Vec<&str> = args.iter().map(String::as_str).collect();
            let values: Vec<Option<String>> = stub
                .get_states(&keys)
                .await?
                .into_iter()
                .map(|v| v.map(|v| String::from_utf8_lossy(&v).into_owned()))
                .collect();
            Ok(json!(values).to_string().into_bytes())
        }
        "del" => {
            expect_args(function, args, 1, "a key")?;
            stub.delete_state(&args[0])?;
            Ok(b"ok".to_vec())
        }
        "range" => {
            if args.len() > 2 {
                return Err(ChaincodeError::BadArguments(
                    "range takes an optional start and an optional end".to_string(),
                ));
            }
            let start = args.first().map(String::as_str).unwrap_or("");
            let end = args.get(1).map(String::as_str).unwrap_or("");
            let entries: Vec<(String, String)> = stub
                .get_state_range(start, end)
                .await?
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
            Ok(json!(entries).to_string().into_bytes())
        }
        "put_then_fail" => {
            expect_args(function, args, 2, "a key and a value")?;
            stub.put_state(&args[0], args[1].clone().into_bytes())?;
            Err(ChaincodeError::message(format!(
                "put_then_fail: failing on purpose after writing {}",
                args[0]
            )))
        }
        "event" | "event_then_fail" => {
            expect_args(function, args, 2, "an event name and a payload")?;
            stub.set_event(&args[0], args[1].clone().into_bytes())?;
            if function == "event_then_fail" {
                return Err(ChaincodeError::message(
                    "event_then_fail: failing on purpose after setting an event",
                ));
            }
            Ok(b"ok".to_vec())
        }
        "whoami" => {
            let creator = stub.creator();
            Ok(json!({
                "name": creator.name,
                "organization": creator.organization,
                "role": creator.role.as_str(),
            })
            .to_string()
            .into_bytes())
        }
        "txid" => Ok(stub.tx_id().as_bytes().to_vec()),
        "args" => Ok(json!(args).to_string().into_bytes()),
        "call" => {
            if args.len() < 2 {
                return Err(ChaincodeError::BadArguments(
                    "call takes a chaincode, a function and its arguments".to_string(),
                ));
            }
            let call_args: Vec<Vec<u8>> =
                args[2..].iter().map(|a| a.clone().into_bytes()).collect();
            stub.invoke_chaincode(&args[0], &args[1], &call_args).await
        }
        "panic" => {
            stub.put_state("panic/k", b"written before the panic".to_vec())?;
            panic!("the probe was asked to panic");
        }
        other => Err(ChaincodeError::UnknownFunction(format!(
            "{other} (known: {})",
            PROBE_FUNCTIONS.join(", ")
        ))),
    }
}

/// A chaincode for nested calls: any function returns `function(arg,arg...)`; `fail` fails.
pub struct EchoChaincode;

impl EchoChaincode {
    /// What a successful call returns.
    pub fn reply(function: &str, args: &[Vec<u8>]) -> Vec<u8> {
        let args: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        format!("{function}({})", args.join(",")).into_bytes()
    }
}

#[async_trait]
impl Chaincode for EchoChaincode {
    async fn init(&self, _stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        Ok(Vec::new())
    }

    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        if stub.function() == "fail" {
            return Err(ChaincodeError::message("echo: failing as asked"));
        }
        Ok(EchoChaincode::reply(stub.function(), stub.args()))
    }
}

/// One call of an ordered run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub function: String,
    pub args: Vec<String>,
}

impl Call {
    pub fn new(function: &str, args: &[&str]) -> Call {
        Call {
            function: function.to_string(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// Runs [`ProbeChaincode`] somewhere (in memory, behind the gRPC shim) as one signer, with
/// [`EchoChaincode`] callable as [`ECHO`]. Errors are the text the client would see.
#[async_trait]
pub trait Harness: Send {
    /// The identity the harness's transactions carry.
    fn creator(&self) -> Creator;
    /// Runs `init` as a deploy transaction.
    async fn init(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String>;
    /// Runs one ordered transaction.
    async fn invoke(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String>;
    /// Runs ordered transactions as one run (one ExecuteBatch behind the shim).
    async fn invoke_batch(&mut self, calls: &[Call]) -> Vec<Result<Vec<u8>, String>>;
    /// Runs a read-only query.
    async fn query(&mut self, function: &str, args: &[&str]) -> Result<Vec<u8>, String>;
    /// The event of the latest `init` or `invoke` transaction; `None` if it set none or failed.
    fn last_event(&self) -> Option<Event>;
}

fn text(result: Result<Vec<u8>, String>, what: &str) -> String {
    match result {
        Ok(payload) => String::from_utf8_lossy(&payload).into_owned(),
        Err(error) => panic!("{what}: expected success, got error {error:?}"),
    }
}

fn error(result: Result<Vec<u8>, String>, what: &str) -> String {
    match result {
        Ok(payload) => panic!(
            "{what}: expected an error, got {:?}",
            String::from_utf8_lossy(&payload)
        ),
        Err(error) => error,
    }
}

fn json_text(value: serde_json::Value) -> String {
    value.to_string()
}

/// Asserts Weft's transaction semantics through `h` (panics with the failing expectation).
/// It uses keys under `init/`, `a/`, `ryw/`, `gm/`, `fail/`, `d/`, `r/`, `b/`, `q/`, `panic/`
/// and `after/` and expects them absent at the start.
pub async fn run_contract_suite<H: Harness + ?Sized>(h: &mut H) {
    // Deploy: init's writes are committed.
    assert_eq!(text(h.init("put", &["init/k", "v0"]).await, "init"), "v0");
    assert_eq!(
        text(h.query("get", &["init/k"]).await, "read init write"),
        "v0"
    );

    // A committed write is visible to later transactions; a missing key reads as absent.
    assert_eq!(
        text(h.invoke("put", &["a/1", "one"]).await, "put a/1"),
        "one"
    );
    assert_eq!(text(h.query("get", &["a/1"]).await, "get a/1"), "one");
    assert_eq!(
        text(h.invoke("get", &["a/missing"]).await, "get missing"),
        NONE
    );

    // Read-your-writes inside one transaction, including overwrites.
    let script = h
        .invoke(
            "script",
            &["put ryw/k v1", "get ryw/k", "put ryw/k v2", "get ryw/k"],
        )
        .await;
    assert_eq!(
        text(script, "read-your-writes"),
        json_text(json!(["v1", "v1", "v2", "v2"]))
    );
    assert_eq!(text(h.query("get", &["ryw/k"]).await, "get ryw/k"), "v2");

    // get_states mixes pending, committed and missing keys, in order.
    let script = h
        .invoke("script", &["put gm/new n", "getmany gm/new a/1 gm/none"])
        .await;
    assert_eq!(
        text(script, "getmany"),
        json_text(json!(["n", json_text(json!(["n", "one", null]))]))
    );

    // A failed transaction's writes are discarded, and its error is the client's message.
    let failed = error(
        h.invoke("put_then_fail", &["fail/k", "x"]).await,
        "put_then_fail",
    );
    assert_eq!(
        failed,
        "put_then_fail: failing on purpose after writing fail/k"
    );
    assert_eq!(text(h.query("get", &["fail/k"]).await, "get fail/k"), NONE);
    error(
        h.invoke("put_then_fail", &["a/1", "changed"]).await,
        "overwrite then fail",
    );
    assert_eq!(text(h.query("get", &["a/1"]).await, "a/1 unchanged"), "one");

    // Delete: of a committed key, and of a key written in the same transaction.
    assert_eq!(text(h.invoke("del", &["a/1"]).await, "del a/1"), "ok");
    assert_eq!(text(h.query("get", &["a/1"]).await, "a/1 deleted"), NONE);
    text(h.invoke("put", &["d/c", "1"]).await, "put d/c");
    let script = h
        .invoke(
            "script",
            &["del d/c", "get d/c", "put d/k 1", "del d/k", "get d/k"],
        )
        .await;
    assert_eq!(
        text(script, "delete in a transaction"),
        json_text(json!(["ok", NONE, "1", "ok", NONE]))
    );
    assert_eq!(text(h.query("get", &["d/c"]).await, "d/c deleted"), NONE);
    assert_eq!(text(h.query("get", &["d/k"]).await, "d/k never"), NONE);

    // Range: start inclusive, end exclusive, sorted.
    let setup = h
        .invoke_batch(&[
            Call::new("put", &["r/c", "3"]),
            Call::new("put", &["r/a", "1"]),
            Call::new("put", &["r/d", "4"]),
            Call::new("put", &["r/b", "2"]),
        ])
        .await;
    for result in setup {
        text(result, "range setup");
    }
    let range = |entries: &[(&str, &str)]| json_text(json!(entries));
    assert_eq!(
        text(h.query("range", &["r/b", "r/d"]).await, "range r/b..r/d"),
        range(&[("r/b", "2"), ("r/c", "3")])
    );
    assert_eq!(
        text(h.query("range", &["r/", "r/~"]).await, "range r/"),
        range(&[("r/a", "1"), ("r/b", "2"), ("r/c", "3"), ("r/d", "4")])
    );
    assert_eq!(
        text(h.query("range", &["r/d", "r/b"]).await, "inverted range"),
        range(&[])
    );
    // Pending writes and deletes of the transaction are merged in.
    let script = h
        .invoke(
            "script",
            &["put r/bb x", "del r/c", "put r/e 5", "range r/b r/d"],
        )
        .await;
    assert_eq!(
        text(script, "range over pending writes"),
        json_text(json!([
            "x",
            "ok",
            "5",
            range(&[("r/b", "2"), ("r/bb", "x")])
        ]))
    );
    // ... and so are those of earlier transactions of the same run.
    let run = h
        .invoke_batch(&[
            Call::new("put", &["r/ba", "y"]),
            Call::new("del", &["r/b"]),
            Call::new("put_then_fail", &["r/b0", "z"]),
            Call::new("range", &["r/b", "r/c"]),
        ])
        .await;
    assert_eq!(run.len(), 4, "one result per call");
    let mut run = run.into_iter();
    let mut next = || run.next().expect("length checked above");
    text(next(), "put r/ba");
    text(next(), "del r/b");
    error(next(), "put_then_fail r/b0");
    assert_eq!(
        text(next(), "range over the run's writes"),
        range(&[("r/ba", "y"), ("r/bb", "x")])
    );
    // Unbounded on both sides: everything, sorted.
    let all = text(h.query("range", &[]).await, "unbounded range");
    let all: Vec<(String, String)> = serde_json::from_str(&all).expect("range returns JSON pairs");
    let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "range results are sorted");
    for expected in ["init/k", "r/ba", "r/bb", "r/d", "r/e", "ryw/k"] {
        assert!(
            keys.contains(&expected),
            "unbounded range misses {expected}"
        );
    }
    assert!(!keys.contains(&"r/c"), "a deleted key is not in a range");

    // An ordered run: later transactions see earlier successful ones, never failed ones.
    let run = h
        .invoke_batch(&[
            Call::new("put", &["b/k", "1"]),
            Call::new("get", &["b/k"]),
            Call::new("put_then_fail", &["b/k", "9"]),
            Call::new("get", &["b/k"]),
            Call::new("del", &["b/k"]),
            Call::new("get", &["b/k"]),
            Call::new("put", &["b/k", "3"]),
        ])
        .await;
    let run: Vec<Result<String, String>> = run
        .into_iter()
        .map(|r| r.map(|p| String::from_utf8_lossy(&p).into_owned()))
        .collect();
    assert_eq!(
        run,
        vec![
            Ok("1".to_string()),
            Ok("1".to_string()),
            Err("put_then_fail: failing on purpose after writing b/k".to_string()),
            Ok("1".to_string()),
            Ok("ok".to_string()),
            Ok(NONE.to_string()),
            Ok("3".to_string()),
        ]
    );
    assert_eq!(text(h.query("get", &["b/k"]).await, "b/k after run"), "3");

    // Events: emitted only by successful transactions.
    text(h.invoke("event", &["moved", "payload-1"]).await, "event");
    assert_eq!(
        h.last_event(),
        Some(Event {
            name: "moved".to_string(),
            payload: b"payload-1".to_vec()
        })
    );
    error(
        h.invoke("event_then_fail", &["lost", "p"]).await,
        "event_then_fail",
    );
    assert_eq!(h.last_event(), None, "a failed transaction emits no event");
    text(h.invoke("put", &["a/2", "2"]).await, "put without event");
    assert_eq!(h.last_event(), None, "no event unless set");

    // The creator is the signer.
    let creator = h.creator();
    assert_eq!(
        text(h.invoke("whoami", &[]).await, "whoami"),
        json_text(json!({
            "name": creator.name,
            "organization": creator.organization,
            "role": creator.role.as_str(),
        }))
    );

    // Transaction ids are lowercase hex, one per transaction.
    let first = text(h.invoke("txid", &[]).await, "txid");
    let second = text(h.invoke("txid", &[]).await, "txid");
    assert_eq!(first.len(), 64, "a tx id is 32 bytes in hex: {first}");
    assert!(
        first
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "{first}"
    );
    assert_ne!(first, second, "two transactions, two ids");

    // Arguments arrive as sent.
    assert_eq!(
        text(h.invoke("args", &["α", "", "b c"]).await, "args"),
        json_text(json!(["α", "", "b c"]))
    );

    // A query's writes are never committed.
    assert_eq!(text(h.query("put", &["q/k", "1"]).await, "query put"), "1");
    assert_eq!(text(h.invoke("get", &["q/k"]).await, "q/k"), NONE);

    // Calls to other chaincodes.
    assert_eq!(
        text(h.invoke("call", &[ECHO, "hello", "x", "y"]).await, "call"),
        "hello(x,y)"
    );
    let failed = error(h.invoke("call", &[ECHO, "fail"]).await, "call fail");
    assert!(failed.contains("echo: failing as asked"), "{failed}");
    error(
        h.invoke("call", &["no-such-chaincode", "f"]).await,
        "call missing",
    );

    // Unknown functions and wrong arguments are clear errors.
    let unknown = error(h.invoke("nope", &[]).await, "unknown function");
    assert!(unknown.starts_with("unknown function nope"), "{unknown}");
    let bad = error(h.invoke("put", &["only-a-key"]).await, "bad arguments");
    assert!(
        bad.starts_with("bad arguments: put takes a key and a value"),
        "{bad}"
    );

    // A panic fails its transaction only, discards its writes, and the chaincode goes on.
    let panicked = error(h.invoke("panic", &[]).await, "panic");
    assert!(
        panicked.starts_with("chaincode panicked: the probe was asked to panic"),
        "{panicked}"
    );
    assert_eq!(text(h.query("get", &["panic/k"]).await, "panic/k"), NONE);
    assert_eq!(
        text(h.invoke("put", &["after/k", "1"]).await, "after panic"),
        "1"
    );
    let run = h
        .invoke_batch(&[
            Call::new("put", &["after/b", "1"]),
            Call::new("panic", &[]),
            Call::new("get", &["after/b"]),
        ])
        .await;
    let run: Vec<bool> = run.iter().map(Result::is_ok).collect();
    assert_eq!(
        run,
        [true, false, true],
        "a panic fails only its transaction"
    );
    assert_eq!(text(h.query("get", &["after/b"]).await, "after/b"), "1");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryWorld, Role};

    #[tokio::test]
    async fn probe_lists_known_functions_when_asked_for_another() {
        let mut world = MemoryWorld::new();
        let error = world
            .invoke(
                &ProbeChaincode,
                &Creator::new("a", "o", Role::Client),
                "x",
                crate::memory::NO_ARGS,
            )
            .await
            .expect_err("unknown");
        assert!(error.to_string().contains("known: put, get"), "{error}");
    }

    #[tokio::test]
    async fn probe_init_without_a_probe_function_just_initializes() {
        let mut world = MemoryWorld::new();
        let payload = world
            .init(
                &ProbeChaincode,
                &Creator::new("a", "o", Role::Admin),
                "deploy",
                &["x"],
            )
            .await
            .expect("init");
        assert_eq!(payload, b"initialized");
    }
}
