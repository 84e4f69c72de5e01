//! Zero-copy argument and result types.
//!
//! pgrx's `JsonB` converts through text and serde_json both ways. A queue never looks inside a
//! payload, so courier passes jsonb (and arrays of jsonb or uuid) through as the varlena it got.

use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::datum::Datum;
use pgrx::nullable::Nullable;
use pgrx::pg_sys;
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::{FromDatum, IntoDatum, PgMemoryContexts};

/// A jsonb value, held as the (possibly toasted) datum PostgreSQL gave us.
#[derive(Clone, Copy)]
pub struct Jsonb(pg_sys::Datum);

const JB_FOBJECT: u32 = 0x2000_0000;

impl Jsonb {
    /// Size of the value once detoasted and decompressed, without the varlena header.
    pub fn size(&self) -> usize {
        // SAFETY: the datum is a valid jsonb varlena (it came from PostgreSQL typed as jsonb).
        unsafe { pg_sys::toast_raw_datum_size(self.0) - pg_sys::VARHDRSZ }
    }

    /// True when the top-level JSON value is an object.
    pub fn is_object(&self) -> bool {
        // SAFETY: as above; the root container header is the first 4 bytes of the data.
        unsafe {
            let detoasted = pg_sys::pg_detoast_datum_packed(self.0.cast_mut_ptr());
            let data = pgrx::vardata_any(detoasted) as *const u32;
            (data.read_unaligned() & JB_FOBJECT) != 0
        }
    }
}

impl FromDatum for Jsonb {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null { None } else { Some(Jsonb(datum)) }
    }

    unsafe fn from_datum_in_memory_context(
        mut memory_context: PgMemoryContexts,
        datum: pg_sys::Datum,
        is_null: bool,
        _typoid: pg_sys::Oid,
    ) -> Option<Self> {
        if is_null {
            return None;
        }
        // Values read through SPI die with the SPI connection: copy (and detoast) into the
        // caller's context so they can be returned.
        // SAFETY: datum is a valid jsonb varlena owned by SPI.
        // SAFETY: switch_to runs the closure with the context current and restores the old one;
        // the datum is a valid jsonb varlena owned by SPI, copied (detoasted) into that context.
        unsafe {
            memory_context.switch_to(|_| {
                Some(Jsonb(pg_sys::Datum::from(pg_sys::pg_detoast_datum_copy(datum.cast_mut_ptr()))))
            })
        }
    }
}

impl IntoDatum for Jsonb {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.0)
    }

    fn type_oid() -> pg_sys::Oid {
        pg_sys::JSONBOID
    }
}

// SAFETY: the argument is declared jsonb, so a non-null datum is a jsonb varlena.
unsafe impl<'fcx> ArgAbi<'fcx> for Jsonb {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: the argument is declared jsonb, and pgrx calls this only for a non-null one.
        unsafe { arg.unbox_arg_using_from_datum().expect("jsonb argument must not be null") }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: the argument has the declared type; a NULL one becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

// SAFETY: the datum we return is a valid jsonb varlena allocated in a context that outlives the call.
unsafe impl BoxRet for Jsonb {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> Datum<'fcx> {
        // SAFETY: the datum is a jsonb varlena that outlives the call (see the impl's comment).
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

// SAFETY: maps to the built-in jsonb type, exactly as pgrx's own JsonB does.
unsafe impl SqlTranslatable for Jsonb {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::Jsonb");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> = Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// A one-dimensional array argument, kept as a datum so it can be handed to SPI unchanged.
pub struct RawArray<const ELEM: u32> {
    datum: pg_sys::Datum,
}

pub type JsonbArray = RawArray<{ pg_sys::JSONBOID.to_u32() }>;
pub type UuidArray = RawArray<{ pg_sys::UUIDOID.to_u32() }>;
pub type TextArray = RawArray<{ pg_sys::TEXTOID.to_u32() }>;

/// The elements of a text[] as Rust strings.
pub struct Strings {
    pub values: Vec<Option<String>>,
    pub dimensions: i32,
}

impl TextArray {
    pub fn strings(&mut self) -> Strings {
        let e = self.elements();
        let values = e
            .values
            .into_iter()
            // SAFETY: non-null elements of a text[] are text datums.
            .map(|(d, is_null)| if is_null { None } else { unsafe { String::from_datum(d, false) } })
            .collect();
        Strings { values, dimensions: e.dimensions }
    }
}

/// The deconstructed elements of a [`RawArray`]: (datum, is_null) pairs.
pub struct Elements {
    pub values: Vec<(pg_sys::Datum, bool)>,
    pub dimensions: i32,
}

impl<const ELEM: u32> RawArray<ELEM> {
    /// Detoasts the array once and splits it into its elements.
    pub fn elements(&mut self) -> Elements {
        // SAFETY: the datum is an array of ELEM (PostgreSQL checked the argument type); we replace
        // our datum with the detoasted copy so SPI later gets the same, already-detoasted value.
        unsafe {
            let arr = pg_sys::pg_detoast_datum(self.datum.cast_mut_ptr()) as *mut pg_sys::ArrayType;
            self.datum = pg_sys::Datum::from(arr);
            let dimensions = (*arr).ndim;
            let (typlen, byval, align) = elem_layout(ELEM);
            let mut elems: *mut pg_sys::Datum = std::ptr::null_mut();
            let mut nulls: *mut bool = std::ptr::null_mut();
            let mut n: i32 = 0;
            pg_sys::deconstruct_array(
                arr,
                pg_sys::Oid::from(ELEM),
                typlen,
                byval,
                align,
                &mut elems,
                &mut nulls,
                &mut n,
            );
            let values = (0..n as usize).map(|i| (*elems.add(i), *nulls.add(i))).collect();
            Elements { values, dimensions }
        }
    }
}

fn elem_layout(elem: u32) -> (i32, bool, std::os::raw::c_char) {
    if elem == pg_sys::UUIDOID.to_u32() {
        (16, false, pg_sys::TYPALIGN_CHAR as std::os::raw::c_char)
    } else {
        (-1, false, pg_sys::TYPALIGN_INT as std::os::raw::c_char)
    }
}

impl<const ELEM: u32> FromDatum for RawArray<ELEM> {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null { None } else { Some(RawArray { datum }) }
    }
}

impl<const ELEM: u32> IntoDatum for RawArray<ELEM> {
    fn into_datum(self) -> Option<pg_sys::Datum> {
        Some(self.datum)
    }

    fn type_oid() -> pg_sys::Oid {
        if ELEM == pg_sys::UUIDOID.to_u32() {
            pg_sys::UUIDARRAYOID
        } else if ELEM == pg_sys::TEXTOID.to_u32() {
            pg_sys::TEXTARRAYOID
        } else {
            pg_sys::JSONBARRAYOID
        }
    }
}

// SAFETY: the argument is declared as an array of ELEM.
unsafe impl<'fcx, const ELEM: u32> ArgAbi<'fcx> for RawArray<ELEM> {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        // SAFETY: the argument is declared as an array of ELEM, and pgrx calls this only for a
        // non-null one.
        unsafe { arg.unbox_arg_using_from_datum().expect("array argument must not be null") }
    }

    unsafe fn unbox_nullable_arg(arg: Arg<'_, 'fcx>) -> Nullable<Self> {
        // SAFETY: the argument has the declared type; a NULL one becomes Nullable::Null.
        unsafe { arg.unbox_arg_using_from_datum().into() }
    }
}

// SAFETY: maps to the built-in jsonb[] type.
unsafe impl SqlTranslatable for JsonbArray {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbArray");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb[]")));
}

// SAFETY: maps to the built-in text[] type.
unsafe impl SqlTranslatable for TextArray {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::TextArray");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("text[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("text[]")));
}

// SAFETY: maps to the built-in uuid[] type.
unsafe impl SqlTranslatable for UuidArray {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::UuidArray");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("uuid[]"));
    const RETURN_SQL: Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("uuid[]")));
}
