//! The resumable server streams, against an in-process node: blocks from a height (stored ones
//! in order, then live ones) and chaincode events (filtered, replayed from a height).

use std::time::Duration;

use tonic::Streaming;
use weft_node::node::NodeHandle;
use weft_proto::pb;
use weft_proto::{TxId, WeftClient};
use weft_tests::{Network, args, chaincode_package};

const WAIT: Duration = Duration::from_secs(20);

struct Setup {
    _tmp: tempfile::TempDir,
    node: NodeHandle,
    alice: WeftClient,
}

/// An in-process node with the probe deployed.
async fn setup() -> Setup {
    let tmp = tempfile::tempdir().expect("tempdir");
    let network = Network::generate(tmp.path()).await;
    let node = weft_tests::start_in_process(&network).await;
    let address = node.grpc_address.to_string();
    let admin = WeftClient::connect(&address, network.signer("admin"), &network.chain_id)
        .await
        .expect("connect");
    let package = chaincode_package("probe");
    admin.deploy(package, &[]).await.expect("deploy the probe");
    let alice = admin.with_signer(network.signer("alice"));
    Setup {
        _tmp: tmp,
        node,
        alice,
    }
}

async fn next<T>(stream: &mut Streaming<T>, what: &str) -> T {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(item))) => item,
        Ok(Ok(None)) => panic!("{what}: the stream ended"),
        Ok(Err(status)) => panic!("{what}: {status:?}"),
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

/// Nothing more arrives for a moment.
async fn quiet<T: std::fmt::Debug>(stream: &mut Streaming<T>) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(500), stream.message()).await {
        panic!("the stream should be quiet, got {item:?}");
    }
}

async fn put(alice: &WeftClient, key: &str, value: &str) -> (TxId, u64) {
    let committed = alice
        .invoke("probe", "put", &args(&[key, value]))
        .await
        .expect("put");
    (committed.tx_id, committed.block_number)
}

fn number(block: &pb::Block) -> u64 {
    block.header.as_ref().expect("header").number
}

fn tx_ids(block: &pb::Block) -> Vec<TxId> {
    block
        .transactions
        .iter()
        .map(|t| TxId::of_payload(&t.payload))
        .collect()
}

async fn stream_blocks(alice: &WeftClient, from_height: u64) -> Streaming<pb::Block> {
    alice
        .raw()
        .stream_blocks(pb::StreamBlocksRequest {
            from_height,
            certified_only: false,
        })
        .await
        .expect("StreamBlocks")
        .into_inner()
}

async fn stream_events(
    alice: &WeftClient,
    from_height: u64,
    chaincode: &str,
    name: &str,
) -> Streaming<pb::EventMessage> {
    alice
        .raw()
        .stream_events(pb::StreamEventsRequest {
            from_height,
            chaincode: chaincode.into(),
            name: name.into(),
        })
        .await
        .expect("StreamEvents")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_blocks_from_zero_delivers_the_chain_in_order_then_live_blocks() {
    let s = setup().await;
    let mut written = Vec::new();
    for i in 0..3 {
        written.push(put(&s.alice, &format!("k{i}"), "v").await);
    }
    let height = s.alice.chain_info().await.expect("chain info").height;
    assert_eq!(height, 5, "genesis, deploy, three puts");

    let mut stream = stream_blocks(&s.alice, 0).await;
    let mut previous_hash = vec![0u8; 32];
    for expected in 0..height {
        let block = next(&mut stream, &format!("stored block {expected}")).await;
        assert_eq!(number(&block), expected, "blocks arrive in order from 0");
        let stored = s.alice.block(expected).await.expect("GetBlock");
        assert_eq!(
            block.hash, stored.hash,
            "block {expected} as streamed and as stored"
        );
        assert_eq!(
            block
                .header
                .as_ref()
                .expect("header")
                .previous_hash
                .to_vec(),
            previous_hash
        );
        previous_hash = block.hash.to_vec();
    }
    for (tx_id, block_number) in &written {
        let stored = s.alice.block(*block_number).await.expect("GetBlock");
        assert_eq!(tx_ids(&stored), vec![*tx_id]);
    }
    quiet(&mut stream).await;

    // Live: the next block arrives on the open stream.
    let (tx_id, block_number) = put(&s.alice, "live", "v").await;
    assert_eq!(block_number, height);
    let block = next(&mut stream, "the live block").await;
    assert_eq!(number(&block), height);
    assert_eq!(
        block
            .header
            .as_ref()
            .expect("header")
            .previous_hash
            .to_vec(),
        previous_hash
    );
    assert_eq!(tx_ids(&block), vec![tx_id]);
    s.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_events_delivers_a_probe_event_and_filters_by_name() {
    let s = setup().await;
    let from = s.alice.chain_info().await.expect("chain info").height;
    let mut all = stream_events(&s.alice, from, "probe", "").await;
    let mut pong_only = stream_events(&s.alice, from, "", "pong").await;
    let mut other_chaincode = stream_events(&s.alice, from, "asset-transfer", "").await;

    // A failed transaction's event is never delivered.
    let failed = s
        .alice
        .invoke("probe", "event_then_fail", &args(&["ping", "lost"]))
        .await;
    assert!(failed.is_err(), "event_then_fail should fail: {failed:?}");
    let ping = s
        .alice
        .invoke("probe", "event", &args(&["ping", "payload-1"]))
        .await
        .expect("event ping");
    let pong = s
        .alice
        .invoke("probe", "event", &args(&["pong", "payload-2"]))
        .await
        .expect("event pong");

    let message = next(&mut all, "the ping event").await;
    let event = message.event.expect("event");
    assert_eq!(
        (event.chaincode.as_str(), event.name.as_str()),
        ("probe", "ping")
    );
    assert_eq!(event.payload.as_ref(), b"payload-1");
    assert_eq!(message.tx_id.as_ref(), ping.tx_id.as_bytes());
    assert_eq!(message.block_number, ping.block_number);
    let message = next(&mut all, "the pong event").await;
    assert_eq!(message.tx_id.as_ref(), pong.tx_id.as_bytes());
    assert_eq!(message.event.expect("event").payload.as_ref(), b"payload-2");

    let message = next(&mut pong_only, "the pong event, filtered by name").await;
    assert_eq!(message.event.expect("event").name, "pong");
    assert_eq!(message.tx_id.as_ref(), pong.tx_id.as_bytes());
    quiet(&mut pong_only).await;
    quiet(&mut other_chaincode).await;
    s.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_resume_from_a_height() {
    let s = setup().await;
    let event = s
        .alice
        .invoke("probe", "event", &args(&["early", "e1"]))
        .await
        .expect("event");
    let mut written = Vec::new();
    for i in 0..4 {
        written.push(put(&s.alice, &format!("r{i}"), "v").await);
    }
    let tip = s.alice.chain_info().await.expect("chain info").height;

    // Resume blocks from the middle: exactly the rest, in order.
    let resume = written[1].1;
    let mut blocks = stream_blocks(&s.alice, resume).await;
    for expected in resume..tip {
        let block = next(&mut blocks, &format!("block {expected}")).await;
        assert_eq!(number(&block), expected);
        let index = (expected - written[0].1) as usize;
        assert_eq!(tx_ids(&block), vec![written[index].0]);
    }
    quiet(&mut blocks).await;
    let (tx_id, block_number) = put(&s.alice, "after-resume", "v").await;
    let block = next(&mut blocks, "the live block after resuming").await;
    assert_eq!(
        (number(&block), tx_ids(&block)),
        (block_number, vec![tx_id])
    );

    // Events replay from a past height, and skip what lies before it.
    let mut replay = stream_events(&s.alice, event.block_number, "probe", "").await;
    let message = next(&mut replay, "the replayed event").await;
    assert_eq!(message.block_number, event.block_number);
    assert_eq!(message.event.expect("event").name, "early");
    let mut later = stream_events(&s.alice, event.block_number + 1, "probe", "").await;
    quiet(&mut later).await;
    s.node.shutdown().await;
}
