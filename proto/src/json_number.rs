//! Exact numbers in JSON text, shared by everything that reads or writes feature values as
//! JSON (record ingest, pushed rows, `quiverctl`): a value must come back with the bits it
//! went in with.
//!
//! - **Reading** works on the number's own text, parsed straight into the feature's type
//!   (`f64`, `f32`, `i64`) with Rust's correctly rounded parsers: no detour through
//!   another float type (a `float32` read as `f64` and then narrowed can round twice), no
//!   float for integers (`int64` beyond 2^53 stays exact). A finite literal too large for
//!   the type is an error, not infinity.
//! - **Non-finite floats** have no JSON number. Read and written as the strings `"NaN"`,
//!   `"Infinity"` and `"-Infinity"` (the protobuf JSON mapping's spelling). Python's
//!   `json.dumps` writes them as bare tokens (`NaN`, `Infinity`, `-Infinity`), which is not
//!   JSON; [`quote_non_finite_tokens`] turns those into marker
//!   objects so such records still parse, and only float features accept the markers. NaN
//!   payload bits are not kept through JSON (every NaN reads as the canonical quiet NaN);
//!   through protobuf they are.
//! - **Writing** floats uses the shortest text that parses back to the same bits (Rust's
//!   `Debug` formatting: `0.1`, `1e300`, `5e-324`, `-0.0`); `float32` values are written
//!   with the shortest text of the `f32` (parse them as float32).
//! - **Timestamps** in a unit (seconds, milliseconds, microseconds) convert to whole
//!   microseconds by exact decimal arithmetic ([`decimal_to_scaled_i64`]); digits below a
//!   microsecond are dropped (truncated toward zero).

/// Why a JSON value did not parse as the wanted number type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// The text is not a number of the wanted kind (for integers: has a fraction or an
    /// exponent).
    #[error("not a {0}")]
    Type(&'static str),
    /// A finite number outside the type's range.
    #[error("{0} is out of range")]
    Range(&'static str),
}

// What [`quote_non_finite_tokens`] rewrites Python's bare tokens to: objects with a NUL in
// their key (which real records do not have), accepted by float features only.
const MARKED_NAN: &str = "{\"\\u0000non-finite\":\"NaN\"}";
const MARKED_INF: &str = "{\"\\u0000non-finite\":\"Infinity\"}";
const MARKED_NEG_INF: &str = "{\"\\u0000non-finite\":\"-Infinity\"}";

fn non_finite(text: &str) -> Option<f64> {
    match text {
        "\"NaN\"" | MARKED_NAN => Some(f64::NAN),
        "\"Infinity\"" | MARKED_INF => Some(f64::INFINITY),
        "\"-Infinity\"" | MARKED_NEG_INF => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// Whether `text` has the shape of a JSON number (optional minus, digits, optional
/// fraction and exponent). Rust's float parser accepts more (`inf`, `+1`, `.5`).
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// Parses the JSON text of one value as an `f64`, exactly: a number, or one of the
/// non-finite spellings.
///
/// # Errors
/// [`NumberError::Type`] if it is neither; [`NumberError::Range`] if a finite literal
/// exceeds `f64`.
pub fn parse_f64(text: &str) -> Result<f64, NumberError> {
    let text = text.trim();
    if let Some(f) = non_finite(text) {
        return Ok(f);
    }
    if !is_json_number(text) {
        return Err(NumberError::Type("float64"));
    }
    let f: f64 = text.parse().map_err(|_| NumberError::Type("float64"))?;
    if f.is_infinite() {
        return Err(NumberError::Range("float64"));
    }
    Ok(f)
}

/// Parses the JSON text of one value as an `f32`, rounding the decimal once, to `f32`.
///
/// # Errors
/// As [`parse_f64`], for `f32`.
pub fn parse_f32(text: &str) -> Result<f32, NumberError> {
    let text = text.trim();
    if let Some(f) = non_finite(text) {
        // NaN and ±∞ narrow exactly.
        #[allow(clippy::cast_possible_truncation)]
        return Ok(f as f32);
    }
    if !is_json_number(text) {
        return Err(NumberError::Type("float32"));
    }
    let f: f32 = text.parse().map_err(|_| NumberError::Type("float32"))?;
    if f.is_infinite() {
        return Err(NumberError::Range("float32"));
    }
    Ok(f)
}

/// Parses the JSON text of one value as an `i64`: an integer literal (no fraction, no
/// exponent), exactly.
///
/// # Errors
/// [`NumberError::Type`] for anything but an integer literal, [`NumberError::Range`]
/// beyond `i64`.
pub fn parse_i64(text: &str) -> Result<i64, NumberError> {
    let text = text.trim();
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(NumberError::Type("int64"));
    }
    text.parse().map_err(|_| NumberError::Range("int64"))
}

/// Appends the JSON text of `f`: the shortest decimal that parses back to the same bits,
/// or a non-finite spelling.
pub fn write_f64(out: &mut String, f: f64) {
    use std::fmt::Write as _;
    if f.is_nan() {
        out.push_str("\"NaN\"");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 {
            "\"Infinity\""
        } else {
            "\"-Infinity\""
        });
    } else {
        // Debug: shortest round-trip digits, an exponent for very large or small values.
        let _ = write!(out, "{f:?}");
    }
}

/// Appends the JSON text of `f` as the shortest decimal of the `f32` (read it back as a
/// float32), or a non-finite spelling.
pub fn write_f32(out: &mut String, f: f32) {
    use std::fmt::Write as _;
    if f.is_finite() {
        let _ = write!(out, "{f:?}");
    } else {
        write_f64(out, f64::from(f));
    }
}

/// The JSON text of `f` (see [`write_f64`]).
pub fn f64_text(f: f64) -> String {
    let mut s = String::new();
    write_f64(&mut s, f);
    s
}

/// The JSON text of `f` (see [`write_f32`]).
pub fn f32_text(f: f32) -> String {
    let mut s = String::new();
    write_f32(&mut s, f);
    s
}

/// The exact integer value of JSON number `text` × 10^`scale`, truncated toward zero:
/// `decimal_to_scaled_i64("1732000000.123456", 6)` is `1_732_000_000_123_456`.
///
/// # Errors
/// [`NumberError::Type`] if `text` is not a JSON number, [`NumberError::Range`] if the
/// result exceeds `i64`.
pub fn decimal_to_scaled_i64(text: &str, scale: i32) -> Result<i64, NumberError> {
    const WHAT: &str = "timestamp";
    let text = text.trim();
    if !is_json_number(text) {
        return Err(NumberError::Type("number"));
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], &unsigned[i + 1..]),
        None => (unsigned, "0"),
    };
    // Exponents beyond ±10^4 saturate: the value is then 0 or out of range anyway.
    let exponent: i64 = exponent
        .trim_start_matches('+')
        .parse::<i64>()
        .unwrap_or(if exponent.starts_with('-') {
            -10_000
        } else {
            10_000
        })
        .clamp(-10_000, 10_000);
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = int_part.bytes().chain(frac_part.bytes());
    let total_digits = (int_part.len() + frac_part.len()) as i64;
    // value = digits × 10^shift
    let shift = exponent - frac_part.len() as i64 + i64::from(scale);
    let keep = if shift < 0 {
        (total_digits + shift).max(0)
    } else {
        total_digits
    };
    let limit = i128::from(i64::MAX) + i128::from(negative);
    let mut v: i128 = 0;
    for d in digits.take(keep as usize) {
        v = v * 10 + i128::from(d - b'0');
        if v > limit {
            return Err(NumberError::Range(WHAT));
        }
    }
    if v != 0 {
        for _ in 0..shift.max(0) {
            v *= 10;
            if v > limit {
                return Err(NumberError::Range(WHAT));
            }
        }
    }
    let v = if negative { -v } else { v };
    i64::try_from(v).map_err(|_| NumberError::Range(WHAT))
}

/// Rewrites Python's non-standard bare tokens `NaN`, `Infinity` and `-Infinity` (outside
/// strings) into marker objects that parse as JSON and that only float features accept.
/// Returns `None` if there were none (the input is then left as it is).
pub fn quote_non_finite_tokens(json: &[u8]) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    let mut in_string = false;
    let mut escaped = false;
    let mut i = 0;
    let mut copied = 0;
    while i < json.len() {
        let c = json[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == b'"' {
                in_string = false;
            }
            i += 1;
            continue;
        }
        let token = |t: &[u8]| json[i..].starts_with(t);
        let (len, replacement) = if c == b'"' {
            in_string = true;
            i += 1;
            continue;
        } else if token(b"NaN") {
            (3, MARKED_NAN)
        } else if token(b"Infinity") {
            (8, MARKED_INF)
        } else if token(b"-Infinity") {
            (9, MARKED_NEG_INF)
        } else {
            i += 1;
            continue;
        };
        let buf = out.get_or_insert_with(|| Vec::with_capacity(json.len() + 64));
        buf.extend_from_slice(&json[copied..i]);
        buf.extend_from_slice(replacement.as_bytes());
        i += len;
        copied = i;
    }
    let mut buf = out?;
    buf.extend_from_slice(&json[copied..]);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64: deterministic pseudo-random bits.
    fn bits(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn every_f64_round_trips_bit_exact_through_each_text_form() {
        let mut seed = 7;
        let specials = [
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            5e-324,
            -5e-324,
            f64::MAX,
            f64::MIN,
            0.938_538_012_326_916_5,
            248.431_318_500_968_8,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let random = (0..200_000).map(|_| f64::from_bits(bits(&mut seed)));
        for f in specials.into_iter().chain(random).filter(|f| !f.is_nan()) {
            let ours = parse_f64(&f64_text(f)).unwrap();
            assert_eq!(ours.to_bits(), f.to_bits(), "{f:?} via {}", f64_text(f));
            if f.is_finite() {
                // What other producers write: Rust Display (no exponent), exponent form,
                // and serde_json (ryu).
                for text in [format!("{f}"), format!("{f:e}"), serde_like(f)] {
                    assert_eq!(parse_f64(&text).unwrap().to_bits(), f.to_bits(), "{text}");
                }
            }
        }
        assert!(parse_f64("\"NaN\"").unwrap().is_nan());
        assert!(parse_f64(&f64_text(f64::NAN)).unwrap().is_nan());
    }

    fn serde_like(f: f64) -> String {
        // Python's repr and serde_json both print the shortest digits; Rust's LowerExp
        // with an explicit exponent sign is the remaining variation.
        let e = format!("{f:e}");
        e.replace("e-", "E-").replace('e', "e+")
    }

    #[test]
    fn every_f32_round_trips_bit_exact() {
        let mut seed = 11;
        for _ in 0..200_000 {
            let f = f32::from_bits(bits(&mut seed) as u32);
            if f.is_nan() {
                continue;
            }
            assert_eq!(parse_f32(&f32_text(f)).unwrap().to_bits(), f.to_bits());
            // A float32 widened to f64 and printed as such (what Python writes for a
            // numpy float32 converted to float) reads back exactly too.
            if f.is_finite() {
                let wide = f64_text(f64::from(f));
                assert_eq!(parse_f32(&wide).unwrap().to_bits(), f.to_bits(), "{wide}");
            }
        }
    }

    #[test]
    fn out_of_range_and_wrong_kinds_are_errors_not_infinities() {
        assert_eq!(parse_f64("1e400"), Err(NumberError::Range("float64")));
        assert_eq!(parse_f32("1e39"), Err(NumberError::Range("float32")));
        assert_eq!(parse_f32("3.4028235e38").unwrap(), f32::MAX);
        assert_eq!(parse_f64("1e-400").unwrap().to_bits(), 0);
        for bad in [
            "\"1.5\"", "true", "null", "inf", "+1", ".5", "1.", "[1]", "\"nan\"",
        ] {
            assert!(parse_f64(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_i64("9223372036854775807").unwrap(), i64::MAX);
        assert_eq!(parse_i64("-9223372036854775808").unwrap(), i64::MIN);
        assert_eq!(parse_i64("9007199254740993").unwrap(), (1 << 53) + 1);
        assert_eq!(
            parse_i64("9223372036854775808"),
            Err(NumberError::Range("int64"))
        );
        for bad in ["1.0", "1e3", "\"1\"", "-", ""] {
            assert_eq!(parse_i64(bad), Err(NumberError::Type("int64")), "{bad}");
        }
    }

    #[test]
    fn timestamps_convert_exactly() {
        assert_eq!(
            decimal_to_scaled_i64("1732000000.123456", 6).unwrap(),
            1_732_000_000_123_456
        );
        // A float multiply gives ...455 here.
        assert_eq!(
            decimal_to_scaled_i64("1732000000.1234559", 6).unwrap(),
            1_732_000_000_123_455
        );
        assert_eq!(
            decimal_to_scaled_i64("1732000000123", 3).unwrap(),
            1_732_000_000_123_000
        );
        assert_eq!(decimal_to_scaled_i64("1.5e3", 3).unwrap(), 1_500_000);
        assert_eq!(decimal_to_scaled_i64("15E-1", 0).unwrap(), 1);
        assert_eq!(decimal_to_scaled_i64("-2.9", 0).unwrap(), -2);
        assert_eq!(decimal_to_scaled_i64("0.0000001", 6).unwrap(), 0);
        assert_eq!(decimal_to_scaled_i64("1e-99999", 6).unwrap(), 0);
        assert_eq!(decimal_to_scaled_i64("0e99999", 6).unwrap(), 0);
        assert_eq!(
            decimal_to_scaled_i64("9223372036854775807", 0).unwrap(),
            i64::MAX
        );
        assert_eq!(
            decimal_to_scaled_i64("-9223372036854775808", 0).unwrap(),
            i64::MIN
        );
        assert!(decimal_to_scaled_i64("9223372036854775808", 0).is_err());
        assert!(decimal_to_scaled_i64("1e12", 6).is_ok());
        assert!(decimal_to_scaled_i64("1e13", 6).is_err());
        assert!(decimal_to_scaled_i64("\"1\"", 6).is_err());
    }

    #[test]
    fn pythons_bare_non_finite_tokens_become_markers_outside_strings_only() {
        let py =
            br#"{"a": NaN, "b": [Infinity, -Infinity, 1.5], "s": "NaN Infinity \" NaN", "t": -1}"#;
        let fixed = String::from_utf8(quote_non_finite_tokens(py).unwrap()).unwrap();
        assert_eq!(
            fixed,
            format!(
                r#"{{"a": {MARKED_NAN}, "b": [{MARKED_INF}, {MARKED_NEG_INF}, 1.5], "s": "NaN Infinity \" NaN", "t": -1}}"#
            )
        );
        assert!(parse_f64(MARKED_NAN).unwrap().is_nan());
        assert_eq!(parse_f32(MARKED_NEG_INF).unwrap(), f32::NEG_INFINITY);
        assert_eq!(quote_non_finite_tokens(br#"{"a": "NaN"}"#), None);
    }
}
