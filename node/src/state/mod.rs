//! The world state: key/value pairs per chaincode namespace, kept in the [`Store`] and
//! summarised by the Merkle [`root`]. Reads during execution go through a [`StateView`], which
//! overlays the writes of the block being executed on the committed state.
//!
//! [`Store`]: crate::storage::Store

pub mod leaves;
pub mod root;
pub mod view;

pub use view::{BlockOverlay, StateView};
