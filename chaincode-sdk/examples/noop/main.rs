//! The no-op chaincode: every function succeeds without reading or writing state and returns
//! nothing. `weft bench --workload noop` runs it to measure what the ledger itself costs per
//! transaction (ordering, the chaincode exchange, the block), without a contract's work.

use chaincode_sdk::{Chaincode, ChaincodeError, Stub, async_trait};

fn main() {
    chaincode_sdk::start(Noop)
}

struct Noop;

#[async_trait]
impl Chaincode for Noop {
    async fn init(&self, _stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        Ok(Vec::new())
    }

    async fn invoke(&self, _stub: &mut dyn Stub) -> Result<Vec<u8>, ChaincodeError> {
        Ok(Vec::new())
    }
}
