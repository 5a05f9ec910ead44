//! Percentiles, rates and the records the suite emits.

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

/// One-way latency percentiles (ns), from an HdrHistogram of half round trips.
#[derive(Clone, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub samples: usize,
}

impl Latency {
    /// Round-trip samples in ns, each halved into a one-way figure. The histogram keeps three
    /// significant digits from 1 ns to 60 s; slower samples are clamped to 60 s.
    pub fn from_round_trips(rtt_ns: &[u64]) -> Self {
        Self::from_one_way(rtt_ns.iter().map(|&v| v / 2))
    }

    /// One-way samples in ns.
    pub fn from_one_way(samples: impl IntoIterator<Item = u64>) -> Self {
        const MAX_NS: u64 = 60_000_000_000;
        let mut h =
            Histogram::<u64>::new_with_bounds(1, MAX_NS, 3).expect("constant bounds are valid");
        for v in samples {
            h.saturating_record(v.clamp(1, MAX_NS));
        }
        if h.is_empty() {
            return Latency {
                p50: f64::NAN,
                p99: f64::NAN,
                p999: f64::NAN,
                max: f64::NAN,
                mean: f64::NAN,
                samples: 0,
            };
        }
        Latency {
            p50: h.value_at_quantile(0.5) as f64,
            p99: h.value_at_quantile(0.99) as f64,
            p999: h.value_at_quantile(0.999) as f64,
            max: h.max() as f64,
            mean: h.mean(),
            samples: h.len() as usize,
        }
    }
}

/// Rates (messages/s) of several repetitions.
#[derive(Clone, Debug)]
pub struct Rates {
    pub median: f64,
    pub best: f64,
    pub worst: f64,
    pub reps: usize,
    pub messages: usize,
}

impl Rates {
    pub fn from(mut rates: Vec<f64>, messages: usize) -> Self {
        rates.sort_by(f64::total_cmp);
        Rates {
            median: rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN),
            best: rates.last().copied().unwrap_or(f64::NAN),
            worst: rates.first().copied().unwrap_or(f64::NAN),
            reps: rates.len(),
            messages,
        }
    }
}

/// One result: a flat JSON object with at least `name` and `unit`.
///
/// Rows meant for tables and charts also carry `kind` and the fields of that kind:
///
/// | `kind` | fields |
/// |---|---|
/// | `latency` | `transport`, `size` (bytes), `p50`/`p99`/`p999`/`max`/`mean` (ns, one way), `samples` |
/// | `throughput` | `transport`, `size`, `value` (msg/s, median of `reps`), `bytes_per_s`, `best`, `worst` |
/// | `backing_latency` | `backing`, `size`, the latency fields |
/// | `backing_throughput` | `backing`, `size`, the throughput fields |
/// | `backing_cost` | `backing`, `cost` (what was timed), `value` in `unit` |
/// | `floor`, `ratio`, `skipped`, `run` | free-form |
#[derive(Clone, Debug, PartialEq)]
pub struct Record(pub Map<String, Value>);

impl Record {
    pub fn new(name: &str, unit: &str) -> Self {
        let mut m = Map::new();
        m.insert("name".into(), Value::from(name));
        m.insert("unit".into(), Value::from(unit));
        Record(m)
    }

    /// A latency row (`unit: "ns"`).
    pub fn latency(name: &str, s: &Latency) -> Self {
        Record::new(name, "ns")
            .num("p50", s.p50)
            .num("p99", s.p99)
            .num("p999", s.p999)
            .num("max", s.max)
            .num("mean", s.mean)
            .num("samples", s.samples as f64)
    }

    /// A throughput row (`unit: "msg/s"`) for messages of `size` bytes.
    pub fn throughput(name: &str, size: usize, t: &Rates) -> Self {
        Record::new(name, "msg/s")
            .num("value", t.median)
            .num("bytes_per_s", t.median * size as f64)
            .num("best", t.best)
            .num("worst", t.worst)
            .num("reps", t.reps as f64)
            .num("messages_per_rep", t.messages as f64)
    }

    /// Sets a number; NaN and infinities become `null` (JSON has neither).
    pub fn num(mut self, key: &str, v: f64) -> Self {
        let value = if !v.is_finite() {
            Value::Null
        } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
            Value::from(v as i64)
        } else {
            // Three decimals are more than any of these figures can carry.
            Value::from((v * 1000.0).round() / 1000.0)
        };
        self.0.insert(key.into(), value);
        self
    }

    pub fn text(mut self, key: &str, v: &str) -> Self {
        self.0.insert(key.into(), Value::from(v));
        self
    }

    pub fn boolean(mut self, key: &str, v: bool) -> Self {
        self.0.insert(key.into(), Value::from(v));
        self
    }

    /// Sets `kind`, `transport` and `size`: a row of the transport tables and charts.
    pub fn of(self, kind: &str, transport: &str, size: usize) -> Self {
        self.text("kind", kind).text("transport", transport).num("size", size as f64)
    }

    pub fn name(&self) -> &str {
        self.str("name").unwrap_or("")
    }

    pub fn str(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(Value::as_str)
    }

    pub fn f64(&self, key: &str) -> Option<f64> {
        self.0.get(key).and_then(Value::as_f64)
    }

    /// The record as one line of JSON.
    pub fn to_json_line(&self) -> String {
        Value::Object(self.0.clone()).to_string()
    }

    /// Parses a line written by [`Record::to_json_line`].
    pub fn from_json_line(line: &str) -> Option<Self> {
        match serde_json::from_str(line).ok()? {
            Value::Object(m) if m.get("name").is_some_and(Value::is_string) => Some(Record(m)),
            _ => None,
        }
    }
}

/// `64B`, `4KiB`.
pub fn size_name(bytes: usize) -> String {
    if bytes >= 1024 && bytes % 1024 == 0 {
        format!("{}KiB", bytes / 1024)
    } else {
        format!("{bytes}B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_samples() {
        let rtt: Vec<u64> = (1..=1000).map(|v| v * 2).collect();
        let l = Latency::from_round_trips(&rtt);
        assert!((l.p50 - 500.0).abs() <= 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() <= 1.0, "{l:?}");
        assert_eq!(l.max, 1000.0);
        assert_eq!(l.samples, 1000);
    }

    #[test]
    fn records_round_trip_through_json() {
        let r = Record::throughput("throughput/x/8B", 8, &Rates::from(vec![3.0, 1.0, 2.0], 10))
            .of("throughput", "x", 8)
            .num("nan", f64::NAN);
        let back = Record::from_json_line(&r.to_json_line()).unwrap();
        assert_eq!(back.f64("value"), Some(2.0));
        assert_eq!(back.f64("bytes_per_s"), Some(16.0));
        assert_eq!(back.str("transport"), Some("x"));
        assert!(back.0["nan"].is_null());
        assert_eq!(size_name(65536), "64KiB");
        assert_eq!(size_name(8), "8B");
    }
}
