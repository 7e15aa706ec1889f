//! Ids for the few distinct values a string column repeats (symbols, conditions, sources), and
//! the cheap hasher behind them and the de-duplication set.
//!
//! A raw object names a handful of symbols across thousands of rows: a `u32` per row and each
//! value once keep a day's rows compact (56 bytes) and free of per-row allocations.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-cryptographic hasher (FxHash's multiply-rotate) for keys that are not
/// attacker-chosen in bulk: (partition, offset) pairs and short column values.
#[derive(Default)]
pub struct Fx(u64);

impl Fx {
    #[inline]
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        let rest = chunks.remainder();
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(last) ^ ((rest.len() as u64) << 56));
    }
    fn write_u8(&mut self, n: u8) {
        self.add(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }
    fn write_i32(&mut self, n: i32) {
        self.add(n as u32 as u64);
    }
    fn write_i64(&mut self, n: i64) {
        self.add(n as u64);
    }
}

pub type FxBuild = BuildHasherDefault<Fx>;
pub type FxSet<T> = HashSet<T, FxBuild>;

/// Numbers the distinct values of an object's string columns: rows carry a `u32`, the object
/// keeps each value once. `scratch` is a reusable buffer for values that must be built
/// (upper-cased symbols, joined conditions) before they are looked up.
#[derive(Debug, Default)]
pub struct Interner {
    ids: HashMap<Box<str>, u32, FxBuild>,
    values: Vec<Box<str>>,
    pub(crate) scratch: String,
}

impl Interner {
    pub fn id(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        let id = u32::try_from(self.values.len()).expect("fewer than 2^32 distinct values");
        self.values.push(s.into());
        self.ids.insert(s.into(), id);
        id
    }

    /// The id of the value built in `scratch`.
    pub fn scratch_id(&mut self) -> u32 {
        let s = std::mem::take(&mut self.scratch);
        let id = self.id(&s);
        self.scratch = s;
        id
    }

    pub fn get(&self, id: u32) -> &str {
        &self.values[id as usize]
    }

    /// The values, indexed by id.
    pub fn into_values(self) -> Vec<Box<str>> {
        self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_id() {
        let mut i = Interner::default();
        let a = i.id("AAPL");
        assert_eq!(i.id("AAPL"), a);
        i.scratch.push_str("MSFT");
        let b = i.scratch_id();
        assert_ne!(a, b);
        assert_eq!(i.id("MSFT"), b);
        assert_eq!((i.get(a), i.get(b)), ("AAPL", "MSFT"));
        assert_eq!(i.into_values().len(), 2);
    }

    #[test]
    fn the_hasher_tells_lengths_and_tails_apart() {
        use std::hash::BuildHasher;
        let h = |s: &str| FxBuild::default().hash_one(s);
        assert_ne!(h("A"), h("A\0"));
        assert_ne!(h("ABCDEFGH"), h("ABCDEFGHI"));
        assert_ne!(h("AAPL"), h("MSFT"));
    }
}
