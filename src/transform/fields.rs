//! The rule for each field, applied to its raw JSON token: the value a clean row keeps, or the
//! [`Reason`] the line is quarantined for.

use super::intern::Interner;
use super::rules::{
    Reason, CONDITIONS_SEPARATOR, PRICE_PRECISION, PRICE_SCALE, SYMBOL_MAX_LEN, SYMBOL_STRIP,
    TIME_MAX_MS, TIME_MIN_MS,
};
use serde_json::value::RawValue;
use std::borrow::Cow;

#[inline]
pub(super) fn is_null(v: Option<&RawValue>) -> bool {
    v.is_none_or(|v| v.get() == "null")
}

/// An integer JSON token (no fraction, no exponent) as i64; `None` for anything else or beyond i64.
#[inline]
pub(super) fn int_token(v: &RawValue) -> Option<i64> {
    let t = v.get();
    let digits = t.strip_prefix('-').unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<i64>().ok()
}

#[inline]
pub(super) fn is_number_token(t: &str) -> bool {
    matches!(t.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

/// `Some(ms)` when the token is an integer in [TIME_MIN_MS, TIME_MAX_MS).
#[inline]
pub(super) fn ms_token(v: &RawValue) -> Option<i64> {
    int_token(v).filter(|ms| (TIME_MIN_MS..TIME_MAX_MS).contains(ms))
}

/// A JSON number as DECIMAL(18,8), rounding half up, with the Python rules' reasons.
#[inline]
pub(super) fn price(token: &str) -> Result<i64, Reason> {
    if !is_number_token(token) {
        return Err(Reason::BadPrice);
    }
    let (negative, rest) = match token.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, token),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, "0"),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // Exponents beyond ±10^15 saturate: either way the value is far outside the range.
    let exp: i64 = {
        let (neg, d) = match exp.as_bytes().first() {
            Some(b'-') => (true, &exp[1..]),
            Some(b'+') => (false, &exp[1..]),
            _ => (false, exp),
        };
        let d = d.trim_start_matches('0');
        let mag = if d.len() > 15 {
            1_000_000_000_000_000
        } else {
            d.parse::<i64>().unwrap_or(0)
        };
        if neg {
            -mag
        } else {
            mag
        }
    };
    // The digits D and the exponent E with value = D × 10^E, D without leading zeros. Short
    // mantissas (all real prices) use a stack buffer.
    let mut stack = [0u8; 40];
    let heap: Vec<u8>;
    let n = int_part.len() + frac_part.len();
    let all: &[u8] = if n <= stack.len() {
        stack[..int_part.len()].copy_from_slice(int_part.as_bytes());
        stack[int_part.len()..n].copy_from_slice(frac_part.as_bytes());
        &stack[..n]
    } else {
        heap = int_part.bytes().chain(frac_part.bytes()).collect();
        &heap
    };
    let first = all.iter().position(|&b| b != b'0');
    let Some(first) = first else {
        return Err(Reason::NonPositivePrice); // zero, of either sign
    };
    let digits = &all[first..];
    let e = exp - frac_part.len() as i64;
    let adjusted = digits.len() as i64 - 1 + e;
    if adjusted >= (PRICE_PRECISION - PRICE_SCALE) as i64 {
        return Err(Reason::BadPrice);
    }
    if adjusted < -(PRICE_SCALE as i64) - 2 {
        return Err(Reason::NonPositivePrice);
    }
    let shift = e + PRICE_SCALE as i64; // unscaled = D × 10^shift
    let unscaled: i128 = if shift >= 0 {
        digits
            .iter()
            .fold(0i128, |acc, &b| acc * 10 + (b - b'0') as i128)
            * 10i128.pow(shift as u32)
    } else {
        let drop = (-shift) as usize;
        let keep = digits.len().saturating_sub(drop);
        let kept = digits[..keep]
            .iter()
            .fold(0i128, |acc, &b| acc * 10 + (b - b'0') as i128);
        let next = if drop <= digits.len() {
            digits[keep]
        } else {
            b'0'
        };
        kept + i128::from(next >= b'5')
    };
    if unscaled >= 10i128.pow(PRICE_PRECISION) {
        return Err(Reason::BadPrice);
    }
    if negative || unscaled == 0 {
        return Err(Reason::NonPositivePrice);
    }
    Ok(unscaled as i64)
}

#[inline]
pub(super) fn string_token<'a>(v: &'a RawValue) -> Option<Cow<'a, str>> {
    let t = v.get();
    if !t.starts_with('"') {
        return None;
    }
    if !t.contains('\\') {
        // A JSON string without escapes is its own text between the quotes.
        return Some(Cow::Borrowed(&t[1..t.len() - 1]));
    }
    serde_json::from_str::<Cow<'a, str>>(t).ok()
}

#[inline]
pub(super) fn symbol(v: Option<&RawValue>, strings: &mut Interner) -> Result<u32, Reason> {
    if is_null(v) {
        return Err(Reason::MissingSymbol);
    }
    let s = string_token(v.expect("not null")).ok_or(Reason::BadSymbol)?;
    let s = s.trim_matches(|c| SYMBOL_STRIP.contains(c));
    if s.is_empty() {
        return Err(Reason::MissingSymbol);
    }
    if s.len() > SYMBOL_MAX_LEN || !s.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(Reason::BadSymbol);
    }
    if s.bytes().any(|b| b.is_ascii_lowercase()) {
        strings.scratch.clear();
        strings.scratch.push_str(s);
        strings.scratch.make_ascii_uppercase();
        return Ok(strings.scratch_id());
    }
    Ok(strings.id(s))
}

#[inline]
pub(super) fn volume(v: Option<&RawValue>) -> Result<Option<f64>, Reason> {
    if is_null(v) {
        return Ok(None);
    }
    let t = v.expect("not null").get();
    if !is_number_token(t) {
        return Err(Reason::BadVolume);
    }
    let x: f64 = t.parse().map_err(|_| Reason::BadVolume)?;
    if x >= 0.0 && x != f64::INFINITY {
        Ok(Some(x))
    } else {
        Err(Reason::BadVolume)
    }
}

#[inline]
pub(super) fn conditions(
    v: Option<&RawValue>,
    strings: &mut Interner,
) -> Result<Option<u32>, Reason> {
    if is_null(v) {
        return Ok(None);
    }
    let t = v.expect("not null").get();
    if let Some(joined) = simple_string_list(t, &mut strings.scratch) {
        return joined.map(|()| Some(strings.scratch_id()));
    }
    let list: Vec<Cow<str>> = serde_json::from_str(t).map_err(|_| Reason::BadConditions)?;
    if list.iter().any(|c| c.contains(CONDITIONS_SEPARATOR)) {
        return Err(Reason::BadConditions);
    }
    Ok(Some(strings.id(&list.join(CONDITIONS_SEPARATOR))))
}

/// `["a","b"]` without escapes, joined into `out`, in one pass; `None` sends anything else to serde.
#[inline]
pub(super) fn simple_string_list(t: &str, out: &mut String) -> Option<Result<(), Reason>> {
    let b = t.as_bytes();
    if b.first() != Some(&b'[') || b.contains(&b'\\') {
        return None;
    }
    let ws = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            *i += 1;
        }
    };
    out.clear();
    let mut items = 0;
    let mut i = 1;
    ws(&mut i);
    if b.get(i) == Some(&b']') {
        return (i + 1 == b.len()).then_some(Ok(()));
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = i + 1 + b[i + 1..].iter().position(|&c| c == b'"')?;
        let item = &t[i + 1..end];
        if item.contains(CONDITIONS_SEPARATOR) {
            return Some(Err(Reason::BadConditions));
        }
        if items > 0 {
            out.push_str(CONDITIONS_SEPARATOR);
        }
        out.push_str(item);
        items += 1;
        i = end + 1;
        ws(&mut i);
        match b.get(i) {
            Some(b',') => {
                i += 1;
                ws(&mut i);
            }
            Some(b']') => return (i + 1 == b.len()).then_some(Ok(())),
            _ => return None,
        }
    }
}
