//! What a Pea's IDLE (credit) and CANCEL (withdrawal) say, read the same
//! way by the Head that receives them from its Peas and by a Pea that
//! receives them on its ROUTER output.

/// The most request ids a `CANCEL` is believed to name.
const MAX_UNANSWERED: usize = 4096;

/// The most credit one IDLE grants, and the most one connection is
/// believed to hold. A Pea asks for one request at a time: past this, a
/// peer that floods IDLEs (a bug, or not a Pea) would be sent work that
/// waits in its socket while the others sit idle.
pub(crate) const MAX_CREDIT: u32 = 1024;

/// What a Pea's IDLE or CANCEL says (its JSON body), read into these
/// fields without building a map of it: every request's credit comes this
/// way. A body that is not such an object (or names a field twice, or is
/// not UTF-8) says nothing.
///
/// A message may be 1 GiB: what the reader does not keep (an array or object
/// where a name or a number goes, ids past [`MAX_UNANSWERED`]) is skipped,
/// not built; as a JSON tree, an array of numbers takes 16 times its text.
#[derive(Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct Says {
    pub(crate) pea: Field,
    pub(crate) shards: Field,
    pub(crate) credit: Field,
    pub(crate) unanswered: Field,
}

impl Says {
    /// What `body` says. serde reads a struct from a JSON array too, by
    /// position: only an object (its first byte `{`) is read, as a map
    /// lookup would. And only UTF-8 (JSON is): serde skips the fields it
    /// does not read without checking their bytes.
    pub(crate) fn read(body: &[u8]) -> Says {
        std::str::from_utf8(body)
            .ok()
            .filter(|text| text.trim_start().starts_with('{'))
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default()
    }

    /// The Pea's name, when it says one that could name something
    /// ([`crate::wire::fits_a_name`]): a name holding a control character
    /// is none (a Head logs, lists and shows its members' names).
    pub(crate) fn pea_name(&self) -> Option<&str> {
        self.pea
            .as_str()
            .filter(|name| name.chars().all(crate::wire::fits_a_name))
    }

    /// The credit an IDLE grants: its `credit`, a whole number; 1 when it
    /// says none.
    pub(crate) fn credit(&self) -> u64 {
        self.credit.as_u64().unwrap_or(1)
    }
}

/// One field of [`Says`]: a string or a whole number (`unanswered`: an
/// array of strings); anything else, as a field that is not there, is
/// nothing, skipped as it is read.
#[derive(Default)]
pub(crate) enum Field {
    #[default]
    Nothing,
    Text(String),
    Number(u64),
    /// The first [`MAX_UNANSWERED`] strings of an array.
    Texts(Vec<String>),
}

impl Field {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Field::Text(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Field::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The strings of an array (at most [`MAX_UNANSWERED`]).
    pub(crate) fn into_texts(self) -> Vec<String> {
        match self {
            Field::Texts(texts) => texts,
            _ => Vec::new(),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Field {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        d.deserialize_any(Read { array: true })
    }
}

/// Reads a [`Field`]; `array`: an array's strings are kept (a field's
/// value), else it is skipped (an element of an array).
#[derive(Clone, Copy)]
struct Read {
    array: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Read {
    type Value = Field;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Field, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Read {
    type Value = Field;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_str<E>(self, text: &str) -> Result<Field, E> {
        Ok(Field::Text(text.to_string()))
    }

    fn visit_string<E>(self, text: String) -> Result<Field, E> {
        Ok(Field::Text(text))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Field, E> {
        Ok(Field::Number(n))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Field, E> {
        Ok(Field::Nothing)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Field, E> {
        Ok(Field::Nothing)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Field, E> {
        Ok(Field::Nothing)
    }

    fn visit_unit<E>(self) -> Result<Field, E> {
        Ok(Field::Nothing)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Field, A::Error> {
        let mut texts = Vec::new();
        while self.array && texts.len() < MAX_UNANSWERED {
            match seq.next_element_seed(Read { array: false })? {
                Some(Field::Text(text)) => texts.push(text),
                Some(_) => {}
                None => return Ok(Field::Texts(texts)),
            }
        }
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(if self.array {
            Field::Texts(texts)
        } else {
            Field::Nothing
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Field, A::Error> {
        use serde::de::IgnoredAny;
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Field::Nothing)
    }
}
