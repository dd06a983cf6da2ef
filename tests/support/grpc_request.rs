//! One gRPC request as Jina's client sends it, for the tests (tests/all/grpc.rs)
//! and the benchmark's gRPC load generator (examples/bench.rs), which include
//! this file.

use jina_wasm::Document;
use jina_wasm::flow::grpc::pb::jina::{DataRequestProto, HeaderProto, data_request_proto};

/// A `DataRequestProto` carrying `docs` to `/`, its id `id`.
pub fn grpc_request(id: &str, docs: &[Document]) -> DataRequestProto {
    let list = jina_wasm::flow::grpc::convert::docs_from_body(
        &jina_wasm::wire::Body::from_documents(docs),
    )
    .unwrap();
    DataRequestProto {
        header: Some(HeaderProto {
            request_id: id.into(),
            exec_endpoint: Some("/".into()),
            ..Default::default()
        }),
        data: Some(data_request_proto::DataContentProto {
            documents: Some(data_request_proto::data_content_proto::Documents::Docs(
                list,
            )),
        }),
        ..Default::default()
    }
}
