//! Rate limiting for log lines that can repeat many times a second, such as a Loki that
//! refuses every push: the first occurrence is logged, repeats within the interval are counted
//! and reported with the next line that is logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Remembers, per key, when a line was last logged and how many were held back since.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl LogLimiter {
    /// A limiter that lets one line per key through every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, seen: Mutex::new(HashMap::new()) }
    }

    /// Whether a line for `key` may be logged now. `Some(n)` means yes, with `n` lines held
    /// back since the last one; `None` means hold this one back.
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match seen.get_mut(key) {
            Some((last, held_back)) if now.duration_since(*last) < self.interval => {
                *held_back += 1;
                None
            }
            Some((last, held_back)) => {
                *last = now;
                Some(std::mem::take(held_back))
            }
            None => {
                // Keys are few (HTTP statuses, error kinds), but guard the map anyway.
                if seen.len() > 1024 {
                    seen.clear();
                }
                seen.insert(key.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_and_interval_with_a_count_of_the_rest() {
        let limiter = LogLimiter::new(Duration::from_secs(60));
        assert_eq!(limiter.allow("400"), Some(0));
        assert_eq!(limiter.allow("400"), None);
        assert_eq!(limiter.allow("400"), None);
        assert_eq!(limiter.allow("500"), Some(0), "keys are independent");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(limiter.allow("400"), Some(2));
    }
}
