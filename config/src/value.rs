//! Values that YAML gives as text and that are parsed as the command line parses them, so
//! that a bad value's error carries the key and line of the YAML it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

/// A value parsed from its text with `FromStr` (modes, algorithms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed<T>(pub T);

/// Parses text inside the value's own deserialization, so that YAML's error names the key.
struct TextVisitor<F>(&'static str, F);

impl<T, E, F> Visitor<'_> for TextVisitor<F>
where
    F: FnOnce(&str) -> Result<T, E>,
    E: fmt::Display,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
    fn visit_str<R: de::Error>(self, text: &str) -> Result<T, R> {
        (self.1)(text).map_err(R::custom)
    }
}

impl<'de, T> Deserialize<'de> for Parsed<T>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Parsed<T>, D::Error> {
        deserializer.deserialize_str(TextVisitor("a name", |text: &str| text.parse().map(Parsed)))
    }
}

/// Parses a string value with `parse`, inside the value's deserialization.
pub fn text<'de, D, T, E>(
    deserializer: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    E: fmt::Display,
{
    deserializer.deserialize_str(TextVisitor(expecting, parse))
}

/// A number of seconds, at least 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub u32);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        struct Number;
        impl Visitor<'_> for Number {
            type Value = Seconds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Seconds, E> {
                match u32::try_from(number) {
                    Ok(0) => Err(E::custom("the interval must be at least 1 second")),
                    Ok(seconds) => Ok(Seconds(seconds)),
                    Err(_) => Err(E::custom(format!("{number} seconds is too long"))),
                }
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Seconds, E> {
                Err(E::custom(format!("invalid interval {number}")))
            }
        }
        deserializer.deserialize_u32(Number)
    }
}

/// Permission bits written in octal, as text (`0600`, `"0o644"`; YAML reads an unquoted
/// `0600` as text already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Octal(pub u32);

impl<'de> Deserialize<'de> for Octal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Octal, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = Octal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("permission bits in octal, such as \"0600\"")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Octal, E> {
                mutagen_session::forward::parse_permission_mode(text).map(Octal).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, number: u64) -> Result<Octal, E> {
                Err(E::custom(format!(
                    "permission bits must be written in octal with a leading zero, such as \
                     \"0600\" (got the number {number})"
                )))
            }
            fn visit_i64<E: de::Error>(self, number: i64) -> Result<Octal, E> {
                Err(E::custom(format!("invalid permission bits {number}")))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// A session name (or `defaults`) as a map key, checked while it is read.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key, D::Error> {
        text(deserializer, "a session name", |key: &str| {
            if key != "defaults" {
                mutagen_session::validate_name(key)?;
            }
            Ok::<_, mutagen_session::SessionError>(Key(key.to_owned()))
        })
    }
}

/// A map whose keys are session names (or `defaults`), refusing a key given twice.
#[derive(Clone, Debug, PartialEq)]
pub struct Named<T>(pub BTreeMap<String, T>);

impl<T> Default for Named<T> {
    fn default() -> Named<T> {
        Named(BTreeMap::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Named<T>, D::Error> {
        struct Entries<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from session names to sessions")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Named<T>, E> {
                Ok(Named::default())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<T>, A::Error> {
                let mut entries = BTreeMap::new();
                while let Some(Key(key)) = map.next_key()? {
                    if entries.contains_key(&key) {
                        return Err(de::Error::custom(format!("{key:?} is given twice")));
                    }
                    let value = map.next_value()?;
                    entries.insert(key, value);
                }
                Ok(Named(entries))
            }
        }
        deserializer.deserialize_map(Entries(PhantomData))
    }
}
