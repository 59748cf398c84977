//! Samples, medians and the results files.

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use anyhow::Result;
use serde::Serialize;

/// One reported figure (`target/bench/results.json` holds a list of them).
#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    pub metric: String,
    pub value: f64,
    pub unit: String,
    pub detail: String,
}

/// Every sample of every series, in measurement order.
#[derive(Default, Debug, Serialize)]
pub struct Samples {
    pub series: BTreeMap<String, Series>,
}

#[derive(Default, Debug, Serialize)]
pub struct Series {
    pub unit: String,
    pub detail: String,
    pub values: Vec<f64>,
}

#[must_use]
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

impl Samples {
    pub fn add(&mut self, name: &str, unit: &str, detail: &str, value: f64) {
        let s = self.series.entry(name.to_string()).or_default();
        s.unit = unit.to_string();
        s.detail = detail.to_string();
        s.values.push(value);
    }

    #[must_use]
    pub fn median(&self, name: &str) -> f64 {
        self.series
            .get(name)
            .map_or(f64::NAN, |s| median(&s.values))
    }

    /// The median of every series, as metrics.
    #[must_use]
    pub fn metrics(&self) -> Vec<Metric> {
        self.series
            .iter()
            .map(|(name, s)| Metric {
                metric: name.clone(),
                value: median(&s.values),
                unit: s.unit.clone(),
                detail: format!("{} (median of {})", s.detail, s.values.len()),
            })
            .collect()
    }
}

/// Write `results.json`, `samples.json` and `report.md` into `dir`.
///
/// # Errors
/// When a file cannot be written.
pub fn write(dir: &Path, metrics: &[Metric], samples: &Samples, machine: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(metrics)?,
    )?;
    std::fs::write(
        dir.join("samples.json"),
        serde_json::to_string_pretty(samples)?,
    )?;
    let mut md = String::new();
    let _ = writeln!(md, "# lb benchmark report\n\n{machine}\n");
    let _ = writeln!(md, "| metric | median | min – max | unit | samples | how |");
    let _ = writeln!(md, "|---|---:|---:|---|---:|---|");
    for m in metrics {
        let (lo, hi, n) = samples
            .series
            .get(&m.metric)
            .map_or((f64::NAN, f64::NAN, 1), |s| {
                let lo = s.values.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = s.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (lo, hi, s.values.len())
            });
        let range = if n > 1 {
            format!("{} – {}", fmt(lo), fmt(hi))
        } else {
            "–".to_string()
        };
        let _ = writeln!(
            md,
            "| `{}` | {} | {range} | {} | {n} | {} |",
            m.metric,
            fmt(m.value),
            m.unit,
            m.detail
        );
    }
    let _ = writeln!(
        md,
        "\n![per-packet cost](per_packet.png)\n\n![scale](scale.png)\n\n![lab](lab.png)"
    );
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
