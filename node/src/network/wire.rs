//! The consensus edge: PBFT messages <-> `weft.v1` consensus messages. Outbound, a message is
//! encoded once and signed if it may be forwarded as proof ([`Authentication`]); the proofs it
//! carries (checkpoint messages, prepared certificates, view changes, a new view's
//! pre-prepares) go out as the exact signed messages their senders made, which travel inside
//! each [`Verified`] value as its [`SignedForm`]. Inbound, every signature (nested ones
//! included) is checked against the genesis validator keys, a message that comes unsigned
//! must be of a kind never forwarded and arrive over its sender's own connection, and every
//! client transaction goes through admission, before a [`Verified`] value exists. Invariant:
//! the core only ever sees messages whose sender was authenticated, every message it can be
//! asked to forward as proof carries a signature that verified, and this replica can forward
//! any proof the core hands it. The edge keeps nothing itself but its own
//! last few signed pre-prepares and prepares ([`OwnSigned`], so that its journal does not sign
//! a batch again): what is held for forwarding is what the core holds, within the core's
//! window and per-sender bounds.
//!
//! DESIGN names `types/convert.rs` as the one place for proto <-> domain conversions; consensus
//! messages convert here instead, because decoding a nested proof is inseparable from checking
//! its signature (see docs/ARCHITECTURE.md).

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use weft_proto::pb;
use weft_proto::pb::consensus_message::Kind;
use weft_proto::signing::{commit_signing_bytes, consensus_signing_bytes};
use weft_proto::{Genesis, Identity, Signer};

use crate::admission::Admission;
use crate::consensus::pbft::{
    Checkpoint, Commit, Equivocation, Message, MessageKind, NewView, PersistRecord, Phase,
    PrePrepare, Prepare, PreparedCertificate, RecordDetail, ReplicaId, Request, Sequence,
    SignedForm, StableCheckpoint, Verified, View, ViewChange,
};
use crate::network::own_signed::OwnSigned;
use crate::types::convert::{signed_copied_from_pb, signed_from_pb, signed_to_pb};
use crate::types::{Hash, Transaction};

/// A PBFT message of this network: requests are verified transactions.
pub type PbftMessage = Message<Transaction>;

/// Why a consensus message was refused at the edge.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("replica {0} is not a validator of this network")]
    UnknownReplica(u32),
    #[error("the signature of replica {0} does not verify")]
    BadSignature(u32),
    #[error("the message does not decode: {0}")]
    Malformed(String),
    #[error("a nested {expected:?} was expected, found {found:?}")]
    WrongNested {
        expected: MessageKind,
        found: MessageKind,
    },
    #[error("a transaction in the message is not admissible: {0}")]
    Transaction(#[from] crate::admission::AdmissionError),
    #[error(
        "a {kind:?} from replica {from} came without its signed form, so it cannot be forwarded as proof"
    )]
    MissingProof { from: u32, kind: MessageKind },
    #[error("replica {0} sent a block signature that does not verify")]
    BadBlockSignature(u32),
    #[error(
        "an unsigned message from replica {from} came over replica {via}'s connection: only its sender's own connection vouches for an unsigned message"
    )]
    UnsignedElsewhere { from: u32, via: u32 },
}

/// Most client transactions one relayed batch may carry.
pub const MAX_RELAYED_REQUESTS: usize = 1_000;

/// How a receiver knows which validator sent a message. Validators talk over mutual TLS, and
/// the consensus service names the validator at the other end of each connection by its
/// certificate, so the connection alone authenticates what a validator sends in its own name.
/// A signature is needed only where a message may travel further: a message carried as proof
/// (pre-prepares and prepares in prepared certificates, checkpoints, view changes, a new view),
/// or one a third party must be able to check. Commits, relayed client transactions (each
/// still carries its client's signature) and block votes (whose vote carries its own
/// signature over the commit domain) are never forwarded, so they go out unsigned: Castro
/// and Liskov authenticate these with MACs for the same reason. Each signature saved is one
/// Ed25519 signing at the sender and one verification at every receiver, per message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authentication {
    /// The sender's Ed25519 signature over the message.
    Signature,
    /// The connection it came over is the sender's own.
    Channel,
}

impl Authentication {
    /// How a message of `kind` is authenticated when it arrives over its sender's own
    /// connection (over any other, or nested in another message, only a signature will do).
    fn of(kind: &Kind) -> Authentication {
        match kind {
            Kind::Commit(_) | Kind::Request(_) | Kind::Requests(_) | Kind::BlockSigned(_) => {
                Authentication::Channel
            }
            Kind::PrePrepare(_)
            | Kind::Prepare(_)
            | Kind::Checkpoint(_)
            | Kind::ViewChange(_)
            | Kind::NewView(_) => Authentication::Signature,
        }
    }
}

/// A message that passed the edge: for the replica, or a validator's vote for a commit
/// certificate (which the replica never sees).
#[derive(Debug)]
pub enum Inbound {
    Consensus(Box<Verified<PbftMessage>>),
    /// A relayed batch of client transactions: one request message each (none with a signed
    /// form: the relaying validator's connection vouched for them, and no proof ever needs
    /// them), and how many were not admissible here
    /// (dropped: the primary's pre-prepare still brings them, or not, to every validator).
    Requests {
        requests: Vec<Verified<PbftMessage>>,
        refused: usize,
    },
    BlockSigned {
        from: ReplicaId,
        number: u64,
        block_hash: Hash,
        signature: Bytes,
    },
}

impl WireError {
    /// A short label for the rejected-messages metric.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::UnknownReplica(_) => "unknown_replica",
            WireError::BadSignature(_) => "bad_signature",
            WireError::Malformed(_) => "malformed",
            WireError::WrongNested { .. } => "wrong_nested",
            WireError::Transaction(_) => "bad_transaction",
            WireError::MissingProof { .. } => "missing_proof",
            WireError::BadBlockSignature(_) => "bad_block_signature",
            WireError::UnsignedElsewhere { .. } => "unsigned_elsewhere",
        }
    }
}

impl Request for Transaction {
    fn id(&self) -> crate::consensus::pbft::RequestId {
        crate::consensus::pbft::RequestId(self.signed.id.0)
    }

    /// The transaction hash the block's transactions root is built from (payload, signer and
    /// signature), computed when the transaction was admitted.
    fn content_digest(&self) -> [u8; 32] {
        self.hash.0
    }
}

/// Signs outbound messages as this replica and verifies inbound ones.
pub struct Wire {
    chain_id: String,
    me: ReplicaId,
    signer: Signer,
    validators: Vec<Arc<Identity>>,
    /// The node's one admission (shared with its client API), so that a transaction verified
    /// on one path is not verified again on another.
    admission: Arc<Admission>,
    own_signed: OwnSigned,
}

impl Wire {
    /// `validators` are the genesis validators in replica-id order.
    pub fn new(
        genesis: &Genesis,
        me: ReplicaId,
        signer: Signer,
        validators: Vec<Arc<Identity>>,
        admission: Arc<Admission>,
    ) -> Wire {
        Wire {
            chain_id: genesis.chain_id.clone(),
            me,
            signer,
            validators,
            admission,
            own_signed: OwnSigned::default(),
        }
    }

    pub fn me(&self) -> ReplicaId {
        self.me
    }

    pub fn replica_count(&self) -> usize {
        self.validators.len()
    }

    /// Encodes `message` as this replica sends it: signed when its kind can be forwarded as
    /// proof, without a signature when the receiver authenticates it by the connection it
    /// arrives on ([`Authentication`]). Signing the same message again (a view change re-sent
    /// on its timer) gives the same bytes: the encoding is deterministic, the proofs inside go
    /// out in their senders' signed forms, and so are Ed25519 signatures.
    pub fn sign(&self, message: &PbftMessage) -> Result<pb::SignedConsensusMessage, WireError> {
        let signed = self.envelope(self.encode(message)?);
        self.own_signed.remember(message, &signed);
        Ok(signed)
    }

    /// Wraps this validator's vote for a commit certificate, which carries its own signature
    /// (over the commit domain), for the other validators.
    pub fn block_vote(&self, vote: pb::BlockSigned) -> pb::SignedConsensusMessage {
        self.envelope(Kind::BlockSigned(vote))
    }

    /// Client transactions relayed in one message: to the primary (those this validator
    /// admitted), or to every validator (those it resends on its request timer).
    pub fn relay(&self, requests: &[Transaction]) -> pb::SignedConsensusMessage {
        self.envelope(Kind::Requests(pb::RequestBatch {
            requests: requests.iter().map(|tx| signed_to_pb(&tx.signed)).collect(),
        }))
    }

    fn envelope(&self, kind: Kind) -> pb::SignedConsensusMessage {
        let authentication = Authentication::of(&kind);
        let encoded = pb::ConsensusMessage { kind: Some(kind) }.encode_to_vec();
        let signature = match authentication {
            Authentication::Signature => Bytes::copy_from_slice(
                &self
                    .signer
                    .sign(&consensus_signing_bytes(&self.chain_id, &encoded)),
            ),
            Authentication::Channel => Bytes::new(),
        };
        pb::SignedConsensusMessage {
            from: self.me.0,
            message: Bytes::from(encoded),
            signature,
        }
    }

    /// The signed form of a message another replica (or this one) sent, to carry as proof.
    fn proof<M: Clone>(
        &self,
        verified: &Verified<M>,
        wrap: impl Fn(M) -> PbftMessage,
    ) -> Result<pb::SignedConsensusMessage, WireError> {
        if let Some(form) = &verified.signed {
            return Ok(pb::SignedConsensusMessage {
                from: verified.from.0,
                message: form.message.clone(),
                signature: form.signature.clone(),
            });
        }
        let message = wrap(verified.message.clone());
        if verified.from == self.me {
            // This replica's own message: as it went out, or signed again to the same bytes.
            return match self.own_signed.find(&message) {
                Some(signed) => Ok(signed),
                None => self.sign(&message),
            };
        }
        Err(WireError::MissingProof {
            from: verified.from.0,
            kind: message.kind(),
        })
    }

    fn encode(&self, message: &PbftMessage) -> Result<Kind, WireError> {
        Ok(match message {
            Message::Request(tx) => Kind::Request(signed_to_pb(&tx.signed)),
            Message::PrePrepare(m) => Kind::PrePrepare(pre_prepare_to_pb(m)),
            Message::Prepare(m) => Kind::Prepare(pb::Prepare {
                view: m.view.0,
                sequence: m.sequence.0,
                digest: Bytes::copy_from_slice(&m.digest.0),
            }),
            Message::Commit(m) => Kind::Commit(pb::Commit {
                view: m.view.0,
                sequence: m.sequence.0,
                digest: Bytes::copy_from_slice(&m.digest.0),
            }),
            Message::Checkpoint(m) => Kind::Checkpoint(pb::Checkpoint {
                sequence: m.sequence.0,
                state_digest: Bytes::copy_from_slice(&m.state_digest),
            }),
            Message::ViewChange(m) => Kind::ViewChange(self.view_change_to_pb(m)?),
            Message::NewView(m) => Kind::NewView(pb::NewView {
                view: m.view.0,
                view_changes: m
                    .view_changes
                    .iter()
                    .map(|v| self.proof(v, Message::ViewChange))
                    .collect::<Result<_, _>>()?,
                pre_prepares: m
                    .pre_prepares
                    .iter()
                    .map(|p| self.proof(p, Message::PrePrepare))
                    .collect::<Result<_, _>>()?,
            }),
        })
    }

    fn view_change_to_pb(&self, m: &ViewChange<Transaction>) -> Result<pb::ViewChange, WireError> {
        Ok(pb::ViewChange {
            new_view: m.new_view.0,
            stable_checkpoint: m.stable_checkpoint.0,
            checkpoint_proof: m
                .checkpoint_proof
                .iter()
                .map(|c| self.proof(c, Message::Checkpoint))
                .collect::<Result<_, _>>()?,
            prepared: m
                .prepared
                .iter()
                .map(|c| self.certificate_to_pb(c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A prepared certificate in its signed form (also what the journal stores).
    pub fn certificate_to_pb(
        &self,
        certificate: &PreparedCertificate<Transaction>,
    ) -> Result<pb::PreparedCertificate, WireError> {
        Ok(pb::PreparedCertificate {
            pre_prepare: Some(self.proof(&certificate.pre_prepare, Message::PrePrepare)?),
            prepares: certificate
                .prepares
                .iter()
                .map(|p| self.proof(p, Message::Prepare))
                .collect::<Result<_, _>>()?,
        })
    }

    /// A primary's two conflicting pre-prepares, each in the form the primary signed.
    pub fn evidence_to_pb(
        &self,
        evidence: &Equivocation<Transaction>,
    ) -> Result<pb::EquivocationEvidence, WireError> {
        Ok(pb::EquivocationEvidence {
            first: Some(self.proof(&evidence.first, Message::PrePrepare)?),
            second: Some(self.proof(&evidence.second, Message::PrePrepare)?),
        })
    }

    /// Checkpoint messages in their signed form.
    pub fn checkpoints_to_pb(
        &self,
        proof: &[Verified<Checkpoint>],
    ) -> Result<Vec<pb::SignedConsensusMessage>, WireError> {
        proof
            .iter()
            .map(|c| self.proof(c, Message::Checkpoint))
            .collect()
    }

    /// Decodes `signed` and authenticates its sender: an unsigned message by the connection
    /// it came over, which must be the sender's own (`via`, named by its TLS certificate),
    /// and only if its kind allows it; any other by the sender's signature, which is always
    /// checked when present. `via` is `None` for a message carried inside another or read
    /// back from the journal: only a signature can vouch for those.
    fn open(
        &self,
        signed: &pb::SignedConsensusMessage,
        via: Option<ReplicaId>,
    ) -> Result<(ReplicaId, Kind, Authentication), WireError> {
        let sender = self
            .validators
            .get(signed.from as usize)
            .ok_or(WireError::UnknownReplica(signed.from))?;
        let decoded = pb::ConsensusMessage::decode(signed.message.as_ref())
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        let kind = decoded
            .kind
            .ok_or_else(|| WireError::Malformed("no message kind".into()))?;
        // A signature that is there is always checked; an unsigned message must be of a kind
        // its sender's own connection vouches for, and have come over it.
        let authentication = match via {
            Some(via)
                if signed.signature.is_empty()
                    && Authentication::of(&kind) == Authentication::Channel =>
            {
                if via.0 != signed.from {
                    return Err(WireError::UnsignedElsewhere {
                        from: signed.from,
                        via: via.0,
                    });
                }
                Authentication::Channel
            }
            _ => Authentication::Signature,
        };
        if authentication == Authentication::Signature
            && !sender.verify(
                &consensus_signing_bytes(&self.chain_id, &signed.message),
                &signed.signature,
            )
        {
            return Err(WireError::BadSignature(signed.from));
        }
        Ok((ReplicaId(signed.from), kind, authentication))
    }

    /// Checks a message that arrived from a peer over `via`'s connection: a consensus message
    /// for the replica (with everything nested in it), or a block vote (with its commit
    /// signature).
    pub fn verify_inbound(
        &self,
        via: ReplicaId,
        signed: &pb::SignedConsensusMessage,
    ) -> Result<Inbound, WireError> {
        let (from, kind, authentication) = self.open(signed, Some(via))?;
        if let Kind::BlockSigned(vote) = kind {
            let block_hash = hash(&vote.block_hash)?;
            let sender = &self.validators[from.0 as usize];
            if !sender.verify(
                &commit_signing_bytes(&self.chain_id, vote.number, &block_hash.0),
                &vote.signature,
            ) {
                return Err(WireError::BadBlockSignature(from.0));
            }
            return Ok(Inbound::BlockSigned {
                from,
                number: vote.number,
                block_hash,
                signature: vote.signature,
            });
        }
        if let Kind::Requests(batch) = kind {
            if batch.requests.len() > MAX_RELAYED_REQUESTS {
                return Err(WireError::Malformed(format!(
                    "a relayed batch of {} requests; at most {MAX_RELAYED_REQUESTS}",
                    batch.requests.len()
                )));
            }
            // A verdict per transaction: admission can differ between validators (a
            // certificate that expired a moment ago), and one refusal must not cost the others
            // their relay.
            let mut requests = Vec::with_capacity(batch.requests.len());
            let mut refused = 0;
            let verdicts = self.admission.verify_all(
                batch
                    .requests
                    .into_iter()
                    .map(signed_copied_from_pb)
                    .collect(),
            );
            for verdict in verdicts {
                match verdict {
                    Ok(request) => requests.push(Verified::authenticated_by_channel(
                        from,
                        Message::Request(request),
                    )),
                    Err(e) => {
                        tracing::debug!(replica = from.0, error = %e, "a relayed transaction is not admissible here");
                        refused += 1;
                    }
                }
            }
            return Ok(Inbound::Requests { requests, refused });
        }
        self.verified(signed, from, kind, authentication)
            .map(|m| Inbound::Consensus(Box::new(m)))
    }

    /// Checks the signature of `signed` (and of everything nested in it) and decodes it: a
    /// message that may be carried as proof, so its signature is required whatever its kind.
    pub fn verify(
        &self,
        signed: &pb::SignedConsensusMessage,
    ) -> Result<Verified<PbftMessage>, WireError> {
        let (from, kind, authentication) = self.open(signed, None)?;
        self.verified(signed, from, kind, authentication)
    }

    fn verified(
        &self,
        signed: &pb::SignedConsensusMessage,
        from: ReplicaId,
        kind: Kind,
        authentication: Authentication,
    ) -> Result<Verified<PbftMessage>, WireError> {
        let message = self.decode(from, kind)?;
        Ok(match authentication {
            Authentication::Signature => Verified::checked_by_edge(
                from,
                message,
                SignedForm {
                    message: signed.message.clone(),
                    signature: signed.signature.clone(),
                },
            ),
            Authentication::Channel => Verified::authenticated_by_channel(from, message),
        })
    }

    /// Verifies a nested message that must be of kind `expected`.
    fn nested<M>(
        &self,
        signed: &pb::SignedConsensusMessage,
        expected: MessageKind,
        unwrap: impl Fn(PbftMessage) -> Option<M>,
    ) -> Result<Verified<M>, WireError> {
        let verified = self.verify(signed)?;
        let found = verified.message.kind();
        let Verified {
            from,
            message,
            signed,
        } = verified;
        let message = unwrap(message).ok_or(WireError::WrongNested { expected, found })?;
        Ok(Verified {
            from,
            message,
            signed,
        })
    }

    fn decode(&self, from: ReplicaId, kind: Kind) -> Result<PbftMessage, WireError> {
        Ok(match kind {
            Kind::Request(tx) => Message::Request(self.admission.verify(signed_copied_from_pb(tx))?),
            Kind::PrePrepare(m) => Message::PrePrepare(self.pre_prepare_from_pb(m)?),
            Kind::Prepare(m) => Message::Prepare(Prepare {
                view: View(m.view),
                sequence: Sequence(m.sequence),
                digest: hash(&m.digest)?,
            }),
            Kind::Commit(m) => Message::Commit(Commit {
                view: View(m.view),
                sequence: Sequence(m.sequence),
                digest: hash(&m.digest)?,
            }),
            Kind::Checkpoint(m) => Message::Checkpoint(Checkpoint {
                sequence: Sequence(m.sequence),
                state_digest: hash(&m.state_digest)?.0,
            }),
            Kind::ViewChange(m) => Message::ViewChange(self.view_change_from_pb(m)?),
            Kind::BlockSigned(_) | Kind::Requests(_) => {
                return Err(WireError::Malformed(
                    "a block signature or a relayed batch is not a replica's message and cannot be nested".into(),
                ));
            }
            Kind::NewView(m) => Message::NewView(NewView {
                view: View(m.view),
                view_changes: m
                    .view_changes
                    .iter()
                    .map(|v| {
                        self.nested(v, MessageKind::ViewChange, |m| match m {
                            Message::ViewChange(v) => Some(v),
                            _ => None,
                        })
                    })
                    .collect::<Result<_, _>>()?,
                pre_prepares: m
                    .pre_prepares
                    .iter()
                    .map(|p| {
                        let verified = self.nested(p, MessageKind::PrePrepare, |m| match m {
                            Message::PrePrepare(p) => Some(p),
                            _ => None,
                        })?;
                        if verified.from != from {
                            return Err(WireError::Malformed(format!(
                                "a new view from replica {} carries a pre-prepare signed by replica {}",
                                from.0, verified.from.0
                            )));
                        }
                        Ok(verified)
                    })
                    .collect::<Result<_, _>>()?,
            }),
        })
    }

    fn pre_prepare_from_pb(&self, m: pb::PrePrepare) -> Result<PrePrepare<Transaction>, WireError> {
        let batch = self
            .admission
            .verify_whole(m.batch.into_iter().map(signed_from_pb).collect())?;
        Ok(PrePrepare {
            view: View(m.view),
            sequence: Sequence(m.sequence),
            digest: hash(&m.digest)?,
            batch,
        })
    }

    fn view_change_from_pb(&self, m: pb::ViewChange) -> Result<ViewChange<Transaction>, WireError> {
        Ok(ViewChange {
            new_view: View(m.new_view),
            stable_checkpoint: Sequence(m.stable_checkpoint),
            checkpoint_proof: self.checkpoints_from_pb(&m.checkpoint_proof)?,
            prepared: m
                .prepared
                .iter()
                .map(|c| self.certificate_from_pb(c))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Verifies and decodes a prepared certificate (from the wire or from the journal).
    pub fn certificate_from_pb(
        &self,
        c: &pb::PreparedCertificate,
    ) -> Result<PreparedCertificate<Transaction>, WireError> {
        let pre_prepare = c.pre_prepare.as_ref().ok_or_else(|| {
            WireError::Malformed("a prepared certificate without its pre-prepare".into())
        })?;
        Ok(PreparedCertificate {
            pre_prepare: self.nested(pre_prepare, MessageKind::PrePrepare, |m| match m {
                Message::PrePrepare(p) => Some(p),
                _ => None,
            })?,
            prepares: c
                .prepares
                .iter()
                .map(|p| {
                    self.nested(p, MessageKind::Prepare, |m| match m {
                        Message::Prepare(p) => Some(p),
                        _ => None,
                    })
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Verifies and decodes signed checkpoint messages (from the wire or from the journal).
    pub fn checkpoints_from_pb(
        &self,
        proof: &[pb::SignedConsensusMessage],
    ) -> Result<Vec<Verified<Checkpoint>>, WireError> {
        proof
            .iter()
            .map(|c| {
                self.nested(c, MessageKind::Checkpoint, |m| match m {
                    Message::Checkpoint(c) => Some(c),
                    _ => None,
                })
            })
            .collect()
    }
}

fn pre_prepare_to_pb(m: &PrePrepare<Transaction>) -> pb::PrePrepare {
    pb::PrePrepare {
        view: m.view.0,
        sequence: m.sequence.0,
        digest: Bytes::copy_from_slice(&m.digest.0),
        batch: m.batch.iter().map(|tx| signed_to_pb(&tx.signed)).collect(),
    }
}

fn hash(bytes: &[u8]) -> Result<Hash, WireError> {
    Hash::from_slice(bytes)
        .ok_or_else(|| WireError::Malformed(format!("a digest of {} bytes, not 32", bytes.len())))
}

fn phase_code(phase: Phase) -> u32 {
    match phase {
        Phase::PrePrepare => 1,
        Phase::Prepare => 2,
        Phase::Commit => 3,
        Phase::Checkpoint => 4,
        Phase::ViewChange => 5,
        Phase::NewView => 6,
    }
}

fn phase_from_code(code: u32) -> Result<Phase, WireError> {
    Ok(match code {
        1 => Phase::PrePrepare,
        2 => Phase::Prepare,
        3 => Phase::Commit,
        4 => Phase::Checkpoint,
        5 => Phase::ViewChange,
        6 => Phase::NewView,
        other => {
            return Err(WireError::Malformed(format!(
                "unknown journal phase {other}"
            )));
        }
    })
}

/// Journal encodings: what the replica signed and its stable checkpoint, with proofs in signed
/// form so that a restarted replica can forward them and re-checks them when it reads them.
impl Wire {
    pub fn encode_record(&self, record: &PersistRecord<Transaction>) -> Result<Vec<u8>, WireError> {
        let mut journal = pb::JournalRecord {
            phase: phase_code(record.phase),
            view: record.view.0,
            sequence: record.sequence.0,
            digest: Bytes::copy_from_slice(&record.digest.0),
            prepared: None,
            view_change: None,
        };
        match &record.detail {
            RecordDetail::None => {}
            RecordDetail::Prepared(certificate) => {
                journal.prepared = Some(self.certificate_to_pb(certificate)?);
            }
            RecordDetail::ViewChange(view_change) => {
                journal.view_change = Some(self.sign(&Message::ViewChange(view_change.clone()))?);
            }
        }
        Ok(journal.encode_to_vec())
    }

    pub fn decode_record(&self, bytes: &[u8]) -> Result<PersistRecord<Transaction>, WireError> {
        let journal =
            pb::JournalRecord::decode(bytes).map_err(|e| WireError::Malformed(e.to_string()))?;
        let detail = match (&journal.prepared, &journal.view_change) {
            (Some(certificate), _) => {
                RecordDetail::Prepared(self.certificate_from_pb(certificate)?)
            }
            (None, Some(signed)) => {
                let verified = self.nested(signed, MessageKind::ViewChange, |m| match m {
                    Message::ViewChange(v) => Some(v),
                    _ => None,
                })?;
                RecordDetail::ViewChange(verified.message)
            }
            (None, None) => RecordDetail::None,
        };
        Ok(PersistRecord {
            view: View(journal.view),
            sequence: Sequence(journal.sequence),
            phase: phase_from_code(journal.phase)?,
            digest: hash(&journal.digest)?,
            detail,
        })
    }

    pub fn encode_stable(&self, stable: &StableCheckpoint) -> Result<Vec<u8>, WireError> {
        Ok(pb::JournalCheckpoint {
            sequence: stable.sequence.0,
            state_digest: Bytes::copy_from_slice(&stable.state_digest),
            proof: self.checkpoints_to_pb(&stable.proof)?,
        }
        .encode_to_vec())
    }

    pub fn decode_stable(&self, bytes: &[u8]) -> Result<StableCheckpoint, WireError> {
        let journal = pb::JournalCheckpoint::decode(bytes)
            .map_err(|e| WireError::Malformed(e.to_string()))?;
        Ok(StableCheckpoint {
            sequence: Sequence(journal.sequence),
            state_digest: hash(&journal.state_digest)?.0,
            proof: self.checkpoints_from_pb(&journal.proof)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use weft_proto::Role;

    use super::*;
    use crate::consensus::pbft::batch_digest;

    struct Fixture {
        genesis: Genesis,
        signers: Vec<Signer>,
        alice: Signer,
    }

    fn fixture() -> Fixture {
        let (genesis, signers, ca) = crate::test_support::validator_network_with_ca(4, "wire");
        let alice = ca
            .issue("alice", Role::Client)
            .expect("issue")
            .signer()
            .expect("signer");
        Fixture {
            signers,
            genesis,
            alice,
        }
    }

    impl Fixture {
        /// The wire of replica `me`, as a fresh process would build it.
        fn wire(&self, me: u32) -> Wire {
            let admission = Admission::new(&self.genesis);
            let identities = self
                .signers
                .iter()
                .map(|s| {
                    admission
                        .identity(&s.identity().certificate)
                        .expect("validator identity")
                })
                .collect();
            Wire::new(
                &self.genesis,
                ReplicaId(me),
                self.signers[me as usize].clone(),
                identities,
                Arc::new(admission),
            )
        }

        fn transaction(&self, key: &str) -> Transaction {
            let (_, signed) = weft_proto::tx::sign_transaction(
                &self.alice,
                &self.genesis.chain_id,
                "cc",
                "put",
                &[key.as_bytes().to_vec()],
            );
            Admission::new(&self.genesis)
                .verify(signed_from_pb(signed))
                .expect("admissible")
        }
    }

    /// Replica `wire`'s prepare or commit for (view 0, sequence 1, digest [1; 32]), as it goes
    /// out.
    fn signed_vote(wire: &Wire, phase: Phase) -> pb::SignedConsensusMessage {
        let (view, sequence, digest) = (View(0), Sequence(1), Hash([1; 32]));
        let vote = match phase {
            Phase::Prepare => Message::Prepare(Prepare {
                view,
                sequence,
                digest,
            }),
            Phase::Commit => Message::Commit(Commit {
                view,
                sequence,
                digest,
            }),
            other => panic!("not a vote: {other:?}"),
        };
        wire.sign(&vote).expect("sign")
    }

    /// A prepared certificate for (view 0, sequence 1) as replica 3 would hold it: the
    /// primary's pre-prepare and prepares from replicas 1 and 2, each received over the wire.
    fn certificate(f: &Fixture, receiver: &Wire) -> PreparedCertificate<Transaction> {
        let batch = vec![f.transaction("k")];
        let digest = batch_digest(&batch);
        let pre_prepare = PrePrepare {
            view: View(0),
            sequence: Sequence(1),
            digest,
            batch,
        };
        let prepare = Prepare {
            view: View(0),
            sequence: Sequence(1),
            digest,
        };
        let received = |from: u32, message: PbftMessage| {
            let signed = f.wire(from).sign(&message).expect("sign");
            receiver.verify(&signed).expect("verifies")
        };
        let unwrap_pre_prepare = |v: Verified<PbftMessage>| {
            v.map(|m| match m {
                Message::PrePrepare(p) => p,
                other => panic!("{other:?}"),
            })
        };
        let unwrap_prepare = |v: Verified<PbftMessage>| {
            v.map(|m| match m {
                Message::Prepare(p) => p,
                other => panic!("{other:?}"),
            })
        };
        PreparedCertificate {
            pre_prepare: unwrap_pre_prepare(received(0, Message::PrePrepare(pre_prepare))),
            prepares: vec![
                unwrap_prepare(received(1, Message::Prepare(prepare.clone()))),
                unwrap_prepare(received(2, Message::Prepare(prepare))),
            ],
        }
    }

    #[test]
    fn every_message_kind_round_trips_through_signing_and_verification() {
        let f = fixture();
        let sender = f.wire(1);
        let receiver = f.wire(2);
        let certificate = certificate(&f, &sender);
        let view_change = ViewChange {
            new_view: View(1),
            stable_checkpoint: Sequence(0),
            checkpoint_proof: Vec::new(),
            prepared: vec![certificate.clone()],
        };
        let messages = [
            Message::Request(f.transaction("r")),
            Message::PrePrepare(certificate.pre_prepare.message.clone()),
            Message::Prepare(certificate.prepares[0].message.clone()),
            Message::Commit(Commit {
                view: View(0),
                sequence: Sequence(1),
                digest: certificate.digest(),
            }),
            Message::Checkpoint(Checkpoint {
                sequence: Sequence(10),
                state_digest: [7; 32],
            }),
            Message::ViewChange(view_change),
        ];
        for message in messages {
            let signed = sender.sign(&message).expect("sign");
            let Ok(Inbound::Consensus(verified)) = receiver.verify_inbound(ReplicaId(1), &signed)
            else {
                panic!("{message:?} arrives over its sender's connection");
            };
            assert_eq!(verified.from, ReplicaId(1));
            assert_eq!(verified.message, message);
            // Requests and commits are never forwarded: they go out unsigned, and arrive
            // without a signed form to carry.
            let forwardable = !matches!(message, Message::Request(_) | Message::Commit(_));
            assert_eq!(signed.signature.len(), if forwardable { 64 } else { 0 });
            assert_eq!(verified.signed.is_some(), forwardable, "{message:?}");
            if forwardable {
                assert_eq!(
                    receiver.verify(&signed).expect("verifies as proof").message,
                    message
                );
            }
        }
    }

    #[test]
    fn unsigned_kinds_are_accepted_only_over_their_senders_own_connection() {
        let f = fixture();
        let sender = f.wire(1);
        let receiver = f.wire(2);
        let commit = signed_vote(&sender, Phase::Commit);
        let relay = sender.relay(&[f.transaction("a")]);
        let number = 7;
        let block_hash = Hash([5; 32]);
        let vote = |signature: Vec<u8>| {
            sender.block_vote(pb::BlockSigned {
                number,
                block_hash: Bytes::copy_from_slice(&block_hash.0),
                signature: signature.into(),
            })
        };
        let good_vote = vote(
            f.signers[1]
                .sign(&commit_signing_bytes("wire", number, &block_hash.0))
                .to_vec(),
        );
        for unsigned in [&commit, &relay, &good_vote] {
            assert!(unsigned.signature.is_empty(), "goes out unsigned");
            assert!(
                receiver.verify_inbound(ReplicaId(1), unsigned).is_ok(),
                "over validator 1's own connection"
            );
            // Over another validator's connection (relayed, or forged by it), or carried
            // inside another message, only a signature could vouch for it.
            assert!(matches!(
                receiver.verify_inbound(ReplicaId(3), unsigned),
                Err(WireError::UnsignedElsewhere { from: 1, via: 3 })
            ));
            assert!(matches!(
                receiver.verify(unsigned),
                Err(WireError::BadSignature(1))
            ));
        }
        // A signature that is there is checked, whatever the kind: a signed commit verifies
        // over another validator's connection, and a forged one fails over its own.
        let encoded = commit.message.clone();
        let signed_commit = pb::SignedConsensusMessage {
            signature: Bytes::copy_from_slice(
                &f.signers[1].sign(&consensus_signing_bytes("wire", &encoded)),
            ),
            ..commit.clone()
        };
        assert!(
            receiver
                .verify_inbound(ReplicaId(3), &signed_commit)
                .is_ok()
        );
        let forged_commit = pb::SignedConsensusMessage {
            signature: Bytes::copy_from_slice(
                &f.signers[3].sign(&consensus_signing_bytes("wire", &encoded)),
            ),
            ..commit.clone()
        };
        assert!(matches!(
            receiver.verify_inbound(ReplicaId(1), &forged_commit),
            Err(WireError::BadSignature(1))
        ));
        // A block vote still carries its own signature, checked over any connection.
        let mut forged = good_vote.clone().message.to_vec();
        let position = forged.len() - 1;
        forged[position] ^= 1;
        assert!(matches!(
            receiver.verify_inbound(
                ReplicaId(1),
                &pb::SignedConsensusMessage {
                    message: forged.into(),
                    ..good_vote
                }
            ),
            Err(WireError::BadBlockSignature(1))
        ));
        // A kind that may be forwarded needs its signature even over its sender's own
        // connection.
        let prepare = signed_vote(&sender, Phase::Prepare);
        assert!(receiver.verify_inbound(ReplicaId(1), &prepare).is_ok());
        let stripped = pb::SignedConsensusMessage {
            signature: Bytes::new(),
            ..prepare
        };
        assert!(matches!(
            receiver.verify_inbound(ReplicaId(1), &stripped),
            Err(WireError::BadSignature(1))
        ));
    }

    #[test]
    fn relayed_requests_arrive_one_message_each_and_a_bad_one_is_dropped_alone() {
        let f = fixture();
        let sender = f.wire(1);
        let receiver = f.wire(2);
        let txs = [f.transaction("a"), f.transaction("b"), f.transaction("c")];
        let signed = sender.relay(&txs);
        let Ok(Inbound::Requests { requests, refused }) =
            receiver.verify_inbound(ReplicaId(1), &signed)
        else {
            panic!("a relayed batch verifies into requests");
        };
        assert_eq!((requests.len(), refused), (3, 0));
        for (request, tx) in requests.iter().zip(&txs) {
            assert_eq!(request.from, ReplicaId(1));
            assert_eq!(request.message, Message::Request(tx.clone()));
        }
        // A transaction whose client signature fails here is dropped alone (admission can
        // differ between validators: a certificate that just expired).
        let mut signature = txs[1].signed.signature.to_vec();
        signature[3] ^= 1;
        let bad = txs[1].with_signature_for_tests(signature.into());
        let signed = sender.relay(&[txs[0].clone(), bad, txs[2].clone()]);
        let Ok(Inbound::Requests { requests, refused }) =
            receiver.verify_inbound(ReplicaId(1), &signed)
        else {
            panic!("the batch still arrives");
        };
        assert_eq!(refused, 1);
        let arrived: Vec<_> = requests.into_iter().map(|r| r.message).collect();
        assert_eq!(
            arrived,
            [
                Message::Request(txs[0].clone()),
                Message::Request(txs[2].clone())
            ]
        );
        // More than a batch may carry is refused whole.
        let too_many: Vec<Transaction> = (0..=MAX_RELAYED_REQUESTS)
            .map(|i| f.transaction(&i.to_string()))
            .collect();
        assert!(matches!(
            receiver.verify_inbound(ReplicaId(1), &sender.relay(&too_many)),
            Err(WireError::Malformed(_))
        ));
        // A batch cannot hide inside a new view as a nested message: even signed, it is not
        // a message a proof may carry.
        let encoded = pb::ConsensusMessage {
            kind: Some(Kind::Requests(pb::RequestBatch {
                requests: txs.iter().map(|tx| signed_to_pb(&tx.signed)).collect(),
            })),
        }
        .encode_to_vec();
        let signed_relay = pb::SignedConsensusMessage {
            from: 1,
            signature: Bytes::copy_from_slice(
                &f.signers[1].sign(&consensus_signing_bytes("wire", &encoded)),
            ),
            message: encoded.into(),
        };
        assert!(matches!(
            receiver.verify(&signed_relay),
            Err(WireError::Malformed(_))
        ));
    }

    #[test]
    fn forged_replayed_elsewhere_and_malformed_messages_are_refused() {
        let f = fixture();
        let sender = f.wire(1);
        let receiver = f.wire(2);
        let prepare = Message::Prepare(Prepare {
            view: View(0),
            sequence: Sequence(1),
            digest: Hash([1; 32]),
        });
        let good = sender.sign(&prepare).expect("sign");

        let mut flipped = good.clone();
        let mut signature = flipped.signature.to_vec();
        signature[0] ^= 1;
        flipped.signature = signature.into();
        assert!(matches!(
            receiver.verify(&flipped),
            Err(WireError::BadSignature(1))
        ));

        let mut impostor = good.clone();
        impostor.from = 3;
        assert!(matches!(
            receiver.verify(&impostor),
            Err(WireError::BadSignature(3))
        ));

        let mut stranger = good.clone();
        stranger.from = 9;
        assert!(matches!(
            receiver.verify(&stranger),
            Err(WireError::UnknownReplica(9))
        ));

        let mut garbage = good.clone();
        garbage.message = Bytes::from_static(b"\xff\xff\xff");
        assert!(receiver.verify(&garbage).is_err());

        // The same validator keys on another chain: the signature does not carry over.
        let mut other = fixture();
        other.signers = f.signers.clone();
        other.genesis = Genesis {
            chain_id: "another".into(),
            ..f.genesis.clone()
        };
        assert!(matches!(
            other.wire(2).verify(&good),
            Err(WireError::BadSignature(1))
        ));
    }

    #[test]
    fn a_nested_message_of_the_wrong_kind_is_refused() {
        let f = fixture();
        let sender = f.wire(1);
        let prepare = signed_vote(&sender, Phase::Prepare);
        // A view change whose "checkpoint proof" is a prepare.
        let view_change = pb::ConsensusMessage {
            kind: Some(Kind::ViewChange(pb::ViewChange {
                new_view: 1,
                stable_checkpoint: 0,
                checkpoint_proof: vec![prepare],
                prepared: Vec::new(),
            })),
        }
        .encode_to_vec();
        let signature = f.signers[1].sign(&consensus_signing_bytes("wire", &view_change));
        let signed = pb::SignedConsensusMessage {
            from: 1,
            message: view_change.into(),
            signature: Bytes::copy_from_slice(&signature),
        };
        assert!(matches!(
            f.wire(2).verify(&signed),
            Err(WireError::WrongNested { .. })
        ));
    }

    #[test]
    fn a_journaled_certificate_can_be_forwarded_after_a_restart() {
        let f = fixture();
        let before = f.wire(3);
        let certificate = certificate(&f, &before);
        let record = PersistRecord {
            view: View(0),
            sequence: Sequence(1),
            phase: Phase::Commit,
            digest: certificate.digest(),
            detail: RecordDetail::Prepared(certificate.clone()),
        };
        let stored = before.encode_record(&record).expect("encode");

        // A restarted process: a fresh wire that never saw the messages over the network.
        let after = f.wire(3);
        let restored = after.decode_record(&stored).expect("decode");
        assert_eq!(restored, record);
        let view_change = ViewChange {
            new_view: View(1),
            stable_checkpoint: Sequence(0),
            checkpoint_proof: Vec::new(),
            prepared: vec![certificate],
        };
        let signed = after
            .sign(&Message::ViewChange(view_change.clone()))
            .expect("the restored certificate's signed messages are known");
        let verified = f
            .wire(0)
            .verify(&signed)
            .expect("verifies at another replica");
        assert_eq!(verified.message, Message::ViewChange(view_change));
    }

    #[test]
    fn a_batch_digest_covers_each_transaction_whole_not_only_its_id() {
        let f = fixture();
        let tx = f.transaction("k");
        // The same payload (so the same id) with other signature bytes: a client can sign a
        // payload more than once, and the block records the signature.
        let mut signature = tx.signed.signature.to_vec();
        signature[0] ^= 1;
        let resigned = tx.with_signature_for_tests(signature.into());
        assert_eq!(tx.id(), resigned.id(), "one request for deduplication");
        assert_ne!(
            batch_digest(std::slice::from_ref(&tx)),
            batch_digest(&[resigned]),
            "two batches for the digest"
        );
    }

    #[test]
    fn proofs_go_out_as_the_exact_messages_their_senders_signed() {
        let f = fixture();
        let me = f.wire(3);
        let held = certificate(&f, &me);
        let carried = me.certificate_to_pb(&held).expect("forwardable");
        let expected_pre_prepare = f
            .wire(0)
            .sign(&Message::PrePrepare(held.pre_prepare.message.clone()))
            .expect("sign");
        assert_eq!(carried.pre_prepare, Some(expected_pre_prepare));
        for (prepare, from) in carried.prepares.iter().zip([1, 2]) {
            let expected = f
                .wire(from)
                .sign(&Message::Prepare(held.prepares[0].message.clone()))
                .expect("sign");
            assert_eq!(*prepare, expected);
        }
        // Another replica's message without its signed form (only tests and the simulation
        // build those) cannot be forwarded: this replica cannot sign for replica 1.
        let mut stripped = held.clone();
        stripped.prepares[0].signed = None;
        assert!(matches!(
            me.certificate_to_pb(&stripped),
            Err(WireError::MissingProof { from: 1, .. })
        ));
        // Its own messages need none: it signs them again, to the same bytes.
        let own = stripped;
        assert_eq!(
            f.wire(1)
                .certificate_to_pb(&own)
                .expect("own prepare signed again"),
            f.wire(1).certificate_to_pb(&held).expect("carried")
        );
    }

    #[test]
    fn own_pre_prepares_are_carried_as_they_went_out_and_only_the_last_few_are_kept() {
        use crate::network::own_signed::KEPT;
        let f = fixture();
        let primary = f.wire(0);
        let mut own = certificate(&f, &primary);
        // The core holds its own pre-prepare without a signed form.
        own.pre_prepare.signed = None;
        let pre_prepare = Message::PrePrepare(own.pre_prepare.message.clone());
        let carried = |wire: &Wire| wire.certificate_to_pb(&own).expect("carried").pre_prepare;
        // What a certificate carries is the remembered form, not a new signing: a marked form
        // put in the memo of another instance comes back out.
        let marked = pb::SignedConsensusMessage {
            signature: Bytes::from_static(&[9; 64]),
            ..f.wire(0).sign(&pre_prepare).expect("sign")
        };
        let memo_only = f.wire(0);
        memo_only.own_signed.remember(&pre_prepare, &marked);
        assert_eq!(carried(&memo_only), Some(marked));
        // Signing remembers the form that goes out.
        let sent = primary.sign(&pre_prepare).expect("sign");
        assert_eq!(
            primary.own_signed.find(&pre_prepare),
            Some(sent.clone()),
            "remembered as it went out"
        );
        assert_eq!(carried(&primary), Some(sent.clone()));
        // Commits are not kept; prepares are, and push the oldest out.
        let digest = own.digest();
        primary
            .sign(&Message::Commit(Commit {
                view: View(0),
                sequence: Sequence(1),
                digest,
            }))
            .expect("sign");
        assert_eq!(primary.own_signed.remembered(), 1);
        for sequence in 2..2 + KEPT as u64 {
            primary
                .sign(&Message::Prepare(Prepare {
                    view: View(0),
                    sequence: Sequence(sequence),
                    digest,
                }))
                .expect("sign");
        }
        assert_eq!(primary.own_signed.remembered(), KEPT);
        assert_eq!(primary.own_signed.find(&pre_prepare), None, "forgotten");
        // Forgotten, it is signed again, to the same bytes.
        assert_eq!(carried(&primary), Some(sent));
    }

    #[test]
    fn an_own_view_change_signed_again_after_a_restart_is_the_same_message() {
        let f = fixture();
        let me = f.wire(3);
        // A stable checkpoint at 10, proved by three replicas' checkpoint messages.
        let checkpoint = Message::Checkpoint(Checkpoint {
            sequence: Sequence(10),
            state_digest: [7; 32],
        });
        let proof: Vec<Verified<Checkpoint>> = (0..3)
            .map(|from| {
                let signed = f.wire(from).sign(&checkpoint).expect("sign");
                me.verify(&signed).expect("verifies").map(|m| match m {
                    Message::Checkpoint(c) => c,
                    other => panic!("{other:?}"),
                })
            })
            .collect();
        let view_change = ViewChange {
            new_view: View(1),
            stable_checkpoint: Sequence(10),
            checkpoint_proof: proof,
            prepared: vec![certificate(&f, &me)],
        };
        let first = me
            .sign(&Message::ViewChange(view_change.clone()))
            .expect("sign the view change");
        let record = PersistRecord {
            view: View(1),
            sequence: Sequence(10),
            phase: Phase::ViewChange,
            digest: crate::consensus::pbft::view_change_digest(&view_change),
            detail: RecordDetail::ViewChange(view_change.clone()),
        };
        let stored = me.encode_record(&record).expect("journal the view change");
        // A restarted process re-sends it on its timer from what the journal holds.
        let after = f.wire(3);
        let restored = after.decode_record(&stored).expect("decode");
        let RecordDetail::ViewChange(restored) = restored.detail else {
            panic!("a view change record");
        };
        let again = after
            .sign(&Message::ViewChange(restored))
            .expect("the restored view change carries its proofs");
        assert_eq!(again, first, "the same signed bytes");
        assert_eq!(
            f.wire(0).verify(&again).expect("verifies").message,
            Message::ViewChange(view_change)
        );
    }

    #[test]
    fn a_new_view_carries_the_view_changes_and_pre_prepares_as_signed() {
        let f = fixture();
        let primary = f.wire(1);
        let certificate = certificate(&f, &primary);
        let view_change = ViewChange {
            new_view: View(1),
            stable_checkpoint: Sequence(0),
            checkpoint_proof: Vec::new(),
            prepared: vec![certificate.clone()],
        };
        let signed_view_change = f
            .wire(2)
            .sign(&Message::ViewChange(view_change.clone()))
            .expect("sign");
        let received = primary
            .verify(&signed_view_change)
            .expect("verifies")
            .map(|m| match m {
                Message::ViewChange(v) => v,
                other => panic!("{other:?}"),
            });
        let pre_prepare = PrePrepare {
            view: View(1),
            ..certificate.pre_prepare.message.clone()
        };
        let new_view = NewView {
            view: View(1),
            view_changes: vec![
                Verified::unsigned(ReplicaId(1), view_change.clone()),
                received,
            ],
            pre_prepares: vec![Verified::unsigned(ReplicaId(1), pre_prepare)],
        };
        let signed = primary
            .sign(&Message::NewView(new_view.clone()))
            .expect("the new primary signs its new view");
        let backup = f.wire(3);
        let verified = backup.verify(&signed).expect("verifies");
        assert_eq!(verified.message, Message::NewView(new_view));
        let Message::NewView(at_backup) = verified.message else {
            panic!("a new view");
        };
        assert_eq!(
            at_backup.view_changes[1]
                .signed
                .as_ref()
                .map(|s| s.message.clone()),
            Some(signed_view_change.message),
            "the backup holds replica 2's view change as replica 2 signed it"
        );
        // The backup can forward the new primary's pre-prepare in a prepared certificate.
        let forwarded = backup
            .certificate_to_pb(&PreparedCertificate {
                pre_prepare: at_backup.pre_prepares[0].clone(),
                prepares: Vec::new(),
            })
            .expect("forwardable");
        assert_eq!(
            forwarded.pre_prepare.map(|p| p.from),
            Some(1),
            "signed by the new primary"
        );
    }
}
