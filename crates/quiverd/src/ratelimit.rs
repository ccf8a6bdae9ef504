//! Rate-limited logging for guest-triggered events: a guest must not be able to flood
//! the host log (Firecracker's logger does the same).

use std::time::{Duration, Instant};

/// Allows `burst` messages, then one per `period`; counts what it suppressed.
pub struct RateLimiter {
    period: Duration,
    burst: u32,
    tokens: u32,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    pub const fn new(period: Duration, burst: u32) -> Self {
        RateLimiter {
            period,
            burst,
            tokens: burst,
            last: None,
            suppressed: 0,
        }
    }

    /// True if a message may be logged now; the caller appends `suppressed()` info.
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        if let Some(last) = self.last {
            if now.duration_since(last) >= self.period {
                self.tokens = self.burst;
            }
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            self.last = Some(now);
            true
        } else {
            self.suppressed += 1;
            false
        }
    }

    /// Messages suppressed since the last call.
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Logs a warning through a limiter, noting how many were suppressed before it.
#[macro_export]
macro_rules! warn_limited {
    ($limiter:expr, $($arg:tt)*) => {
        if $limiter.allow() {
            let skipped = $limiter.take_suppressed();
            if skipped > 0 {
                log::warn!("{} ({skipped} similar messages suppressed)", format_args!($($arg)*));
            } else {
                log::warn!($($arg)*);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_to_the_burst_then_counts() {
        let mut r = RateLimiter::new(Duration::from_secs(3600), 3);
        assert_eq!((0..10).filter(|_| r.allow()).count(), 3);
        assert_eq!(r.take_suppressed(), 7);
        assert_eq!(r.take_suppressed(), 0);
    }
}
