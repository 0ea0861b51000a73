//! Azure Key Vault's metrics for Prometheus: `ServiceApiHit` by operation,
//! `ServiceApiLatency` (a histogram), `ServiceApiResult` by status, `Availability` and
//! `SaturationShoebox` per vault; and `Alerts` raised per detection rule. Only data-plane
//! requests (those that named a vault) count in the request metrics.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
const LATENCY_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Debug, Default)]
struct OperationStats {
    /// Count per bucket (not cumulative), and one more for +Inf.
    buckets: [u64; LATENCY_BUCKETS.len() + 1],
    latency_sum: f64,
    by_status: BTreeMap<u16, u64>,
}

/// Counters for every (vault, operation) seen.
#[derive(Debug, Default)]
pub struct Metrics {
    /// By vault name as stored (one spelling per vault), then operation.
    stats: Mutex<HashMap<String, HashMap<&'static str, OperationStats>>>,
}

impl Metrics {
    /// Counts one finished data-plane request.
    pub fn record(&self, vault: &str, operation: &'static str, status: u16, took: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        if !stats.contains_key(vault) {
            stats.insert(vault.to_owned(), HashMap::new());
        }
        let s = stats
            .get_mut(vault)
            .expect("inserted above")
            .entry(operation)
            .or_default();
        let secs = took.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        s.buckets[bucket] += 1;
        s.latency_sum += secs;
        *s.by_status.entry(status).or_default() += 1;
    }

    /// The Prometheus text exposition, with `saturation` (percent per vault) from the
    /// throttle and the number of `alerts` per detection rule.
    pub fn render(&self, saturation: &[(String, f64)], alerts: &[(String, u64)]) -> String {
        let by_vault = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        let mut flat: Vec<((&str, &str), &OperationStats)> = by_vault
            .iter()
            .flat_map(|(vault, ops)| ops.iter().map(move |(op, s)| ((vault.as_str(), *op), s)))
            .collect();
        flat.sort_by(|a, b| a.0.cmp(&b.0));
        let stats: HashMap<(&str, &str), &OperationStats> = flat.iter().copied().collect();
        let keys: Vec<(&str, &str)> = flat.iter().map(|(k, _)| *k).collect();
        let mut out = String::new();
        let label = |vault: &str, op: &str| format!("vault=\"{vault}\",operation=\"{op}\"");

        out.push_str("# HELP ServiceApiHit Number of total service API hits.\n# TYPE ServiceApiHit counter\n");
        for key in &keys {
            let total: u64 = stats[key].by_status.values().sum();
            let _ = writeln!(out, "ServiceApiHit{{{}}} {total}", label(key.0, key.1));
        }
        out.push_str("# HELP ServiceApiLatency Overall latency of service API requests, in seconds.\n# TYPE ServiceApiLatency histogram\n");
        for key in &keys {
            let s = &stats[key];
            let l = label(key.0, key.1);
            let mut cumulative = 0;
            for (bound, count) in LATENCY_BUCKETS.iter().zip(s.buckets) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "ServiceApiLatency_bucket{{{l},le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += s.buckets[LATENCY_BUCKETS.len()];
            let _ = writeln!(
                out,
                "ServiceApiLatency_bucket{{{l},le=\"+Inf\"}} {cumulative}"
            );
            let _ = writeln!(out, "ServiceApiLatency_sum{{{l}}} {}", s.latency_sum);
            let _ = writeln!(out, "ServiceApiLatency_count{{{l}}} {cumulative}");
        }
        out.push_str("# HELP ServiceApiResult Number of total service API results, by status code.\n# TYPE ServiceApiResult counter\n");
        for key in &keys {
            for (status, count) in &stats[key].by_status {
                let _ = writeln!(
                    out,
                    "ServiceApiResult{{{},status=\"{status}\"}} {count}",
                    label(key.0, key.1)
                );
            }
        }
        out.push_str("# HELP Availability Percent of vault requests the service did not fail (5xx).\n# TYPE Availability gauge\n");
        let mut per_vault: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
        for key in &keys {
            let entry = per_vault.entry(key.0).or_default();
            for (status, count) in &stats[key].by_status {
                entry.0 += count;
                if *status >= 500 {
                    entry.1 += count;
                }
            }
        }
        for (vault, (total, failed)) in &per_vault {
            let percent = 100.0 * (total - failed) as f64 / (*total).max(1) as f64;
            let _ = writeln!(out, "Availability{{vault=\"{vault}\"}} {percent}");
        }
        out.push_str("# HELP SaturationShoebox Percent of the vault's throttling limit in use in the current window.\n# TYPE SaturationShoebox gauge\n");
        for (vault, percent) in saturation {
            let _ = writeln!(out, "SaturationShoebox{{vault=\"{vault}\"}} {percent}");
        }
        out.push_str(
            "# HELP Alerts Alerts raised by each detection rule.\n# TYPE Alerts counter\n",
        );
        for (rule, count) in alerts {
            let _ = writeln!(out, "Alerts{{rule=\"{rule}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_as_prometheus_text() {
        let m = Metrics::default();
        m.record("kv1", "SecretGet", 200, Duration::from_micros(700));
        m.record("kv1", "SecretGet", 429, Duration::from_millis(30));
        m.record("kv1", "SecretGet", 500, Duration::from_secs(3));
        let text = m.render(&[("kv1".into(), 42.5)], &[("KeyPurge".into(), 2)]);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        has("ServiceApiHit{vault=\"kv1\",operation=\"SecretGet\"} 3");
        has("ServiceApiLatency_bucket{vault=\"kv1\",operation=\"SecretGet\",le=\"0.001\"} 1");
        has("ServiceApiLatency_bucket{vault=\"kv1\",operation=\"SecretGet\",le=\"0.05\"} 2");
        has("ServiceApiLatency_bucket{vault=\"kv1\",operation=\"SecretGet\",le=\"+Inf\"} 3");
        has("ServiceApiResult{vault=\"kv1\",operation=\"SecretGet\",status=\"429\"} 1");
        has("Availability{vault=\"kv1\"} 66.66666666666667");
        has("SaturationShoebox{vault=\"kv1\"} 42.5");
        has("Alerts{rule=\"KeyPurge\"} 2");
    }
}
