//! Summaries of repeated measurements.

/// The median of `samples` (the mean of the middle two for an even count).
/// Panics on an empty slice.
pub fn median(samples: &[f64]) -> f64 {
    assert!(!samples.is_empty(), "median of no samples");
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The `q`-quantile (0..=1) of `samples`, nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    assert!(!samples.is_empty(), "quantile of no samples");
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize]
}

/// The per-round ratios x[i] / y[i] of two scenarios: measured within the
/// same round, so slow changes of the machine's load cancel out.
pub struct Ratio {
    pub median: f64,
    /// Half the range of the per-round ratios: how far noise moved them.
    pub noise: f64,
}

impl Ratio {
    pub fn of(x: &[f64], y: &[f64]) -> Self {
        let r: Vec<f64> = x.iter().zip(y).map(|(a, b)| a / b).collect();
        let (min, max) = r.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
        Self {
            median: median(&r),
            noise: (max - min) / 2.0,
        }
    }

    /// "1.012±0.034"
    pub fn show(&self) -> String {
        format!("{:.3}±{:.3}", self.median, self.noise)
    }

    /// Whether the ratio is at least `threshold`, telling apart what the
    /// noise of this run can and cannot decide.
    pub fn at_least(&self, threshold: f64) -> &'static str {
        match (self.median >= threshold, self.median - self.noise >= threshold) {
            (true, true) => "met",
            (true, false) => "met (within noise)",
            (false, _) if self.median + self.noise >= threshold => "not shown (within noise)",
            (false, _) => "NOT met",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn quantiles_pick_nearest_rank() {
        let s = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 0.5), 3.0);
        assert_eq!(quantile(&s, 1.0), 5.0);
    }

    #[test]
    fn ratios_are_per_round_with_half_their_range_as_noise() {
        let r = Ratio::of(&[2.0, 3.0, 4.5], &[2.0, 2.0, 3.0]);
        assert_eq!((r.median, r.noise), (1.5, 0.25));
        assert_eq!(r.show(), "1.500±0.250");
        assert_eq!(r.at_least(1.2), "met");
        assert_eq!(r.at_least(1.3), "met (within noise)");
        assert_eq!(r.at_least(1.6), "not shown (within noise)");
        assert_eq!(r.at_least(2.0), "NOT met");
    }
}
