//! JSON bodies parsed so that what is stored is what the client sent, or the request is refused.
//!
//! Plain `serde_json` changes data without a word: every number goes through an `f64` (integers above 2^64 and
//! long decimals are rounded, and its fast float parser can miss by one unit in the last place), and a member
//! name given twice keeps its last value. Here:
//!
//! - **Numbers keep every digit**, in the form Postgres `jsonb` stores them in: `jsonb` holds numbers as
//!   `numeric`, exact but canonical (the exponent written out, the scale of the input kept, no negative zero:
//!   `1E+2` → `100`, `1.50` → `1.50`, `-1.5e-3` → `-0.0015`, `-0` → `0`). The value is put in that form before
//!   it is stored, so the copy in Redis and the row in Postgres read back as the same text.
//! - **A number Postgres cannot hold** (more than 131072 digits before the point or 16383 after it) is refused
//!   with 400, and so is a body that its numbers, written out, would make larger than the body limit (413:
//!   `1e60000` is 7 bytes sent but 60001 stored).
//! - **A member name repeated in one object** is refused with 400, at any depth, names compared after unescaping.
//! - **A member name beginning with `$serde_json::private::`** is refused with 400: with `arbitrary_precision` and
//!   `raw_value`, `Value`'s deserializer reads an object whose first member has such a name as a number or as
//!   embedded JSON, so the store, which reads values back with it (from Redis and from Postgres), would return
//!   something else than was stored.
//!
//! The syntax is checked by `serde_json` first (the handler takes a `RawValue`, with the same errors as any JSON
//! body); this module then builds the [`Value`] from the checked text itself, not through `Value`'s deserializer
//! (see the previous point).

use std::str::FromStr;

use serde_json::{Map, Number, Value};

use crate::error::ApiError;

/// Deepest nesting of arrays and objects (serde_json's own limit; its raw-value check applies none).
pub const MAX_DEPTH: usize = 128;

/// Postgres `numeric`: at most this many digits before the decimal point...
pub const PG_MAX_INTEGER_DIGITS: u64 = 131_072;
/// ...and this many after it.
pub const PG_MAX_SCALE: u64 = 16_383;
/// Postgres refuses a number whose exponent is this large (`INT_MAX / 2`) or larger, whatever its digits.
const PG_MAX_EXPONENT: u64 = 1_073_741_823;

/// The prefix of the member names serde_json gives a meaning of its own (see the module documentation).
pub const RESERVED_NAME_PREFIX: &str = "$serde_json::private::";

/// Longest piece of a name or number quoted back in an error message.
const SHOWN_CHARS: usize = 64;

/// Builds the value of `text`, JSON whose syntax `serde_json` has checked. `max_bytes` bounds the size of the
/// body once its numbers are written out.
pub fn parse(text: &str, max_bytes: usize) -> Result<Value, ApiError> {
    let mut parser = Parser {
        text,
        pos: 0,
        size: text.len(),
        max_bytes,
    };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.pos != text.len() {
        return Err(parser.unexpected());
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    /// Bytes of the body with the numbers read so far written out.
    size: usize,
    max_bytes: usize,
}

impl Parser<'_> {
    fn value(&mut self, depth: usize) -> Result<Value, ApiError> {
        self.skip_whitespace();
        match self.peek() {
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.unexpected()),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, ApiError> {
        check_depth(depth)?;
        self.pos += 1;
        let mut members = Map::new();
        self.skip_whitespace();
        if self.eat(b'}') {
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_whitespace();
            let name = self.string()?;
            if name.starts_with(RESERVED_NAME_PREFIX) {
                return Err(ApiError::BadRequest(format!(
                    "member name {} is reserved: names beginning with {RESERVED_NAME_PREFIX} cannot be stored",
                    quoted(&name)
                )));
            }
            if members.contains_key(&name) {
                return Err(ApiError::BadRequest(format!(
                    "duplicate member name {} in a JSON object",
                    quoted(&name)
                )));
            }
            self.skip_whitespace();
            self.expect(b':')?;
            let value = self.value(depth)?;
            members.insert(name, value);
            self.skip_whitespace();
            if !self.eat(b',') {
                self.expect(b'}')?;
                return Ok(Value::Object(members));
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ApiError> {
        check_depth(depth)?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value(depth)?);
            self.skip_whitespace();
            if !self.eat(b',') {
                self.expect(b']')?;
                return Ok(Value::Array(items));
            }
        }
    }

    /// A string, its escapes decoded by serde_json (which also refuses lone surrogates).
    fn string(&mut self) -> Result<String, ApiError> {
        let start = self.pos;
        self.expect(b'"')?;
        let mut escaped = false;
        loop {
            match self.peek() {
                None => return Err(self.unexpected()),
                Some(b'"') => break,
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 2;
                }
                Some(_) => self.pos += 1,
            }
        }
        self.pos += 1;
        let raw = self.text.get(start..self.pos).ok_or_else(|| self.unexpected())?;
        if escaped {
            serde_json::from_str(raw).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
        } else {
            Ok(raw[1..raw.len() - 1].to_owned())
        }
    }

    fn number(&mut self) -> Result<Value, ApiError> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.pos += 1;
        }
        let raw = &self.text[start..self.pos];
        let decimal = Decimal::parse(raw).ok_or_else(|| self.unexpected())?;
        if !decimal.fits_postgres() {
            return Err(ApiError::BadRequest(format!(
                "number {} cannot be stored: Postgres keeps at most {PG_MAX_INTEGER_DIGITS} digits before the \
                 decimal point and {PG_MAX_SCALE} after it",
                shown(raw)
            )));
        }
        // Checked before the digits are written out, so a tiny body cannot make a huge string.
        self.size = self.size.saturating_sub(raw.len()).saturating_add(decimal.len());
        if self.size > self.max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "the value is larger than {} bytes once its numbers are written out in full, as they are stored \
                 (1e3 as 1000)",
                self.max_bytes
            )));
        }
        let text = decimal.to_string();
        Number::from_str(&text)
            .map(Value::Number)
            .map_err(|e| ApiError::Internal(format!("canonical number {} does not parse: {e}", shown(&text)).into()))
    }

    fn literal(&mut self, word: &str, value: Value) -> Result<Value, ApiError> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.unexpected())
        }
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.pos += 1;
        }
        found
    }

    fn expect(&mut self, byte: u8) -> Result<(), ApiError> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    /// Only reachable if serde_json's syntax check and this parser disagree.
    fn unexpected(&self) -> ApiError {
        ApiError::BadRequest(format!("malformed JSON at byte {}", self.pos))
    }
}

fn check_depth(depth: usize) -> Result<(), ApiError> {
    if depth > MAX_DEPTH {
        Err(ApiError::BadRequest(format!(
            "JSON is nested more than {MAX_DEPTH} levels deep"
        )))
    } else {
        Ok(())
    }
}

/// `s` as a JSON string, cut to [`SHOWN_CHARS`] characters.
fn quoted(s: &str) -> String {
    serde_json::to_string(&shown(s)).unwrap_or_default()
}

fn shown(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

/// A JSON number as Postgres `numeric` reads it: `int.frac × 10^exponent`, digits as written.
#[derive(Debug)]
struct Decimal<'a> {
    negative: bool,
    int: &'a str,
    frac: &'a str,
    /// Saturated far beyond any exponent Postgres accepts.
    exponent: i64,
}

impl<'a> Decimal<'a> {
    /// Splits a number of JSON's grammar; `None` for anything else.
    fn parse(raw: &'a str) -> Option<Self> {
        let (negative, unsigned) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
            None => (unsigned, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) || (mantissa.contains('.') && frac.is_empty()) {
            return None;
        }
        let exponent = match exponent {
            None => 0,
            Some(e) => {
                let (sign, digits_of) = match e.as_bytes().first() {
                    Some(b'-') => (-1, &e[1..]),
                    Some(b'+') => (1, &e[1..]),
                    _ => (1, e),
                };
                if digits_of.is_empty() || !digits(digits_of) {
                    return None;
                }
                let cap = 4 * PG_MAX_EXPONENT as i64;
                let magnitude = digits_of
                    .bytes()
                    .fold(0i64, |n, d| (n * 10 + i64::from(d - b'0')).min(cap));
                sign * magnitude
            }
        };
        Some(Decimal {
            negative,
            int,
            frac,
            exponent,
        })
    }

    /// The `i`th digit of `int` followed by `frac`; `0` outside them.
    fn digit(&self, i: i64) -> u8 {
        let int = self.int.as_bytes();
        let frac = self.frac.as_bytes();
        match usize::try_from(i) {
            Ok(i) if i < int.len() => int[i],
            Ok(i) if i - int.len() < frac.len() => frac[i - int.len()],
            _ => b'0',
        }
    }

    /// Index of the first non-zero digit; `None` for zero.
    fn first_significant(&self) -> Option<i64> {
        self.int
            .bytes()
            .chain(self.frac.bytes())
            .position(|d| d != b'0')
            .map(|i| i as i64)
    }

    /// Where the decimal point falls among the digits.
    fn point(&self) -> i64 {
        self.int.len() as i64 + self.exponent
    }

    /// Digits after the point: those written, less the exponent (Postgres's `dscale`).
    fn scale(&self) -> i64 {
        (self.frac.len() as i64 - self.exponent).max(0)
    }

    /// Digits before the point, without leading zeros.
    fn integer_digits(&self) -> i64 {
        match self.first_significant() {
            Some(first) if self.point() > first => self.point() - first,
            _ => 0,
        }
    }

    fn fits_postgres(&self) -> bool {
        self.exponent.unsigned_abs() < PG_MAX_EXPONENT
            && self.integer_digits() as u64 <= PG_MAX_INTEGER_DIGITS
            && self.scale() as u64 <= PG_MAX_SCALE
    }

    fn is_zero(&self) -> bool {
        self.first_significant().is_none()
    }

    /// Length of the canonical text; only meaningful when [`Decimal::fits_postgres`].
    fn len(&self) -> usize {
        let sign = usize::from(self.negative && !self.is_zero());
        let scale = self.scale() as usize;
        sign + (self.integer_digits() as usize).max(1) + if scale > 0 { 1 + scale } else { 0 }
    }
}

impl std::fmt::Display for Decimal<'_> {
    /// The canonical text, as Postgres `numeric` prints it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::with_capacity(self.len());
        if self.negative && !self.is_zero() {
            out.push('-');
        }
        match self.first_significant() {
            Some(first) if self.point() > first => {
                out.extend((first..self.point()).map(|i| char::from(self.digit(i))));
            }
            _ => out.push('0'),
        }
        let scale = self.scale();
        if scale > 0 {
            out.push('.');
            let point = self.point();
            out.extend((point..point + scale).map(|i| char::from(self.digit(i))));
        }
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parsed(text: &str) -> Result<Value, ApiError> {
        serde_json::from_str::<&serde_json::value::RawValue>(text).expect("valid JSON");
        parse(text, 64 * 1024)
    }

    fn canonical(raw: &str) -> String {
        let decimal = Decimal::parse(raw).unwrap();
        assert!(decimal.fits_postgres(), "{raw}");
        let text = decimal.to_string();
        assert_eq!(text.len(), decimal.len(), "{raw}");
        text
    }

    #[test]
    fn numbers_take_the_form_postgres_jsonb_stores() {
        // Right-hand sides: what `SELECT '<left>'::jsonb::text` answers on PostgreSQL 15.
        for (raw, stored) in [
            ("1e2", "100"),
            ("1.50", "1.50"),
            ("1.5e1", "15"),
            ("1.50e1", "15.0"),
            ("1e-2", "0.01"),
            ("100e-2", "1.00"),
            ("-0", "0"),
            ("-0.0", "0.0"),
            ("0e-5", "0.00000"),
            ("1E+2", "100"),
            ("123.456e1", "1234.56"),
            (
                "0.1000000000000000055511151231257827",
                "0.1000000000000000055511151231257827",
            ),
            ("18446744073709551617", "18446744073709551617"),
            ("-1.5e-3", "-0.0015"),
            ("0e999999", "0"),
            ("0.000e5", "0"),
            ("7", "7"),
            ("-7.25", "-7.25"),
        ] {
            assert_eq!(canonical(raw), stored, "{raw}");
        }
        assert_eq!(
            canonical("1.7976931348623155e308"),
            format!("17976931348623155{}", "0".repeat(292))
        );
        assert_eq!(canonical("5e-324"), format!("0.{}5", "0".repeat(323)));
        assert_eq!(canonical("1e131071").len(), 131_072);
        assert_eq!(canonical("0.1e131072").len(), 131_072);
        assert_eq!(canonical("1e-16383").len(), 16_385);
    }

    #[test]
    fn numbers_beyond_postgres_numeric_are_refused() {
        for raw in [
            "1e131072",
            "10e131071",
            "1e-16384",
            "0e-16384",
            "0e1073741823",
            "1e99999999999999999999999",
        ] {
            assert!(!Decimal::parse(raw).unwrap().fits_postgres(), "{raw}");
            let err = parsed(&format!("[{raw}]")).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST, "{raw}");
            assert!(err.to_string().contains("cannot be stored"), "{err}");
        }
    }

    #[test]
    fn numbers_are_not_allowed_to_grow_past_the_limit() {
        let err = parse("[1e100]", 50).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(parse("[1e40]", 50).unwrap()[0].to_string().len(), 41);
    }

    #[test]
    fn the_value_keeps_every_digit() {
        let value = parsed(r#"{"a":[18446744073709551617,1.7976931348623157e309,-0.0]}"#).unwrap();
        assert_eq!(value["a"][0].to_string(), "18446744073709551617");
        assert_eq!(
            value["a"][1].to_string(),
            format!("17976931348623157{}", "0".repeat(293))
        );
        assert_eq!(
            value.to_string(),
            format!("{{\"a\":[18446744073709551617,{},0.0]}}", value["a"][1])
        );
    }

    #[test]
    fn strings_literals_and_structure_come_through() {
        let text =
            r#" {"s":"plain","e":"tab\there \u00e9 \ud83d\ude42 \"q\" \\","l":[true,false,null,{}],"n":{"m":[]}} "#;
        assert_eq!(
            parsed(text).unwrap(),
            json!({"s": "plain", "e": "tab\there é 🙂 \"q\" \\", "l": [true, false, null, {}], "n": {"m": []}})
        );
    }

    #[test]
    fn member_names_serde_json_reserves_are_refused() {
        // What the store would read back: the number 1, and the array [1], instead of the objects stored.
        let number: Value = serde_json::from_str(r#"{"$serde_json::private::Number":"1"}"#).unwrap();
        assert!(number.is_number(), "{number}");
        for text in [
            r#"{"$serde_json::private::Number":"1"}"#,
            r#"[{"a":{"$serde_json::private::RawValue":"[1]"}}]"#,
            r#"{"b":1,"\u0024serde_json::private::Number":"1"}"#,
        ] {
            let err = parsed(text).unwrap_err();
            assert!(err.to_string().contains("is reserved"), "{text}: {err}");
        }
        assert!(parsed(r#"{"$serde_json":1,"serde_json::private::Number":2}"#).is_ok());
    }

    #[test]
    fn repeated_member_names_are_refused_at_any_depth() {
        for (text, name) in [
            (r#"{"a":1,"a":1}"#, "a"),
            (r#"[{"x":{"b":1,"c":2,"b":3}}]"#, "b"),
            (r#"{"é":1,"\u00e9":2}"#, "é"),
        ] {
            let err = parsed(text).unwrap_err();
            assert_eq!(err.status(), axum::http::StatusCode::BAD_REQUEST);
            assert_eq!(
                err.to_string(),
                format!("duplicate member name \"{name}\" in a JSON object")
            );
        }
        assert!(parsed(r#"{"a":{"a":1},"b":[{"a":1},{"a":2}]}"#).is_ok());
    }

    #[test]
    fn lone_surrogates_are_refused() {
        let err = parsed(r#"["\ud800"]"#).unwrap_err();
        assert!(err.to_string().starts_with("malformed JSON"), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(&deep(MAX_DEPTH), 1 << 20).is_ok());
        let err = parse(&deep(MAX_DEPTH + 1), 1 << 20).unwrap_err();
        assert!(err.to_string().contains("nested"), "{err}");
        // Far deeper than any stack would take: refused, not a crash.
        assert!(parse(&deep(100_000), 1 << 20).is_err());
    }

    #[test]
    fn serde_json_keeps_number_text() {
        // The `arbitrary_precision` feature is what keeps digits through the cache and the Postgres driver.
        let number: Value = serde_json::from_str("18446744073709551617.000000000000000000001").unwrap();
        assert_eq!(number.to_string(), "18446744073709551617.000000000000000000001");
    }
}
