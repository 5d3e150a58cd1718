//! A MessagePack serde codec for `no_std + alloc`, writing exactly what rmp-serde writes in its
//! default (compact) form: structs as arrays, enum variants by name (`"Unit"` or
//! `{"Variant": value}`), newtypes as their inner value, bytes as `bin`. It is built on rmp's
//! own encoders (the ones rmp-serde calls); the tests check every frame byte for byte against
//! rmp-serde both ways.
//!
//! Decoding borrows from the input and never recurses deeper than the nesting of the value,
//! which [`super::scan`] bounds before the codec runs.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde::ser::{self, Serialize};

/// Why a value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input ended inside a value.
    Eof,
    /// A marker that is not valid here.
    UnexpectedMarker(u8),
    /// A string that is not UTF-8.
    InvalidUtf8,
    /// A length beyond what MessagePack (u32) can say.
    TooLong,
    /// The type's own complaint (wrong variant, invalid id, out-of-range number, …).
    Message(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Eof => f.write_str("input ends inside a value"),
            Self::UnexpectedMarker(m) => write!(f, "unexpected marker 0x{m:02x}"),
            Self::InvalidUtf8 => f.write_str("string is not UTF-8"),
            Self::TooLong => f.write_str("length does not fit MessagePack"),
            Self::Message(m) => f.write_str(m),
        }
    }
}

impl core::error::Error for Error {}

impl ser::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Message(msg.to_string())
    }
}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::Message(msg.to_string())
    }
}

/// Appends the MessagePack encoding of `value` to `out`.
pub fn to_vec<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), Error> {
    value.serialize(&mut Serializer { out })
}

/// Decodes one value that fills `input` exactly. The input is [`scan`](super::scan::scan)ned
/// first, so no input can make decoding recurse deeper than `MAX_DEPTH` or allocate beyond its
/// own length for strings and bytes.
pub fn from_slice<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<T, Error> {
    super::scan::scan(input).map_err(|e| Error::Message(e.to_string()))?;
    from_scanned(input)
}

/// [`from_slice`] for input that was already scanned.
pub(super) fn from_scanned<'de, T: de::Deserialize<'de>>(input: &'de [u8]) -> Result<T, Error> {
    let mut d = Deserializer { input };
    let value = T::deserialize(&mut d)?;
    match d.input.first() {
        None => Ok(value),
        Some(m) => Err(Error::UnexpectedMarker(*m)),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

struct Serializer<'a> {
    out: &'a mut Vec<u8>,
}

fn len32(len: usize) -> Result<u32, Error> {
    u32::try_from(len).map_err(|_| Error::TooLong)
}

/// rmp's writer for `Vec<u8>` differs between its std and no_std builds only in the error
/// type, and writing to a `Vec` does not fail: every rmp error maps to `TooLong`.
macro_rules! rmp {
    ($f:ident($out:expr $(, $arg:expr)*)) => {
        rmp::encode::$f($out $(, $arg)*).map(|_| ()).map_err(|_| Error::TooLong)
    };
}

impl<'a, 'b> ser::Serializer for &'b mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }
    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        rmp!(write_bool(self.out, v))
    }
    fn serialize_i8(self, v: i8) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Error> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Error> {
        rmp!(write_sint(self.out, v))
    }
    fn serialize_u8(self, v: u8) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Error> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Error> {
        rmp!(write_uint(self.out, v))
    }
    fn serialize_f32(self, v: f32) -> Result<(), Error> {
        rmp!(write_f32(self.out, v))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Error> {
        rmp!(write_f64(self.out, v))
    }
    fn serialize_char(self, v: char) -> Result<(), Error> {
        let mut buf = [0u8; 4];
        self.serialize_str(v.encode_utf8(&mut buf))
    }
    fn serialize_str(self, v: &str) -> Result<(), Error> {
        rmp!(write_str(self.out, v))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Error> {
        rmp!(write_bin(self.out, v))
    }
    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Error> {
        rmp!(write_nil(self.out))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Error> {
        rmp!(write_array_len(self.out, 0))
    }
    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        rmp!(write_map_len(self.out, 1))?;
        self.serialize_str(variant)?;
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Error> {
        // Every sequence in the protocol knows its length up front.
        let len = len.ok_or_else(|| Error::Message("sequence of unknown length".into()))?;
        rmp!(write_array_len(self.out, len32(len)?))?;
        Ok(self)
    }
    fn serialize_tuple(self, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        rmp!(write_map_len(self.out, 1))?;
        self.serialize_str(variant)?;
        self.serialize_seq(Some(len))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Error> {
        let len = len.ok_or_else(|| Error::Message("map of unknown length".into()))?;
        rmp!(write_map_len(self.out, len32(len)?))?;
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self, Error> {
        self.serialize_seq(Some(len))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self, Error> {
        self.serialize_tuple_variant(name, index, variant, len)
    }
}

macro_rules! compound {
    ($($trait:ident :: $method:ident $(($name:ty))?),+) => {$(
        impl<'a, 'b> ser::$trait for &'b mut Serializer<'a> {
            type Ok = ();
            type Error = Error;
            // Struct fields are written by position: their names are not on the wire.
            fn $method<T: Serialize + ?Sized>(&mut self, $(_: $name,)? value: &T) -> Result<(), Error> {
                value.serialize(&mut **self)
            }
            fn end(self) -> Result<(), Error> {
                Ok(())
            }
        }
    )+};
}

compound!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
    SerializeStruct::serialize_field(&'static str),
    SerializeStructVariant::serialize_field(&'static str)
);

impl<'a, 'b> ser::SerializeMap for &'b mut Serializer<'a> {
    type Ok = ();
    type Error = Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Error> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding

struct Deserializer<'de> {
    input: &'de [u8],
}

impl<'de> Deserializer<'de> {
    fn peek(&self) -> Result<u8, Error> {
        self.input.first().copied().ok_or(Error::Eof)
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8], Error> {
        if self.input.len() < n {
            return Err(Error::Eof);
        }
        let (head, tail) = self.input.split_at(n);
        self.input = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, width: usize) -> Result<u64, Error> {
        Ok(self
            .take(width)?
            .iter()
            .fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
    }

    fn length(&mut self, width: usize) -> Result<usize, Error> {
        usize::try_from(self.be(width)?).map_err(|_| Error::TooLong)
    }

    fn str_len(&mut self, marker: u8) -> Result<Option<usize>, Error> {
        Ok(Some(match marker {
            0xa0..=0xbf => usize::from(marker & 0x1f),
            0xd9 => self.length(1)?,
            0xda => self.length(2)?,
            0xdb => self.length(4)?,
            _ => return Ok(None),
        }))
    }

    /// The element count when `marker` starts an array (reading its length bytes).
    fn array_len(&mut self, marker: u8) -> Result<Option<usize>, Error> {
        Ok(Some(match marker {
            0x90..=0x9f => usize::from(marker & 0x0f),
            0xdc => self.length(2)?,
            0xdd => self.length(4)?,
            _ => return Ok(None),
        }))
    }

    fn borrowed_str(&mut self, len: usize) -> Result<&'de str, Error> {
        core::str::from_utf8(self.take(len)?).map_err(|_| Error::InvalidUtf8)
    }
}

/// Reads `len` elements for a sequence (or `len` key-value pairs for a map).
struct Elements<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_, 'de> {
    type Error = Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn size_hint(&self) -> Option<usize> {
        // Each element takes at least a byte: never hint more than the input holds.
        Some(self.left.min(self.de.input.len()))
    }
}

impl<'de> de::MapAccess<'de> for Elements<'_, 'de> {
    type Error = Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(&mut *self.de)
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.left.min(self.de.input.len() / 2))
    }
}

/// An enum as rmp-serde writes it: a bare name, or a one-entry map from name to content.
struct Variant<'a, 'de> {
    de: &'a mut Deserializer<'de>,
}

impl<'a, 'de> de::EnumAccess<'de> for Variant<'a, 'de> {
    type Error = Error;
    type Variant = Self;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self), Error> {
        let name = seed.deserialize(&mut *self.de)?;
        Ok((name, self))
    }
}

impl<'de> de::VariantAccess<'de> for Variant<'_, 'de> {
    type Error = Error;
    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(&mut *self.de)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(&mut *self.de, visitor)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.de.array(visitor)
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let marker = self.byte()?;
        if let Some(len) = self.str_len(marker)? {
            return visitor.visit_borrowed_str(self.borrowed_str(len)?);
        }
        if let Some(len) = self.array_len(marker)? {
            return self.seq(len, visitor);
        }
        match marker {
            0x00..=0x7f => visitor.visit_u64(u64::from(marker)),
            0xe0..=0xff => visitor.visit_i64(i64::from(marker as i8)),
            0xc0 => visitor.visit_unit(),
            0xc2 => visitor.visit_bool(false),
            0xc3 => visitor.visit_bool(true),
            0xcc => visitor.visit_u64(self.be(1)?),
            0xcd => visitor.visit_u64(self.be(2)?),
            0xce => visitor.visit_u64(self.be(4)?),
            0xcf => visitor.visit_u64(self.be(8)?),
            0xd0 => visitor.visit_i64(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => visitor.visit_i64(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => visitor.visit_i64(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => visitor.visit_i64(self.be(8)? as i64),
            0xca => visitor.visit_f32(f32::from_bits(self.be(4)? as u32)),
            0xcb => visitor.visit_f64(f64::from_bits(self.be(8)?)),
            0xc4..=0xc6 => {
                let len = self.length(1 << (marker - 0xc4))?;
                visitor.visit_borrowed_bytes(self.take(len)?)
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), visitor),
            0xde | 0xdf => {
                let len = self.length(if marker == 0xde { 2 } else { 4 })?;
                self.map(len, visitor)
            }
            other => Err(Error::UnexpectedMarker(other)),
        }
    }

    /// Structs are arrays on this wire (rmp-serde's compact form); a map is refused. Only the
    /// array path is built for each struct's visitor, which halves the decoder's code on the
    /// device.
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.array(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.peek()? == 0xc0 {
            self.take(1)?;
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.peek()? {
            0x81 => {
                self.take(1)?;
                visitor.visit_enum(Variant { de: self })
            }
            marker if self.str_len_peek(marker) => {
                let name = <&str as de::Deserialize>::deserialize(&mut *self)?;
                visitor.visit_enum(name.into_deserializer())
            }
            other => Err(Error::UnexpectedMarker(other)),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

impl<'de> Deserializer<'de> {
    fn seq<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let mut elements = Elements {
            de: self,
            left: len,
        };
        let value = visitor.visit_seq(&mut elements)?;
        match elements.left {
            0 => Ok(value),
            _ => Err(Error::Message(
                "array has more elements than the type".into(),
            )),
        }
    }

    fn map<V: Visitor<'de>>(&mut self, len: usize, visitor: V) -> Result<V::Value, Error> {
        let mut entries = Elements {
            de: self,
            left: len,
        };
        let value = visitor.visit_map(&mut entries)?;
        match entries.left {
            0 => Ok(value),
            _ => Err(Error::Message("map has more entries than the type".into())),
        }
    }

    /// An array, and nothing else, for `visitor`.
    fn array<V: Visitor<'de>>(&mut self, visitor: V) -> Result<V::Value, Error> {
        let marker = self.byte()?;
        match self.array_len(marker)? {
            Some(len) => self.seq(len, visitor),
            None => Err(Error::UnexpectedMarker(marker)),
        }
    }

    fn str_len_peek(&self, marker: u8) -> bool {
        matches!(marker, 0xa0..=0xbf | 0xd9..=0xdb)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_before_decoding() {
        let mut deep = alloc::vec![0x91u8; 100_000];
        deep.push(0x01);
        assert!(from_slice::<u8>(&deep).is_err());
    }

    #[test]
    fn structs_are_arrays_and_a_struct_sent_as_a_map_is_refused() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Pair {
            a: u8,
            b: u8,
        }
        // rmp-serde's compact form, what both sides write: [1, 2].
        assert_eq!(from_slice::<Pair>(&[0x92, 1, 2]), Ok(Pair { a: 1, b: 2 }));
        // Its named form, {"a": 1, "b": 2}: not this wire's, refused with the marker.
        let named = [0x82, 0xa1, b'a', 1, 0xa1, b'b', 2];
        assert_eq!(
            from_slice::<Pair>(&named),
            Err(Error::UnexpectedMarker(0x82))
        );
        // An array of the wrong length is refused too.
        assert!(from_slice::<Pair>(&[0x91, 1]).is_err());
    }

    #[test]
    fn values_round_trip_and_trailing_bytes_are_refused() {
        let mut out = Vec::new();
        to_vec(&(1u8, -5i32, "x", Some(3u16), None::<u8>), &mut out).unwrap();
        let back: (u8, i32, String, Option<u16>, Option<u8>) = from_slice(&out).unwrap();
        assert_eq!(back, (1, -5, "x".into(), Some(3), None));
        out.push(0);
        assert!(from_slice::<(u8, i32, String, Option<u16>, Option<u8>)>(&out).is_err());
    }
}
