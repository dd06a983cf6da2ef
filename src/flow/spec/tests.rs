mod trace_tests {
    use super::super::*;

    fn with(yaml: &str) -> Result<Option<String>, String> {
        serde_yaml::from_str::<FlowWith>(yaml)
            .unwrap()
            .traces_endpoint()
    }

    /// `with.tracing` and its endpoint, in our names and Jina's.
    #[test]
    fn traces_endpoints_resolve_or_say_what_is_missing() {
        assert_eq!(with("{}"), Ok(None));
        assert_eq!(
            with("traces_endpoint: http://c:4318"),
            Ok(Some("http://c:4318".into()))
        );
        assert_eq!(
            with("{tracing: true, traces_exporter_host: otel}"),
            Ok(Some("http://otel:4318".into()))
        );
        assert_eq!(
            with("{traces_exporter_host: otel, traces_exporter_port: 9999}"),
            Ok(Some("http://otel:9999".into()))
        );
        assert_eq!(
            with("{tracing: false, traces_endpoint: http://c:4318}"),
            Ok(None)
        );
        assert!(
            with("tracing: true")
                .unwrap_err()
                .contains("traces_endpoint")
        );
        assert!(
            with("traces_endpoint: c:4318")
                .unwrap_err()
                .contains("not an http:// or https:// URL")
        );
        let error = Flow::parse(
            "with:\n  tracing: true\npods:\n  - name: a\n    uses: a.wasm\n",
            Path::new("f.yml"),
            |_| None,
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("with.tracing"), "{error}");
    }
}

/// The Flow YAML loader never panics: on any text, and on YAML shaped like a
/// Flow (its own keys, random values, `${{ ENV.X }}` fragments, cycles in `needs`).
mod proptests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::super::*;

    fn value() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("version"),
            Just("jtype"),
            Just("with"),
            Just("pods"),
            Just("executors"),
            Just("name"),
            Just("uses"),
            Just("shards"),
            Just("parallel"),
            Just("polling"),
            Just("needs"),
            Just("port"),
            Just("timeout"),
            Just("env"),
            Just("workspace"),
            Just("memory_hwm"),
            Just("timeout_request"),
            Just("dump_interval"),
            Just("uses_before"),
            Just("on_error_strategy"),
            Just("protocol"),
            Just("disk_quota"),
            Just("max_result_docs"),
            Just("deterministic"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            (-3i64..70_000).prop_map(Value::from),
            prop_oneof![
                Just("gateway"),
                Just("a"),
                Just("b"),
                Just("any"),
                Just("all"),
                Just("/index:all"),
                Just("1"),
                Just("x.wasm"),
                Just("${{ ENV.X }}"),
                Just("${{ ENV.MISSING }}"),
                Just("${{"),
                Just("1GiB"),
                Just("5s"),
            ]
            .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 40, 5, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    fn parse(text: &str) {
        let env = |name: &str| (name == "X").then(|| "a".to_string());
        if let Err(e) = Flow::parse(text, Path::new("/nonexistent/prop.yml"), env) {
            assert!(e.to_string().starts_with("/nonexistent/prop.yml"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn any_text_loads_or_fails(text in ".{0,300}") {
            parse(&text);
        }

        #[test]
        fn flow_shaped_yaml_loads_or_fails(value in value()) {
            parse(&serde_yaml::to_string(&value).unwrap());
        }
    }
}
