//! The non-validating peer (DESIGN 3): it runs no replica. [`forwarder`] passes the client
//! transactions it admits to the validators (and again when they do not commit in time or the
//! primary changes); [`follower`] follows the validators' certified blocks, checks each run
//! against a commit certificate, and applies the write sets to its own ledger, from which it
//! serves queries, blocks and streams like any peer.

pub mod follower;
pub mod forwarder;
