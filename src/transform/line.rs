//! Reading a raw line as JSON the rules accept: one object, no key given twice, containers
//! nested at most [`MAX_DEPTH`] deep, no `\u` escape of a lone UTF-16 surrogate. The fields the
//! rules look at come out as their raw JSON tokens, for [`super::fields`] to judge.

use super::rules::Reason;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// The fields the rules look at, each as its raw JSON text (`None` when absent).
#[derive(Default)]
pub(super) struct Fields<'a> {
    pub(super) schema_version: Option<&'a RawValue>,
    pub(super) kafka_partition: Option<&'a RawValue>,
    pub(super) kafka_offset: Option<&'a RawValue>,
    pub(super) symbol: Option<&'a RawValue>,
    pub(super) price: Option<&'a RawValue>,
    pub(super) trade_ts: Option<&'a RawValue>,
    pub(super) volume: Option<&'a RawValue>,
    pub(super) conditions: Option<&'a RawValue>,
    pub(super) received_ts: Option<&'a RawValue>,
    pub(super) source: Option<&'a RawValue>,
}

struct LineVisitor;

impl<'de> Visitor<'de> for LineVisitor {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = Fields::default();
        // A key given twice makes the line not JSON the rules accept. Known keys are tracked in
        // a bitmask; other keys (rare) in a small list.
        let mut known = 0u16;
        let mut others: Vec<Cow<'de, str>> = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let (bit, slot) = match key.as_ref() {
                "schema_version" => (0, Some(&mut f.schema_version)),
                "kafka_partition" => (1, Some(&mut f.kafka_partition)),
                "kafka_offset" => (2, Some(&mut f.kafka_offset)),
                "symbol" => (3, Some(&mut f.symbol)),
                "price" => (4, Some(&mut f.price)),
                "trade_ts" => (5, Some(&mut f.trade_ts)),
                "volume" => (6, Some(&mut f.volume)),
                "conditions" => (7, Some(&mut f.conditions)),
                "received_ts" => (8, Some(&mut f.received_ts)),
                "source" => (9, Some(&mut f.source)),
                _ => (15, None),
            };
            match slot {
                Some(slot) => {
                    if known & (1 << bit) != 0 {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    known |= 1 << bit;
                    *slot = Some(map.next_value::<&'de RawValue>()?);
                }
                None => {
                    if others.contains(&key) {
                        return Err(de::Error::custom("duplicate key"));
                    }
                    map.next_value::<IgnoredAny>()?;
                    others.push(key);
                }
            }
        }
        Ok(f)
    }
}

/// Containers may nest this deep (the top-level object is depth 1); deeper lines are not JSON
/// the rules accept, in either engine, whatever their parsers' own limits.
pub const MAX_DEPTH: usize = 64;

/// Checks what a JSON parser lets through but the rules refuse: nesting beyond [`MAX_DEPTH`]
/// and `\u` escapes of a UTF-16 surrogate that is not half of a pair. `text` is valid JSON.
fn check_structure(text: &str) -> Result<(), Reason> {
    let b = text.as_bytes();
    // Most lines have no escapes and too few brackets to nest deeply: nothing to check.
    // One pass, in chunks the compiler turns into vector compares.
    let (mut brackets, mut escapes) = (0usize, 0u8);
    for chunk in b.chunks(64) {
        let mut n = 0u8;
        for &c in chunk {
            n += u8::from(c == b'{' || c == b'[');
            escapes |= u8::from(c == b'\\');
        }
        brackets += n as usize;
    }
    if brackets <= MAX_DEPTH && escapes == 0 {
        return Ok(());
    }
    let hex = |i: usize| -> Option<u32> {
        let h = b.get(i..i + 4)?;
        u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()
    };
    let (mut depth, mut i, mut in_string) = (0usize, 0usize, false);
    while i < b.len() {
        let c = b[i];
        if in_string {
            match c {
                b'"' => in_string = false,
                b'\\' => {
                    if b.get(i + 1) == Some(&b'u') {
                        let u = hex(i + 2).ok_or(Reason::NotJson)?;
                        if (0xDC00..0xE000).contains(&u) {
                            return Err(Reason::NotJson);
                        }
                        if (0xD800..0xDC00).contains(&u) {
                            let low = (b.get(i + 6..i + 8) == Some(b"\\u"))
                                .then(|| hex(i + 8))
                                .flatten();
                            if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                                return Err(Reason::NotJson);
                            }
                            i += 6;
                        }
                        i += 6;
                        continue;
                    }
                    i += 1;
                }
                _ => {}
            }
        } else {
            match c {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Reason::NotJson);
                    }
                }
                b'}' | b']' => depth -= 1,
                _ => {}
            }
        }
        i += 1;
    }
    Ok(())
}

#[inline]
pub(super) fn parse(line: &[u8]) -> Result<Fields<'_>, Reason> {
    let text = std::str::from_utf8(line).map_err(|_| Reason::NotJson)?;
    let first = text
        .bytes()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'));
    if first != Some(b'{') {
        // Validated without converting numbers, so 1e999 is JSON here as it is in Python.
        serde_json::from_str::<IgnoredAny>(text).map_err(|_| Reason::NotJson)?;
        check_structure(text)?;
        return Err(Reason::NotObject);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let fields =
        de::Deserializer::deserialize_map(&mut de, LineVisitor).map_err(|_| Reason::NotJson)?;
    de.end().map_err(|_| Reason::NotJson)?;
    check_structure(text)?;
    Ok(fields)
}
