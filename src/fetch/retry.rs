//! When and how long to wait before trying a request again.
//!
//! Pure policy (which statuses are transient, the backoff schedule, `Retry-After` parsing) and
//! a small driver, [`Retry`], that sleeps between attempts or turns the last failure into the
//! final error.

use std::time::{Duration, SystemTime};

use rand::Rng;
use tracing::info;
use url::Url;

use super::{ClientConfig, FetchError};

/// Upper bound on any single wait, whether from the backoff schedule or a server's
/// `Retry-After`: a mirror asking for an hour should not hang a cron job for an hour.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Jitter added to each backoff delay, as a fraction of it, so that parallel clients that failed
/// together do not retry in lockstep.
const JITTER_FRACTION: f64 = 0.1;

/// 408 Request Timeout, 429 Too Many Requests and every 5xx may succeed later; any other status
/// is the server's final answer.
pub(crate) fn status_is_transient(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status)
}

/// The backoff before retry number `retry` (0 for the first retry): `base * 2^retry`, capped,
/// without jitter.
pub(crate) fn backoff(base: Duration, retry: u32) -> Duration {
    // Beyond 2^20 the cap has long been reached; bounding the shift keeps the arithmetic sane.
    let factor = 1u32 << retry.min(20);
    base.saturating_mul(factor).min(MAX_RETRY_DELAY)
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP date (relative to `now`), capped at
/// [`MAX_RETRY_DELAY`]. `None` when unparseable.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let when = httpdate::parse_http_date(value).ok()?;
            // A date in the past means "now".
            when.duration_since(now).unwrap_or(Duration::ZERO)
        }
    };
    Some(delay.min(MAX_RETRY_DELAY))
}

/// Why an attempt failed, without the URL the retry line already names.
fn reason(error: &FetchError, url: &Url) -> String {
    let text = crate::error::chain(error);
    let prefix = format!("{url}: ");
    text.strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(text)
}

/// A failed attempt, with the server's requested wait if it sent one.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) error: FetchError,
    pub(crate) retry_after: Option<Duration>,
}

impl From<FetchError> for Failure {
    fn from(error: FetchError) -> Failure {
        Failure {
            error,
            retry_after: None,
        }
    }
}

/// Counts attempts for one request and sleeps between them.
pub(crate) struct Retry {
    base: Duration,
    retries: u32,
    done: u32,
}

impl Retry {
    pub(crate) fn new(config: &ClientConfig) -> Retry {
        Retry {
            base: config.backoff_base,
            retries: config.retries,
            done: 0,
        }
    }

    /// After a failed attempt: sleeps and returns `Ok` when another attempt is due, or returns
    /// the error to give up with (the failure itself when final, [`FetchError::GaveUp`] once
    /// the retries are spent).
    pub(crate) async fn wait_or_give_up(
        &mut self,
        url: &Url,
        failure: Failure,
    ) -> Result<(), FetchError> {
        if !failure.error.is_transient() {
            return Err(failure.error);
        }
        let Some(delay) = self.next_delay(failure.retry_after) else {
            return Err(FetchError::GaveUp {
                url: url.clone(),
                attempts: self.attempts(),
                last: Box::new(failure.error),
            });
        };
        // Said at the default level: a retrying download must not look hung.
        info!(
            "{url}: attempt {} of {} failed ({}); retrying in {:.1}s",
            self.done,
            self.retries + 1,
            reason(&failure.error, url),
            delay.as_secs_f64()
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// After a transient failure: the wait before the next attempt (the server's `Retry-After`,
    /// else the jittered backoff), counting that attempt; `None` once the retries are spent.
    /// For callers with their own error type (the Glance client).
    pub(crate) fn next_delay(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        if self.done >= self.retries {
            return None;
        }
        let delay = match retry_after {
            Some(delay) => delay,
            None => {
                let delay = backoff(self.base, self.done);
                delay + delay.mul_f64(rand::rng().random_range(0.0..JITTER_FRACTION))
            }
        };
        self.done += 1;
        Some(delay)
    }

    /// Attempts made so far, the first one included.
    pub(crate) fn attempts(&self) -> u32 {
        self.done + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_statuses_are_408_429_and_5xx() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            assert!(status_is_transient(status), "{status}");
        }
        for status in [200, 304, 400, 401, 403, 404, 410, 416, 600] {
            assert!(!status_is_transient(status), "{status}");
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(10);
        assert_eq!(backoff(base, 0), Duration::from_millis(10));
        assert_eq!(backoff(base, 1), Duration::from_millis(20));
        assert_eq!(backoff(base, 3), Duration::from_millis(80));
        assert_eq!(backoff(base, 30), MAX_RETRY_DELAY);
        assert_eq!(backoff(base, u32::MAX), MAX_RETRY_DELAY);
    }

    #[test]
    fn retry_after_seconds_are_parsed_and_capped() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_DELAY));
    }

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let later = "Sun, 06 Nov 1994 08:49:47 GMT";
        assert_eq!(parse_retry_after(later, now), Some(Duration::from_secs(10)));
        let earlier = "Sun, 06 Nov 1994 08:49:00 GMT";
        assert_eq!(parse_retry_after(earlier, now), Some(Duration::ZERO));
    }

    #[test]
    fn next_delay_runs_out_after_the_configured_retries() {
        let config = ClientConfig {
            retries: 2,
            backoff_base: Duration::from_millis(10),
            ..ClientConfig::default()
        };
        let mut retry = Retry::new(&config);
        assert_eq!(retry.attempts(), 1);
        let first = retry.next_delay(None).expect("first retry");
        assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(12));
        assert_eq!(
            retry.next_delay(Some(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry.next_delay(None), None);
        assert_eq!(retry.attempts(), 3);
    }

    #[test]
    fn garbage_retry_after_is_ignored() {
        let now = SystemTime::now();
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
