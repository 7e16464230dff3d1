//! `weft bench`: offers pre-signed transactions open-loop to a local cluster it starts (or to
//! an existing network) at fixed rates, a sweep of rates, or rising rates until the cluster
//! saturates, and measures per step: committed transactions per second, submit-to-commit
//! latency (p50, p99, p999) from the commit stream, CPU seconds per transaction of every node
//! process, its chaincode and the load generator, and the nodes' peak resident memory. Shows
//! progress each second; writes `results.json` and `latency.svg` (latency against throughput).
//! `--targets` runs the sweep and then the points issue 6 sets goals for, and checks them.

mod cluster;
mod load;
mod observe;
mod procstat;
mod report;
mod stages;
mod workload;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use tonic::transport::Channel;
use weft_node::chaincode::runtime::RuntimeKind;
use weft_proto::pb::client_client::ClientClient;
use weft_proto::{WeftClient, pb};

use cluster::{LocalSpec, Target};
use observe::Tracker;
use report::{ProcessCost, Step};
use workload::{Plan, Workload};

#[derive(Args)]
pub struct BenchArgs {
    /// Validators of the local cluster the bench starts (1 orders alone; 4 or more run PBFT).
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// What to submit: asset-transfer (CreateAsset and TransferAsset) or noop (the no-op
    /// chaincode: what the ledger itself costs).
    #[arg(long, value_enum, default_value = "asset-transfer")]
    workload: Workload,
    /// Of asset-transfer transactions, the percentage that are CreateAsset (the rest are
    /// TransferAsset of assets created at setup).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    create_percent: u32,
    /// Assets created at setup (before any measurement) for TransferAsset to move.
    #[arg(long, default_value_t = 1_000)]
    assets: usize,
    /// Offered load in transactions per second (one step), or the first rate of --saturate.
    #[arg(long, default_value_t = 1_000.0)]
    rate: f64,
    /// Several steps at these offered rates, comma separated (instead of --rate).
    #[arg(long, value_delimiter = ',')]
    sweep: Vec<f64>,
    /// Raise the rate by half each step from --rate until the cluster commits less than 90%
    /// of what is offered.
    #[arg(long)]
    saturate: bool,
    /// The issue-6 targets: --saturate to find the peak, then 100 tx/s, 80% and 150% of the
    /// peak, and the peak sustained for --sustain; checks each goal.
    #[arg(long)]
    targets: bool,
    /// How long each step offers load.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long the sustained step of --targets lasts.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    sustain: Duration,
    /// The start of each step left out of throughput, latency and CPU.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// How transactions go out: batch (what is due at one moment for one validator in one
    /// SubmitBatch call) or unary (one Submit call each).
    #[arg(long, value_enum, default_value = "batch")]
    submit: load::SubmitMode,
    /// Most submissions without an answer at once; a send waits for room (reported as lag).
    #[arg(long, default_value_t = 20_000)]
    outstanding: usize,
    /// The chaincode binary (default: the workload's example built beside this binary).
    #[arg(long)]
    chaincode: Option<PathBuf>,
    /// How the local cluster's nodes run chaincode: process, or docker (a FROM scratch
    /// container; needs a statically linked --chaincode).
    #[arg(long, default_value = "process")]
    runtime: RuntimeKind,
    /// Where to write results.json and latency.svg.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Keep the local cluster's directory (keys, ledgers, node logs).
    #[arg(long)]
    keep: bool,
    /// Run against an existing network instead: the directory holding its genesis and the
    /// admin's and alice's identities (as `weft crypto generate` writes it).
    #[arg(long, requires = "endpoints")]
    network: Option<PathBuf>,
    /// The existing network's validator gRPC addresses, comma separated (the first also
    /// serves the commit stream).
    #[arg(long, value_delimiter = ',')]
    endpoints: Vec<String>,
    /// The existing network's operations (HTTP) addresses, for view-change counts.
    #[arg(long, value_delimiter = ',')]
    operations: Vec<String>,
    /// The existing network's node process ids on this machine, to measure their CPU and
    /// memory (with their chaincode child processes).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
}

/// One step to run.
struct StepPlan {
    label: String,
    rate: f64,
    duration: Duration,
}

pub async fn run(args: BenchArgs) -> Result<()> {
    ensure!(
        args.rate > 0.0 && args.sweep.iter().all(|r| *r > 0.0),
        "rates must be above zero"
    );
    ensure!(
        args.duration > args.warmup,
        "--duration ({:?}) must be longer than --warmup ({:?})",
        args.duration,
        args.warmup
    );
    ensure!(args.outstanding > 0, "--outstanding must be above zero");
    // Before any process starts: the machine's speed, recorded with the results.
    sha256_speed();
    signature_speed();
    let mut target = match &args.network {
        Some(network) => {
            Target::existing(
                network.clone(),
                args.endpoints.clone(),
                args.operations.clone(),
                args.pids.clone(),
            )
            .await?
        }
        None => {
            eprintln!(
                "starting {} validator processes ({} chaincode runtime)",
                args.validators, args.runtime
            );
            Target::start_local(&LocalSpec {
                validators: args.validators,
                runtime: args.runtime,
                clients: vec!["alice".into()],
                keep: args.keep,
            })
            .await?
        }
    };
    let outcome = bench(&args, &mut target).await;
    target.stop().await;
    outcome
}

async fn bench(args: &BenchArgs, target: &mut Target) -> Result<()> {
    let admin = target.client(0, "admin").await?;
    let chaincode = args.workload.chaincode();
    if args.network.is_none() {
        let binary = super::demo::find_example_chaincode(chaincode, args.chaincode.clone())?;
        let package = weft_proto::package::build(
            chaincode,
            "1.0",
            &cluster::chaincode_bytes(&binary, args.runtime)?,
        )?;
        let deploying = Instant::now();
        for i in 1..target.endpoints.len() {
            target
                .client(i, "admin")
                .await?
                .install(package.clone())
                .await?;
        }
        let deployed = admin.deploy(package, &[]).await?;
        // Every validator must have the deploy block before it admits the chaincode's
        // transactions.
        for i in 0..target.endpoints.len() {
            let client = target.client(i, "admin").await?;
            let deadline = Instant::now() + Duration::from_secs(60);
            while client.chain_info().await?.height <= deployed.block_number {
                ensure!(
                    Instant::now() < deadline,
                    "validator {i} did not reach the deploy block within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        if args.runtime == RuntimeKind::Docker {
            target.find_chaincode_containers().await?;
            ensure!(
                target.containers.len() == target.endpoints.len(),
                "found {} chaincode containers for {} validators",
                target.containers.len(),
                target.endpoints.len()
            );
        }
        eprintln!(
            "deployed {chaincode} in block {} ({:.0} ms, launch included)",
            deployed.block_number,
            deploying.elapsed().as_secs_f64() * 1e3
        );
    } else {
        let deployed = admin.deployed().await?;
        ensure!(
            deployed.iter().any(|d| d.name == chaincode),
            "{chaincode} is not deployed on this network: deploy it first (`weft chaincode deploy`)"
        );
    }

    let mut alices = Vec::new();
    for i in 0..target.endpoints.len() {
        alices.push(target.client(i, "alice").await?);
    }
    let run_id = format!("b{:x}", rand::random::<u32>());
    let plan = Plan {
        workload: args.workload,
        create_percent: args.create_percent,
        assets: if args.workload == Workload::AssetTransfer {
            args.assets
        } else {
            0
        },
        run: run_id,
    };
    if plan.assets > 0 {
        eprintln!("setup: creating {} assets for alice", plan.assets);
        closed_loop(&alices, plan.setup(&alices[0]), 500).await?;
    }

    let epoch = Instant::now();
    let height = admin.chain_info().await?.height;
    let current: observe::Current = Arc::new(RwLock::new(None));
    let observer = tokio::spawn(observe::follow(admin.clone(), height, current.clone()));
    let clients: Vec<ClientClient<Channel>> = alices.iter().map(|c| c.raw()).collect();

    let mut steps: Vec<Step> = Vec::new();
    let step_plans = initial_steps(args);
    let mut queue: std::collections::VecDeque<StepPlan> = step_plans.into();
    let mut peak = 0.0f64;
    let mut saturated = false;
    let searching = args.saturate || args.targets;
    let mut goals_scheduled = false;
    while let Some(step_plan) = queue.pop_front() {
        if observer.is_finished() {
            bail!(
                "the commit stream ended: {}",
                finished_reason(observer).await
            );
        }
        let step = run_step(
            args,
            target,
            &plan,
            &alices[0],
            &admin,
            &clients,
            epoch,
            &current,
            steps.len(),
            &step_plan,
        )
        .await?;
        println!("{}", step.line());
        if !step.stages.is_empty() {
            println!(
                "{:<14} inside the validators: {}; re-send timer fired {}",
                "",
                stages::line(&step.stages),
                step.retransmissions.unwrap_or(0.0)
            );
        }
        peak = peak.max(step.committed_tx_per_s);
        // Saturated: the cluster commits less than 90% of what was sent, or the load
        // generator could not even send 90% of the offered rate (said, not hidden).
        let cluster_behind = step.committed_tx_per_s < 0.9 * step.sent_tx_per_s;
        let generator_behind = step.sent_tx_per_s < 0.9 * step.offered_tx_per_s;
        if generator_behind {
            eprintln!(
                "the load generator sent {:.0} tx/s of the {:.0} offered: this machine cannot offer more",
                step.sent_tx_per_s, step.offered_tx_per_s
            );
        }
        let below = cluster_behind || generator_behind;
        steps.push(step);
        report::write(&args.out, header(args, target, peak, &[]), &steps)?;
        if searching && !saturated {
            if below || steps.len() >= 14 {
                saturated = true;
                eprintln!("saturated: peak {peak:.0} committed tx/s");
            } else {
                queue.push_back(StepPlan {
                    label: format!("sweep {}", steps.len() + 1),
                    rate: step_plan.rate * 1.5,
                    duration: args.duration,
                });
            }
        }
        if args.targets && saturated && !goals_scheduled {
            goals_scheduled = true;
            queue.clear();
            for (label, rate, duration) in [
                ("100 tx/s", 100.0, args.duration),
                ("80% of peak", 0.8 * peak, args.duration),
                ("150% of peak", 1.5 * peak, args.duration),
                ("peak sustained", peak, args.sustain + args.warmup),
            ] {
                queue.push_back(StepPlan {
                    label: label.into(),
                    rate,
                    duration,
                });
            }
        }
    }
    let goals = if args.targets {
        goals(&steps, peak)
    } else {
        Vec::new()
    };
    for goal in &goals {
        println!(
            "{} {}: {}",
            if goal.met { "MET    " } else { "NOT MET" },
            goal.goal,
            goal.measured
        );
    }
    report::write(&args.out, header(args, target, peak, &goals), &steps)?;
    println!(
        "peak {peak:.0} committed tx/s; results in {}/results.json, plot in {}/latency.svg",
        args.out.display(),
        args.out.display()
    );
    observer.abort();
    Ok(())
}

fn initial_steps(args: &BenchArgs) -> Vec<StepPlan> {
    if !args.sweep.is_empty() {
        return args
            .sweep
            .iter()
            .map(|&rate| StepPlan {
                label: format!("{rate:.0} tx/s"),
                rate,
                duration: args.duration,
            })
            .collect();
    }
    let label = if args.saturate || args.targets {
        "sweep 1".to_string()
    } else {
        format!("{:.0} tx/s", args.rate)
    };
    vec![StepPlan {
        label,
        rate: args.rate,
        duration: args.duration,
    }]
}

#[allow(clippy::too_many_arguments)]
async fn run_step(
    args: &BenchArgs,
    target: &mut Target,
    plan: &Plan,
    owner: &WeftClient,
    admin: &WeftClient,
    clients: &[ClientClient<Channel>],
    epoch: Instant,
    current: &observe::Current,
    index: usize,
    step: &StepPlan,
) -> Result<Step> {
    let count = ((step.rate * step.duration.as_secs_f64()).ceil() as usize).max(1);
    eprintln!(
        "step {}: signing {count} transactions, then offering {:.0} tx/s for {:.0} s",
        step.label,
        step.rate,
        step.duration.as_secs_f64()
    );
    let txs = plan.sign(owner, admin, index, count)?;
    let tracker = Arc::new(Tracker::new(epoch, txs.iter().map(|p| p.id)));
    *current
        .write()
        .map_err(|_| anyhow::anyhow!("tracker lock poisoned"))? = Some(tracker.clone());
    // The validators' counters, read once before the step and once after it.
    let metrics_before = target.metrics().await;
    let counters = Arc::new(load::Counters::default());
    let started = Instant::now();
    let mut offering = tokio::spawn(load::offer(
        clients.to_vec(),
        txs,
        step.rate,
        args.submit,
        args.outstanding,
        tracker.clone(),
        counters.clone(),
    ));
    // Progress each second; CPU readings at the end of warmup and at the last send.
    let window_start = started + args.warmup;
    let mut first_readings = None;
    let mut last_committed = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let offered = loop {
        tokio::select! {
            offered = &mut offering => break offered??,
            _ = tokio::time::sleep_until(window_start.into()), if first_readings.is_none() => {
                first_readings = Some(readings(target));
            }
            _ = ticker.tick() => {
                target.check_alive()?;
                let committed = tracker.committed_count.load(Ordering::Relaxed);
                eprintln!(
                    "  {:>4.0} s  sent {:>8}  committed {:>8} ({:>6}/s)  rejected {}",
                    started.elapsed().as_secs_f64(),
                    counters.sent.load(Ordering::Relaxed),
                    committed,
                    committed - last_committed,
                    counters.rejected.load(Ordering::Relaxed)
                );
                last_committed = committed;
            }
        }
    };
    let last_readings = readings(target);
    let first_readings = first_readings.unwrap_or_else(|| last_readings.clone());
    let first_rejection = offered.answered().await?;
    let rejected = counters.rejected.load(Ordering::Relaxed);
    // Drain: wait until everything accepted committed, or nothing moved for 5 s (at most 60 s).
    let accepted = tracker.len() - rejected;
    let drain_deadline = Instant::now() + Duration::from_secs(60);
    let mut last_progress = (
        Instant::now(),
        tracker.committed_count.load(Ordering::Relaxed),
    );
    loop {
        let committed = tracker.committed_count.load(Ordering::Relaxed);
        if committed >= accepted || Instant::now() > drain_deadline {
            break;
        }
        if committed != last_progress.1 {
            last_progress = (Instant::now(), committed);
        } else if last_progress.0.elapsed() > Duration::from_secs(5) {
            break;
        }
        target.check_alive()?;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics_after = target.metrics().await;
    let increase = |series: &str| match (&metrics_before, &metrics_after) {
        (Some(before), Some(after)) => {
            Some(cluster::metric_sum(after, series) - cluster::metric_sum(before, series))
        }
        _ => None,
    };
    let view_changes = increase("weft_pbft_view_changes_total");
    let retransmissions = increase("weft_pbft_retransmissions_total");
    let mean = |items: &str, batches: &str| match (increase(items), increase(batches)) {
        (Some(items), Some(batches)) if batches > 0.0 => Some(items / batches),
        _ => None,
    };
    let admission_batch_mean = mean(
        "weft_admission_batch_transactions_total",
        "weft_admission_batches_total",
    );
    let relay_batch_mean = mean(
        "weft_pbft_relayed_transactions_total",
        "weft_pbft_relays_total",
    );
    let committed = tracker.committed_count.load(Ordering::Relaxed);
    let admission_checks_per_commit = increase("weft_admission_batch_transactions_total")
        .filter(|_| committed > 0)
        .map(|checked| checked / committed as f64);
    let stages = match (&metrics_before, &metrics_after) {
        (Some(before), Some(after)) => stages::between(
            &stages::Reading::from_texts(before),
            &stages::Reading::from_texts(after),
        ),
        _ => Vec::new(),
    };
    let achieved_rate =
        tracker.len() as f64 / offered.ended.duration_since(offered.started).as_secs_f64();

    let stamps = tracker.stamps();
    let (tps, latency) = report::summarise(
        &stamps,
        tracker.at(window_start.min(offered.ended)),
        tracker.at(offered.ended),
    );
    let window_seconds = offered
        .ended
        .saturating_duration_since(window_start)
        .as_secs_f64();
    let committed_in_window = tps * window_seconds;
    let processes = costs(&first_readings, &last_readings, committed_in_window);
    let per_tx = |kind: ProcessKind| {
        processes
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, p)| p.cpu_ms_per_tx)
            .sum::<f64>()
    };
    Ok(Step {
        label: step.label.clone(),
        offered_tx_per_s: step.rate,
        duration_s: step.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        sent: tracker.len(),
        sent_tx_per_s: achieved_rate,
        rejected,
        first_rejection,
        committed,
        committed_invalid: tracker.invalid.load(Ordering::Relaxed),
        first_invalid: tracker
            .first_invalid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone(),
        uncommitted: accepted.saturating_sub(committed),
        committed_tx_per_s: tps,
        latency,
        view_changes,
        retransmissions,
        admission_batch_mean,
        relay_batch_mean,
        admission_checks_per_commit,
        stages,
        blocks: tracker.blocks.load(Ordering::Relaxed),
        mean_block_transactions: tracker.block_transactions.load(Ordering::Relaxed) as f64
            / tracker.blocks.load(Ordering::Relaxed).max(1) as f64,
        max_send_lag_ms: offered.max_lag.as_secs_f64() * 1e3,
        validators_cpu_ms_per_tx: per_tx(ProcessKind::Node),
        chaincode_cpu_ms_per_tx: per_tx(ProcessKind::Chaincode),
        bench_cpu_ms_per_tx: per_tx(ProcessKind::Bench),
        max_node_peak_rss_mib: processes
            .iter()
            .filter(|(k, _)| *k == ProcessKind::Node)
            .map(|(_, p)| p.peak_rss_mib)
            .fold(0.0, f64::max),
        processes: processes.into_iter().map(|(_, p)| p).collect(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcessKind {
    Node,
    Chaincode,
    Bench,
}

#[derive(Clone)]
struct Labelled {
    kind: ProcessKind,
    name: String,
    pid: u32,
    reading: procstat::Reading,
}

/// Every measured process now: each node, each of its descendants (its chaincode), and the
/// bench itself.
fn readings(target: &Target) -> Vec<Labelled> {
    let mut all = Vec::new();
    let mut push = |kind, name: String, pid| {
        if let Some(reading) = procstat::read(pid) {
            all.push(Labelled {
                kind,
                name,
                pid,
                reading,
            });
        }
    };
    for node in &target.processes {
        push(ProcessKind::Node, node.name.clone(), node.pid);
        for child in procstat::descendants(node.pid) {
            push(
                ProcessKind::Chaincode,
                format!("{}/{}", node.name, procstat::name(child)),
                child,
            );
        }
    }
    for container in &target.containers {
        push(
            ProcessKind::Chaincode,
            container.name.clone(),
            container.pid,
        );
    }
    push(ProcessKind::Bench, "bench".into(), std::process::id());
    all
}

/// CPU over the window per process (present at both readings) and its peak memory.
fn costs(first: &[Labelled], last: &[Labelled], committed: f64) -> Vec<(ProcessKind, ProcessCost)> {
    last.iter()
        .filter_map(|end| {
            let start = first.iter().find(|s| s.pid == end.pid)?;
            let cpu_seconds = end.reading.cpu_seconds - start.reading.cpu_seconds;
            Some((
                end.kind,
                ProcessCost {
                    name: end.name.clone(),
                    pid: end.pid,
                    cpu_seconds,
                    cpu_ms_per_tx: if committed > 0.0 {
                        cpu_seconds * 1e3 / committed
                    } else {
                        0.0
                    },
                    rss_mib: end.reading.rss_bytes as f64 / (1024.0 * 1024.0),
                    peak_rss_mib: end.reading.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                },
            ))
        })
        .collect()
}

/// One of issue 6's goals and whether the run met it.
#[derive(serde::Serialize)]
struct Goal {
    goal: &'static str,
    measured: String,
    met: bool,
}

fn goals(steps: &[Step], peak: f64) -> Vec<Goal> {
    let find = |label: &str| steps.iter().find(|s| s.label == label);
    let mut goals = Vec::new();
    if let Some(s) = find("peak sustained") {
        goals.push(Goal {
            goal: "at least 5,000 committed tx/s sustained (stretch 10,000)",
            measured: format!(
                "{:.0} tx/s over {:.0} s",
                s.committed_tx_per_s,
                s.duration_s - s.warmup_s
            ),
            met: s.committed_tx_per_s >= 5_000.0,
        });
    }
    if let Some(s) = find("80% of peak") {
        goals.push(Goal {
            goal: "p99 at most 500 ms at 80% of peak",
            measured: format!(
                "p99 {:.1} ms at {:.0} tx/s",
                s.latency.p99_ms, s.offered_tx_per_s
            ),
            met: s.latency.p99_ms <= 500.0 && s.latency.p99_ms > 0.0,
        });
    }
    if let Some(s) = find("100 tx/s") {
        goals.push(Goal {
            goal: "p50 at most 25 ms at 100 tx/s",
            measured: format!("p50 {:.1} ms", s.latency.p50_ms),
            met: s.latency.p50_ms <= 25.0 && s.latency.p50_ms > 0.0,
        });
    }
    if let Some(s) = find("150% of peak") {
        goals.push(Goal {
            goal: "at 150% of peak offered: at least 90% of peak committed, no view change",
            measured: format!(
                "{:.0} tx/s committed ({:.0}% of peak {peak:.0}), view changes: {}",
                s.committed_tx_per_s,
                100.0 * s.committed_tx_per_s / peak.max(1.0),
                s.view_changes
                    .map_or("not measured (no --operations)".to_string(), |v| v
                        .to_string())
            ),
            met: s.committed_tx_per_s >= 0.9 * peak && s.view_changes == Some(0.0),
        });
    }
    let invalid: usize = steps.iter().map(|s| s.committed_invalid).sum();
    goals.push(Goal {
        goal: "every transaction commits VALID (a failing workload measures nothing)",
        measured: format!("{invalid} committed not VALID"),
        met: invalid == 0,
    });
    let rss = steps
        .iter()
        .map(|s| s.max_node_peak_rss_mib)
        .fold(0.0, f64::max);
    goals.push(Goal {
        goal: "each peer under 300 MiB resident",
        measured: format!("largest node peak {rss:.0} MiB"),
        met: rss > 0.0 && rss < 300.0,
    });
    goals
}

fn header(args: &BenchArgs, target: &Target, peak: f64, goals: &[Goal]) -> serde_json::Value {
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    serde_json::json!({
        "title": format!(
            "weft bench: {} validators, {} ({} runtime)",
            target.endpoints.len(), args.workload.as_str(), args.runtime
        ),
        "date": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "memory_gib": memory_kib as f64 / (1024.0 * 1024.0),
            "cpu_model": cpu_model(),
            "sha256_mib_per_s": sha256_speed(),
            "ed25519_verify_us": {
                "single": signature_speed().single_us,
                "in_batches_of_64": signature_speed().batched_us,
            },
        },
        "validators": target.endpoints.len(),
        "existing_network": args.network.is_some(),
        "runtime": args.runtime.as_str(),
        "workload": args.workload.as_str(),
        "submit": args.submit.as_str(),
        "create_percent": args.create_percent,
        "peak_committed_tx_per_s": peak,
        "goals": goals,
    })
}

/// The processor's model name as the kernel reports it (empty where it does not).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_default()
}

/// One core's SHA-256 speed over 64 MiB, measured once per bench before any load (the first
/// call; later ones give the same figure): machines of one kind (and one machine from day to
/// day) differ, and results compare only where this does too.
fn sha256_speed() -> f64 {
    static SPEED: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SPEED.get_or_init(|| {
        use sha2::Digest;
        let block = vec![0x5au8; 1024 * 1024];
        let started = std::time::Instant::now();
        let mut hasher = sha2::Sha256::new();
        for _ in 0..64 {
            hasher.update(&block);
        }
        std::hint::black_box(hasher.finalize());
        64.0 / started.elapsed().as_secs_f64()
    })
}

/// One core's Ed25519 verification cost, in microseconds per signature.
#[derive(Debug, Clone, Copy)]
struct SignatureSpeed {
    /// One signature checked alone, as a consensus envelope is.
    single_us: f64,
    /// Per signature of a batch of 64 client transactions checked together, as the
    /// validators check them (every validator checks every transaction once).
    batched_us: f64,
}

/// Measured once per bench before any load, like [`sha256_speed`]: it bounds what the
/// validators can commit on this machine (each verifies every client signature).
fn signature_speed() -> SignatureSpeed {
    static SPEED: std::sync::OnceLock<SignatureSpeed> = std::sync::OnceLock::new();
    *SPEED.get_or_init(|| {
        use ed25519_dalek::Signer;
        use weft_node::types::SignedTransaction;
        const BATCH: usize = 64;
        const ROUNDS: usize = 20;
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let signer = weft_proto::Identity {
            name: "bench".into(),
            organization: "bench".into(),
            role: weft_proto::Role::Client,
            verifying_key: key.verifying_key(),
            certificate: Vec::new(),
        };
        let transactions: Vec<SignedTransaction> = (0..BATCH)
            .map(|i| {
                let payload = bytes::Bytes::from(vec![i as u8; 200]);
                let signature = key.sign(&weft_proto::signing::tx_signing_bytes(&payload));
                SignedTransaction {
                    id: weft_proto::TxId::of_payload(&payload),
                    payload,
                    signer: bytes::Bytes::new(),
                    signature: bytes::Bytes::copy_from_slice(&signature.to_bytes()),
                }
            })
            .collect();
        let items: Vec<_> = transactions.iter().map(|tx| (&signer, tx)).collect();
        let started = Instant::now();
        for _ in 0..ROUNDS {
            let verdicts = weft_node::crypto::verify_tx_signatures(&items);
            assert!(
                verdicts.iter().all(|v| *v),
                "the bench's own signatures verify"
            );
        }
        let batched_us = started.elapsed().as_secs_f64() * 1e6 / (ROUNDS * BATCH) as f64;
        let message = weft_proto::signing::tx_signing_bytes(&transactions[0].payload);
        let signature = key.sign(&message);
        let started = Instant::now();
        for _ in 0..ROUNDS * BATCH {
            std::hint::black_box(signer.verify(&message, &signature.to_bytes()));
        }
        let single_us = started.elapsed().as_secs_f64() * 1e6 / (ROUNDS * BATCH) as f64;
        SignatureSpeed {
            single_us,
            batched_us,
        }
    })
}

async fn finished_reason(task: tokio::task::JoinHandle<Result<()>>) -> String {
    match task.await {
        Ok(Ok(())) => "no reason given".into(),
        Ok(Err(e)) => format!("{e:#}"),
        Err(e) => e.to_string(),
    }
}

/// Submits every transaction with SubmitAndWait over `clients` round-robin, at most
/// `in_flight` at once; fails with the first failure's reason unless all commit as VALID (setup
/// only: not measured).
async fn closed_loop(
    clients: &[WeftClient],
    txs: Vec<pb::SignedTx>,
    in_flight: usize,
) -> Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = Vec::with_capacity(txs.len());
    for (i, tx) in txs.into_iter().enumerate() {
        let permit = permits.clone().acquire_owned().await?;
        let client = clients[i % clients.len()].clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            match client
                .submit_signed_and_wait(tx, Duration::from_secs(120))
                .await
            {
                Ok(s) if s.status == pb::TxStatus::Valid as i32 => None,
                Ok(s) => Some(format!("committed as {:?}: {}", s.status(), s.message)),
                Err(e) => Some(e.to_string()),
            }
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        if let Some(reason) = task.await.context("a setup submission panicked")? {
            failures.push(reason);
        }
    }
    match failures.first() {
        None => Ok(()),
        Some(first) => bail!(
            "{} of the setup transactions failed; the first: {first}",
            failures.len()
        ),
    }
}
