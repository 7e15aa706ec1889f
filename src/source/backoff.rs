//! Exponential backoff with jitter: about 1 s doubling to a cap near 60 s, reset only after a
//! connection stayed up for a while.

use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            attempt: 0,
        }
    }

    /// The next delay: `initial * 2^attempt`, capped, with "equal jitter" (half fixed, half
    /// random) so a fleet of clients does not reconnect in lockstep.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.initial.as_secs_f64() * 2f64.powi(self.attempt.min(30) as i32);
        let capped = exp.min(self.max.as_secs_f64());
        self.attempt += 1;
        let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
        Duration::from_secs_f64(jittered)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_then_caps_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let delays: Vec<f64> = (0..10).map(|_| b.next_delay().as_secs_f64()).collect();
        assert!((0.5..=1.0).contains(&delays[0]));
        assert!((1.0..=2.0).contains(&delays[1]));
        assert!((2.0..=4.0).contains(&delays[2]));
        assert!(delays[9] <= 60.0 && delays[9] >= 30.0);
        b.reset();
        assert!(b.next_delay().as_secs_f64() <= 1.0);
    }
}
