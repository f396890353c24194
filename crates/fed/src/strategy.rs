//! Flower-style strategies and the aggregation maths as pure functions.
//!
//! Every aggregate sorts its inputs by client id and accumulates in f64 in that order, so the
//! result is bit-identical whatever order replies arrived in and whichever fabric carried them.

use crate::client::{EvaluateRes, FitIns, FitRes};
use crate::fabric::{ClientId, Config, Failure, Metrics};
use crate::params::{Params, ParamsError};

/// A strategy could not aggregate.
#[derive(Debug, thiserror::Error)]
pub enum StrategyError {
    /// No client contributed (every one failed).
    #[error("round {round}: no results to aggregate ({failures} failures)")]
    NoResults {
        /// Round.
        round: u64,
        /// Failed clients.
        failures: usize,
    },
    /// Results of different layouts.
    #[error(transparent)]
    Params(#[from] ParamsError),
}

/// The server-side policy of a federated algorithm (Flower's `Strategy`).
pub trait Strategy: Send {
    /// Which clients train in `round`, and with what.
    fn configure_fit(
        &mut self,
        round: u64,
        params: &Params,
        clients: &[ClientId],
    ) -> Vec<(ClientId, FitIns)>;

    /// The new global parameters from the clients' results; `failures` lists the clients that
    /// did not answer usably (the strategy decides whether the round still counts).
    fn aggregate_fit(
        &mut self,
        round: u64,
        params: &Params,
        results: Vec<(ClientId, FitRes)>,
        failures: &[Failure],
    ) -> Result<Params, StrategyError>;

    /// Which clients evaluate in `round` (none by default: evaluation is centralised).
    fn configure_evaluate(
        &mut self,
        _round: u64,
        _params: &Params,
        _clients: &[ClientId],
    ) -> Vec<(ClientId, FitIns)> {
        Vec::new()
    }

    /// Example-weighted mean of the clients' losses and metrics.
    fn aggregate_evaluate(
        &mut self,
        _round: u64,
        results: Vec<(ClientId, EvaluateRes)>,
        _failures: &[Failure],
    ) -> Metrics {
        weighted_metrics(results)
    }
}

/// `Σ w_k p_k / Σ w_k` over `(client, params, weight)`, sorted by client first; all params must
/// share the layout of the first.
pub fn weighted_average(mut items: Vec<(ClientId, &Params, f64)>) -> Result<Params, ParamsError> {
    items.sort_by_key(|(c, _, _)| *c);
    let Some((_, first, _)) = items.first() else {
        return Err(ParamsError::Mismatch("nothing to average".into()));
    };
    let n = first.numel();
    let mut acc = vec![0f64; n];
    let mut total = 0f64;
    for (_, p, w) in &items {
        first.check_same_layout(p)?;
        for (a, v) in acc.iter_mut().zip(p.to_flat()) {
            *a += w * v as f64;
        }
        total += w;
    }
    if total <= 0.0 {
        return Err(ParamsError::Mismatch(
            "aggregation weights sum to zero".into(),
        ));
    }
    let flat: Vec<f32> = acc.into_iter().map(|a| (a / total) as f32).collect();
    first.with_flat(&flat)
}

/// Equal-weight mean of flat vectors, summed in client order (SD-GT's Δ averages): element
/// `i` is `(Σ_k v_k[i] as f64) / K` rounded to f32, the sum starting at 0 and taken in client
/// order over the vectors that have an element `i`; the result is as long as the first.
///
/// The sum runs a block of elements at a time with its f64 accumulators on the stack, so each
/// input is read once and the output written once; a full-length f64 accumulator read and
/// written once per input moved five times as many bytes. Per element the additions are the
/// same, in the same order, so the result is the same bits.
pub fn mean_flat(mut items: Vec<(ClientId, &[f32])>) -> Vec<f32> {
    const BLOCK: usize = 1024;
    items.sort_by_key(|(c, _)| *c);
    let Some((_, first)) = items.first() else {
        return Vec::new();
    };
    let n = first.len();
    let k = items.len() as f64;
    let mut out = Vec::with_capacity(n);
    let mut acc = [0f64; BLOCK];
    let mut s = 0;
    while s < n {
        let e = (s + BLOCK).min(n);
        let a = &mut acc[..e - s];
        a.fill(0.0);
        for (_, v) in &items {
            let v = v.get(s..e.min(v.len())).unwrap_or_default();
            for (a, x) in a.iter_mut().zip(v) {
                *a += *x as f64;
            }
        }
        out.extend(a.iter().map(|a| (a / k) as f32));
        s = e;
    }
    out
}

/// Example-weighted mean of every metric (and of `loss`), clients sorted first.
pub fn weighted_metrics(mut results: Vec<(ClientId, EvaluateRes)>) -> Metrics {
    results.sort_by_key(|(c, _)| *c);
    let mut sums: Metrics = Metrics::new();
    let mut total = 0f64;
    for (_, r) in &results {
        let w = r.n_examples as f64;
        total += w;
        *sums.entry("loss".into()).or_default() += w * r.loss;
        for (k, v) in &r.metrics {
            *sums.entry(k.clone()).or_default() += w * v;
        }
    }
    if total > 0.0 {
        for v in sums.values_mut() {
            *v /= total;
        }
    }
    sums
}

/// Plain FedAvg (McMahan et al. 2017): every listed client trains from the global model, the
/// new model is the example-weighted mean of the returned models.
#[derive(Debug, Clone)]
pub struct FedAvg {
    /// Config sent with every fit task.
    pub config: Config,
    /// Fewest results a round accepts before it errors instead of averaging.
    pub min_results: usize,
}

impl Strategy for FedAvg {
    fn configure_fit(
        &mut self,
        round: u64,
        params: &Params,
        clients: &[ClientId],
    ) -> Vec<(ClientId, FitIns)> {
        clients
            .iter()
            .map(|&c| {
                (
                    c,
                    FitIns {
                        round,
                        params: params.clone(),
                        config: self.config.clone(),
                    },
                )
            })
            .collect()
    }

    fn aggregate_fit(
        &mut self,
        round: u64,
        _params: &Params,
        results: Vec<(ClientId, FitRes)>,
        failures: &[Failure],
    ) -> Result<Params, StrategyError> {
        if results.len() < self.min_results.max(1) {
            return Err(StrategyError::NoResults {
                round,
                failures: failures.len(),
            });
        }
        let items = results
            .iter()
            .map(|(c, r)| (*c, &r.params, r.n_examples as f64))
            .collect();
        Ok(weighted_average(items)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn weighted_average_is_order_independent() {
        let ps: Vec<Params> = (0..5)
            .map(|k| Params::flat("w", vec![0.1 * k as f32, 1e7, -3.3 / (k + 1) as f32]))
            .collect();
        let a: Vec<_> = ps
            .iter()
            .enumerate()
            .map(|(k, p)| (k as u32, p, 1.0 + k as f64))
            .collect();
        let mut b = a.clone();
        b.reverse();
        let x = weighted_average(a).unwrap();
        let y = weighted_average(b).unwrap();
        let bits = |p: &Params| p.to_flat().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x), bits(&y));
        // (0*1 + .1*2 + .2*3 + .3*4 + .4*5) / 15
        assert!((x.to_flat()[0] - 4.0 / 15.0).abs() < 1e-6);
    }

    /// The blocked mean equals one full f64 pass per input in client order, bit for bit,
    /// across block edges, and whatever order the inputs come in.
    #[test]
    fn blocked_mean_equals_one_pass_per_input() {
        let n = 1024 * 2 + 300;
        let vs: Vec<Vec<f32>> = (0..7)
            .map(|k| {
                (0..n)
                    .map(|i| ((i * 31 + k * 17) as f32 * 0.013).sin() * 1e3 / (k + 1) as f32)
                    .collect()
            })
            .collect();
        let mut acc = vec![0f64; n];
        for v in &vs {
            acc.iter_mut().zip(v).for_each(|(a, x)| *a += *x as f64);
        }
        let want: Vec<u32> = acc.iter().map(|a| ((a / 7.0) as f32).to_bits()).collect();
        let mut items: Vec<(ClientId, &[f32])> = vs
            .iter()
            .enumerate()
            .map(|(k, v)| (k as ClientId, v.as_slice()))
            .collect();
        items.reverse();
        let got: Vec<u32> = mean_flat(items).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
        assert!(mean_flat(Vec::new()).is_empty());
    }

    #[test]
    fn fedavg_refuses_empty_round() {
        let mut s = FedAvg {
            config: Config::new(),
            min_results: 1,
        };
        let p = Params::flat("w", vec![1.0]);
        let f = vec![Failure {
            client: 1,
            reason: "gone".into(),
        }];
        assert!(matches!(
            s.aggregate_fit(3, &p, vec![], &f),
            Err(StrategyError::NoResults { .. })
        ));
    }
}
