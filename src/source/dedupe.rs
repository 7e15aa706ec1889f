//! Suppression of whole repeated messages. Finnhub has been seen sending the same message up to
//! three times; two distinct trades may share every field, so only an identical *message*
//! seen again within a short window is dropped, never a trade on its fields alone.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

pub struct Dedupe {
    window: Duration,
    seen: HashMap<u64, Instant>,
    order: VecDeque<(Instant, u64)>,
}

impl Dedupe {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `message` was already seen within the window (and so must be dropped).
    pub fn is_duplicate(&mut self, message: &str, now: Instant) -> bool {
        if self.window.is_zero() {
            return false;
        }
        while let Some(&(at, h)) = self.order.front() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&h) == Some(&at) {
                self.seen.remove(&h);
            }
        }
        let mut hasher = DefaultHasher::new();
        message.hash(&mut hasher);
        let h = hasher.finish();
        if self.seen.contains_key(&h) {
            return true;
        }
        self.seen.insert(h, now);
        self.order.push_back((now, h));
        false
    }

    /// Forgets everything (a new connection starts a new stream).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_inside_the_window_are_dropped_and_expire_after() {
        let mut d = Dedupe::new(Duration::from_millis(100));
        let t0 = Instant::now();
        assert!(!d.is_duplicate("a", t0));
        assert!(d.is_duplicate("a", t0 + Duration::from_millis(10)));
        assert!(d.is_duplicate("a", t0 + Duration::from_millis(20)));
        assert!(!d.is_duplicate("b", t0 + Duration::from_millis(20)));
        assert!(!d.is_duplicate("a", t0 + Duration::from_millis(150)));
    }
}
