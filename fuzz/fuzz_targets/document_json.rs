//! The document JSON reader (`run`/`client` input, the gateway's request
//! bodies): any line is a document, a plain-text document, or an error, never
//! a panic; a document read survives the trip through the wire body.
#![no_main]

use jina_wasm::Document;
use jina_wasm::wire::Body;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    let Ok(doc) = Document::from_json_line(line) else { return };
    let json = serde_json::to_string(&doc).expect("a document serialises");
    let again: Document = serde_json::from_str(&json).expect("its own JSON reads back");
    // Compared as JSON: a NaN embedding value (from `null`) is not `==` itself.
    assert_eq!(serde_json::to_string(&again).expect("serialises"), json);
    let body = Body::from_documents(std::slice::from_ref(&doc));
    let mut bytes = Vec::new();
    body.encode(&mut bytes);
    if let Ok(decoded) = Body::decode(&bytes) {
        let _ = decoded.into_documents();
    }
});
