//! Compiles the weft.v1 .proto files with protox (no protoc needed) and generates the prost
//! messages and tonic clients and servers.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/weft/v1/transaction.proto",
        "proto/weft/v1/client.proto",
        "proto/weft/v1/admin.proto",
        "proto/weft/v1/chaincode.proto",
        "proto/weft/v1/consensus.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
