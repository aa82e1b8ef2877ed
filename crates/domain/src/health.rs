//! Endpoint health arithmetic: attempt counts and a response-time
//! histogram per time bucket, and the success rate, average and p95 read
//! from them. The store keeps the buckets; this is only the maths.

/// Upper bounds (ms) of the response-time histogram's bins; one more bin
/// holds everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 11] =
    [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000];
pub const LATENCY_BINS: usize = LATENCY_BOUNDS_MS.len() + 1;
/// Width of one health bucket.
pub const HEALTH_BUCKET_MS: i64 = 5 * 60 * 1000;

/// Attempt counts and response times of one endpoint over some time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealthCounts {
    pub succeeded: u64,
    pub failed: u64,
    pub duration_sum_ms: u64,
    pub histogram: [u64; LATENCY_BINS],
}

impl HealthCounts {
    pub fn observe(&mut self, succeeded: bool, duration_ms: u64) {
        if succeeded {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        self.duration_sum_ms += duration_ms;
        let bin = LATENCY_BOUNDS_MS
            .iter()
            .position(|bound| duration_ms <= *bound)
            .unwrap_or(LATENCY_BINS - 1);
        self.histogram[bin] += 1;
    }

    pub fn add(&mut self, other: &HealthCounts) {
        self.succeeded += other.succeeded;
        self.failed += other.failed;
        self.duration_sum_ms += other.duration_sum_ms;
        for (mine, theirs) in self.histogram.iter_mut().zip(other.histogram) {
            *mine += theirs;
        }
    }

    pub fn attempts(&self) -> u64 {
        self.succeeded + self.failed
    }

    /// Succeeded attempts over all attempts; `None` without attempts.
    pub fn success_rate(&self) -> Option<f64> {
        (self.attempts() > 0).then(|| self.succeeded as f64 / self.attempts() as f64)
    }

    pub fn average_ms(&self) -> Option<f64> {
        (self.attempts() > 0).then(|| self.duration_sum_ms as f64 / self.attempts() as f64)
    }

    /// The 95th percentile, as the upper bound of the histogram bin it
    /// falls in (`None` for the open last bin: slower than 30 s).
    pub fn p95_ms(&self) -> Option<u64> {
        let total = self.attempts();
        if total == 0 {
            return None;
        }
        let rank = (total * 95).div_ceil(100);
        let mut seen = 0;
        for (bin, count) in self.histogram.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return LATENCY_BOUNDS_MS.get(bin).copied();
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_averages_and_the_p95_bin_come_from_the_counts() {
        let mut counts = HealthCounts::default();
        assert_eq!(counts.success_rate(), None, "no attempts, no rate");
        for n in 0..100 {
            // 95 quick successes (<= 10 ms), 5 slow failures (<= 1 s).
            if n < 95 {
                counts.observe(true, 8);
            } else {
                counts.observe(false, 900);
            }
        }
        assert_eq!(counts.attempts(), 100);
        assert_eq!(counts.success_rate(), Some(0.95));
        assert_eq!(
            counts.average_ms(),
            Some((95.0 * 8.0 + 5.0 * 900.0) / 100.0)
        );
        assert_eq!(
            counts.p95_ms(),
            Some(10),
            "the 95th attempt is in the first bin"
        );
        counts.observe(false, 60_000);
        assert_eq!(counts.p95_ms(), Some(1000), "one more slow one moves it");
        let mut total = HealthCounts::default();
        total.add(&counts);
        total.add(&counts);
        assert_eq!(total.attempts(), 2 * counts.attempts());
    }
}
