//! [`JsonText`]: a JSON document kept as its text.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A JSON document kept as its text. A decision's detail (the context the policies read,
/// the requirement, the trace) is written for every recorded decision and read only when
/// someone looks: it is serialised once, straight from the values it describes (no
/// `serde_json::Value` tree in between), stored as it is, and parsed when read
/// ([`JsonText::value`], or [`JsonText::field`] into a type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsonText(Box<str>);

impl JsonText {
    /// `v` as JSON text.
    pub fn of<T: Serialize + ?Sized>(v: &T) -> serde_json::Result<Self> {
        serde_json::to_string(v).map(|s| JsonText(s.into_boxed_str()))
    }

    /// Text read back from a store, if it is one JSON document.
    pub fn parse(text: String) -> serde_json::Result<Self> {
        serde_json::from_str::<IgnoredAny>(&text)?;
        Ok(JsonText(text.into_boxed_str()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The document (`null` for a text that is not JSON, which [`JsonText::of`] and
    /// [`JsonText::parse`] never make).
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(&self.0).unwrap_or_default()
    }

    /// The member `name` of the document (an object), unless it is absent or `null`.
    pub fn member(&self, name: &str) -> Option<serde_json::Value> {
        self.field::<serde_json::Value>(name)
            .ok()
            .flatten()
            .filter(|v| !v.is_null())
    }

    /// The member `name` of the document (an object) read as a `T`; `None` when the
    /// document is not an object or lacks the member, and `null` reads as whatever `T`
    /// makes of it.
    pub fn field<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> serde_json::Result<Option<T>> {
        let members: serde_json::Map<String, serde_json::Value> =
            match serde_json::from_str(&self.0) {
                Ok(m) => m,
                Err(_) => return Ok(None),
            };
        members.get(name).map(|v| T::deserialize(v)).transpose()
    }
}

impl Default for JsonText {
    /// `null`.
    fn default() -> Self {
        JsonText("null".into())
    }
}

impl From<serde_json::Value> for JsonText {
    fn from(v: serde_json::Value) -> Self {
        // A `Value` always serialises (its map keys are strings).
        JsonText(v.to_string().into_boxed_str())
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Written as the document itself (not as a string holding it).
impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(d).map(JsonText::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_document_reads_back_as_it_was_written() {
        let doc = json!({"context": {"user": {"username": "jane"}}, "trace": null, "n": 3});
        let text = JsonText::of(&doc).unwrap();
        assert_eq!(text.value(), doc);
        assert_eq!(JsonText::from(doc.clone()), text);
        assert_eq!(JsonText::parse(text.as_str().to_string()).unwrap(), text);
        // Inside another document it is the document, not a string.
        let outer = serde_json::to_value(json!({ "detail": text.clone() })).unwrap();
        assert_eq!(outer["detail"]["context"]["user"]["username"], "jane");
        let back: JsonText = serde_json::from_value(outer["detail"].clone()).unwrap();
        assert_eq!(back.value(), doc);
        assert_eq!(text.field::<u32>("n").unwrap(), Some(3));
        assert_eq!(text.field::<Option<u32>>("trace").unwrap(), Some(None));
        assert_eq!(text.field::<u32>("absent").unwrap(), None);
        assert_eq!(text.member("n"), Some(json!(3)));
        assert_eq!(text.member("trace"), None, "null is no member");
        assert_eq!(text.member("absent"), None);
        assert!(
            text.field::<u32>("context").is_err(),
            "a member of another shape"
        );
    }

    #[test]
    fn text_that_is_not_one_json_document_is_refused() {
        for bad in ["", "{", "{\"a\":1} {}", "nul", "{'a': 1}"] {
            assert!(JsonText::parse(bad.to_string()).is_err(), "{bad:?}");
        }
        assert_eq!(JsonText::default().value(), serde_json::Value::Null);
        assert_eq!(
            JsonText::parse("[1]".into())
                .unwrap()
                .field::<u8>("a")
                .unwrap(),
            None
        );
    }
}
