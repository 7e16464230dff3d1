//! The trace of one run: a running 64-bit fingerprint of every event handed to a replica
//! instance and every action it returned, and, when asked for, the same as readable lines.
//! Invariant: the fingerprint depends only on what the replicas saw and did, in order, so two
//! runs of one seed have the same fingerprint and any difference in a run changes it (up to
//! hash collisions).

use weft_node::consensus::pbft::{Action, Event, Message, Phase, Request};
use weft_node::types::Hash;

use super::rng::mix;

#[derive(Clone, Debug)]
pub struct Trace {
    fingerprint: u64,
    entries: u64,
    lines: Option<Vec<String>>,
}

impl Trace {
    /// `keep_lines`: also keep a readable line per entry (slow; for replaying one seed).
    pub fn new(keep_lines: bool) -> Trace {
        Trace {
            fingerprint: 0x5745_4654_5349_4D00,
            entries: 0,
            lines: keep_lines.then(Vec::new),
        }
    }

    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// How many events and actions went into the fingerprint.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    pub fn lines(&self) -> &[String] {
        self.lines.as_deref().unwrap_or(&[])
    }

    fn word(&mut self, value: u64) {
        self.fingerprint = mix(self.fingerprint ^ value).rotate_left(7);
    }

    fn hash(&mut self, hash: &Hash) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.0[..8]);
        self.word(u64::from_be_bytes(first));
    }

    /// A free-form note (fault injected, client request), kept in the fingerprint too.
    pub fn note(&mut self, tick: u64, code: u64, values: &[u64], text: impl FnOnce() -> String) {
        self.entries += 1;
        self.word(tick);
        self.word(0xF0 ^ code);
        for value in values {
            self.word(*value);
        }
        if let Some(lines) = self.lines.as_mut() {
            lines.push(format!("t{tick} {}", text()));
        }
    }

    pub fn event<R: Request>(&mut self, tick: u64, instance: usize, event: &Event<R>) {
        self.entries += 1;
        self.word(tick);
        self.word(instance as u64);
        match event {
            Event::Message(verified) => {
                self.word(1);
                self.word(u64::from(verified.from.0));
                self.message(&verified.message);
            }
            Event::ClientRequest(request) => {
                self.word(2);
                self.word(request_word(request));
            }
            Event::Tick => self.word(3),
            Event::Executed {
                sequence,
                state_digest,
            } => {
                self.word(4);
                self.word(sequence.0);
                self.hash(&Hash(*state_digest));
            }
            Event::StateTransferred {
                sequence,
                state_digest,
            } => {
                self.word(5);
                self.word(sequence.0);
                self.hash(&Hash(*state_digest));
            }
            Event::Restored(state) => {
                self.word(6);
                self.word(state.records.len() as u64);
                self.word(state.last_executed.0);
            }
        }
        if self.lines.is_some() {
            let text = describe_event(event);
            if let Some(lines) = self.lines.as_mut() {
                lines.push(format!("t{tick} #{instance} <- {text}"));
            }
        }
    }

    pub fn action<R: Request>(&mut self, tick: u64, instance: usize, action: &Action<R>) {
        self.entries += 1;
        self.word(instance as u64);
        match action {
            Action::Persist(record) => {
                self.word(11);
                self.word(record.view.0);
                self.word(record.sequence.0);
                self.word(phase_word(record.phase));
                self.hash(&record.digest);
            }
            Action::Send { to, message } => {
                self.word(12);
                self.word(u64::from(to.0));
                self.message(message);
            }
            Action::Broadcast(message) => {
                self.word(13);
                self.message(message);
            }
            Action::Execute { sequence, batch } => {
                self.word(14);
                self.word(sequence.0);
                self.word(batch.len() as u64);
                for request in batch {
                    self.word(request_word(request));
                }
            }
            Action::CheckpointStable {
                sequence,
                state_digest,
                proof,
            } => {
                self.word(15);
                self.word(sequence.0);
                self.hash(&Hash(*state_digest));
                self.word(proof.len() as u64);
            }
            Action::ViewChanged { view, primary } => {
                self.word(16);
                self.word(view.0);
                self.word(u64::from(primary.0));
            }
            Action::RequestStateTransfer {
                sequence,
                state_digest,
                peers,
            } => {
                self.word(17);
                self.word(sequence.0);
                self.hash(&Hash(*state_digest));
                self.word(peers.len() as u64);
            }
            Action::Committed { sequence, digest } => {
                self.word(18);
                self.word(sequence.0);
                self.hash(digest);
            }
            Action::Resubmit { requests } => {
                self.word(20);
                self.word(requests.len() as u64);
                for request in requests {
                    self.word(request_word(request));
                }
            }
            Action::Diverged {
                sequence,
                own,
                certified,
            } => {
                self.word(19);
                self.word(sequence.0);
                self.hash(&Hash(*own));
                self.hash(&Hash(*certified));
            }
        }
        if self.lines.is_some() {
            let text = describe_action(action);
            if let Some(lines) = self.lines.as_mut() {
                lines.push(format!("t{tick} #{instance} -> {text}"));
            }
        }
    }

    fn message<R: Request>(&mut self, message: &Message<R>) {
        self.word(message.kind() as u64);
        match message {
            Message::Request(request) => self.word(request_word(request)),
            Message::PrePrepare(pre_prepare) => {
                self.word(pre_prepare.view.0);
                self.word(pre_prepare.sequence.0);
                self.hash(&pre_prepare.digest);
            }
            Message::Prepare(prepare) => {
                self.word(prepare.view.0);
                self.word(prepare.sequence.0);
                self.hash(&prepare.digest);
            }
            Message::Commit(commit) => {
                self.word(commit.view.0);
                self.word(commit.sequence.0);
                self.hash(&commit.digest);
            }
            Message::Checkpoint(checkpoint) => {
                self.word(checkpoint.sequence.0);
                self.hash(&Hash(checkpoint.state_digest));
            }
            Message::ViewChange(view_change) => {
                self.word(view_change.new_view.0);
                self.word(view_change.stable_checkpoint.0);
                for certificate in &view_change.prepared {
                    self.word(certificate.view().0);
                    self.word(certificate.sequence().0);
                    self.hash(&certificate.digest());
                }
            }
            Message::NewView(new_view) => {
                self.word(new_view.view.0);
                for view_change in &new_view.view_changes {
                    self.word(u64::from(view_change.from.0));
                }
                for pre_prepare in new_view.pre_prepares.iter().map(|p| &p.message) {
                    self.word(pre_prepare.sequence.0);
                    self.hash(&pre_prepare.digest);
                }
            }
        }
    }
}

fn request_word<R: Request>(request: &R) -> u64 {
    let id = request.id().0;
    let mut first = [0u8; 8];
    first.copy_from_slice(&id[..8]);
    u64::from_be_bytes(first)
}

fn phase_word(phase: Phase) -> u64 {
    match phase {
        Phase::PrePrepare => 1,
        Phase::Prepare => 2,
        Phase::Commit => 3,
        Phase::Checkpoint => 4,
        Phase::ViewChange => 5,
        Phase::NewView => 6,
    }
}

fn short(hash: &Hash) -> String {
    hash.to_hex()[..8].to_string()
}

fn requests<R: Request>(batch: &[R]) -> String {
    let ids: Vec<String> = batch
        .iter()
        .map(|request| request_word(request).to_string())
        .collect();
    format!("[{}]", ids.join(","))
}

/// One line for a message: kind, view, sequence, short digest, and the batch if any.
pub fn describe_message<R: Request>(message: &Message<R>) -> String {
    match message {
        Message::Request(request) => format!("request {}", request_word(request)),
        Message::PrePrepare(m) => format!(
            "pre-prepare v{} s{} {} {}",
            m.view,
            m.sequence,
            short(&m.digest),
            requests(&m.batch)
        ),
        Message::Prepare(m) => format!("prepare v{} s{} {}", m.view, m.sequence, short(&m.digest)),
        Message::Commit(m) => format!("commit v{} s{} {}", m.view, m.sequence, short(&m.digest)),
        Message::Checkpoint(m) => format!(
            "checkpoint s{} {}",
            m.sequence,
            short(&Hash(m.state_digest))
        ),
        Message::ViewChange(m) => {
            let prepared: Vec<String> = m
                .prepared
                .iter()
                .map(|c| format!("s{}@v{}:{}", c.sequence(), c.view(), short(&c.digest())))
                .collect();
            format!(
                "view-change to v{} stable s{} prepared [{}]",
                m.new_view,
                m.stable_checkpoint,
                prepared.join(" ")
            )
        }
        Message::NewView(m) => {
            let senders: Vec<String> = m
                .view_changes
                .iter()
                .map(|v| v.from.0.to_string())
                .collect();
            let pre_prepares: Vec<String> = m
                .pre_prepares
                .iter()
                .map(|p| format!("s{}:{}", p.message.sequence, requests(&p.message.batch)))
                .collect();
            format!(
                "new-view v{} from [{}] pre-prepares [{}]",
                m.view,
                senders.join(","),
                pre_prepares.join(" ")
            )
        }
    }
}

fn describe_event<R: Request>(event: &Event<R>) -> String {
    match event {
        Event::Message(verified) => format!(
            "from {}: {}",
            verified.from.0,
            describe_message(&verified.message)
        ),
        Event::ClientRequest(request) => format!("client request {}", request_word(request)),
        Event::Tick => "tick".to_string(),
        Event::Executed {
            sequence,
            state_digest,
        } => format!("executed s{sequence} {}", short(&Hash(*state_digest))),
        Event::StateTransferred {
            sequence,
            state_digest,
        } => format!(
            "state transferred s{sequence} {}",
            short(&Hash(*state_digest))
        ),
        Event::Restored(state) => format!(
            "restored: {} records, last executed s{}, stable {:?}",
            state.records.len(),
            state.last_executed,
            state.stable_checkpoint.as_ref().map(|s| s.sequence.0)
        ),
    }
}

fn describe_action<R: Request>(action: &Action<R>) -> String {
    match action {
        Action::Persist(record) => format!(
            "persist {:?} v{} s{} {}",
            record.phase,
            record.view,
            record.sequence,
            short(&record.digest)
        ),
        Action::Send { to, message } => format!("send to {}: {}", to.0, describe_message(message)),
        Action::Broadcast(message) => format!("broadcast: {}", describe_message(message)),
        Action::Execute { sequence, batch } => {
            format!("execute s{sequence} {}", requests(batch))
        }
        Action::CheckpointStable {
            sequence,
            state_digest,
            ..
        } => format!(
            "checkpoint stable s{sequence} {}",
            short(&Hash(*state_digest))
        ),
        Action::ViewChanged { view, primary } => {
            format!("entered view {view} (primary {})", primary.0)
        }
        Action::RequestStateTransfer {
            sequence, peers, ..
        } => {
            let peers: Vec<String> = peers.iter().map(|p| p.0.to_string()).collect();
            format!(
                "request state transfer to s{sequence} from [{}]",
                peers.join(",")
            )
        }
        Action::Committed { sequence, digest } => {
            format!("committed s{sequence} {}", short(digest))
        }
        Action::Resubmit { requests: held } => {
            format!("resubmit what the ledger lacks of {}", requests(held))
        }
        Action::Diverged {
            sequence,
            own,
            certified,
        } => format!(
            "diverged at s{sequence}: own {} certified {}",
            short(&Hash(*own)),
            short(&Hash(*certified))
        ),
    }
}
