//! One running node (a process) against bad input: each refusal is clear, commits nothing,
//! is counted on /metrics, and leaves the node serving; each failing transaction commits with
//! its failure status and no writes; a crashing or hanging chaincode fails only its own
//! transaction and is restarted.
//!
//! The tests share one node and run one at a time (they compare chain heights).

use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard, OnceCell};
use tonic::Code;
use weft_proto::pb::{self, TxStatus};
use weft_proto::signing::tx_signing_bytes;
use weft_proto::tx::sign_transaction;
use weft_proto::{ClientError, TxId, WeftClient};
use weft_tests::{Network, Node, args, chaincode_binary, metric, owner_of, remove_after_exit};

/// Owned by alice; every refused transaction tries to move it.
const GUARDED: &str = "guarded";

struct Fixture {
    network: Network,
    /// Another network (another CA) with the same chain id and client names.
    other: Network,
    node: Node,
}

static FIXTURE: OnceCell<Fixture> = OnceCell::const_new();
static SERIAL: Mutex<()> = Mutex::const_new(());

async fn fixture() -> (&'static Fixture, MutexGuard<'static, ()>) {
    let guard = SERIAL.lock().await;
    let fixture = FIXTURE.get_or_init(setup).await;
    (fixture, guard)
}

async fn setup() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir").keep();
    remove_after_exit(&tmp);
    let network = Network::generate(&tmp).await;
    let other = Network::generate_named(&tmp, "other", &network.chain_id).await;
    let node = Node::start(&network, &[("WEFT_CHAINCODE_EXECUTE_TIMEOUT", "2s")]).await;
    network
        .cli_deploy("asset-transfer", &chaincode_binary("asset-transfer"))
        .await
        .expect_success("deploy asset-transfer");
    network
        .cli_deploy("probe", &chaincode_binary("probe"))
        .await
        .expect_success("deploy probe");
    network
        .cli_invoke(
            "alice",
            "asset-transfer",
            "CreateAsset",
            &[GUARDED, "gold", "1", "alice", "1000"],
        )
        .await
        .expect_success("alice creates the guarded asset");
    Fixture {
        network,
        other,
        node,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Snapshot {
    height: u64,
    state_root: Vec<u8>,
    transactions: u64,
    owner: String,
}

async fn snapshot(client: &WeftClient) -> Snapshot {
    let info = client
        .chain_info()
        .await
        .expect("the node still answers chain info");
    Snapshot {
        height: info.height,
        state_root: info.state_root.to_vec(),
        transactions: info.transactions,
        owner: owner_of(client, GUARDED).await,
    }
}

fn rejected_series(reason: &str) -> String {
    format!("weft_requests_rejected_total{{reason=\"{reason}\"}}")
}

/// The code of each answer of a SubmitBatch (OK for an accepted transaction).
fn answer_codes(answers: &[Result<TxId, tonic::Status>]) -> Vec<Code> {
    answers
        .iter()
        .map(|a| a.as_ref().map_or_else(|s| s.code(), |_| Code::Ok))
        .collect()
}

/// Waits until `id` is committed (found by GetTransaction), and checks that it is VALID.
async fn committed_valid(client: &WeftClient, id: TxId, deadline: std::time::Instant) {
    loop {
        match client.transaction(id).await {
            Ok(info) => {
                let result = info.result.expect("a result");
                assert_eq!(result.status, TxStatus::Valid as i32, "{}", result.message);
                return;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "{id} did not commit: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Commits one valid transaction and checks it is alone in the next block: anything wrongly
/// admitted before it would have been ordered first.
async fn barrier(fixture: &Fixture, before: &Snapshot) {
    let alice = fixture.network.client("alice").await;
    let committed = alice
        .invoke("probe", "put", &args(&["barrier", "x"]))
        .await
        .expect("a valid transaction commits after a refused one");
    assert_eq!(
        committed.block_number, before.height,
        "nothing may be committed before the barrier"
    );
    let block = alice
        .block(committed.block_number)
        .await
        .expect("barrier block");
    assert_eq!(
        block.transactions.len(),
        1,
        "the barrier's block holds only the barrier"
    );
    assert_eq!(
        TxId::of_payload(&block.transactions[0].payload),
        committed.tx_id
    );
    assert_eq!(owner_of(&alice, GUARDED).await, "alice");
}

/// `call` refused with `code` and a message containing each of `contains`.
fn assert_refusal(call: &str, status: &tonic::Status, code: Code, contains: &[&str]) {
    assert_eq!(status.code(), code, "{call}: {status:?}");
    for text in contains {
        assert!(
            status.message().contains(text),
            "{call}'s message should contain {text:?}: {:?}",
            status.message()
        );
    }
}

/// Submits `signed` with Submit, with SubmitAndWait and in a SubmitBatch; each must be refused
/// with `code` and a message containing each of `contains`, counted under `reason`, with
/// nothing committed.
async fn expect_refused(
    fixture: &Fixture,
    signed: pb::SignedTx,
    code: Code,
    contains: &[&str],
    reason: &str,
) {
    let admin = fixture.network.client("admin").await;
    let before = snapshot(&admin).await;
    let counted_before = metric(&fixture.node.metrics().await, &rejected_series(reason));

    let status = admin
        .raw()
        .submit(signed.clone())
        .await
        .expect_err("Submit must refuse it");
    assert_refusal("Submit", &status, code, contains);
    match admin
        .submit_signed_and_wait(signed.clone(), Duration::from_secs(10))
        .await
    {
        Err(ClientError::Rpc(status)) => {
            assert_eq!(status.code(), code, "SubmitAndWait: {status:?}")
        }
        other => panic!("SubmitAndWait must refuse it with {code:?}, got {other:?}"),
    }
    let answers = admin
        .submit_batch(vec![signed])
        .await
        .expect("SubmitBatch answers for each transaction");
    match &answers[..] {
        [Err(status)] => assert_refusal("SubmitBatch", status, code, contains),
        other => panic!("SubmitBatch must refuse it with {code:?}, got {other:?}"),
    }

    assert_eq!(
        snapshot(&admin).await,
        before,
        "a refused transaction changed the chain"
    );
    let counted_after = metric(&fixture.node.metrics().await, &rejected_series(reason));
    assert_eq!(
        counted_after,
        counted_before + 3,
        "{} should count the three refusals",
        rejected_series(reason)
    );
    barrier(fixture, &before).await;
}

/// Invokes as `who` and expects the transaction to commit with `status`, a message containing
/// `contains`, no writes, and the state unchanged.
async fn expect_committed_failure(
    fixture: &Fixture,
    who: &str,
    chaincode: &str,
    function: &str,
    call_args: &[&str],
    status: TxStatus,
    contains: &str,
) -> TxId {
    let client = fixture.network.client(who).await;
    let admin = fixture.network.client("admin").await;
    let before = snapshot(&admin).await;
    let metrics_before = fixture.node.metrics().await;

    let (tx_id, block) = match client.invoke(chaincode, function, &args(call_args)).await {
        Err(ClientError::TxFailed {
            tx_id,
            block,
            status: got,
            message,
        }) => {
            assert_eq!(got, status, "{message}");
            assert!(
                message.contains(contains),
                "the message should contain {contains:?}: {message}"
            );
            (tx_id, block)
        }
        other => panic!(
            "{chaincode} {function} {call_args:?} should commit as {status:?}, got {other:?}"
        ),
    };
    assert_eq!(block, before.height);

    let info = admin
        .transaction(tx_id)
        .await
        .expect("the failed transaction is in the ledger");
    assert_eq!(info.block_number, block);
    let result = info.result.expect("a result");
    assert_eq!(result.status, status as i32);
    assert!(result.message.contains(contains), "{}", result.message);
    assert!(
        result.writes.is_empty(),
        "a failed transaction has no writes: {:?}",
        result.writes
    );
    assert!(result.event.is_none(), "a failed transaction has no event");

    let after = snapshot(&admin).await;
    assert_eq!(after.height, before.height + 1);
    assert_eq!(after.transactions, before.transactions + 1);
    assert_eq!(
        after.state_root, before.state_root,
        "a failed transaction changed the state"
    );
    assert_eq!(after.owner, before.owner);

    let metrics_after = fixture.node.metrics().await;
    let delta = |series: &str| metric(&metrics_after, series) - metric(&metrics_before, series);
    assert_eq!(delta("weft_transactions_failed_total"), 1);
    assert_eq!(delta("weft_transactions_committed_total"), 0);
    tx_id
}

fn transfer_guarded(signer: &weft_proto::Signer, chain_id: &str, to: &str) -> pb::SignedTx {
    sign_transaction(
        signer,
        chain_id,
        "asset-transfer",
        "TransferAsset",
        &args(&[GUARDED, to]),
    )
    .1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_signature_byte_is_refused() {
    let (f, _serial) = fixture().await;
    let mut signed = transfer_guarded(&f.network.signer("alice"), &f.network.chain_id, "mallory");
    let mut signature = signed.signature.to_vec();
    signature[10] ^= 0x01;
    signed.signature = signature.into();
    expect_refused(
        f,
        signed,
        Code::Unauthenticated,
        &["signature does not verify"],
        "bad_signature",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused() {
    let (f, _serial) = fixture().await;
    // Also named alice, so the chaincode would let it move alice's asset if admitted.
    let impostor = f.other.signer("alice");
    let signed = transfer_guarded(&impostor, &f.network.chain_id, "mallory");
    expect_refused(
        f,
        signed,
        Code::Unauthenticated,
        &["certificate is not accepted"],
        "certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validator_identity_may_not_submit() {
    let (f, _serial) = fixture().await;
    let signed = transfer_guarded(
        &f.network.signer("validator0"),
        &f.network.chain_id,
        "mallory",
    );
    expect_refused(
        f,
        signed,
        Code::PermissionDenied,
        &["validator0", "may not submit"],
        "role",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_chain_id_is_refused() {
    let (f, _serial) = fixture().await;
    let signed = transfer_guarded(&f.network.signer("alice"), "another-chain", "mallory");
    expect_refused(
        f,
        signed,
        Code::InvalidArgument,
        &["another-chain", &f.network.chain_id],
        "wrong_chain",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_chaincode_is_not_found_at_submit() {
    let (f, _serial) = fixture().await;
    let alice = f.network.signer("alice");
    let (_, signed) =
        sign_transaction(&alice, &f.network.chain_id, "no-such-chaincode", "Run", &[]);
    expect_refused(
        f,
        signed,
        Code::NotFound,
        &["no-such-chaincode", "not deployed"],
        "unknown_chaincode",
    )
    .await;
    let client = f.network.client("alice").await;
    match client.query("no-such-chaincode", "Run", &[]).await {
        Err(ClientError::Rpc(status)) => assert_eq!(status.code(), Code::NotFound, "{status:?}"),
        other => panic!("a query of an unknown chaincode should be NOT_FOUND, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_payload_bytes_are_invalid_argument() {
    let (f, _serial) = fixture().await;
    let alice = f.network.signer("alice");
    // 0xff bytes are an endless varint: not a TxPayload, whatever the schema.
    let payload = vec![0xffu8; 48];
    let signed = pb::SignedTx {
        signature: alice.sign(&tx_signing_bytes(&payload)).to_vec().into(),
        signer: alice.identity().certificate.clone().into(),
        payload: payload.into(),
    };
    expect_refused(
        f,
        signed,
        Code::InvalidArgument,
        &["not a valid weft.v1.TxPayload"],
        "malformed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_over_the_size_limit_is_refused() {
    let (f, _serial) = fixture().await;
    // 2 MiB: within the gRPC message limit, over the transaction limit.
    let big = "x".repeat(2 * 1024 * 1024);
    let (_, signed) = sign_transaction(
        &f.network.signer("alice"),
        &f.network.chain_id,
        "asset-transfer",
        "TransferAsset",
        &args(&[GUARDED, &big]),
    );
    expect_refused(
        f,
        signed,
        Code::InvalidArgument,
        &["bytes; the limit is"],
        "too_large",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_16_mib_is_refused_and_the_node_keeps_serving() {
    let (f, _serial) = fixture().await;
    let admin = f.network.client("admin").await;
    let before = snapshot(&admin).await;
    let big = "x".repeat(17 * 1024 * 1024);
    let (_, signed) = sign_transaction(
        &f.network.signer("alice"),
        &f.network.chain_id,
        "asset-transfer",
        "TransferAsset",
        &args(&[GUARDED, &big]),
    );
    // A client that lets itself send more than the peer accepts.
    let channel = weft_proto::client::connect_channel(&f.network.address())
        .await
        .expect("connect");
    let mut raw =
        pb::client_client::ClientClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let status = raw
        .submit(signed)
        .await
        .expect_err("a 17 MiB message must be refused");
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "expected a message-size refusal, got {status:?}"
    );
    assert!(status.message().contains("too large"), "{status:?}");
    assert_eq!(snapshot(&admin).await, before);
    let (code, body) = weft_tests::http_get(
        &format!("127.0.0.1:{}", f.network.operations_port),
        "/healthz",
    )
    .await
    .expect("GET /healthz");
    assert_eq!((code, body.trim()), (200, "ok"));
    barrier(f, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_transaction_twice_is_already_exists() {
    let (f, _serial) = fixture().await;
    let alice = f.network.client("alice").await;
    let metrics_before = f.node.metrics().await;

    // Committed, then sent again.
    let (id, signed) = alice.sign("probe", "put", &args(&["dup", "once"]));
    let first = alice
        .submit_signed_and_wait(signed.clone(), Duration::from_secs(30))
        .await
        .expect("first submission");
    assert_eq!(first.status, TxStatus::Valid as i32, "{}", first.message);
    let height = alice.chain_info().await.expect("chain info").height;
    match alice
        .submit_signed_and_wait(signed.clone(), Duration::from_secs(10))
        .await
    {
        Err(ClientError::Rpc(status)) => {
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
            assert!(status.message().contains("already committed"), "{status:?}");
            assert!(
                status
                    .message()
                    .contains(&format!("block {}", first.block_number)),
                "{status:?}"
            );
        }
        other => panic!("a committed transaction sent again must be ALREADY_EXISTS, got {other:?}"),
    }
    let status = alice
        .raw()
        .submit(signed)
        .await
        .expect_err("Submit must refuse it too");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_eq!(alice.chain_info().await.expect("chain info").height, height);

    // Sent twice back to back: accepted once, committed once.
    let (id2, signed2) = alice.sign("probe", "put", &args(&["dup", "twice"]));
    alice
        .raw()
        .submit(signed2.clone())
        .await
        .expect("first Submit");
    let status = alice
        .raw()
        .submit(signed2)
        .await
        .expect_err("second Submit");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert!(status.message().contains("already"), "{status:?}");
    let mut found = None;
    for _ in 0..200 {
        if let Ok(info) = alice.transaction(id2).await {
            found = Some(info);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let info = found.expect("the accepted transaction commits");
    assert_eq!(info.result.expect("result").status, TxStatus::Valid as i32);
    let tip = alice.chain_info().await.expect("chain info").height;
    let mut occurrences = 0;
    for number in 0..tip {
        let block = alice.block(number).await.expect("block");
        occurrences += block
            .transactions
            .iter()
            .filter(|t| {
                let tx = TxId::of_payload(&t.payload);
                tx == id || tx == id2
            })
            .count();
    }
    assert_eq!(
        occurrences, 2,
        "each transaction is in the chain exactly once"
    );
    assert_eq!(
        alice
            .query("probe", "get", &args(&["dup"]))
            .await
            .expect("get"),
        b"twice"
    );

    let metrics_after = f.node.metrics().await;
    let series = rejected_series("duplicate");
    let pending = rejected_series("mempool");
    let refused = metric(&metrics_after, &series) + metric(&metrics_after, &pending)
        - metric(&metrics_before, &series)
        - metric(&metrics_before, &pending);
    assert_eq!(refused, 3, "three duplicate submissions should be counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_batch_answers_each_transaction_and_commits_only_the_good_ones() {
    let (f, _serial) = fixture().await;
    let alice = f.network.client("alice").await;
    let (good_id, good) = alice.sign("probe", "put", &args(&["batch-a", "1"]));
    let (other_id, other) = alice.sign("probe", "put", &args(&["batch-b", "2"]));
    let (_, mut forged) = alice.sign("probe", "put", &args(&["batch-c", "3"]));
    forged.signature = good.signature.clone();
    let (_, unknown) = alice.sign("no-such-chaincode", "put", &args(&["x"]));
    let answers = alice
        .submit_batch(vec![good.clone(), forged, good, unknown, other])
        .await
        .expect("SubmitBatch answers");
    let codes = answer_codes(&answers);
    assert_eq!(
        codes,
        [
            Code::Ok,
            Code::Unauthenticated,
            Code::AlreadyExists,
            Code::NotFound,
            Code::Ok
        ],
        "{answers:?}"
    );
    assert!(matches!(&answers[0], Ok(id) if *id == good_id));
    assert!(matches!(&answers[4], Ok(id) if *id == other_id));
    // The accepted two commit, once each.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for id in [good_id, other_id] {
        committed_valid(&alice, id, deadline).await;
    }
    let value = alice
        .query("probe", "get", &args(&["batch-c"]))
        .await
        .expect("query");
    assert_eq!(value, b"<none>", "the forged transaction wrote");

    // Over the limit, the call itself is refused and nothing is accepted.
    let too_many: Vec<pb::SignedTx> = (0..=1_000)
        .map(|i| {
            alice
                .sign("probe", "put", &args(&["batch-many", &i.to_string()]))
                .1
        })
        .collect();
    match alice.submit_batch(too_many).await {
        Err(ClientError::Rpc(status)) => {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(status.message().contains("at most 1000"), "{status:?}");
        }
        other => panic!("a batch of 1,001 must be refused whole, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_function_commits_as_chaincode_error_naming_it() {
    let (f, _serial) = fixture().await;
    expect_committed_failure(
        f,
        "alice",
        "asset-transfer",
        "BurnAsset",
        &[GUARDED],
        TxStatus::ChaincodeError,
        "BurnAsset",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_arguments_commit_as_chaincode_error() {
    let (f, _serial) = fixture().await;
    expect_committed_failure(
        f,
        "alice",
        "asset-transfer",
        "TransferAsset",
        &[GUARDED],
        TxStatus::ChaincodeError,
        "TransferAsset expects id, newOwner, got 1 argument",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_owner_transfer_fails_and_the_owner_is_unchanged() {
    let (f, _serial) = fixture().await;
    expect_committed_failure(
        f,
        "bob",
        "asset-transfer",
        "TransferAsset",
        &[GUARDED, "bob"],
        TxStatus::ChaincodeError,
        "bob is not the owner of guarded",
    )
    .await;
    assert_eq!(
        owner_of(&f.network.client("bob").await, GUARDED).await,
        "alice"
    );
}

/// After a failed instance, the chaincode serves again: a write commits and reads back.
async fn probe_serves_again(f: &Fixture, key: &str) {
    let alice = f.network.client("alice").await;
    let committed = alice
        .invoke("probe", "put", &args(&[key, "after"]))
        .await
        .expect("the restarted chaincode runs the next transaction");
    assert_eq!(committed.payload, b"after");
    assert_eq!(
        alice
            .query("probe", "get", &args(&[key]))
            .await
            .expect("get"),
        b"after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_chaincode_fails_its_transaction_and_is_restarted() {
    let (f, _serial) = fixture().await;
    let metrics_before = f.node.metrics().await;
    expect_committed_failure(
        f,
        "alice",
        "probe",
        "crash",
        &[],
        TxStatus::ChaincodeCrashed,
        "chaincode probe",
    )
    .await;
    probe_serves_again(f, "after-crash").await;
    let metrics_after = f.node.metrics().await;
    assert_eq!(
        metric(&metrics_after, "weft_chaincode_errors_total")
            - metric(&metrics_before, "weft_chaincode_errors_total"),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_chaincode_times_out_and_is_restarted() {
    let (f, _serial) = fixture().await;
    // The node runs with WEFT_CHAINCODE_EXECUTE_TIMEOUT=2s.
    expect_committed_failure(
        f,
        "alice",
        "probe",
        "spin",
        &[],
        TxStatus::ExecutionTimeout,
        "did not finish",
    )
    .await;
    probe_serves_again(f, "after-spin").await;
}

/// A validator whose mempool is full refuses what it has no room for before checking its
/// signature (an overloaded validator spends no verification on what it refuses): a forged
/// transaction is refused as RESOURCE_EXHAUSTED, counted under "mempool" and not
/// "bad_signature", while two slow transactions fill the mempool; once they have committed,
/// the same transaction is checked and refused as UNAUTHENTICATED. Its own node: the
/// mempool's bound differs from the shared fixture's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mempool_refuses_before_checking_signatures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let node = Node::start(
        &network,
        &[
            ("WEFT_API_MAX_PENDING", "2"),
            ("WEFT_CHAINCODE_EXECUTE_TIMEOUT", "20s"),
        ],
    )
    .await;
    network
        .cli_deploy("probe", &chaincode_binary("probe"))
        .await
        .expect_success("deploy probe");
    let alice = network.client("alice").await;
    // Long enough that a loaded machine is done with the checks below before the first
    // commits (each runs alone: the execute timeout is 20 s).
    let mut slow = Vec::new();
    for _ in 0..2 {
        let (id, signed) = alice.sign("probe", "sleep", &args(&["8000"]));
        alice
            .raw()
            .submit(signed.clone())
            .await
            .expect("a slow transaction is accepted");
        slow.push((id, signed));
    }
    let (_, good) = alice.sign("probe", "put", &args(&["full", "1"]));
    let (_, mut forged) = alice.sign("probe", "put", &args(&["full", "2"]));
    forged.signature = good.signature.clone();
    let before = node.metrics().await;

    let status = alice
        .raw()
        .submit(forged.clone())
        .await
        .expect_err("a full mempool refuses");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("retry shortly"), "{status:?}");
    // One already pending gets its usual answer, not "no room": a client retrying a busy
    // validator learns it may stop.
    let status = alice
        .raw()
        .submit(slow[0].1.clone())
        .await
        .expect_err("already pending");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let answers = alice
        .submit_batch(vec![slow[1].1.clone(), forged.clone(), good])
        .await
        .expect("SubmitBatch answers for each transaction");
    let codes = answer_codes(&answers);
    assert_eq!(
        codes,
        [
            Code::AlreadyExists,
            Code::ResourceExhausted,
            Code::ResourceExhausted
        ],
        "{answers:?}"
    );
    let during = node.metrics().await;
    let counted = |metrics: &str, reason: &str| metric(metrics, &rejected_series(reason));
    assert_eq!(
        counted(&during, "mempool") - counted(&before, "mempool"),
        5,
        "three refused for want of room, two already pending (counted there too)"
    );
    assert_eq!(
        counted(&during, "bad_signature"),
        counted(&before, "bad_signature"),
        "nothing was verified"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    for (id, _) in slow {
        committed_valid(&alice, id, deadline).await;
    }
    // The mempool lets go of a transaction as its block is handed on, a moment after the
    // ledger shows it: until then the answer may still be that there is no room.
    let status = loop {
        let status = alice
            .raw()
            .submit(forged.clone())
            .await
            .expect_err("a forged transaction is refused");
        if status.code() != Code::ResourceExhausted || std::time::Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        counted(&node.metrics().await, "bad_signature"),
        counted(&before, "bad_signature") + 1
    );
}
