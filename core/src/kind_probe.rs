//! Finds the serde name of an error value: its enum variant, or its struct name.
//!
//! This gives [`Fault`](crate::Fault) a kind that is stable across compilers and
//! processes (unlike `std::any::type_name`), without asking users to implement a trait.

use serde::ser::{self, Impossible, Serialize};
use std::fmt;

/// The serde variant name of an enum value, or the name of a struct; `None` for
/// anything unnamed (strings, numbers, maps, sequences).
pub(crate) fn serde_name<T: Serialize + ?Sized>(value: &T) -> Option<&'static str> {
    match value.serialize(Probe) {
        Err(Found::Name(name)) => Some(name),
        _ => None,
    }
}

struct Probe;

/// The probe stops at the first serializer call: with a name, or without one.
#[derive(Debug)]
enum Found {
    Name(&'static str),
    Unnamed,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("kind probe")
    }
}

impl std::error::Error for Found {}

impl ser::Error for Found {
    fn custom<T: fmt::Display>(_msg: T) -> Self {
        Found::Unnamed
    }
}

type Never = Impossible<(), Found>;

macro_rules! unnamed {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<(), Found> { Err(Found::Unnamed) })*
    };
}

impl ser::Serializer for Probe {
    type Ok = ();
    type Error = Found;
    type SerializeSeq = Never;
    type SerializeTuple = Never;
    type SerializeTupleStruct = Never;
    type SerializeTupleVariant = Never;
    type SerializeMap = Never;
    type SerializeStruct = Never;
    type SerializeStructVariant = Never;

    unnamed!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
    );

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Found> {
        value.serialize(self)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<(), Found> {
        Err(Found::Name(name))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Found> {
        Err(Found::Name(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _: &T,
    ) -> Result<(), Found> {
        Err(Found::Name(name))
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<(), Found> {
        Err(Found::Name(variant))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Never, Found> {
        Err(Found::Unnamed)
    }
    fn serialize_tuple(self, _: usize) -> Result<Never, Found> {
        Err(Found::Unnamed)
    }
    fn serialize_tuple_struct(self, name: &'static str, _: usize) -> Result<Never, Found> {
        Err(Found::Name(name))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Never, Found> {
        Err(Found::Name(variant))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Never, Found> {
        Err(Found::Unnamed)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Never, Found> {
        Err(Found::Name(name))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Never, Found> {
        Err(Found::Name(variant))
    }
}

#[cfg(test)]
mod tests {
    use super::serde_name;
    use serde::Serialize;

    #[derive(Serialize)]
    enum Inventory {
        OutOfStock { sku: String },
        Closed,
        Busy(u32),
    }

    #[derive(Serialize)]
    struct Denied {
        reason: String,
    }

    #[test]
    fn names_variants_and_structs() {
        let sku = "a".to_string();
        assert_eq!(
            serde_name(&Inventory::OutOfStock { sku }),
            Some("OutOfStock")
        );
        assert_eq!(serde_name(&Inventory::Closed), Some("Closed"));
        assert_eq!(serde_name(&Inventory::Busy(1)), Some("Busy"));
        assert_eq!(serde_name(&Denied { reason: "x".into() }), Some("Denied"));
    }

    #[test]
    fn unnamed_values_have_no_name() {
        assert_eq!(serde_name("boom"), None);
        assert_eq!(serde_name(&42), None);
        assert_eq!(serde_name(&vec![1, 2]), None);
    }
}
