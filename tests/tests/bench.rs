//! `weft bench` end to end (a debug build, so the figures mean nothing; the test checks that it
//! measures): against a local cluster it starts, and against an existing network whose node
//! processes it is told; sending with SubmitBatch (the default) and with one Submit each.

use std::path::Path;

use weft_tests::{Network, Node, chaincode_binary, weft};

fn results(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&text).expect("results.json is JSON")
}

/// The checks every measured step must pass: everything sent committed VALID, latency and
/// CPU measured for each process named.
fn check_step(step: &serde_json::Value, processes: &[&str]) {
    let number = |key: &str| step[key].as_f64().unwrap_or(-1.0);
    assert!(number("sent") > 0.0, "{step}");
    assert_eq!(number("committed"), number("sent"), "all committed: {step}");
    assert_eq!(number("committed_invalid"), 0.0, "{step}");
    assert_eq!(number("uncommitted"), 0.0, "{step}");
    assert!(number("committed_tx_per_s") > 0.0, "{step}");
    let latency = &step["latency"];
    let p50 = latency["p50_ms"].as_f64().unwrap_or(0.0);
    let p99 = latency["p99_ms"].as_f64().unwrap_or(0.0);
    assert!(p50 > 0.0 && p99 >= p50, "{latency}");
    assert!(number("blocks") >= 1.0, "{step}");
    let measured: Vec<&str> = step["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["cpu_seconds"].as_f64().unwrap_or(-1.0) >= 0.0)
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in processes {
        assert!(
            measured.contains(name),
            "{name} measured: {measured:?} in {step}"
        );
    }
    assert!(number("max_node_peak_rss_mib") > 0.0, "{step}");
    // Where the time went inside the validators: every stage observed, and a positive mean
    // where a stage cannot take under a microsecond (a batch may find the commit loop idle).
    let stages = step["stages"].as_array().expect("stages");
    for (name, takes_time) in [
        ("admitted_to_committed", true),
        ("ordering", true),
        ("execution_queue", false),
        ("block_execution", true),
    ] {
        let stage = stages
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("stage {name} in {step}"));
        assert!(stage["count"].as_u64().unwrap_or(0) > 0, "{stage}");
        if takes_time {
            assert!(stage["mean_ms"].as_f64().unwrap_or(0.0) > 0.0, "{stage}");
        }
    }
}

#[tokio::test]
async fn bench_measures_a_cluster_it_starts_and_an_existing_one() {
    // A cluster the bench starts: four validator processes, the asset-transfer mix.
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("local");
    let run = weft(&[
        "bench",
        "--validators",
        "4",
        "--sweep",
        "20,40",
        "--duration",
        "4s",
        "--warmup",
        "1s",
        "--assets",
        "20",
        "--out",
        out.to_str().expect("utf-8 path"),
    ])
    .await;
    run.expect_success("weft bench on a local cluster");
    let json = results(&out);
    assert_eq!(json["validators"], 4);
    assert_eq!(json["submit"], "batch", "SubmitBatch by default");
    let machine = &json["machine"];
    assert!(machine["sha256_mib_per_s"].as_f64().expect("SHA-256 speed") > 0.0);
    let single = machine["ed25519_verify_us"]["single"]
        .as_f64()
        .expect("one signature");
    let batched = machine["ed25519_verify_us"]["in_batches_of_64"]
        .as_f64()
        .expect("in batches");
    assert!(single > 0.0 && batched > 0.0, "{machine}");
    let steps = json["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "one step per rate of the sweep");
    for step in steps {
        check_step(
            step,
            &["validator0", "validator3", "validator0/chaincode", "bench"],
        );
        assert_eq!(step["view_changes"], 0.0, "{step}");
    }
    let svg = std::fs::read_to_string(out.join("latency.svg")).expect("latency.svg written");
    assert_eq!(
        svg.matches("<circle").count(),
        3 * 2,
        "p50, p99, p999 per step"
    );
    assert!(run.stdout.contains("committed"), "{}", run.stdout);

    // An existing network: started here, the chaincode deployed; the bench is told where the
    // validators answer and which processes to measure.
    let network = Network::generate_cluster(tmp.path(), 4).await;
    let mut nodes = Vec::new();
    for i in 0..4 {
        nodes.push(Node::start_validator(&network, i, &[]).await);
    }
    network
        .cli_deploy("asset-transfer", &chaincode_binary("asset-transfer"))
        .await
        .expect_success("deploy asset-transfer");
    let endpoints: Vec<String> = nodes.iter().map(|n| n.address()).collect();
    let operations: Vec<String> = nodes.iter().map(|n| n.operations_address()).collect();
    let pids: Vec<String> = nodes.iter().map(|n| n.pid().to_string()).collect();
    let out = tmp.path().join("existing");
    let run = weft(&[
        "bench",
        "--network",
        network.dir.to_str().expect("utf-8 path"),
        "--endpoints",
        &endpoints.join(","),
        "--operations",
        &operations.join(","),
        "--pids",
        &pids.join(","),
        "--submit",
        "unary",
        "--rate",
        "30",
        "--duration",
        "4s",
        "--warmup",
        "1s",
        "--assets",
        "20",
        "--out",
        out.to_str().expect("utf-8 path"),
    ])
    .await;
    run.expect_success("weft bench on an existing network");
    let json = results(&out);
    assert_eq!(json["existing_network"], true);
    assert_eq!(json["submit"], "unary");
    let steps = json["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 1);
    check_step(&steps[0], &["bench"]);
    let processes = steps[0]["processes"].as_array().expect("processes");
    assert!(
        processes.len() >= 5,
        "the four nodes named by --pids (and their chaincode) and the bench: {processes:?}"
    );
    assert_eq!(steps[0]["view_changes"], 0.0);

    // Without --endpoints the existing-network mode says what it needs.
    let refused = weft(&[
        "bench",
        "--network",
        network.dir.to_str().expect("utf-8 path"),
    ])
    .await;
    assert!(!refused.success());
    assert!(refused.stderr.contains("--endpoints"), "{}", refused.stderr);
}
