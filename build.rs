//! Generates the gateway's gRPC messages and services from proto/ (Jina 3's
//! `jina.proto` and docarray's `docarray.proto`; proto/README.md says where
//! they come from). protox compiles them in Rust, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let files = protox::compile(["jina.proto", "docarray.proto"], ["proto"])?;
    // The compiled descriptors, for checking them against the wheels'
    // (proto/README.md).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("protos.fds"),
        prost::Message::encode_to_vec(&files),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(files.clone())?;
    // The same services again, in OUT_DIR/lean, with `jina.DataRequestProto`
    // replaced by the gateway's own message (src/flow/grpc/lean.rs), which
    // reads documents straight into the columnar body and writes answers
    // straight from it; every other message is the one generated above.
    let lean = out.join("lean");
    std::fs::create_dir_all(&lean)?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .out_dir(&lean)
        .extern_path(".docarray", "crate::flow::grpc::pb::docarray")
        .extern_path(".jina", "crate::flow::grpc::pb::jina")
        .extern_path(
            ".jina.DataRequestProto",
            "crate::flow::grpc::lean::DataRequest",
        )
        .compile_fds(files)?;
    Ok(())
}
