//! Exact arithmetic on BSON numbers: comparison across int32/int64/double/decimal128 by exact
//! value (as mongod's `compareElementValues` does), the canonical decimal form used by the
//! key encoding, and decimal128 decoding.

use std::cmp::Ordering;

use bson::Decimal128;

/// A BSON number of any of the four numeric types.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Number {
    Int(i64),
    Double(f64),
    Decimal(Decimal128),
}

/// The parts of a decimal128 value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecParts {
    NaN,
    Inf {
        negative: bool,
    },
    /// `(-1)^negative * coefficient * 10^exponent`; non-canonical coefficients read as zero,
    /// as the IEEE 754-2008 BID encoding requires.
    Finite {
        negative: bool,
        coefficient: u128,
        exponent: i32,
    },
}

/// The exponent bias of decimal128.
const DEC_BIAS: i32 = 6176;
/// The largest canonical decimal128 coefficient, 10^34 - 1.
const DEC_MAX_COEFF: u128 = 10u128.pow(34) - 1;

/// Decodes a decimal128 (BID encoding, little-endian bytes as BSON stores them).
pub(crate) fn decimal_parts(d: Decimal128) -> DecParts {
    let b = d.bytes();
    let low = u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
    let high = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    let negative = high >> 63 == 1;
    let combination = (high >> 58) & 0x1f;
    if combination == 0x1f {
        return DecParts::NaN;
    }
    if combination == 0x1e {
        return DecParts::Inf { negative };
    }
    let (biased, coefficient) = if (high >> 61) & 0b11 == 0b11 {
        // The "11" form: the implied coefficient prefix 100 makes it exceed 10^34, so the value
        // is non-canonical and reads as zero.
        (((high >> 47) & 0x3fff) as i32, 0u128)
    } else {
        let c = (u128::from(high & 0x0001_ffff_ffff_ffff) << 64) | u128::from(low);
        (((high >> 49) & 0x3fff) as i32, c)
    };
    let coefficient = if coefficient > DEC_MAX_COEFF {
        0
    } else {
        coefficient
    };
    DecParts::Finite {
        negative,
        coefficient,
        exponent: biased - DEC_BIAS,
    }
}

/// Encodes decimal128 parts (the coefficient must fit in 34 digits and the exponent in range).
pub(crate) fn decimal_from_parts(negative: bool, coefficient: u128, exponent: i32) -> Decimal128 {
    let biased = (exponent + DEC_BIAS).clamp(0, 0x2fff) as u64;
    let high = (u64::from(negative) << 63)
        | (biased << 49)
        | ((coefficient >> 64) as u64 & 0x0001_ffff_ffff_ffff);
    let low = coefficient as u64;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&low.to_le_bytes());
    bytes[8..].copy_from_slice(&high.to_le_bytes());
    Decimal128::from_bytes(bytes)
}

/// The decimal128 NaN.
pub(crate) fn decimal_nan() -> Decimal128 {
    let mut bytes = [0u8; 16];
    bytes[15] = 0x7c;
    Decimal128::from_bytes(bytes)
}

/// The decimal128 infinity of the given sign.
pub(crate) fn decimal_inf(negative: bool) -> Decimal128 {
    let mut bytes = [0u8; 16];
    bytes[15] = if negative { 0xf8 } else { 0x78 };
    Decimal128::from_bytes(bytes)
}

/// The class of a number in the total order: NaN sorts below every other number, as in
/// mongod (`compareDoubles` puts NaN first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Class {
    NaN,
    NegInf,
    Negative,
    Zero,
    Positive,
    PosInf,
}

/// The exact value of a finite, non-zero number in canonical decimal form:
/// `0.d1 d2 d3 ... * 10^exponent` with `d1 != 0` and no trailing zero digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exact {
    pub(crate) class: Class,
    /// Decimal digits (0..=9), most significant first; empty unless `Negative`/`Positive`.
    pub(crate) digits: Vec<u8>,
    /// Decimal exponent of the leading digit as above.
    pub(crate) exponent: i32,
}

impl Exact {
    fn special(class: Class) -> Self {
        Exact {
            class,
            digits: Vec::new(),
            exponent: 0,
        }
    }

    /// Builds from a sign and a digit string without leading zeros, trimming trailing zeros;
    /// the caller sets the exponent.
    fn from_digits(negative: bool, mut digits: Vec<u8>) -> Self {
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Exact::special(Class::Zero);
        }
        Exact {
            class: if negative {
                Class::Negative
            } else {
                Class::Positive
            },
            digits,
            exponent: 0,
        }
    }
}

/// Digits of an unsigned integer, most significant first.
fn u128_digits(mut v: u128) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    while v > 0 {
        out.push((v % 10) as u8);
        v /= 10;
    }
    out.reverse();
    out
}

/// Canonical form of `(-1)^negative * magnitude * 10^power` for an integer magnitude.
fn exact_from_int(negative: bool, magnitude: u128, power: i32) -> Exact {
    if magnitude == 0 {
        return Exact::special(Class::Zero);
    }
    let digits = u128_digits(magnitude);
    let n = digits.len() as i32;
    let mut e = Exact::from_digits(negative, digits);
    // 0.d1d2..dn * 10^(n + power) == magnitude * 10^power.
    e.exponent = n + power;
    e
}

/// A little-endian base-2^32 natural number, just big enough for the exact decimal expansion
/// of a double (at most about 1100 bits).
struct BigNat(Vec<u32>);

impl BigNat {
    fn from_u64(v: u64) -> Self {
        BigNat(vec![v as u32, (v >> 32) as u32])
    }

    fn mul_small(&mut self, m: u32) {
        let mut carry = 0u64;
        for limb in &mut self.0 {
            let p = u64::from(*limb) * u64::from(m) + carry;
            *limb = p as u32;
            carry = p >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
    }

    fn is_zero(&self) -> bool {
        self.0.iter().all(|l| *l == 0)
    }

    /// Divides in place by `d`, returning the remainder.
    fn div_small(&mut self, d: u32) -> u32 {
        let mut rem = 0u64;
        for limb in self.0.iter_mut().rev() {
            let cur = (rem << 32) | u64::from(*limb);
            *limb = (cur / u64::from(d)) as u32;
            rem = cur % u64::from(d);
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
        rem as u32
    }

    /// Decimal digits, most significant first.
    fn digits(mut self) -> Vec<u8> {
        let mut chunks = Vec::new();
        while !self.is_zero() {
            chunks.push(self.div_small(1_000_000_000));
        }
        let mut out = Vec::with_capacity(chunks.len() * 9);
        for (i, chunk) in chunks.iter().rev().enumerate() {
            let s = if i == 0 {
                chunk.to_string()
            } else {
                format!("{chunk:09}")
            };
            out.extend(s.bytes().map(|b| b - b'0'));
        }
        out
    }
}

/// The exact decimal value of a double.
fn exact_from_f64(d: f64) -> Exact {
    if d.is_nan() {
        return Exact::special(Class::NaN);
    }
    if d.is_infinite() {
        return Exact::special(if d > 0.0 {
            Class::PosInf
        } else {
            Class::NegInf
        });
    }
    if d == 0.0 {
        return Exact::special(Class::Zero);
    }
    let negative = d < 0.0;
    let bits = d.abs().to_bits();
    let raw_exp = ((bits >> 52) & 0x7ff) as i32;
    let frac = bits & 0x000f_ffff_ffff_ffff;
    let (mantissa, exp2) = if raw_exp == 0 {
        (frac, -1074)
    } else {
        (frac | (1 << 52), raw_exp - 1075)
    };
    if exp2 >= 0 {
        if exp2 <= 64 {
            return exact_from_int(negative, u128::from(mantissa) << exp2, 0);
        }
        let mut n = BigNat::from_u64(mantissa);
        for _ in 0..exp2 {
            n.mul_small(2);
        }
        let digits = n.digits();
        let len = digits.len() as i32;
        let mut e = Exact::from_digits(negative, digits);
        e.exponent = len;
        return e;
    }
    // mantissa * 2^exp2 == mantissa * 5^k / 10^k with k = -exp2.
    let k = -exp2;
    let mut n = BigNat::from_u64(mantissa);
    let mut left = k;
    while left > 0 {
        let step = left.min(13);
        n.mul_small(5u32.pow(step as u32));
        left -= step;
    }
    let digits = n.digits();
    let len = digits.len() as i32;
    let mut e = Exact::from_digits(negative, digits);
    e.exponent = len - k;
    e
}

/// The exact decimal value of any BSON number.
pub(crate) fn exact(n: Number) -> Exact {
    match n {
        Number::Int(i) => exact_from_int(i < 0, u128::from(i.unsigned_abs()), 0),
        Number::Double(d) => exact_from_f64(d),
        Number::Decimal(d) => match decimal_parts(d) {
            DecParts::NaN => Exact::special(Class::NaN),
            DecParts::Inf { negative: true } => Exact::special(Class::NegInf),
            DecParts::Inf { negative: false } => Exact::special(Class::PosInf),
            DecParts::Finite {
                negative,
                coefficient,
                exponent,
            } => exact_from_int(negative, coefficient, exponent),
        },
    }
}

/// Compares two canonical exact values.
fn cmp_exact(a: &Exact, b: &Exact) -> Ordering {
    a.class.cmp(&b.class).then_with(|| {
        let magnitude = a
            .exponent
            .cmp(&b.exponent)
            .then_with(|| a.digits.cmp(&b.digits));
        match a.class {
            Class::Positive => magnitude,
            Class::Negative => magnitude.reverse(),
            _ => Ordering::Equal,
        }
    })
}

/// Compares two doubles as mongod's `compareDoubles`: NaN equals NaN and is below all numbers;
/// -0.0 equals 0.0.
pub(crate) fn cmp_f64(a: f64, b: f64) -> Ordering {
    match a.partial_cmp(&b) {
        Some(o) => o,
        None => match (a.is_nan(), b.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        },
    }
}

/// Compares an integer with a double exactly (no rounding of large int64 values).
pub(crate) fn cmp_i64_f64(i: i64, d: f64) -> Ordering {
    if d.is_nan() {
        return Ordering::Greater;
    }
    // 2^63 as a double; every double at or beyond it exceeds every i64.
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if d >= TWO63 {
        return Ordering::Less;
    }
    if d < -TWO63 {
        return Ordering::Greater;
    }
    let t = d.trunc();
    // In range [-2^63, 2^63): the truncation is exactly representable as i64.
    let ti = t as i64;
    i.cmp(&ti).then_with(|| {
        if d > t {
            Ordering::Less
        } else if d < t {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    })
}

/// Compares two numbers by exact value, NaN lowest.
pub(crate) fn cmp_numbers(a: Number, b: Number) -> Ordering {
    match (a, b) {
        (Number::Int(x), Number::Int(y)) => x.cmp(&y),
        (Number::Double(x), Number::Double(y)) => cmp_f64(x, y),
        (Number::Int(x), Number::Double(y)) => cmp_i64_f64(x, y),
        (Number::Double(x), Number::Int(y)) => cmp_i64_f64(y, x).reverse(),
        _ => cmp_exact(&exact(a), &exact(b)),
    }
}

/// Converts a double to an int64 if it holds an integral value in range.
pub(crate) fn f64_to_i64_exact(d: f64) -> Option<i64> {
    const TWO63: f64 = 9_223_372_036_854_775_808.0;
    if d.is_finite() && d.trunc() == d && (-TWO63..TWO63).contains(&d) {
        Some(d as i64)
    } else {
        None
    }
}

/// The nearest double of a decimal128 (by way of its exact decimal string, which Rust's float
/// parser rounds correctly).
pub(crate) fn decimal_to_f64(d: Decimal128) -> f64 {
    match decimal_parts(d) {
        DecParts::NaN => f64::NAN,
        DecParts::Inf { negative } => {
            if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            }
        }
        DecParts::Finite {
            negative,
            coefficient,
            exponent,
        } => {
            let s = format!(
                "{}{}e{}",
                if negative { "-" } else { "" },
                coefficient,
                exponent
            );
            s.parse::<f64>().unwrap_or(f64::NAN)
        }
    }
}

/// A BSON number that keeps its type, for arithmetic with mongod's type promotion
/// (int32 < int64 < double < decimal128).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    I32(i32),
    I64(i64),
    F64(f64),
    Dec(Decimal128),
}

impl Num {
    /// The numeric value of a BSON value, if it is a number.
    pub(crate) fn from_bson(b: &bson::Bson) -> Option<Num> {
        match b {
            bson::Bson::Int32(i) => Some(Num::I32(*i)),
            bson::Bson::Int64(i) => Some(Num::I64(*i)),
            bson::Bson::Double(d) => Some(Num::F64(*d)),
            bson::Bson::Decimal128(d) => Some(Num::Dec(*d)),
            _ => None,
        }
    }

    /// Back to BSON.
    pub(crate) fn to_bson(self) -> bson::Bson {
        match self {
            Num::I32(i) => bson::Bson::Int32(i),
            Num::I64(i) => bson::Bson::Int64(i),
            Num::F64(d) => bson::Bson::Double(d),
            Num::Dec(d) => bson::Bson::Decimal128(d),
        }
    }

    /// The comparison view.
    pub(crate) fn number(self) -> Number {
        match self {
            Num::I32(i) => Number::Int(i64::from(i)),
            Num::I64(i) => Number::Int(i),
            Num::F64(d) => Number::Double(d),
            Num::Dec(d) => Number::Decimal(d),
        }
    }

    /// The nearest double.
    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Num::I32(i) => f64::from(i),
            Num::I64(i) => i as f64,
            Num::F64(d) => d,
            Num::Dec(d) => decimal_to_f64(d),
        }
    }

    /// The value as a decimal128 (doubles rounded to 15 significant digits, as mongod's
    /// `Decimal128(double)` does).
    pub(crate) fn to_dec(self) -> Decimal128 {
        match self {
            Num::I32(i) => decimal_from_parts(i < 0, u128::from(i.unsigned_abs()), 0),
            Num::I64(i) => decimal_from_parts(i < 0, u128::from(i.unsigned_abs()), 0),
            Num::Dec(d) => d,
            Num::F64(d) => {
                if d.is_nan() {
                    decimal_nan()
                } else if d.is_infinite() {
                    decimal_inf(d < 0.0)
                } else {
                    let s = format!("{d:.14e}");
                    s.parse::<Decimal128>().unwrap_or_else(|_| decimal_nan())
                }
            }
        }
    }

    /// True for a zero of any type.
    pub(crate) fn is_zero(self) -> bool {
        cmp_numbers(self.number(), Number::Int(0)).is_eq()
            && !matches!(self, Num::F64(d) if d.is_nan())
            && !matches!(self, Num::Dec(d) if decimal_parts(d) == DecParts::NaN)
    }

    fn rank(self) -> u8 {
        match self {
            Num::I32(_) => 0,
            Num::I64(_) => 1,
            Num::F64(_) => 2,
            Num::Dec(_) => 3,
        }
    }
}

/// Arithmetic operations with mongod's type promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
}

/// `a op b` with the result type of the wider operand; int32 overflow widens to int64.
/// Returns `None` when an int64 result overflows (the caller decides: updates fail, aggregation
/// falls back to double).
pub(crate) fn arith(op: ArithOp, a: Num, b: Num) -> Option<Num> {
    let rank = a.rank().max(b.rank());
    match rank {
        0 | 1 => {
            let x = match a {
                Num::I32(i) => i64::from(i),
                Num::I64(i) => i,
                _ => 0,
            };
            let y = match b {
                Num::I32(i) => i64::from(i),
                Num::I64(i) => i,
                _ => 0,
            };
            let r = match op {
                ArithOp::Add => x.checked_add(y),
                ArithOp::Sub => x.checked_sub(y),
                ArithOp::Mul => x.checked_mul(y),
            }?;
            if rank == 0 {
                Some(i32::try_from(r).map_or(Num::I64(r), Num::I32))
            } else {
                Some(Num::I64(r))
            }
        }
        2 => {
            let (x, y) = (a.to_f64(), b.to_f64());
            Some(Num::F64(match op {
                ArithOp::Add => x + y,
                ArithOp::Sub => x - y,
                ArithOp::Mul => x * y,
            }))
        }
        _ => Some(Num::Dec(dec_arith(op, a.to_dec(), b.to_dec()))),
    }
}

/// An exact decimal: `(-1)^neg * digits * 10^exp` (digits most significant first).
#[derive(Debug, Clone)]
struct BigDec {
    neg: bool,
    digits: Vec<u8>,
    exp: i32,
}

impl BigDec {
    fn from_parts(neg: bool, coeff: u128, exp: i32) -> Self {
        let digits = if coeff == 0 {
            vec![0]
        } else {
            u128_digits(coeff)
        };
        BigDec { neg, digits, exp }
    }

    /// Digits padded so that the last digit has power `exp`.
    fn aligned(&self, exp: i32) -> Vec<u8> {
        let mut d = self.digits.clone();
        let pad = usize::try_from(self.exp - exp).unwrap_or(0);
        d.extend(std::iter::repeat_n(0, pad));
        d
    }
}

fn digits_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let a = strip_leading(a);
    let b = strip_leading(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn strip_leading(a: &[u8]) -> &[u8] {
    let n = a.iter().take_while(|d| **d == 0).count();
    &a[n.min(a.len().saturating_sub(1))..]
}

fn digits_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len().max(b.len()) + 1);
    let (mut i, mut j, mut carry) = (a.len(), b.len(), 0u8);
    while i > 0 || j > 0 || carry > 0 {
        let x = if i > 0 {
            i -= 1;
            a[i]
        } else {
            0
        };
        let y = if j > 0 {
            j -= 1;
            b[j]
        } else {
            0
        };
        let s = x + y + carry;
        out.push(s % 10);
        carry = s / 10;
    }
    out.reverse();
    out
}

/// `a - b` for `a >= b`.
fn digits_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(a.len());
    let (mut i, mut j, mut borrow) = (a.len(), b.len(), 0i8);
    while i > 0 {
        i -= 1;
        let y = if j > 0 {
            j -= 1;
            b[j] as i8
        } else {
            0
        };
        let mut d = a[i] as i8 - y - borrow;
        borrow = 0;
        if d < 0 {
            d += 10;
            borrow = 1;
        }
        out.push(d as u8);
    }
    out.reverse();
    out
}

fn digits_mul(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut acc = vec![0u32; a.len() + b.len()];
    for (i, x) in a.iter().enumerate().rev() {
        for (j, y) in b.iter().enumerate().rev() {
            acc[i + j + 1] += u32::from(*x) * u32::from(*y);
        }
    }
    for k in (1..acc.len()).rev() {
        let carry = acc[k] / 10;
        acc[k] %= 10;
        acc[k - 1] += carry;
    }
    acc.into_iter().map(|d| d as u8).collect()
}

/// Rounds an exact decimal to decimal128 (34 digits, half-even), as IEEE 754-2008 requires.
fn round_to_decimal(v: BigDec) -> Decimal128 {
    let digits = strip_leading(&v.digits).to_vec();
    let mut exp = v.exp;
    let mut digits = digits;
    if digits.len() > 34 {
        let cut = digits.len() - 34;
        let kept: Vec<u8> = digits[..34].to_vec();
        let first_dropped = digits[34];
        let rest_nonzero = digits[35..].iter().any(|d| *d != 0);
        let last_kept_odd = kept.last().is_some_and(|d| d % 2 == 1);
        let round_up = first_dropped > 5 || (first_dropped == 5 && (rest_nonzero || last_kept_odd));
        digits = if round_up {
            digits_add(&kept, &[1])
        } else {
            kept
        };
        exp += i32::try_from(cut).unwrap_or(i32::MAX);
        if digits.len() > 34 {
            digits.pop();
            exp += 1;
        }
    }
    // Clamp into the representable exponent range.
    if exp > 6111 {
        // Try to fold the exponent into the coefficient (clamping), else overflow to infinity.
        let room = 34usize.saturating_sub(digits.len());
        let need = usize::try_from(exp - 6111).unwrap_or(usize::MAX);
        if need <= room {
            digits.extend(std::iter::repeat_n(0, need));
            exp = 6111;
        } else if digits.iter().all(|d| *d == 0) {
            exp = 6111;
        } else {
            return decimal_inf(v.neg);
        }
    }
    if exp < -6176 {
        let drop = usize::try_from(-6176 - exp).unwrap_or(usize::MAX);
        if drop >= digits.len() {
            return decimal_from_parts(v.neg, 0, -6176);
        }
        digits.truncate(digits.len() - drop);
        exp = -6176;
    }
    let coeff = digits
        .iter()
        .fold(0u128, |acc, d| acc * 10 + u128::from(*d));
    decimal_from_parts(v.neg, coeff, exp)
}

/// Decimal128 arithmetic with IEEE semantics for NaN and infinities.
pub(crate) fn dec_arith(op: ArithOp, a: Decimal128, b: Decimal128) -> Decimal128 {
    let (pa, pb) = (decimal_parts(a), decimal_parts(b));
    match (pa, pb) {
        (DecParts::NaN, _) | (_, DecParts::NaN) => return decimal_nan(),
        (DecParts::Inf { negative: x }, DecParts::Inf { negative: y }) => {
            return match op {
                ArithOp::Add if x == y => decimal_inf(x),
                ArithOp::Sub if x != y => decimal_inf(x),
                ArithOp::Mul => decimal_inf(x != y),
                _ => decimal_nan(),
            };
        }
        (
            DecParts::Inf { negative },
            DecParts::Finite {
                negative: n2,
                coefficient,
                ..
            },
        ) => {
            return match op {
                ArithOp::Mul if coefficient == 0 => decimal_nan(),
                ArithOp::Mul => decimal_inf(negative != n2),
                _ => decimal_inf(negative),
            };
        }
        (
            DecParts::Finite {
                negative,
                coefficient,
                ..
            },
            DecParts::Inf { negative: n2 },
        ) => {
            return match op {
                ArithOp::Mul if coefficient == 0 => decimal_nan(),
                ArithOp::Mul => decimal_inf(negative != n2),
                ArithOp::Add => decimal_inf(n2),
                ArithOp::Sub => decimal_inf(!n2),
            };
        }
        _ => {}
    }
    let (
        DecParts::Finite {
            negative: na,
            coefficient: ca,
            exponent: ea,
        },
        DecParts::Finite {
            negative: nb,
            coefficient: cb,
            exponent: eb,
        },
    ) = (pa, pb)
    else {
        return decimal_nan();
    };
    let x = BigDec::from_parts(na, ca, ea);
    let mut y = BigDec::from_parts(nb, cb, eb);
    match op {
        ArithOp::Mul => round_to_decimal(BigDec {
            neg: na != nb,
            digits: digits_mul(&x.digits, &y.digits),
            exp: ea + eb,
        }),
        ArithOp::Add | ArithOp::Sub => {
            if op == ArithOp::Sub {
                y.neg = !y.neg;
            }
            let exp = x.exp.min(y.exp);
            let (dx, dy) = (x.aligned(exp), y.aligned(exp));
            if x.neg == y.neg {
                round_to_decimal(BigDec {
                    neg: x.neg,
                    digits: digits_add(&dx, &dy),
                    exp,
                })
            } else {
                match digits_cmp(&dx, &dy) {
                    Ordering::Less => round_to_decimal(BigDec {
                        neg: y.neg,
                        digits: digits_sub(strip_leading(&dy), strip_leading(&dx)),
                        exp,
                    }),
                    _ => round_to_decimal(BigDec {
                        neg: x.neg && digits_cmp(&dx, &dy).is_gt(),
                        digits: digits_sub(strip_leading(&dx), strip_leading(&dy)),
                        exp,
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal128 {
        s.parse().unwrap_or_else(|_| decimal_nan())
    }

    #[test]
    fn exact_forms_agree_across_types() {
        assert_eq!(exact(Number::Int(1)), exact(Number::Double(1.0)));
        assert_eq!(exact(Number::Int(1)), exact(Number::Decimal(dec("1.000"))));
        assert_eq!(
            exact(Number::Double(0.5)),
            exact(Number::Decimal(dec("0.50")))
        );
        assert_eq!(exact(Number::Double(-0.0)), exact(Number::Int(0)));
        assert_eq!(exact(Number::Int(1200)).digits, vec![1, 2]);
        assert_eq!(exact(Number::Int(1200)).exponent, 4);
    }

    #[test]
    fn int_double_comparison_is_exact_beyond_2_pow_53() {
        // 2^53 + 1 is not representable as a double; it is greater than 2^53 as a double.
        let big = (1i64 << 53) + 1;
        assert_eq!(cmp_i64_f64(big, 9_007_199_254_740_992.0), Ordering::Greater);
        assert_eq!(
            cmp_i64_f64(i64::MAX, 9.223_372_036_854_776e18),
            Ordering::Less
        );
        assert_eq!(
            cmp_i64_f64(i64::MIN, -9.223_372_036_854_776e18),
            Ordering::Equal
        );
        assert_eq!(cmp_i64_f64(0, f64::NAN), Ordering::Greater);
    }

    #[test]
    fn decimal_double_comparison_is_exact() {
        // 0.1 as a double is slightly above decimal 0.1.
        assert_eq!(
            cmp_numbers(Number::Double(0.1), Number::Decimal(dec("0.1"))),
            Ordering::Greater
        );
        assert_eq!(
            cmp_numbers(Number::Decimal(dec("NaN")), Number::Double(f64::NAN)),
            Ordering::Equal
        );
        assert_eq!(
            cmp_numbers(Number::Decimal(dec("-Infinity")), Number::Int(i64::MIN)),
            Ordering::Less
        );
        assert_eq!(
            cmp_numbers(Number::Decimal(dec("1E+400")), Number::Double(f64::MAX)),
            Ordering::Greater
        );
    }

    #[test]
    fn decimal_round_trips_through_parts() {
        let d = dec("-123.4500");
        assert_eq!(
            decimal_parts(d),
            DecParts::Finite {
                negative: true,
                coefficient: 1_234_500,
                exponent: -4
            }
        );
        assert_eq!(decimal_from_parts(true, 1_234_500, -4), d);
        assert_eq!(decimal_parts(decimal_nan()), DecParts::NaN);
        assert_eq!(
            decimal_parts(decimal_inf(true)),
            DecParts::Inf { negative: true }
        );
        assert_eq!(decimal_to_f64(dec("2.5")), 2.5);
        let big = dec("9999999999999999999999999999999999");
        assert!(
            matches!(decimal_parts(big), DecParts::Finite { coefficient, .. } if coefficient == 10u128.pow(34) - 1)
        );
    }

    #[test]
    fn arithmetic_promotes_types_like_mongod() {
        assert_eq!(
            arith(ArithOp::Add, Num::I32(1), Num::I32(2)),
            Some(Num::I32(3))
        );
        assert_eq!(
            arith(ArithOp::Add, Num::I32(i32::MAX), Num::I32(1)),
            Some(Num::I64(i64::from(i32::MAX) + 1))
        );
        assert_eq!(arith(ArithOp::Add, Num::I64(i64::MAX), Num::I32(1)), None);
        assert_eq!(
            arith(ArithOp::Mul, Num::I32(3), Num::F64(0.5)),
            Some(Num::F64(1.5))
        );
        assert_eq!(
            arith(ArithOp::Add, Num::Dec(dec("1.1")), Num::I32(2)),
            Some(Num::Dec(dec("3.1")))
        );
        assert_eq!(dec_arith(ArithOp::Sub, dec("1"), dec("3.50")), dec("-2.50"));
        assert_eq!(dec_arith(ArithOp::Mul, dec("1.5"), dec("-2")), dec("-3.0"));
        assert_eq!(
            dec_arith(
                ArithOp::Add,
                dec("9999999999999999999999999999999999"),
                dec("1")
            ),
            dec("1.000000000000000000000000000000000E+34")
        );
    }
}
