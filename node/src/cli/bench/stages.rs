//! Where a transaction's time goes inside the validators: the stage histograms every validator
//! exports on /metrics, read before and after a step, the difference summed over the
//! validators. Submit-to-commit latency at the bench minus the admission-to-commit time is
//! the client's side: its gRPC submit and the commit stream's delivery.

use serde::Serialize;

/// Each stage, by the histogram that measures it.
const STAGES: [(&str, &str); 4] = [
    // Admission to commit at the validator that admitted the transaction.
    ("admitted_to_committed", "weft_commit_latency_seconds"),
    // A batch's first record at a validator to its commit there.
    ("ordering", "weft_pbft_ordering_seconds"),
    // A committed batch waiting for the blocks before it to execute.
    ("execution_queue", "weft_execution_queue_seconds"),
    // Executing a batch through chaincode and appending its block.
    ("block_execution", "weft_block_execution_seconds"),
];

/// One histogram as read from the Prometheus text: cumulative buckets by upper bound.
#[derive(Clone, Debug, Default, PartialEq)]
struct Histogram {
    /// (upper bound in seconds, observations at or below it), in the order exported.
    buckets: Vec<(f64, f64)>,
    sum_seconds: f64,
    count: f64,
}

impl Histogram {
    /// The histogram `name` in `text`; empty when the text has none.
    fn parse(text: &str, name: &str) -> Histogram {
        let bucket_prefix = format!("{name}_bucket{{le=\"");
        let sum_name = format!("{name}_sum");
        let count_name = format!("{name}_count");
        let mut histogram = Histogram::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(bound) = series
                .strip_prefix(&bucket_prefix)
                .and_then(|rest| rest.strip_suffix("\"}"))
            {
                let bound = if bound == "+Inf" {
                    f64::INFINITY
                } else {
                    match bound.parse() {
                        Ok(bound) => bound,
                        Err(_) => continue,
                    }
                };
                histogram.buckets.push((bound, value));
            } else if series == sum_name {
                histogram.sum_seconds = value;
            } else if series == count_name {
                histogram.count = value;
            }
        }
        histogram
    }

    /// Bucket by bucket, `self` plus (`sign` 1) or minus (`sign` -1) `other`. Histograms of one
    /// name have the same bounds on every validator of one build; a missing one counts as
    /// empty.
    fn combine(&self, other: &Histogram, sign: f64) -> Histogram {
        let buckets = if self.buckets.is_empty() {
            other
                .buckets
                .iter()
                .map(|(bound, count)| (*bound, sign * count))
                .collect()
        } else {
            self.buckets
                .iter()
                .map(|(bound, count)| {
                    let theirs = other
                        .buckets
                        .iter()
                        .find(|(b, _)| b == bound)
                        .map_or(0.0, |(_, c)| *c);
                    (*bound, count + sign * theirs)
                })
                .collect()
        };
        Histogram {
            buckets,
            sum_seconds: self.sum_seconds + sign * other.sum_seconds,
            count: self.count + sign * other.count,
        }
    }

    /// The upper bound of the bucket that holds the `q` quantile (0 < q <= 1), in seconds:
    /// the quantile is at most this. None when nothing was observed or it lies above the last
    /// finite bound.
    fn quantile_at_most(&self, q: f64) -> Option<f64> {
        if self.count <= 0.0 {
            return None;
        }
        let rank = q * self.count;
        self.buckets
            .iter()
            .find(|(_, cumulative)| *cumulative >= rank)
            .map(|(bound, _)| *bound)
            .filter(|bound| bound.is_finite())
    }
}

/// The stage histograms of every validator at one moment.
#[derive(Clone, Debug, Default)]
pub struct Reading(Vec<Vec<Histogram>>);

impl Reading {
    /// From every validator's /metrics text, in the same order at every reading.
    pub fn from_texts(texts: &[String]) -> Reading {
        Reading(
            texts
                .iter()
                .map(|text| {
                    STAGES
                        .iter()
                        .map(|(_, name)| Histogram::parse(text, name))
                        .collect()
                })
                .collect(),
        )
    }
}

/// What one validator's histogram gained between two readings; None when the two cannot be
/// compared: its counters went back (the validator restarted) or its buckets changed.
fn gained(before: &Histogram, after: &Histogram) -> Option<Histogram> {
    let same_buckets = before.buckets.is_empty()
        || before
            .buckets
            .iter()
            .map(|(bound, _)| bound)
            .eq(after.buckets.iter().map(|(bound, _)| bound));
    (same_buckets && after.count >= before.count).then(|| after.combine(before, -1.0))
}

/// One stage over a step.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StageTime {
    pub stage: &'static str,
    /// Observations over all validators: transactions for admitted_to_committed, batches
    /// for the others.
    pub count: u64,
    pub mean_ms: f64,
    /// The bucket bound the 99th percentile lies under (None above the last bound).
    pub p99_at_most_ms: Option<f64>,
}

/// What each stage took between two readings, summed over the validators whose two
/// readings compare.
pub fn between(before: &Reading, after: &Reading) -> Vec<StageTime> {
    STAGES
        .iter()
        .enumerate()
        .map(|(index, (stage, _))| {
            let step = before
                .0
                .iter()
                .zip(&after.0)
                .filter_map(|(before, after)| gained(before.get(index)?, after.get(index)?))
                .fold(Histogram::default(), |total, gained| {
                    total.combine(&gained, 1.0)
                });
            StageTime {
                stage,
                count: step.count.max(0.0) as u64,
                mean_ms: if step.count > 0.0 {
                    step.sum_seconds * 1e3 / step.count
                } else {
                    0.0
                },
                p99_at_most_ms: step.quantile_at_most(0.99).map(|s| s * 1e3),
            }
        })
        .collect()
}

/// The stages on one line: `ordering 12.3 ms (p99 <= 50 ms, 800)`.
pub fn line(stages: &[StageTime]) -> String {
    stages
        .iter()
        .map(|s| {
            let p99 = s
                .p99_at_most_ms
                .map_or("above the last bucket".to_string(), |p| {
                    format!("<= {p} ms")
                });
            format!("{} {:.1} ms (p99 {p99}, {})", s.stage, s.mean_ms, s.count)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use weft_node::metrics::Metrics;

    fn text(observe: impl Fn(&Metrics)) -> String {
        let metrics = Metrics::default();
        observe(&metrics);
        metrics.render()
    }

    #[test]
    fn a_step_gets_the_difference_of_its_readings_summed_over_validators() {
        let before = Reading::from_texts(&[
            text(|m| m.ordering.observe(Duration::from_millis(3))),
            text(|_| {}),
        ]);
        let after = Reading::from_texts(&[
            text(|m| {
                m.ordering.observe(Duration::from_millis(3));
                m.ordering.observe(Duration::from_millis(20));
                m.block_execution.observe(Duration::from_millis(4));
            }),
            text(|m| {
                m.ordering.observe(Duration::from_millis(40));
                m.block_execution.observe(Duration::from_millis(8));
            }),
        ]);
        let stages = between(&before, &after);
        let stage = |name: &str| {
            stages
                .iter()
                .find(|s| s.stage == name)
                .cloned()
                .expect("stage")
        };
        let ordering = stage("ordering");
        assert_eq!(ordering.count, 2, "{ordering:?}");
        assert!((ordering.mean_ms - 30.0).abs() < 1e-6, "{ordering:?}");
        assert_eq!(ordering.p99_at_most_ms, Some(50.0));
        let execution = stage("block_execution");
        assert_eq!(execution.count, 2);
        assert!((execution.mean_ms - 6.0).abs() < 1e-6, "{execution:?}");
        assert_eq!(execution.p99_at_most_ms, Some(10.0));
        let queue = stage("execution_queue");
        assert_eq!(
            (queue.count, queue.mean_ms, queue.p99_at_most_ms),
            (0, 0.0, None)
        );
        assert!(line(&stages).contains("ordering 30.0 ms (p99 <= 50 ms, 2)"));
    }

    #[test]
    fn a_validator_that_restarted_during_the_step_is_left_out() {
        let before = Reading::from_texts(&[
            text(|m| {
                for _ in 0..5 {
                    m.ordering.observe(Duration::from_millis(3));
                }
            }),
            text(|_| {}),
        ]);
        let after = Reading::from_texts(&[
            // Restarted: its counters began again from zero.
            text(|m| m.ordering.observe(Duration::from_millis(900))),
            text(|m| m.ordering.observe(Duration::from_millis(8))),
        ]);
        let ordering = between(&before, &after)
            .into_iter()
            .find(|s| s.stage == "ordering")
            .expect("stage");
        assert_eq!(ordering.count, 1, "{ordering:?}");
        assert!((ordering.mean_ms - 8.0).abs() < 1e-6, "{ordering:?}");
    }

    #[test]
    fn a_quantile_above_every_finite_bound_is_not_given_a_bound() {
        let reading = Reading::from_texts(&[text(|m| {
            m.block_execution.observe(Duration::from_secs(60));
        })]);
        let stages = between(&Reading::from_texts(&[text(|_| {})]), &reading);
        let execution = stages
            .iter()
            .find(|s| s.stage == "block_execution")
            .expect("stage");
        assert_eq!(execution.count, 1);
        assert_eq!(execution.p99_at_most_ms, None);
    }
}
