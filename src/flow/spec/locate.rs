//! Where a key's value is in a Flow file: serde_yaml keeps no positions, so
//! the text is read again to find a line for a message.

/// One step of a path into a Flow file: a key (any of several spellings) or
/// a list index.
pub(super) enum Step<'a> {
    Key(&'a [&'a str]),
    Index(usize),
}

/// The line of the value at `path` in YAML `text`, or `None` when there is
/// none. serde_yaml keeps no positions, but puts one on every error: the
/// text is read again by a reader that walks `path` and fails on the value
/// it leads to.
pub(super) fn locate(text: &str, path: &[Step]) -> Option<usize> {
    use serde::de::{
        DeserializeSeed, Deserializer, Error, IgnoredAny, MapAccess, SeqAccess, Visitor,
    };

    const HERE: &str = "jina-wasm: the value looked for";

    struct Seek<'p, 'a>(&'p [Step<'a>]);

    impl<'de> DeserializeSeed<'de> for Seek<'_, '_> {
        type Value = ();

        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            let path = self.0;
            match path.first() {
                None => d.deserialize_any(Fail),
                Some(Step::Key(_)) => d.deserialize_map(self),
                Some(Step::Index(_)) => d.deserialize_seq(self),
            }
        }
    }

    impl<'de> Visitor<'de> for Seek<'_, '_> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map or a list")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let Some(Step::Key(names)) = self.0.first() else {
                return Ok(());
            };
            while let Some(key) = map.next_key::<String>()? {
                if names.contains(&key.as_str()) {
                    return map.next_value_seed(Seek(&self.0[1..]));
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let Some(&Step::Index(at)) = self.0.first() else {
                return Ok(());
            };
            for _ in 0..at {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    return Ok(());
                }
            }
            seq.next_element_seed(Seek(&self.0[1..])).map(drop)
        }
    }

    /// Fails on whatever value it is given, inside that value's own
    /// deserialization (where serde_yaml marks the error with its position).
    struct Fail;

    impl<'de> Visitor<'de> for Fail {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str(HERE)
        }

        fn visit_bool<E: Error>(self, _: bool) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_i64<E: Error>(self, _: i64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_u64<E: Error>(self, _: u64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_f64<E: Error>(self, _: f64) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_str<E: Error>(self, _: &str) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_unit<E: Error>(self) -> Result<(), E> {
            Err(E::custom(HERE))
        }
        fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(A::Error::custom(HERE))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(A::Error::custom(HERE))
        }
    }

    let error = Seek(path)
        .deserialize(serde_yaml::Deserializer::from_str(text))
        .err()?;
    if !error.to_string().contains(HERE) {
        return None;
    }
    error.location().map(|at| at.line())
}

pub(super) fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// serde_yaml's message, with its position moved to the front.
pub(super) fn yaml_error(e: &serde_yaml::Error) -> String {
    let message = e.to_string();
    match e.location() {
        Some(at) => {
            let trimmed = message
                .split(" at line ")
                .next()
                .unwrap_or(&message)
                .to_string();
            format!("line {} column {}: {trimmed}", at.line(), at.column())
        }
        None => message,
    }
}
