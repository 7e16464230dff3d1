//! The probe chaincode as a program, for the peer's tests: the library's `ProbeChaincode` plus
//! functions that misbehave on purpose (crash, sleep, spin, allocate, nondeterminism, reach
//! out of its container: connect, write);
//! invariant: every other function behaves exactly as the library's probe. Launched under the
//! name "echo" (as a package named echo), it serves the library's `EchoChaincode` instead, the
//! callee of the contract suite's nested calls; under the name "exits-at-launch" it exits
//! before registering; under "too-many-hints" it declares one read hint more than a peer
//! accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chaincode_sdk::contract::{ECHO, EchoChaincode, ProbeChaincode};
use chaincode_sdk::{Chaincode, ChaincodeError, MAX_READ_HINTS, ReadHint, Stub, async_trait};

/// Packaged under this name, the probe prints a line and exits before it registers: what a
/// chaincode that cannot start looks like to its peer.
const EXITS_AT_LAUNCH: &str = "exits-at-launch";
/// Packaged under this name, the probe declares more read hints than a peer accepts.
const TOO_MANY_HINTS: &str = "too-many-hints";

fn main() {
    let name = std::env::var(chaincode_sdk::ENV_CHAINCODE_NAME).unwrap_or_default();
    if name == ECHO {
        chaincode_sdk::start(EchoChaincode)
    }
    if name == EXITS_AT_LAUNCH {
        eprintln!("probe: cannot start: exiting at launch on purpose");
        std::process::exit(4);
    }
    if name == TOO_MANY_HINTS {
        chaincode_sdk::start(TooManyHints)
    }
    chaincode_sdk::start(Probe)
}

struct TooManyHints;

#[async_trait]
impl Chaincode for TooManyHints {
    async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        ProbeChaincode.init(stub).await
    }

    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        ProbeChaincode.invoke(stub).await
    }

    fn read_hints(&self) -> Vec<ReadHint> {
        (0..=MAX_READ_HINTS as u32)
            .map(|arg| ReadHint::arg("getmany", arg))
            .collect()
    }
}

struct Probe;

fn arg<'a>(args: &'a [String], function: &str, usage: &str) -> Result<&'a str, ChaincodeError> {
    match args {
        [one] => Ok(one),
        _ => Err(ChaincodeError::BadArguments(format!(
            "{function} takes {usage}"
        ))),
    }
}

fn number(value: &str, function: &str) -> Result<u64, ChaincodeError> {
    value.parse().map_err(|_| {
        ChaincodeError::BadArguments(format!("{function} takes a number, got {value:?}"))
    })
}

#[async_trait]
impl Chaincode for Probe {
    async fn init(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        ProbeChaincode.init(stub).await
    }

    fn read_hints(&self) -> Vec<ReadHint> {
        ProbeChaincode.read_hints()
    }

    async fn invoke(&self, stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        let function = stub.function().to_string();
        match function.as_str() {
            // Dies mid-transaction, as a crashing chaincode would.
            "crash" => std::process::exit(3),
            "sleep" => {
                let args = stub.string_args()?;
                let ms = number(arg(&args, &function, "milliseconds")?, &function)?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(b"ok".to_vec())
            }
            // Never yields: only the peer's execution timeout ends it.
            "spin" => loop {
                std::hint::spin_loop();
            },
            "alloc" => {
                let args = stub.string_args()?;
                let mib = number(arg(&args, &function, "a size in MiB")?, &function)?;
                let bytes = usize::try_from(mib.saturating_mul(1024 * 1024)).map_err(|_| {
                    ChaincodeError::BadArguments(format!("alloc: {mib} MiB is too large"))
                })?;
                // Touch every page so the memory is really committed.
                let mut block = vec![0u8; bytes];
                for page in block.chunks_mut(4096) {
                    page[0] = 1;
                }
                let touched: usize = block.iter().step_by(4096).map(|&b| usize::from(b)).sum();
                Ok(touched.to_string().into_bytes())
            }
            // Non-deterministic on purpose, but only where the environment says so: writes the
            // value of PROBE_SKEW (default "0"), so one validator started with PROBE_SKEW=1
            // diverges from the others while they agree among themselves.
            "skewed" => {
                let args = stub.string_args()?;
                let key = arg(&args, &function, "a key")?.to_string();
                let value = std::env::var("PROBE_SKEW").unwrap_or_else(|_| "0".into());
                stub.put_state(&key, value.clone().into_bytes())?;
                Ok(value.into_bytes())
            }
            "nondeterministic" => {
                let args = stub.string_args()?;
                let key = arg(&args, &function, "a key")?.to_string();
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let value = format!("{nanos}-{}", std::process::id());
                stub.put_state(&key, value.clone().into_bytes())?;
                Ok(value.into_bytes())
            }
            // Tries to open a TCP connection to ADDR (ip:port) within two seconds: what a
            // chaincode must not be able to do from its container. Fails with the reason.
            "connect" => {
                let args = stub.string_args()?;
                let address = arg(&args, &function, "an ip:port")?;
                let address: std::net::SocketAddr = address.parse().map_err(|_| {
                    ChaincodeError::BadArguments(format!(
                        "connect takes an ip:port, got {address:?}"
                    ))
                })?;
                match std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)) {
                    Ok(_) => Ok(format!("connected to {address}").into_bytes()),
                    Err(e) => Err(ChaincodeError::Message(format!("connect {address}: {e}"))),
                }
            }
            // Tries to create the file PATH: a read-only root filesystem refuses it.
            "write" => {
                let args = stub.string_args()?;
                let path = arg(&args, &function, "a file path")?;
                match std::fs::write(path, b"probe") {
                    Ok(()) => Ok(format!("wrote {path}").into_bytes()),
                    Err(e) => Err(ChaincodeError::Message(format!("write {path}: {e}"))),
                }
            }
            _ => ProbeChaincode.invoke(stub).await,
        }
    }
}
