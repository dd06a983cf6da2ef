//! The wire decoder: any bytes, as one or several frames, must decode or fail
//! with a `WireError`, never panic; what decodes must encode and decode again
//! to the same thing (compared as bytes: NaN embeddings are not `==`).
#![no_main]

use bytes::Bytes;
use jina_wasm::wire::{Body, Envelope, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte splits the rest into an envelope frame and a body frame
    // (and, past the split, a third frame: a wrong frame count).
    let (split, rest) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s) * rest.len() / 255, rest),
        None => (0, data),
    };
    let (head, body) = rest.split_at(split.min(rest.len()));
    if let Ok(envelope) = Envelope::decode(head) {
        assert_eq!(Envelope::decode(&envelope.encode()).expect("re-decodes"), envelope);
    }
    if let Ok(decoded) = Body::decode(body) {
        let mut again = Vec::new();
        decoded.encode(&mut again);
        let mut twice = Vec::new();
        Body::decode(&again).expect("re-decodes").encode(&mut twice);
        assert_eq!(twice, again);
        let _ = decoded.into_documents();
    }
    let frames = [Bytes::copy_from_slice(head), Bytes::copy_from_slice(body)];
    if let Ok(message) = Message::from_frames(&frames) {
        let _ = message.decode_body();
    }
    let _ = Message::from_frames(&[Bytes::copy_from_slice(rest)]);
    let _ = Message::from_frames(&[frames[0].clone(), frames[1].clone(), Bytes::copy_from_slice(data)]);
});
