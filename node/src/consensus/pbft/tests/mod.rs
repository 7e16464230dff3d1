//! Table-driven tests of the PBFT core, named after the behaviour the paper specifies, run on
//! single replicas or on the in-memory network of `harness`. Invariant checked everywhere the
//! harness runs: in-order, once-only execution, persist-before-sign, `last_executed` never
//! decreasing, and no fork between replicas.

mod harness;

use std::collections::BTreeSet;

use super::*;
use harness::*;

/// Seeds per scenario of the lossy-network test.
const SEEDS: u64 = 300;

fn view_change(new_view: u64) -> ViewChange<TestRequest> {
    ViewChange {
        new_view: View(new_view),
        stable_checkpoint: Sequence::GENESIS,
        checkpoint_proof: Vec::new(),
        prepared: Vec::new(),
    }
}

fn new_view_from(view: u64, senders: &[u32]) -> NewView<TestRequest> {
    NewView {
        view: View(view),
        view_changes: senders
            .iter()
            .map(|sender| verified(*sender, view_change(view)))
            .collect(),
        pre_prepares: Vec::new(),
    }
}

fn prepare(view: u64, sequence: u64, batch: &[u64]) -> Prepare {
    Prepare {
        view: View(view),
        sequence: Sequence(sequence),
        digest: digest_of(batch),
    }
}

fn commit(view: u64, sequence: u64, batch: &[u64]) -> Commit {
    Commit {
        view: View(view),
        sequence: Sequence(sequence),
        digest: digest_of(batch),
    }
}

fn checkpoint(sequence: u64, state_digest: StateDigest) -> Checkpoint {
    Checkpoint {
        sequence: Sequence(sequence),
        state_digest,
    }
}

/// A prepared certificate for `batch` at (view, sequence): the primary's pre-prepare and
/// prepares from `preparers`.
fn certificate(
    config: &Config,
    view: u64,
    sequence: u64,
    batch: &[u64],
    preparers: &[u32],
) -> PreparedCertificate<TestRequest> {
    PreparedCertificate {
        pre_prepare: verified(
            config.primary(View(view)).0,
            pre_prepare(view, sequence, batch),
        ),
        prepares: preparers
            .iter()
            .map(|from| verified(*from, prepare(view, sequence, batch)))
            .collect(),
    }
}

fn broadcasts(actions: &[TestAction], kind: MessageKind) -> Vec<TestMessage> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Broadcast(message) if message.kind() == kind => Some(message.clone()),
            _ => None,
        })
        .collect()
}

fn position(actions: &[TestAction], wanted: impl Fn(&TestAction) -> bool) -> Option<usize> {
    actions.iter().position(wanted)
}

fn live_in_view(net: &Net, ids: &[u32], view: u64) -> bool {
    ids.iter().all(|id| {
        let replica = net.replica(*id);
        replica.view() == View(view) && !replica.is_view_changing()
    })
}

#[test]
fn normal_case_commits_and_executes_in_order_on_all_replicas() {
    struct Case {
        name: &'static str,
        batch_size: usize,
        submit_to: u32,
        requests: &'static [u64],
        ticks: u64,
        expected: &'static [(u64, &'static [u64])],
    }
    let cases = [
        Case {
            name: "a client sends to the primary",
            batch_size: 1,
            submit_to: 0,
            requests: &[1, 2, 3],
            ticks: 0,
            expected: &[(1, &[1]), (2, &[2]), (3, &[3])],
        },
        Case {
            name: "a client sends to a backup, which forwards to the primary",
            batch_size: 1,
            submit_to: 2,
            requests: &[1, 2, 3],
            ticks: 0,
            expected: &[(1, &[1]), (2, &[2]), (3, &[3])],
        },
        Case {
            // Requests 2 and 3 arrive while 1 is being agreed on: a full batch goes at once;
            // 4 waits until the pipeline is empty, then goes alone.
            name: "an idle primary proposes at once, a busy one fills batches",
            batch_size: 2,
            submit_to: 0,
            requests: &[1, 2, 3, 4],
            ticks: 0,
            expected: &[(1, &[1]), (2, &[2, 3]), (3, &[4])],
        },
        Case {
            name: "what waited for a busy pipeline goes as one batch when it empties",
            batch_size: 3,
            submit_to: 0,
            requests: &[1, 2, 3],
            ticks: 0,
            expected: &[(1, &[1]), (2, &[2, 3])],
        },
    ];
    for case in cases {
        let config = Config {
            batch_size: case.batch_size,
            ..test_config()
        };
        let mut net = Net::new(&config);
        // All requests arrive before any message is delivered.
        for request in case.requests {
            net.handle(case.submit_to, Event::ClientRequest(TestRequest(*request)));
        }
        net.run();
        net.ticks(case.ticks);
        let expected: Vec<(u64, Vec<u64>)> = case
            .expected
            .iter()
            .map(|(sequence, batch)| (*sequence, batch.to_vec()))
            .collect();
        for node in &net.nodes {
            assert_eq!(node.executed_ids(), expected, "{}", case.name);
            assert_eq!(
                node.committed.len(),
                expected.len(),
                "{}: one Committed per sequence",
                case.name
            );
            assert_eq!(node.replica.view(), View(0), "{}", case.name);
            assert_eq!(
                node.replica.last_executed(),
                Sequence(expected.len() as u64),
                "{}",
                case.name
            );
        }
        net.assert_agreement();
    }
}

#[test]
fn a_busy_primary_proposes_a_partial_batch_when_its_batch_timer_expires() {
    let config = Config {
        batch_size: 4,
        ..test_config()
    };
    let mut net = Net::new(&config);
    let proposed = |actions: &[TestAction]| -> Vec<(u64, Vec<u64>)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Broadcast(Message::PrePrepare(p)) => Some((
                    p.sequence.0,
                    p.batch.iter().map(|r| r.0).collect::<Vec<u64>>(),
                )),
                _ => None,
            })
            .collect()
    };
    // Nothing is delivered: request 1 goes alone (the pipeline was empty), 2 and 3 wait for it.
    let first = net.handle(0, Event::ClientRequest(TestRequest(1)));
    assert_eq!(proposed(&first), [(1, vec![1])]);
    for request in [2, 3] {
        let actions = net.handle(0, Event::ClientRequest(TestRequest(request)));
        assert!(proposed(&actions).is_empty(), "request {request} waits");
    }
    // The batch timer (one tick) expires while sequence 1 is still being agreed on.
    let actions = net.handle(0, Event::Tick);
    assert_eq!(proposed(&actions), [(2, vec![2, 3])]);
    net.run();
    for node in &net.nodes {
        assert_eq!(node.executed_ids(), [(1, vec![1]), (2, vec![2, 3])]);
    }
    net.assert_agreement();
}

#[test]
fn prepared_requires_2f_matching_prepares() {
    struct Case {
        name: &'static str,
        replica: u32,
        prepares: Vec<(u32, Prepare)>,
        prepared: bool,
    }
    let good = |from: u32| (from, prepare(0, 1, &[1]));
    let cases = [
        Case {
            name: "a backup with only its own prepare",
            replica: 1,
            prepares: vec![],
            prepared: false,
        },
        Case {
            name: "a backup with its own and one matching prepare",
            replica: 1,
            prepares: vec![good(2)],
            prepared: true,
        },
        Case {
            name: "a backup with its own and one prepare for another digest",
            replica: 1,
            prepares: vec![(2, prepare(0, 1, &[9]))],
            prepared: false,
        },
        Case {
            name: "a prepare from the primary does not count",
            replica: 1,
            prepares: vec![good(0)],
            prepared: false,
        },
        Case {
            name: "a prepare for another view does not count",
            replica: 1,
            prepares: vec![(2, prepare(1, 1, &[1]))],
            prepared: false,
        },
        Case {
            name: "the primary with one backup's prepare",
            replica: 0,
            prepares: vec![good(1)],
            prepared: false,
        },
        Case {
            name: "the primary with the same backup's prepare twice",
            replica: 0,
            prepares: vec![good(1), good(1)],
            prepared: false,
        },
        Case {
            name: "the primary with two backups' prepares",
            replica: 0,
            prepares: vec![good(1), good(3)],
            prepared: true,
        },
    ];
    let config = test_config();
    for case in cases {
        let mut replica = replica(&config, case.replica);
        let first = if case.replica == 0 {
            replica.handle(Event::ClientRequest(TestRequest(1)))
        } else {
            replica.handle(message(0, Message::PrePrepare(pre_prepare(0, 1, &[1]))))
        };
        assert!(
            broadcasts(&first, MessageKind::Commit).is_empty(),
            "{}",
            case.name
        );
        let mut actions = Vec::new();
        for (from, prepare) in case.prepares {
            actions.extend(replica.handle(message(from, Message::Prepare(prepare))));
        }
        let sent_commit = position(&actions, |action| {
            matches!(action, Action::Broadcast(Message::Commit(_)))
        });
        assert_eq!(sent_commit.is_some(), case.prepared, "{}", case.name);
        if let Some(sent_commit) = sent_commit {
            let persisted = position(&actions, |action| match action {
                Action::Persist(record) => {
                    record.phase == Phase::Commit
                        && matches!(&record.detail, RecordDetail::Prepared(certificate)
                            if certificate.prepares.len() == 2
                                && certificate.digest() == digest_of(&[1]))
                }
                _ => false,
            })
            .expect("the commit's prepared certificate is persisted");
            assert!(
                persisted < sent_commit,
                "{}: persist before send",
                case.name
            );
        }
    }
}

#[test]
fn invalid_input_is_refused_with_a_counted_reason_and_no_actions() {
    struct Case {
        name: &'static str,
        replica: u32,
        setup: Vec<TestEvent>,
        input: TestEvent,
        reason: RejectReason,
    }
    let config = Config {
        batch_size: 4,
        future_messages_per_replica: 3,
        ..test_config()
    };
    let bad_digest = PrePrepare {
        digest: digest_of(&[2]),
        ..pre_prepare(0, 1, &[1])
    };
    let short_proof = ViewChange {
        stable_checkpoint: Sequence(2),
        checkpoint_proof: vec![
            verified(1, checkpoint(2, [1; 32])),
            verified(2, checkpoint(2, [1; 32])),
        ],
        ..view_change(1)
    };
    let thin_certificate = ViewChange {
        prepared: vec![certificate(&config, 0, 1, &[1], &[1])],
        ..view_change(1)
    };
    let cases = vec![
        Case {
            name: "a message from outside the configured replicas",
            replica: 1,
            setup: vec![],
            input: message(9, Message::Prepare(prepare(0, 1, &[1]))),
            reason: RejectReason::NonMember,
        },
        Case {
            name: "a pre-prepare from a backup",
            replica: 1,
            setup: vec![],
            input: message(2, Message::PrePrepare(pre_prepare(0, 1, &[1]))),
            reason: RejectReason::NotFromPrimary,
        },
        Case {
            name: "a pre-prepare whose digest is not its batch's",
            replica: 1,
            setup: vec![],
            input: message(0, Message::PrePrepare(bad_digest)),
            reason: RejectReason::BadDigest,
        },
        Case {
            name: "a batch holding one request twice",
            replica: 1,
            setup: vec![],
            input: message(0, Message::PrePrepare(pre_prepare(0, 1, &[1, 1]))),
            reason: RejectReason::InvalidBatch,
        },
        Case {
            name: "a batch larger than batch_size",
            replica: 1,
            setup: vec![],
            input: message(0, Message::PrePrepare(pre_prepare(0, 1, &[1, 2, 3, 4, 5]))),
            reason: RejectReason::InvalidBatch,
        },
        Case {
            name: "a prepare from the primary",
            replica: 1,
            setup: vec![],
            input: message(0, Message::Prepare(prepare(0, 1, &[1]))),
            reason: RejectReason::PrepareFromPrimary,
        },
        Case {
            name: "a second prepare from one replica with another digest",
            replica: 1,
            setup: vec![message(2, Message::Prepare(prepare(0, 1, &[1])))],
            input: message(2, Message::Prepare(prepare(0, 1, &[2]))),
            reason: RejectReason::ConflictingDigest,
        },
        Case {
            name: "a second commit from one replica with another digest",
            replica: 1,
            setup: vec![message(2, Message::Commit(commit(0, 1, &[1])))],
            input: message(2, Message::Commit(commit(0, 1, &[2]))),
            reason: RejectReason::ConflictingDigest,
        },
        Case {
            name: "the same prepare twice",
            replica: 1,
            setup: vec![message(2, Message::Prepare(prepare(0, 1, &[1])))],
            input: message(2, Message::Prepare(prepare(0, 1, &[1]))),
            reason: RejectReason::Duplicate,
        },
        Case {
            name: "a pre-prepare more than a window above the high watermark",
            replica: 1,
            setup: vec![],
            input: message(0, Message::PrePrepare(pre_prepare(0, 9, &[1]))),
            reason: RejectReason::OutOfWindow,
        },
        Case {
            name: "a commit at the low watermark",
            replica: 1,
            setup: vec![],
            input: message(2, Message::Commit(commit(0, 0, &[1]))),
            reason: RejectReason::OutOfWindow,
        },
        Case {
            name: "a prepare from a view this replica has left",
            replica: 2,
            setup: vec![message(1, Message::NewView(new_view_from(1, &[1, 2, 3])))],
            input: message(3, Message::Prepare(prepare(0, 1, &[1]))),
            reason: RejectReason::StaleView,
        },
        Case {
            name: "more future-view messages from one replica than the cap",
            replica: 3,
            setup: (1..=3)
                .map(|sequence| message(2, Message::Prepare(prepare(1, sequence, &[1]))))
                .collect(),
            input: message(2, Message::Prepare(prepare(1, 4, &[1]))),
            reason: RejectReason::FutureBufferFull,
        },
        Case {
            name: "a checkpoint at a sequence that is not a checkpoint",
            replica: 1,
            setup: vec![],
            input: message(2, Message::Checkpoint(checkpoint(3, [1; 32]))),
            reason: RejectReason::InvalidCheckpoint,
        },
        Case {
            name: "a second checkpoint from one replica with another digest",
            replica: 1,
            setup: vec![message(2, Message::Checkpoint(checkpoint(2, [1; 32])))],
            input: message(2, Message::Checkpoint(checkpoint(2, [2; 32]))),
            reason: RejectReason::ConflictingDigest,
        },
        Case {
            name: "an execution report for a sequence never handed out",
            replica: 1,
            setup: vec![],
            input: Event::Executed {
                sequence: Sequence(1),
                state_digest: [1; 32],
            },
            reason: RejectReason::UnknownExecution,
        },
        Case {
            name: "a client request already pending at the primary",
            replica: 0,
            setup: vec![Event::ClientRequest(TestRequest(1))],
            input: Event::ClientRequest(TestRequest(1)),
            reason: RejectReason::DuplicateRequest,
        },
        Case {
            name: "a forwarded request already pending at a backup",
            replica: 1,
            setup: vec![Event::ClientRequest(TestRequest(1))],
            input: message(2, Message::Request(TestRequest(1))),
            reason: RejectReason::DuplicateRequest,
        },
        Case {
            name: "a state transfer no checkpoint vouches for",
            replica: 1,
            setup: vec![],
            input: Event::StateTransferred {
                sequence: Sequence(2),
                state_digest: [7; 32],
            },
            reason: RejectReason::UnverifiedStateTransfer,
        },
        Case {
            name: "a restore after the replica started",
            replica: 1,
            setup: vec![Event::Tick],
            input: Event::Restored(PersistedState {
                records: vec![],
                last_executed: Sequence::GENESIS,
                stable_checkpoint: None,
            }),
            reason: RejectReason::UnexpectedRestore,
        },
        Case {
            name: "a view change whose checkpoint proof has only 2f messages",
            replica: 3,
            setup: vec![],
            input: message(1, Message::ViewChange(short_proof)),
            reason: RejectReason::InvalidViewChange,
        },
        Case {
            name: "a view change whose prepared certificate has only f prepares",
            replica: 3,
            setup: vec![],
            input: message(1, Message::ViewChange(thin_certificate)),
            reason: RejectReason::InvalidViewChange,
        },
        Case {
            name: "a new view from a replica that is not its primary",
            replica: 3,
            setup: vec![],
            input: message(2, Message::NewView(new_view_from(1, &[0, 1, 2]))),
            reason: RejectReason::NotFromPrimary,
        },
        Case {
            name: "a new view with only 2f view changes",
            replica: 3,
            setup: vec![],
            input: message(1, Message::NewView(new_view_from(1, &[1, 2]))),
            reason: RejectReason::InvalidNewView,
        },
    ];
    for case in cases {
        let mut replica = replica(&config, case.replica);
        for event in case.setup {
            replica.handle(event);
        }
        let before = replica.rejected(case.reason);
        let actions = replica.handle(case.input);
        assert!(actions.is_empty(), "{}: {actions:?}", case.name);
        assert_eq!(replica.rejected(case.reason), before + 1, "{}", case.name);
    }
}

#[test]
fn messages_outside_the_watermarks_are_refused() {
    let config = test_config();
    let mut net = Net::new(&config);
    // Before any stable checkpoint the window is (0, 4]; up to one window above it (5 to 8)
    // a message is kept for later rather than refused.
    let rows_at_genesis = [
        (0, false),
        (1, true),
        (4, true),
        (5, true),
        (8, true),
        (9, false),
    ];
    for (sequence, accepted) in rows_at_genesis {
        let mut replica = net.replica(1).clone();
        replica.handle(message(2, Message::Prepare(prepare(0, sequence, &[7]))));
        assert_eq!(
            replica.rejected(RejectReason::OutOfWindow) == 0,
            accepted,
            "sequence {sequence} with h = 0, H = 4"
        );
    }
    net.submit(0, 1);
    net.submit(0, 2);
    assert_eq!(net.replica(1).low_watermark(), Sequence(2));
    assert_eq!(net.replica(1).high_watermark(), Sequence(6));
    let rows_after_checkpoint = [
        (1, false),
        (2, false),
        (3, true),
        (6, true),
        (10, true),
        (11, false),
    ];
    for (sequence, accepted) in rows_after_checkpoint {
        let mut replica = net.replica(1).clone();
        replica.handle(message(2, Message::Prepare(prepare(0, sequence, &[7]))));
        assert_eq!(
            replica.rejected(RejectReason::OutOfWindow) == 0,
            accepted,
            "sequence {sequence} with h = 2, H = 6"
        );
    }
}

#[test]
fn checkpoint_becomes_stable_at_2f_plus_1_matching_and_garbage_collects() {
    let config = test_config();
    let mut net = Net::new(&config);
    net.set_drop_rule(|from, _, message| matches!(message, Message::Checkpoint(_)) && from.0 >= 2);
    net.submit(0, 1);
    net.submit(0, 2);
    let node = net.node(0);
    assert_eq!(node.replica.last_executed(), Sequence(2));
    assert_eq!(node.replica.last_stable_checkpoint(), Sequence::GENESIS);
    assert_eq!(
        node.replica.log_len(),
        2,
        "nothing collected without a stable checkpoint"
    );
    let digest = net.node(2).states[&Sequence(2)];

    let rows: [(&str, u32, StateDigest, bool); 2] = [
        ("a third checkpoint with another digest", 3, [9; 32], false),
        ("a third matching checkpoint", 2, digest, true),
    ];
    for (name, from, state_digest, stable) in rows {
        let actions = net.inject(from, 0, Message::Checkpoint(checkpoint(2, state_digest)));
        let announced = actions.iter().any(|action| {
            matches!(action, Action::CheckpointStable { sequence, proof, .. }
                if *sequence == Sequence(2) && proof.len() == 3)
        });
        assert_eq!(announced, stable, "{name}");
    }
    let replica = net.replica(0);
    assert_eq!(replica.last_stable_checkpoint(), Sequence(2));
    assert_eq!(replica.low_watermark(), Sequence(2));
    assert_eq!(replica.high_watermark(), Sequence(6));
    assert_eq!(
        replica.log_len(),
        0,
        "slots at or below the stable checkpoint are gone"
    );
    assert_eq!(replica.checkpoints.received_len(), 0);
    assert_eq!(
        replica.signed.len(),
        0,
        "signed records within the window only"
    );
}

#[test]
fn messages_lost_while_the_network_is_quiet_are_sent_again() {
    // No padding to the checkpoint here: only re-sending can bring replica 3 along.
    let config = Config {
        idle_checkpoint_ticks: 1_000_000,
        retransmit_ticks: 4,
        ..test_config()
    };
    assert!(config.retransmit_ticks < config.request_timeout_ticks);
    let mut net = Net::new(&config);
    // Every commit to replica 3 is lost, and no client sends anything after request 1.
    net.set_drop_rule(|_, to, message| to.0 == 3 && matches!(message, Message::Commit(_)));
    net.submit(0, 1);
    assert_eq!(net.node(0).executed_ids(), vec![(1, vec![1])]);
    assert!(
        net.node(3).executed_ids().is_empty(),
        "replica 3 never saw a commit"
    );
    net.clear_drop_rule();
    net.tick_until(config.retransmit_ticks + 5, |net| {
        !net.node(3).executed_ids().is_empty()
    });
    assert_eq!(
        net.node(3).executed_ids(),
        vec![(1, vec![1])],
        "the re-sent commits let replica 3 decide sequence 1"
    );
    for id in 0..3 {
        assert!(
            net.replica(id).retransmissions() >= 1,
            "replica {id} counted its re-sends"
        );
    }
    net.assert_agreement();
}

#[test]
fn an_idle_primary_fills_the_sequences_up_to_the_next_checkpoint() {
    let config = Config {
        checkpoint_period: 4,
        window: 8,
        retransmit_ticks: 1_000_000,
        ..test_config()
    };
    let mut net = Net::new(&config);
    net.submit(0, 1);
    assert_eq!(net.replica(0).last_stable_checkpoint(), Sequence::GENESIS);
    net.ticks(config.idle_checkpoint_ticks + 5);
    for id in 0..4 {
        assert_eq!(
            net.node(id).executed_ids(),
            vec![(1, vec![1]), (2, vec![]), (3, vec![]), (4, vec![])],
            "replica {id}: null requests up to the checkpoint"
        );
        assert_eq!(net.replica(id).last_stable_checkpoint(), Sequence(4));
    }
    // Nothing more while idle: the checkpoint boundary is reached.
    net.ticks(config.idle_checkpoint_ticks * 3);
    assert_eq!(net.replica(0).last_executed(), Sequence(4));
}

#[test]
fn a_quorum_certifying_another_state_makes_the_replica_report_divergence() {
    let config = test_config();
    let mut net = Net::new(&config);
    // Replica 0 hears no checkpoint from the others until the forged ones below.
    net.set_drop_rule(|from, to, message| {
        matches!(message, Message::Checkpoint(_)) && to.0 == 0 && from.0 != 0
    });
    net.submit(0, 1);
    net.submit(0, 2);
    let own = net.node(0).states[&Sequence(2)];
    let other = [9; 32];
    assert_ne!(own, other);
    let mut actions = Vec::new();
    for from in 1..=3 {
        actions.extend(net.inject(from, 0, Message::Checkpoint(checkpoint(2, other))));
    }
    let diverged: Vec<_> = actions
        .iter()
        .filter(|action| matches!(action, Action::Diverged { .. }))
        .collect();
    assert_eq!(
        diverged,
        vec![&Action::Diverged {
            sequence: Sequence(2),
            own,
            certified: other,
        }],
        "2f+1 checkpoints for another state are reported once the quorum is reached"
    );
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::CheckpointStable { .. })),
        "the other state does not become this replica's stable checkpoint"
    );
    assert_eq!(net.replica(0).last_stable_checkpoint(), Sequence::GENESIS);
    assert!(net.replica(0).rejected(RejectReason::StateDigestMismatch) >= 1);
}

#[test]
fn request_timeout_at_a_silent_primary_leads_to_view_1_reproposing_the_prepared_batch() {
    struct Case {
        name: &'static str,
        /// Replicas that receive commits before the primary falls silent.
        commits_reach: &'static [u32],
    }
    let cases = [
        Case {
            name: "prepared everywhere, committed nowhere",
            commits_reach: &[],
        },
        Case {
            name: "committed and executed at one backup only",
            commits_reach: &[2],
        },
    ];
    for case in cases {
        let config = test_config();
        let mut net = Net::new(&config);
        let reach = case.commits_reach;
        net.set_drop_rule(move |_, to, message| {
            matches!(message, Message::Commit(_)) && !reach.contains(&to.0)
        });
        net.submit_to_all(1);
        for node in &net.nodes {
            let prepared = node
                .persisted
                .iter()
                .any(|record| record.phase == Phase::Commit && record.sequence == Sequence(1));
            assert!(prepared, "{}: every replica prepared sequence 1", case.name);
            let executed = node.replica.last_executed() == Sequence(1);
            let reached = reach.contains(&node.replica.id().0);
            assert_eq!(executed, reached, "{}", case.name);
        }
        net.crash(0);
        net.clear_drop_rule();
        net.tick_until(100, |net| {
            live_in_view(net, &[1, 2, 3], 1)
                && [1, 2, 3]
                    .iter()
                    .all(|id| net.replica(*id).last_executed() == Sequence(1))
        });
        let new_views = net.node(1).sent_new_views();
        assert_eq!(
            new_views[0].pre_prepares,
            vec![verified(1, pre_prepare(1, 1, &[1]))],
            "{}: the new primary re-proposes the same batch at the same sequence",
            case.name
        );
        for id in [1, 2, 3] {
            let node = net.node(id);
            assert_eq!(node.executed_ids(), vec![(1, vec![1])], "{}", case.name);
            assert_eq!(
                node.views.last(),
                Some(&(View(1), ReplicaId(1))),
                "{}",
                case.name
            );
        }
        net.assert_agreement();
    }
}

#[test]
fn a_new_view_whose_pre_prepares_differ_from_the_recomputation_is_rejected() {
    let config = test_config();
    let mut net = Net::new(&config);
    net.set_drop_rule(|_, _, message| matches!(message, Message::Commit(_)));
    net.submit_to_all(1);
    net.crash(0);
    net.set_drop_rule(|_, to, message| matches!(message, Message::NewView(_)) && to.0 == 2);
    net.tick_until(50, |net| !net.node(1).sent_new_views().is_empty());
    let genuine = net.node(1).sent_new_views()[0].clone();
    assert_eq!(
        genuine.pre_prepares,
        vec![verified(1, pre_prepare(1, 1, &[1]))]
    );
    let waiting = net.replica(2).clone();
    assert!(waiting.is_view_changing());

    type Tamper = fn(&mut NewView<TestRequest>);
    let rows: [(&str, u32, Tamper, RejectReason); 7] = [
        (
            "a pre-prepare with another batch",
            1,
            |new_view| new_view.pre_prepares[0] = verified(1, pre_prepare(1, 1, &[99])),
            RejectReason::NewViewMismatch,
        ),
        (
            "a prepared batch left out",
            1,
            |new_view| new_view.pre_prepares.clear(),
            RejectReason::NewViewMismatch,
        ),
        (
            "a null request appended",
            1,
            |new_view| {
                new_view
                    .pre_prepares
                    .push(verified(1, pre_prepare(1, 2, &[])))
            },
            RejectReason::NewViewMismatch,
        ),
        (
            "a pre-prepare stamped with the old view",
            1,
            |new_view| new_view.pre_prepares[0].message.view = View(0),
            RejectReason::NewViewMismatch,
        ),
        (
            "only 2f view changes",
            1,
            |new_view| {
                new_view.view_changes.pop();
            },
            RejectReason::InvalidNewView,
        ),
        (
            "one view change counted twice",
            1,
            |new_view| new_view.view_changes[2] = new_view.view_changes[0].clone(),
            RejectReason::InvalidNewView,
        ),
        ("sent by a backup", 3, |_| {}, RejectReason::NotFromPrimary),
    ];
    for (name, from, tamper, reason) in rows {
        let mut replica = waiting.clone();
        let mut new_view = genuine.clone();
        tamper(&mut new_view);
        let actions = replica.handle(message(from, Message::NewView(new_view)));
        assert!(actions.is_empty(), "{name}");
        assert_eq!(
            replica.rejected(reason),
            waiting.rejected(reason) + 1,
            "{name}"
        );
        assert!(replica.is_view_changing(), "{name}");
    }
    let mut replica = waiting;
    let actions = replica.handle(message(1, Message::NewView(genuine)));
    assert!(actions.contains(&Action::ViewChanged {
        view: View(1),
        primary: ReplicaId(1)
    }));
    assert!(actions.contains(&Action::Broadcast(Message::Prepare(prepare(1, 1, &[1])))));
    assert!(!replica.is_view_changing());
}

#[test]
fn an_equivocating_primary_causes_a_view_change_and_leaves_evidence() {
    let config = test_config();
    let mut net = Net::new(&config);
    // Replica 0 is faulty: the test speaks for it.
    net.crash(0);
    net.submit_to_all(1);
    net.submit_to_all(2);
    let first = pre_prepare(0, 1, &[1]);
    let second = pre_prepare(0, 1, &[2]);
    net.inject(0, 1, Message::PrePrepare(first.clone()));
    let actions = net.inject(0, 1, Message::PrePrepare(second.clone()));
    let persisted = position(
        &actions,
        |action| matches!(action, Action::Persist(record) if record.phase == Phase::ViewChange),
    )
    .expect("the view change is persisted");
    let sent = position(&actions, |action| {
        matches!(action, Action::Broadcast(Message::ViewChange(view_change))
            if view_change.new_view == View(1))
    })
    .expect("the replica leaves view 0 at once");
    assert!(persisted < sent);
    let replica = net.replica(1);
    assert_eq!(
        replica.evidence(),
        &[Equivocation {
            first: verified(0, first.clone()),
            second: verified(0, second),
        }]
    );
    assert_eq!(replica.rejected(RejectReason::Equivocation), 1);
    assert!(replica.is_view_changing());

    net.inject(0, 2, Message::PrePrepare(first.clone()));
    net.inject(0, 3, Message::PrePrepare(first));
    net.run();
    net.tick_until(200, |net| {
        live_in_view(net, &[1, 2, 3], 1)
            && [1, 2, 3]
                .iter()
                .all(|id| net.replica(*id).last_executed() == Sequence(2))
    });
    for id in [1, 2, 3] {
        assert_eq!(
            net.node(id).executed_ids(),
            vec![(1, vec![1]), (2, vec![2])]
        );
    }
    net.assert_agreement();
}

#[test]
fn a_restored_replica_refuses_to_sign_a_different_digest_for_what_it_signed() {
    struct Case {
        name: &'static str,
        input: PrePrepare<TestRequest>,
        prepares: bool,
    }
    let cases = [
        Case {
            name: "the digest it signed before the restart",
            input: pre_prepare(0, 1, &[1]),
            prepares: true,
        },
        Case {
            name: "another digest for the same view and sequence",
            input: pre_prepare(0, 1, &[2]),
            prepares: false,
        },
        Case {
            name: "another sequence",
            input: pre_prepare(0, 2, &[2]),
            prepares: true,
        },
    ];
    let config = test_config();
    let signed = PersistRecord {
        view: View(0),
        sequence: Sequence(1),
        phase: Phase::Prepare,
        digest: digest_of(&[1]),
        detail: RecordDetail::None,
    };
    for case in cases {
        let mut replica = replica(&config, 1);
        replica.handle(Event::Restored(PersistedState {
            records: vec![signed.clone()],
            last_executed: Sequence::GENESIS,
            stable_checkpoint: None,
        }));
        let actions = replica.handle(message(0, Message::PrePrepare(case.input.clone())));
        let prepared = broadcasts(&actions, MessageKind::Prepare);
        assert_eq!(!prepared.is_empty(), case.prepares, "{}", case.name);
        assert_eq!(
            replica.rejected(RejectReason::ConflictsWithSigned),
            u64::from(!case.prepares),
            "{}",
            case.name
        );
        if !case.prepares {
            assert!(actions.is_empty(), "{}", case.name);
        }
    }
}

#[test]
fn a_restored_replica_keeps_its_word_across_phases() {
    let config = test_config();
    // A primary continues after the last sequence it proposed.
    let mut primary = replica(&config, 0);
    primary.handle(Event::Restored(PersistedState {
        records: vec![PersistRecord {
            view: View(0),
            sequence: Sequence(1),
            phase: Phase::PrePrepare,
            digest: digest_of(&[1]),
            detail: RecordDetail::None,
        }],
        last_executed: Sequence::GENESIS,
        stable_checkpoint: None,
    }));
    let actions = primary.handle(Event::ClientRequest(TestRequest(5)));
    assert_eq!(
        broadcasts(&actions, MessageKind::PrePrepare),
        vec![Message::PrePrepare(pre_prepare(0, 2, &[5]))]
    );

    // A backup that committed brings its prepared certificate back into the next view change.
    let prepared = certificate(&config, 0, 1, &[1], &[1, 2]);
    let mut backup = replica(&config, 1);
    backup.handle(Event::Restored(PersistedState {
        records: vec![PersistRecord {
            view: View(0),
            sequence: Sequence(1),
            phase: Phase::Commit,
            digest: digest_of(&[1]),
            detail: RecordDetail::Prepared(prepared.clone()),
        }],
        last_executed: Sequence::GENESIS,
        stable_checkpoint: None,
    }));
    backup.handle(message(2, Message::ViewChange(view_change(1))));
    let actions = backup.handle(message(3, Message::ViewChange(view_change(1))));
    let sent = broadcasts(&actions, MessageKind::ViewChange);
    assert!(
        matches!(&sent[..], [Message::ViewChange(view_change)] if view_change.prepared == vec![prepared.clone()]),
        "{sent:?}"
    );

    // A replica that was waiting for a new view re-sends the very same view change.
    let signed = ViewChange {
        prepared: vec![prepared],
        ..view_change(1)
    };
    let mut waiting = replica(&config, 3);
    let actions = waiting.handle(Event::Restored(PersistedState {
        records: vec![PersistRecord {
            view: View(1),
            sequence: Sequence::GENESIS,
            phase: Phase::ViewChange,
            digest: view_change_digest(&signed),
            detail: RecordDetail::ViewChange(signed.clone()),
        }],
        last_executed: Sequence::GENESIS,
        stable_checkpoint: None,
    }));
    assert_eq!(
        actions,
        vec![Action::Broadcast(Message::ViewChange(signed))]
    );
    assert!(waiting.is_view_changing());
    assert_eq!(waiting.view(), View(1));
}

#[test]
fn a_lagging_replica_requests_state_transfer_and_catches_up() {
    struct Case {
        name: &'static str,
        /// The others change view while the lagging replica is away.
        view_change_while_away: bool,
    }
    let cases = [
        Case {
            name: "behind in sequence only",
            view_change_while_away: false,
        },
        Case {
            name: "behind in sequence and in view",
            view_change_while_away: true,
        },
    ];
    for case in cases {
        let config = test_config();
        let mut net = Net::new(&config);
        net.crash(3);
        let mut primary = 0;
        if case.view_change_while_away {
            // Replica 0 never hears of request 1, so 1 and 2 suspect it; 0 joins them.
            net.set_drop_rule(|_, to, message| to.0 == 0 && matches!(message, Message::Request(_)));
            net.handle(1, Event::ClientRequest(TestRequest(1)));
            net.handle(2, Event::ClientRequest(TestRequest(1)));
            net.run();
            net.tick_until(60, |net| live_in_view(net, &[0, 1, 2], 1));
            net.clear_drop_rule();
            primary = 1;
        }
        let first = net.replica(primary).last_executed().0 + 1;
        for request in first..=8 {
            net.submit(primary, 100 + request);
        }
        assert_eq!(
            net.replica(0).last_stable_checkpoint(),
            Sequence(8),
            "{}",
            case.name
        );
        net.recover(3);
        for request in 9..=10 {
            net.submit(primary, 100 + request);
        }
        net.tick_until(60, |net| net.replica(3).last_executed() >= Sequence(10));
        let node = net.node(3);
        assert!(!node.transfers.is_empty(), "{}", case.name);
        assert_eq!(
            node.replica.last_stable_checkpoint(),
            Sequence(10),
            "{}",
            case.name
        );
        let expected_view = if case.view_change_while_away { 1 } else { 0 };
        net.tick_until(60, |net| live_in_view(net, &[3], expected_view));
        net.submit(primary, 111);
        for id in 0..4 {
            assert_eq!(
                net.replica(id).last_executed(),
                Sequence(11),
                "{}: replica {id}",
                case.name
            );
        }
        assert_eq!(
            net.node(3).states[&Sequence(11)],
            net.node(0).states[&Sequence(11)],
            "{}",
            case.name
        );
        net.assert_agreement();
    }
}

#[test]
fn the_view_change_timeout_doubles_per_failed_view_and_resets_after_progress() {
    // A request timeout longer than the view-change timeouts, so that only the new-view timer
    // moves replica 3 from view to view.
    let config = Config {
        request_timeout_ticks: 30,
        ..test_config()
    };
    let mut net = Net::new(&config);
    net.crash(0);
    // The primaries of views 1 and 2 never get their new view out.
    net.set_drop_rule(|from, _, message| {
        matches!(message, Message::NewView(_)) && (from.0 == 1 || from.0 == 2)
    });
    net.submit_to_all(1);
    net.tick_until(200, |net| net.replica(3).last_executed() == Sequence(1));
    let mut first_sent: Vec<(u64, View)> = Vec::new();
    for (tick, view) in net.node(3).sent_view_changes() {
        if first_sent.last().is_none_or(|(_, last)| *last != view) {
            first_sent.push((tick, view));
        }
    }
    let views: Vec<View> = first_sent.iter().map(|(_, view)| *view).collect();
    assert_eq!(views, vec![View(1), View(2), View(3)]);
    let base = config.view_change_timeout_ticks;
    assert_eq!(
        first_sent[0].0, config.request_timeout_ticks,
        "request timer"
    );
    assert_eq!(first_sent[1].0 - first_sent[0].0, base, "first timeout");
    assert_eq!(first_sent[2].0 - first_sent[1].0, 2 * base, "doubled");
    assert_eq!(net.replica(3).view(), View(3));
    assert_eq!(
        net.replica(3).view_change_timeout_ticks(),
        base,
        "reset after progress"
    );
    net.assert_agreement();
}

#[test]
fn f_plus_1_view_changes_for_higher_views_make_a_replica_join() {
    struct Case {
        name: &'static str,
        inputs: Vec<TestEvent>,
        view: u64,
        changing: bool,
    }
    let cases = [
        Case {
            name: "one replica asking for view 1 is not enough",
            inputs: vec![message(1, Message::ViewChange(view_change(1)))],
            view: 0,
            changing: false,
        },
        Case {
            name: "f+1 replicas asking for view 1",
            inputs: vec![
                message(1, Message::ViewChange(view_change(1))),
                message(2, Message::ViewChange(view_change(1))),
            ],
            view: 1,
            changing: true,
        },
        Case {
            name: "f+1 replicas asking for views 2 and 1: the lower one",
            inputs: vec![
                message(1, Message::ViewChange(view_change(2))),
                message(2, Message::ViewChange(view_change(1))),
            ],
            view: 1,
            changing: true,
        },
        Case {
            name: "f+1 replicas already working in view 2",
            inputs: vec![
                message(1, Message::Commit(commit(2, 1, &[1]))),
                message(2, Message::Commit(commit(2, 1, &[1]))),
            ],
            view: 2,
            changing: true,
        },
    ];
    let config = test_config();
    for case in cases {
        let mut replica = replica(&config, 3);
        let mut actions = Vec::new();
        for input in case.inputs {
            actions.extend(replica.handle(input));
        }
        assert_eq!(replica.view(), View(case.view), "{}", case.name);
        assert_eq!(replica.is_view_changing(), case.changing, "{}", case.name);
        let sent = broadcasts(&actions, MessageKind::ViewChange);
        if case.changing {
            assert!(
                matches!(&sent[..], [Message::ViewChange(view_change)] if view_change.new_view == View(case.view)),
                "{}: {sent:?}",
                case.name
            );
        } else {
            assert!(sent.is_empty(), "{}", case.name);
        }
    }
}

/// After transient link faults a replica can wait for view 1 holding fewer than 2f+1 view
/// changes for it, while the replica whose view change it missed has moved on to view 2 and
/// re-sends only that one: fewer than f+1 ahead, fewer than 2f+1 behind. The view change for
/// view 2 still counts towards arming the new-view timer, so the replica moves on instead of
/// waiting for ever (found by the simulation in `weft-tests`: without this, mixed n = 4 seeds
/// 541, 565, 651, n = 7 seed 318 and n = 10 seed 274 stall after the faults heal).
#[test]
fn a_view_change_for_a_higher_view_counts_towards_the_new_view_timer() {
    let config = test_config();
    let mut replica = replica(&config, 3);
    replica.handle(Event::ClientRequest(TestRequest(1)));
    replica.handle(message(1, Message::ViewChange(view_change(1))));
    for _ in 0..config.request_timeout_ticks {
        replica.handle(Event::Tick);
    }
    assert_eq!(replica.view(), View(1));
    assert!(replica.is_view_changing());
    replica.handle(message(2, Message::ViewChange(view_change(2))));
    assert_eq!(
        replica.view(),
        View(1),
        "one replica ahead is not enough to join"
    );
    let mut actions = Vec::new();
    for _ in 0..config.view_change_timeout_ticks {
        actions.extend(replica.handle(Event::Tick));
    }
    assert_eq!(
        replica.view(),
        View(2),
        "the new view of view 1 did not come in time"
    );
    let sent = broadcasts(&actions, MessageKind::ViewChange);
    assert!(
        matches!(&sent[..], [.., Message::ViewChange(view_change)] if view_change.new_view == View(2)),
        "{sent:?}"
    );
}

#[test]
fn no_view_change_with_an_honest_primary_and_steady_ticks() {
    let config = Config {
        batch_size: 3,
        batch_timeout_ticks: 2,
        ..test_config()
    };
    let mut net = Net::new(&config);
    let total = 60u64;
    for request in 1..=total {
        net.submit((request % 4) as u32, request);
        net.tick();
    }
    net.ticks(10 * config.request_timeout_ticks);
    for node in &net.nodes {
        assert!(node.sent_view_changes().is_empty());
        assert_eq!(node.replica.view(), View(0));
        let executed: Vec<u64> = node
            .executed
            .values()
            .flat_map(|batch| batch.iter().map(|request| request.0))
            .collect();
        assert_eq!(executed.len() as u64, total, "every request exactly once");
        assert!(node.replica.last_stable_checkpoint() > Sequence::GENESIS);
        // The log, the checkpoints, the dedup set and the signed records stay bounded.
        assert!(node.replica.log_len() as u64 <= config.window);
        assert!(node.replica.checkpoints.received_len() <= 4 * (config.window / 2 + 1) as usize);
        assert!(
            node.replica.requests.executed_len() as u64
                <= 2 * config.window * config.batch_size as u64
        );
        assert!(node.replica.signed.len() as u64 <= 4 * config.window);
        assert_eq!(node.replica.rejected(RejectReason::StaleView), 0);
    }
    net.assert_agreement();
}

#[test]
fn a_view_change_at_the_very_first_sequence() {
    struct Case {
        name: &'static str,
        /// The faulty primary's pre-prepare for sequence 1 reaches these replicas only.
        pre_prepare_reaches: Option<&'static [u32]>,
    }
    let cases = [
        Case {
            name: "the primary is silent from the start",
            pre_prepare_reaches: None,
        },
        Case {
            name: "the first pre-prepare reached one backup only",
            pre_prepare_reaches: Some(&[1]),
        },
    ];
    for case in cases {
        let config = test_config();
        let mut net = Net::new(&config);
        match case.pre_prepare_reaches {
            None => net.crash(0),
            Some(reach) => net.set_drop_rule(move |_, to, message| {
                matches!(message, Message::PrePrepare(_)) && !reach.contains(&to.0)
            }),
        }
        net.submit_to_all(1);
        net.crash(0);
        net.clear_drop_rule();
        net.tick_until(100, |net| {
            live_in_view(net, &[1, 2, 3], 1)
                && [1, 2, 3]
                    .iter()
                    .all(|id| net.replica(*id).last_executed() == Sequence(1))
        });
        for id in [1, 2, 3] {
            let replica = net.replica(id);
            assert_eq!(
                net.node(id).executed_ids(),
                vec![(1, vec![1])],
                "{}",
                case.name
            );
            assert_eq!(
                replica.last_stable_checkpoint(),
                Sequence::GENESIS,
                "{}",
                case.name
            );
        }
        net.assert_agreement();
    }
}

#[test]
fn duplicate_requests_are_ordered_once() {
    let config = test_config();
    let mut net = Net::new(&config);
    net.submit(0, 1);
    net.submit(0, 1);
    net.submit(2, 1);
    for node in &net.nodes {
        assert_eq!(node.executed_ids(), vec![(1, vec![1])]);
    }
    assert_eq!(net.replica(0).rejected(RejectReason::DuplicateRequest), 1);
    assert_eq!(net.replica(2).rejected(RejectReason::DuplicateRequest), 1);

    // A client request goes from the backup that received it to the primary only; a client's
    // retry of a request a backup still waits for goes to the primary again, since the first
    // copy may have been lost.
    let mut backup = replica(&test_config(), 1);
    assert_eq!(
        backup.handle(Event::ClientRequest(TestRequest(7))),
        vec![Action::Send {
            to: ReplicaId(0),
            message: Message::Request(TestRequest(7)),
        }]
    );
    assert_eq!(
        backup.handle(Event::ClientRequest(TestRequest(7))),
        vec![Action::Send {
            to: ReplicaId(0),
            message: Message::Request(TestRequest(7)),
        }]
    );
    // A request relayed by another replica is kept (and timed), not relayed again.
    let mut other = replica(&test_config(), 2);
    assert_eq!(
        other.handle(message(1, Message::Request(TestRequest(8)))),
        vec![]
    );
    assert_eq!(
        other.handle(message(3, Message::Request(TestRequest(8)))),
        vec![]
    );
    assert_eq!(other.rejected(RejectReason::DuplicateRequest), 1);
}

/// Records every request delivered (from, to, id) and drops those `drop` picks.
fn watch_requests(
    net: &mut Net,
    mut drop: impl FnMut(u32, u32, u64) -> bool + 'static,
) -> std::rc::Rc<std::cell::RefCell<Vec<(u32, u32, u64)>>> {
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let log = seen.clone();
    net.set_drop_rule(move |from, to, message| match message {
        Message::Request(request) => {
            log.borrow_mut().push((from.0, to.0, request.0));
            drop(from.0, to.0, request.0)
        }
        _ => false,
    });
    seen
}

/// Replica `id`, restored with nothing persisted (as a first start).
fn started_at_genesis(config: &Config, id: u32) -> TestReplica {
    let mut started = replica(config, id);
    let _ = started.handle(Event::Restored(PersistedState {
        records: Vec::new(),
        last_executed: Sequence::GENESIS,
        stable_checkpoint: None,
    }));
    started
}

#[test]
fn a_backups_client_request_goes_to_the_primary_only_and_the_others_meet_it_in_the_pre_prepare() {
    let config = test_config();
    let mut net = Net::new(&config);
    let seen = watch_requests(&mut net, |_, _, _| false);
    net.submit(1, 1);
    for id in 0..4 {
        assert_eq!(
            net.node(id).executed_ids(),
            vec![(1, vec![1])],
            "replica {id}"
        );
    }
    assert_eq!(*seen.borrow(), vec![(1, 0, 1)], "one copy, to the primary");
    // Nothing waits: the request timer is stopped and nothing is sent again.
    net.ticks(3 * config.request_timeout_ticks);
    assert_eq!(seen.borrow().len(), 1);
    for id in 0..4 {
        assert!(net.node(id).sent_view_changes().is_empty(), "replica {id}");
    }
    // The primary's own client's request goes nowhere but into its batch.
    net.submit(0, 2);
    assert_eq!(seen.borrow().len(), 1);
    let last = net.node(3).executed_ids().last().cloned();
    assert_eq!(last.map(|(_, batch)| batch), Some(vec![2]));
}

#[test]
fn a_client_request_that_arrives_during_a_view_change_goes_to_every_replica() {
    let config = test_config();
    let mut backup = replica(&config, 1);
    let _ = backup.handle(message(2, Message::Request(TestRequest(1))));
    for _ in 0..config.request_timeout_ticks {
        let _ = backup.handle(Event::Tick);
    }
    assert!(backup.is_view_changing(), "request 1 timed out");
    // No primary to forward to yet, and nobody may join this view change soon.
    assert_eq!(
        backup.handle(Event::ClientRequest(TestRequest(2))),
        vec![Action::Broadcast(Message::Request(TestRequest(2)))]
    );
}

#[test]
fn requests_a_state_transfer_passes_over_go_back_to_the_driver() {
    let config = test_config();
    let mut backup = started_at_genesis(&config, 1);
    let _ = backup.handle(Event::ClientRequest(TestRequest(9)));
    let digest = [7u8; 32];
    for from in [0, 2] {
        let _ = backup.handle(message(from, Message::Checkpoint(checkpoint(2, digest))));
    }
    let actions = backup.handle(Event::StateTransferred {
        sequence: Sequence(2),
        state_digest: digest,
    });
    // Whether the transferred batches hold request 9 only the ledger knows: the driver asks
    // it, and hands the request back if not (the harness does the same).
    assert!(actions.contains(&Action::Resubmit {
        requests: vec![TestRequest(9)]
    }));
    assert_eq!(backup.requests.known(&TestRequest(9).id()), None);
}

#[test]
fn a_lost_forward_is_sent_again_halfway_to_the_request_timeout_without_a_view_change() {
    let config = test_config();
    let mut net = Net::new(&config);
    let mut dropped = false;
    // The first copy to reach the primary is lost.
    let seen = watch_requests(&mut net, move |_, to, _| {
        let lose = to == 0 && !dropped;
        dropped |= lose;
        lose
    });
    net.submit(2, 5);
    assert!(net.node(0).executed_ids().is_empty());
    let half = config.request_timeout_ticks / 2;
    net.ticks(half - 1);
    assert_eq!(
        seen.borrow().len(),
        1,
        "nothing is resent before half the timeout"
    );
    net.tick();
    // Halfway, replica 2 sends what it holds to every replica; the primary orders it.
    let resent: Vec<(u32, u32, u64)> = seen.borrow()[1..].to_vec();
    assert_eq!(resent, vec![(2, 0, 5), (2, 1, 5), (2, 3, 5)]);
    for id in 0..4 {
        assert_eq!(
            net.node(id).executed_ids(),
            vec![(1, vec![5])],
            "replica {id}"
        );
    }
    net.ticks(3 * config.request_timeout_ticks);
    for id in 0..4 {
        assert!(net.node(id).sent_view_changes().is_empty(), "replica {id}");
        assert_eq!(net.replica(id).view(), View(0));
    }
}

#[test]
fn a_down_or_censoring_primary_is_suspected_when_its_requests_came_through_one_backup() {
    #[derive(Clone, Copy, PartialEq)]
    enum Primary {
        /// Down from the start: the forward is lost.
        Down,
        /// Up, but every request sent to it is lost (it never orders them).
        Censors,
        /// Pre-prepares the request to the backup that forwarded it only, then goes down.
        DownAfterPrePreparingToOne,
    }
    let cases = [
        ("the primary is down", Primary::Down),
        ("the primary censors", Primary::Censors),
        (
            "the primary pre-prepared it to one backup, then went down",
            Primary::DownAfterPrePreparingToOne,
        ),
    ];
    for (name, primary) in cases {
        let config = test_config();
        let mut net = Net::new(&config);
        if primary == Primary::Down {
            net.crash(0);
        }
        if primary == Primary::DownAfterPrePreparingToOne {
            net.set_drop_rule(|_, to, message| {
                matches!(message, Message::PrePrepare(_)) && to.0 != 1
            });
            net.submit(1, 7);
            assert!(
                net.node(1)
                    .persisted
                    .iter()
                    .any(|r| r.phase == Phase::Prepare)
            );
            net.crash(0);
        }
        let seen = watch_requests(&mut net, |_, to, _| to == 0);
        if primary != Primary::DownAfterPrePreparingToOne {
            net.submit(1, 7);
        }
        // Only replica 1 knows of the request: alone it could not move the others (f+1 view
        // changes make a replica join). Halfway to the timeout it sends the request to all,
        // so 2 and 3 time it too, and the three leave the view.
        let up: &[u32] = if primary == Primary::Censors {
            &[0, 1, 2, 3]
        } else {
            &[1, 2, 3]
        };
        net.tick_until(6 * config.request_timeout_ticks, |net| {
            live_in_view(net, up, 1)
                && up
                    .iter()
                    .all(|id| net.node(*id).executed_ids() == vec![(1, vec![7])])
        });
        // Once per run of the timer: to each replica (lost to the primary) once.
        let from_1: Vec<(u32, u32, u64)> = seen
            .borrow()
            .iter()
            .filter(|(from, _, _)| *from == 1)
            .copied()
            .collect();
        let expected: Vec<(u32, u32, u64)> = match primary {
            Primary::Censors => vec![(1, 0, 7), (1, 0, 7), (1, 2, 7), (1, 3, 7)],
            _ => vec![(1, 2, 7), (1, 3, 7)],
        };
        assert_eq!(from_1, expected, "{name}");
        let first_view_change = (1..4)
            .filter_map(|id| {
                net.node(id)
                    .sent_view_changes()
                    .first()
                    .map(|(tick, _)| *tick)
            })
            .min();
        assert!(
            first_view_change >= Some(config.request_timeout_ticks),
            "{name}: nobody suspects the primary before the request timeout ({first_view_change:?})"
        );
        net.assert_agreement();
    }
}

#[test]
fn the_batch_digest_covers_the_ordered_request_ids_only() {
    let rows: [(&str, &[u64], &[u64], bool); 4] = [
        ("the same ids in the same order", &[1, 2], &[1, 2], true),
        ("the same ids in another order", &[1, 2], &[2, 1], false),
        ("one id fewer", &[1, 2], &[1], false),
        ("the null request and a request", &[], &[1], false),
    ];
    for (name, left, right, equal) in rows {
        assert_eq!(digest_of(left) == digest_of(right), equal, "{name}");
    }
    // A re-proposal in another view at the same sequence keeps its digest.
    assert_eq!(
        pre_prepare(0, 1, &[1]).digest,
        pre_prepare(5, 1, &[1]).digest
    );
    assert_eq!(
        pre_prepare(0, 1, &[1]).digest,
        pre_prepare(0, 9, &[1]).digest
    );
}

#[test]
fn quorums_intersect_in_a_correct_replica() {
    let rows = [
        (1, 0, 1, 1),
        (4, 1, 3, 2),
        (5, 1, 4, 2),
        (6, 1, 4, 2),
        (7, 2, 5, 3),
    ];
    for (replica_count, faults, quorum, weak) in rows {
        let config = Config::new(replica_count);
        assert_eq!(config.faults(), faults, "n = {replica_count}");
        assert_eq!(config.quorum(), quorum, "n = {replica_count}");
        assert_eq!(config.weak_quorum(), weak, "n = {replica_count}");
    }
    for replica_count in 1..=40 {
        let config = Config::new(replica_count);
        let (n, f, q) = (replica_count, config.faults(), config.quorum());
        assert!(
            2 * q > n + f,
            "two quorums share a correct replica, n = {n}"
        );
        assert!(q <= n - f, "correct replicas alone form a quorum, n = {n}");
    }
}

#[test]
fn invalid_configurations_are_refused() {
    let rows: [(&str, Config, Option<ConfigError>); 4] = [
        ("the defaults", Config::new(4), None),
        ("no replicas", Config::new(0), Some(ConfigError::NoReplicas)),
        (
            "a window that is not a multiple of the checkpoint period",
            Config {
                window: 5,
                ..test_config()
            },
            Some(ConfigError::Window {
                window: 5,
                checkpoint_period: 2,
            }),
        ),
        (
            "a zero checkpoint period",
            Config {
                checkpoint_period: 0,
                ..test_config()
            },
            Some(ConfigError::Zero {
                field: "checkpoint_period",
            }),
        ),
    ];
    for (name, config, expected) in rows {
        assert_eq!(config.validate().err(), expected, "{name}");
    }
    assert!(matches!(
        Replica::<TestRequest>::new(test_config(), ReplicaId(4)),
        Err(ConfigError::NotAMember { .. })
    ));
}

/// Seeded runs on a lossy, reordering network where replicas crash and come back (with their
/// memory, or restarted from what they persisted), then the network heals: no fork at any step;
/// afterwards every request executes on a quorum and every replica ends within a window of the
/// most advanced one (laggards catch up by state transfer). A request may be ordered at two
/// sequences across a view change, as in the paper; execution skips the repeat.
#[test]
fn a_lossy_network_never_forks_and_recovers_once_healed() {
    struct Case {
        name: &'static str,
        replica_count: usize,
        loss_percent: u64,
        batch_size: usize,
        /// Replicas that crash at tick 30 (the primary of the moment first, then the next ids).
        crashes: usize,
        /// Restart them from their persisted records rather than resume them.
        restart: bool,
        seeds: u64,
    }
    let cases = [
        Case {
            name: "n = 4, one request per batch, the primary resumes",
            replica_count: 4,
            loss_percent: 20,
            batch_size: 1,
            crashes: 1,
            restart: false,
            seeds: SEEDS,
        },
        Case {
            name: "n = 4, batches of 3, heavy loss, the primary restarts from disk",
            replica_count: 4,
            loss_percent: 35,
            batch_size: 3,
            crashes: 1,
            restart: true,
            seeds: SEEDS,
        },
        Case {
            name: "n = 7, two replicas restart from disk",
            replica_count: 7,
            loss_percent: 20,
            batch_size: 2,
            crashes: 2,
            restart: true,
            seeds: SEEDS / 2,
        },
    ];
    for case in cases {
        for seed in 1..=case.seeds {
            lossy_run(&case, seed);
        }
    }

    fn lossy_run(case: &Case, seed: u64) {
        let name = case.name;
        let count = case.replica_count as u32;
        let config = Config {
            max_pending_requests: 1024,
            batch_size: case.batch_size,
            batch_timeout_ticks: 2,
            ..Config {
                replica_count: case.replica_count,
                ..test_config()
            }
        };
        let mut net = Net::new(&config);
        net.chaos = Some(Chaos::new(seed, case.loss_percent));
        let mut submitted = 0u64;
        let mut crashed = Vec::new();
        for tick in 0..270u64 {
            if tick == 120 {
                net.chaos = None;
            }
            if tick < 240 {
                submitted += 1;
                let target = (seed + tick * 7) % u64::from(count);
                net.submit(target as u32, submitted);
            }
            if tick == 30 {
                let primary = net.replica(0).primary().0;
                crashed = (0..case.crashes as u32)
                    .map(|offset| (primary + offset) % count)
                    .collect();
                for id in &crashed {
                    net.crash(*id);
                }
            }
            if tick == 70 {
                for id in &crashed {
                    if case.restart {
                        net.restart(*id);
                    } else {
                        net.recover(*id);
                    }
                }
            }
            if tick >= 120 && tick % 10 == 0 {
                // Clients retry what a replica's ledger does not hold yet.
                for id in 0..count {
                    let held: BTreeSet<u64> = net
                        .node(id)
                        .executed
                        .values()
                        .flatten()
                        .map(|request| request.0)
                        .collect();
                    for request in (1..=submitted).filter(|request| !held.contains(request)) {
                        net.submit(id, request);
                    }
                }
            }
            net.tick();
            net.assert_agreement();
        }
        let highest = net
            .nodes
            .iter()
            .map(|node| node.replica.last_executed())
            .max()
            .unwrap_or_default();
        for request in 1..=submitted {
            let holders = net
                .nodes
                .iter()
                .filter(|node| {
                    node.executed
                        .values()
                        .flatten()
                        .any(|held| held.0 == request)
                })
                .count();
            assert!(
                holders >= config.quorum(),
                "{name}, seed {seed}: request {request} on {holders} replicas"
            );
        }
        for node in &net.nodes {
            assert!(
                node.replica.last_executed().0 + config.window >= highest.0,
                "{name}, seed {seed}: replica {} stuck at {:?}, highest {highest:?}",
                node.replica.id().0,
                node.replica.last_executed()
            );
        }
    }
}

#[test]
fn the_same_events_produce_the_same_actions() {
    let run = || {
        let config = test_config();
        let mut net = Net::new(&config);
        net.crash(0);
        net.submit_to_all(1);
        net.submit_to_all(2);
        net.ticks(40);
        net.nodes
            .iter()
            .map(|node| (node.sent.clone(), node.persisted.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_draws_no_randomness() {
    let sources = [
        ("mod.rs", include_str!("../mod.rs")),
        ("message.rs", include_str!("../message.rs")),
        ("config.rs", include_str!("../config.rs")),
        ("event.rs", include_str!("../event.rs")),
        ("log.rs", include_str!("../log.rs")),
        ("requests.rs", include_str!("../requests.rs")),
        ("normal_case.rs", include_str!("../normal_case.rs")),
        ("checkpoint.rs", include_str!("../checkpoint.rs")),
        ("view_change.rs", include_str!("../view_change.rs")),
        ("persist.rs", include_str!("../persist.rs")),
        ("tests/mod.rs", include_str!("mod.rs")),
        ("tests/harness.rs", include_str!("harness.rs")),
    ];
    // Spelled in pieces so that this file does not trip its own check.
    let words = [
        concat!("to", "kio"),
        concat!("to", "nic"),
        concat!("ra", "nd"),
        concat!("Hash", "Map"),
        concat!("Hash", "Set"),
        concat!("Inst", "ant"),
        concat!("System", "Time"),
    ];
    let paths = [
        concat!("std::", "time"),
        concat!("std::", "fs"),
        concat!("std::", "net"),
        concat!("std::", "thread"),
    ];
    for (file, source) in sources {
        assert!(source.starts_with("//!"), "{file} starts with a //! line");
        let tokens: Vec<&str> = source
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .collect();
        for word in words {
            assert!(!tokens.contains(&word), "{file} mentions {word}");
        }
        let compact: String = source.chars().filter(|c| !c.is_whitespace()).collect();
        for path in paths {
            assert!(!compact.contains(path), "{file} mentions {path}");
        }
    }
}

#[test]
fn a_replica_that_announces_an_old_checkpoint_is_sent_the_stable_one_and_the_log_once() {
    let config = test_config();
    let mut net = Net::new(&config);
    net.crash(3);
    for request in 1..=9 {
        net.submit(0, 100 + request);
    }
    let stable = net.replica(0).last_stable_checkpoint();
    assert!(stable >= Sequence(8), "stable at {stable:?}");
    // Replica 3 comes back from a state transfer to an old checkpoint and announces it.
    let announce = || {
        message(
            3,
            Message::Checkpoint(Checkpoint {
                sequence: Sequence(2),
                state_digest: [7; 32],
            }),
        )
    };
    let actions = net.handle(0, announce());
    let to_3: Vec<&TestMessage> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { to, message } if *to == ReplicaId(3) => Some(message),
            _ => None,
        })
        .collect();
    assert!(
        to_3.iter().any(|m| matches!(
            m,
            Message::Checkpoint(c) if c.sequence >= stable
        )),
        "the lagging replica is sent a checkpoint at or above the stable one: {to_3:?}"
    );
    assert!(
        to_3.iter().any(|m| matches!(m, Message::PrePrepare(_))),
        "and the primary's own pre-prepares still in its log: {to_3:?}"
    );
    assert!(
        actions.iter().all(|a| !matches!(a, Action::Broadcast(_))),
        "nothing goes to the others"
    );
    // The same announcement again: nothing more (no amplification).
    let again = net.handle(0, announce());
    assert!(
        again
            .iter()
            .all(|a| !matches!(a, Action::Send { .. } | Action::Broadcast(_))),
        "helped once per announced checkpoint: {again:?}"
    );
}

#[test]
fn messages_up_to_a_window_above_the_high_watermark_are_kept_and_handled_when_it_moves() {
    let config = test_config(); // checkpoint period 2, window 4
    let mut backup = replica(&config, 1);
    let prepared_at = |actions: &[TestAction], sequence: u64| {
        actions.iter().any(|a| {
            matches!(a, Action::Broadcast(Message::Prepare(p)) if p.sequence == Sequence(sequence))
        })
    };
    // Sequence 5 is above the high watermark (4) but within one more window: kept, not
    // prepared yet. Sequence 9 is beyond that: refused.
    let early = backup.handle(message(0, Message::PrePrepare(pre_prepare(0, 5, &[5]))));
    assert!(
        !prepared_at(&early, 5),
        "not prepared above the window: {early:?}"
    );
    assert_eq!(backup.rejected(RejectReason::OutOfWindow), 0);
    let _ = backup.handle(message(0, Message::PrePrepare(pre_prepare(0, 9, &[9]))));
    assert_eq!(backup.rejected(RejectReason::OutOfWindow), 1);

    // Sequences 1 and 2 commit and execute; checkpoint 2 becomes stable with two others.
    let mut state = [0u8; 32];
    for sequence in 1..=2u64 {
        let _ = backup.handle(message(
            0,
            Message::PrePrepare(pre_prepare(0, sequence, &[sequence])),
        ));
        let digest = digest_of(&[sequence]);
        for from in [2, 3] {
            let _ = backup.handle(message(
                from,
                Message::Prepare(Prepare {
                    view: View(0),
                    sequence: Sequence(sequence),
                    digest,
                }),
            ));
        }
        for from in [0, 2, 3] {
            let _ = backup.handle(message(
                from,
                Message::Commit(Commit {
                    view: View(0),
                    sequence: Sequence(sequence),
                    digest,
                }),
            ));
        }
        state = next_state(state, Sequence(sequence), &requests(&[sequence]));
        let _ = backup.handle(Event::Executed {
            sequence: Sequence(sequence),
            state_digest: state,
        });
    }
    let mut moved = Vec::new();
    for from in [0, 2] {
        moved.extend(backup.handle(message(
            from,
            Message::Checkpoint(Checkpoint {
                sequence: Sequence(2),
                state_digest: state,
            }),
        )));
    }
    assert_eq!(backup.last_stable_checkpoint(), Sequence(2));
    assert!(
        prepared_at(&moved, 5),
        "the kept pre-prepare for 5 is handled once the window covers it: {moved:?}"
    );
}

/// The harness's guard that the core keeps signed forms (checked on every action of every
/// test) catches a proof that lost its form.
#[test]
#[should_panic(expected = "without its signed form")]
fn the_harness_catches_a_proof_carried_without_its_signed_form() {
    let mut prepare = verified(
        2,
        Prepare {
            view: View(0),
            sequence: Sequence(1),
            digest: digest_of(&[1]),
        },
    );
    prepare.signed = None;
    let certificate = PreparedCertificate {
        pre_prepare: verified(0, pre_prepare(0, 1, &[1])),
        prepares: vec![prepare],
    };
    assert_forwardable(
        ReplicaId(1),
        &Action::Broadcast(Message::ViewChange(ViewChange {
            new_view: View(1),
            stable_checkpoint: Sequence(0),
            checkpoint_proof: Vec::new(),
            prepared: vec![certificate],
        })),
    );
}

#[test]
fn the_pending_bound_refuses_relayed_requests_never_the_replicas_own_clients() {
    let config = test_config();
    let mut backup = started_at_genesis(&config, 1);
    let max = config.max_pending_requests as u64;
    for id in 0..max {
        let _ = backup.handle(message(2, Message::Request(TestRequest(id))));
    }
    assert_eq!(backup.requests.pending_len() as u64, max);
    // One more relayed request is refused: the pool is full.
    let _ = backup.handle(message(2, Message::Request(TestRequest(max))));
    assert_eq!(backup.requests.known(&TestRequest(max).id()), None);
    // Its own client's request was admitted by its API (which bounds those): kept, and
    // forwarded to the primary.
    let actions = backup.handle(Event::ClientRequest(TestRequest(max + 1)));
    assert_eq!(
        backup.requests.known(&TestRequest(max + 1).id()),
        Some(super::requests::Known::Pending)
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Send { to: ReplicaId(0), message: Message::Request(r) } if r.0 == max + 1
    )));
}
