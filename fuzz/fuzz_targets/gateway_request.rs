//! The gateway's request reader (`POST /post` and `POST /<endpoint>` bodies,
//! straight from any HTTP client): any bytes are a request or an error for
//! the client, never a panic; a request read always becomes a valid wire
//! body (no document past the depth limit gets in) and its documents write
//! back as JSON, as the gateway's answer does.
#![no_main]

use jina_wasm::flow::gateway::parse_request;
use jina_wasm::wire::Body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = parse_request(data, None) else { return };
    let body = request.body;
    body.validate().expect("a request the gateway read is a valid body");
    let mut bytes = Vec::new();
    body.encode(&mut bytes);
    let decoded = Body::decode(&bytes).expect("its own encoding decodes");
    let docs = decoded.into_documents().expect("its own tags are objects");
    serde_json::to_vec(&docs).expect("documents the gateway read write back");
});
