//! The Flow YAML loader: any text is a Flow or a `FlowError` naming the file,
//! never a panic (including `${{ ENV.X }}` substitution and the graph checks).
#![no_main]

use std::path::Path;

use jina_wasm::flow::Flow;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let env = |name: &str| (name == "X").then(|| "value".to_string());
    match Flow::parse(text, Path::new("/nonexistent/fuzz.yml"), env) {
        Ok(flow) => {
            let _ = flow.mermaid();
            let _ = flow.timeout();
        }
        Err(e) => assert!(e.to_string().starts_with("/nonexistent/fuzz.yml")),
    }
});
