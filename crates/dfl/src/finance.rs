//! The portfolio task's data: one instance per trading day over the S&P 500 stocks of
//! `../shared/data/finance` (skfolio's 20-stock file), features per stock built as the
//! reference builds them (`bamos/taskmet`, `LODLs/PortfolioOpt.py`), and a risk factor per day.
//!
//! Differences from the reference, all forced by the data or chosen to avoid look-ahead:
//! - 20 stocks (every column of the file), not 50 sampled from Quandl WIKI; no volume column,
//!   so the 27 price-derived features plus the adjusted close make 28 (the reference: 27 plus
//!   volume-free close, as its `feature_cols` drop `Volume`).
//! - The risk factor `L` is the Cholesky factor of the correlation of the `window` daily
//!   returns *up to and including* the instance's day (+ `reg`·I), not of the next 2–10 days'
//!   returns the reference uses (look-ahead it treats as side information). The objective keeps
//!   the reference's form `‖L z‖² = zᵀLᵀLz` (not `zᵀΣz`).
//!   `portfolio.risk = "future"` builds it as the reference does, for comparison.
//! - Features are standardised with the training days' mean and standard deviation, not the
//!   whole series' (which would leak the test period into training).

use crate::problem::Instances;
use ferrolab_data::prices::PriceTable;

/// Names of the per-stock features, in column order.
pub const FEATURES: [&str; 28] = [
    "cur_return",
    "prev1_return",
    "prev2_return",
    "prev3_return",
    "prev4_return",
    "prev5_return",
    "prev6_return",
    "prev7_return",
    "prev8_return",
    "prev9_return",
    "prev10_return",
    "prev_year_return",
    "prev_qtr_return",
    "prev_month_returns",
    "prev_week_returns",
    "return_rolling_mean",
    "return_rolling_var",
    "rolling_365_mean",
    "rolling_365_var",
    "rolling_120_mean",
    "rolling_120_var",
    "rolling_30_mean",
    "rolling_30_var",
    "rolling_7_mean",
    "rolling_7_var",
    "rolling_3_mean",
    "rolling_3_var",
    "close",
];

/// Trading days of history the longest feature needs (`pct_change(365)`).
pub const HISTORY: usize = 365;

/// The reference's risk looks this many trading days ahead (its `next2_return` …
/// `next10_return`).
pub const FUTURE_DAYS: usize = 10;

/// How the instances are cut from the price table.
#[derive(Debug, Clone)]
pub struct PortfolioDataSpec {
    /// First instance: the first trading day on or after this date (`YYYY-MM-DD`) that has
    /// enough history.
    pub start: String,
    pub train_days: usize,
    pub val_days: usize,
    pub test_days: usize,
    /// Trading days of returns behind each day's correlation matrix.
    pub window: usize,
    /// Build each day's correlation from the next 2–10 days' returns instead (the reference's
    /// side information; `window` is then unused).
    pub future_risk: bool,
    /// Ridge added to the risk matrix (the reference's `reg`), relative to the matrix's mean
    /// diagonal: `reg`·I on a correlation, `reg`·mean variance·I on a covariance.
    pub reg: f64,
    /// Build `L` from the returns' covariance instead of their correlation (the issue's
    /// wording; the reference's `computeCovariance(correl=True)` is a correlation).
    pub covariance: bool,
}

/// Chronological train / validation / test instances and the risk factor of every instance.
#[derive(Debug, Clone)]
pub struct PortfolioData {
    pub train: Instances,
    pub val: Instances,
    pub test: Instances,
    /// Row-major lower-triangular `n × n` factor per instance id (ids run over train, val,
    /// test in order).
    pub factors: Vec<Vec<f64>>,
    pub symbols: Vec<String>,
    /// Date of each instance id (the day whose next-day return is the target).
    pub dates: Vec<String>,
}

fn mean_var(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    // pandas' rolling var: the sample variance (ddof = 1).
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, var)
}

/// The 28 features of one stock on day `t` (prices `p`, `p[t]` the day's close).
fn stock_features(p: &[f64], t: usize, out: &mut Vec<f64>) {
    let ret = |s: usize| p[s] / p[s - 1] - 1.0;
    for k in 0..=10 {
        out.push(ret(t - k));
    }
    for lag in [365, 120, 30, 7] {
        out.push(p[t] / p[t - lag] - 1.0);
    }
    let rets: Vec<f64> = (t - 6..=t).map(ret).collect();
    let (m, v) = mean_var(&rets);
    out.extend([m, v]);
    for w in [365, 120, 30, 7, 3] {
        let (m, v) = mean_var(&p[t + 1 - w..=t]);
        out.extend([m, v]);
    }
    out.push(p[t]);
}

/// Lower Cholesky factor of a symmetric positive-definite row-major `n × n` matrix (the
/// decision layers' routine, with an error a user can act on).
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>, String> {
    crate::decision::linalg::cholesky(a, n)
        .ok_or_else(|| "matrix is not positive definite".to_string())
}

/// Covariance of the returns in `rows` (each row one day, `n` assets): summed products of the
/// centred returns divided by `days − 1`, plus `reg` times the mean variance on the diagonal
/// (so `reg` is a ridge relative to the matrix's scale, as it is on a correlation).
fn covariance(rows: &[Vec<f64>], n: usize, reg: f64) -> Vec<f64> {
    let days = rows.len() as f64;
    let mut mean = vec![0.0; n];
    for r in rows {
        for j in 0..n {
            mean[j] += r[j] / days;
        }
    }
    let mut c = vec![0.0; n * n];
    for r in rows {
        for i in 0..n {
            for j in 0..=i {
                c[i * n + j] += (r[i] - mean[i]) * (r[j] - mean[j]);
            }
        }
    }
    let mean_var = (0..n).map(|i| c[i * n + i]).sum::<f64>() / (n as f64 * (days - 1.0));
    for i in 0..n {
        for j in 0..=i {
            let v = c[i * n + j] / (days - 1.0) + if i == j { reg * mean_var } else { 0.0 };
            c[i * n + j] = v;
            c[j * n + i] = v;
        }
    }
    c
}

/// Correlation (+ `reg`·I) of the returns in `rows` (each row one day, `n` assets), computed
/// as the reference's `computeCovariance(correl=True)`: standardised by the population
/// standard deviation, summed products divided by `days − 1`.
fn correlation(rows: &[Vec<f64>], n: usize, reg: f64) -> Vec<f64> {
    let days = rows.len() as f64;
    let mut mean = vec![0.0; n];
    let mut sq = vec![0.0; n];
    for r in rows {
        for j in 0..n {
            mean[j] += r[j] / days;
            sq[j] += r[j] * r[j] / days;
        }
    }
    let sd: Vec<f64> = (0..n)
        .map(|j| (sq[j] - mean[j] * mean[j]).max(1e-300).sqrt())
        .collect();
    let mut c = vec![0.0; n * n];
    for r in rows {
        let z: Vec<f64> = (0..n).map(|j| (r[j] - mean[j]) / sd[j]).collect();
        for i in 0..n {
            for j in 0..=i {
                c[i * n + j] += z[i] * z[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..=i {
            let v = c[i * n + j] / (days - 1.0) + if i == j { reg } else { 0.0 };
            c[i * n + j] = v;
            c[j * n + i] = v;
        }
    }
    c
}

/// Cuts the instances out of `table`. Errors (for the caller to report as usage errors) name
/// what is missing: too few rows before or after `start`, a start date past the end.
pub fn build(table: &PriceTable, spec: &PortfolioDataSpec) -> Result<PortfolioData, String> {
    let n = table.columns.len();
    let t_len = table.num_rows();
    if n < 2 {
        return Err(format!(
            "the price file has {n} asset column(s); a portfolio needs at least 2"
        ));
    }
    let days = spec.train_days + spec.val_days + spec.test_days;
    let need_history = if spec.future_risk {
        HISTORY
    } else {
        HISTORY.max(spec.window)
    };
    // Each instance needs the next day's price for its target, and the reference's risk the
    // nine days after that.
    let ahead = if spec.future_risk { FUTURE_DAYS } else { 1 };
    let first_ok = table
        .dates
        .iter()
        .position(|d| d.as_str() >= spec.start.as_str())
        .ok_or_else(|| {
            format!(
                "portfolio.start {}: the price file ends on {}",
                spec.start,
                table.dates.last().map(String::as_str).unwrap_or("?")
            )
        })?;
    let first = first_ok.max(need_history);
    if first + days + ahead > t_len {
        return Err(format!(
            "the price file has {t_len} trading days; {days} instances from {} with {need_history} days of history before the first and {ahead} after the last need {}",
            table.dates[first.min(t_len - 1)],
            first + days + ahead
        ));
    }
    let prices: Vec<Vec<f64>> = (0..n)
        .map(|j| table.values.iter().map(|r| r[j]).collect())
        .collect();
    let d = FEATURES.len();
    let mut x = Vec::with_capacity(days * n * d);
    let mut y = Vec::with_capacity(days * n);
    let mut factors = Vec::with_capacity(days);
    let mut dates = Vec::with_capacity(days);
    let mut feats = Vec::with_capacity(d);
    for t in first..first + days {
        for p in &prices {
            feats.clear();
            stock_features(p, t, &mut feats);
            x.extend(feats.iter().map(|&v| v as f32));
            y.push((p[t + 1] / p[t] - 1.0) as f32);
        }
        let days_behind = if spec.future_risk {
            t + 2..=t + FUTURE_DAYS
        } else {
            t + 1 - spec.window..=t
        };
        let rows: Vec<Vec<f64>> = days_behind
            .map(|s| prices.iter().map(|p| p[s] / p[s - 1] - 1.0).collect())
            .collect();
        let risk = if spec.covariance {
            covariance(&rows, n, spec.reg)
        } else {
            correlation(&rows, n, spec.reg)
        };
        let l = cholesky(&risk, n).map_err(|e| {
            format!(
                "risk factor of {}: {e}; raise portfolio.reg (or check the prices)",
                table.dates[t]
            )
        })?;
        factors.push(l);
        dates.push(table.dates[t].clone());
    }
    standardise(&mut x, d, spec.train_days * n);
    if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
        let (inst, feat) = (pos / (n * d), pos % d);
        return Err(format!(
            "feature {} of {} ({}) is not finite",
            FEATURES[feat],
            dates[inst],
            table.columns[(pos / d) % n]
        ));
    }
    let all = Instances {
        rows: n,
        d,
        o: 1,
        x,
        y,
        ids: (0..days).collect(),
    };
    let (a, b) = (spec.train_days, spec.train_days + spec.val_days);
    Ok(PortfolioData {
        train: all.range(0, a),
        val: all.range(a, b),
        test: all.range(b, days),
        factors,
        symbols: table.columns.clone(),
        dates,
    })
}

/// Standardises each feature column of `x` (`d` columns) with the mean and standard deviation
/// of its first `fit_rows` rows (the training days).
fn standardise(x: &mut [f32], d: usize, fit_rows: usize) {
    for j in 0..d {
        let col = || {
            x[..fit_rows * d]
                .iter()
                .skip(j)
                .step_by(d)
                .map(|&v| v as f64)
        };
        let m = col().sum::<f64>() / fit_rows as f64;
        let var = col().map(|v| (v - m) * (v - m)).sum::<f64>() / (fit_rows as f64 - 1.0).max(1.0);
        let sd = var.sqrt() + 1e-12;
        for v in x.iter_mut().skip(j).step_by(d) {
            *v = ((*v as f64 - m) / sd) as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(days: usize, assets: usize) -> PriceTable {
        let mut values = Vec::new();
        let mut s: u64 = 7;
        let mut p = vec![100.0; assets];
        for _ in 0..days {
            for v in p.iter_mut() {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5;
                *v *= 1.0 + 0.02 * u;
            }
            values.push(p.clone());
        }
        PriceTable {
            dates: (0..days)
                .map(|i| {
                    format!(
                        "{:04}-{:02}-{:02}",
                        2000 + i / 300,
                        1 + (i / 25) % 12,
                        1 + i % 25
                    )
                })
                .collect(),
            columns: (0..assets).map(|j| format!("S{j}")).collect(),
            values,
        }
    }

    fn spec() -> PortfolioDataSpec {
        PortfolioDataSpec {
            start: "1900-01-01".into(),
            train_days: 20,
            val_days: 10,
            test_days: 10,
            window: 50,
            future_risk: false,
            reg: 0.1,
            covariance: false,
        }
    }

    #[test]
    fn covariance_risk_is_the_past_windows_covariance_with_a_relative_ridge() {
        let t = table(HISTORY + 60, 3);
        let mut sp = spec();
        sp.covariance = true;
        let data = build(&t, &sp).expect("enough rows");
        let day = HISTORY + 5;
        let rows: Vec<Vec<f64>> = (day + 1 - 50..=day)
            .map(|s| {
                (0..3)
                    .map(|j| t.values[s][j] / t.values[s - 1][j] - 1.0)
                    .collect()
            })
            .collect();
        // Written out from the definition: sample covariance, ridge 0.1 x mean variance.
        let mean: Vec<f64> = (0..3)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / 50.0)
            .collect();
        let cov = |i: usize, j: usize| {
            rows.iter()
                .map(|r| (r[i] - mean[i]) * (r[j] - mean[j]))
                .sum::<f64>()
                / 49.0
        };
        let mean_var = (0..3).map(|i| cov(i, i)).sum::<f64>() / 3.0;
        let l = &data.factors[5];
        for i in 0..3 {
            for j in 0..3 {
                let got: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                let want = cov(i, j) + if i == j { 0.1 * mean_var } else { 0.0 };
                assert!(
                    (got - want).abs() <= 1e-9 * mean_var,
                    "({i},{j}) {got} vs {want}"
                );
            }
        }
        // Daily returns: the covariance is orders of magnitude below the correlation.
        let corr = build(&t, &spec()).expect("enough rows");
        let d = |l: &[f64]| (0..3).map(|k| l[k] * l[k]).sum::<f64>();
        assert!(d(&data.factors[5]) < 1e-2 * d(&corr.factors[5]));
    }

    #[test]
    fn cholesky_reproduces_the_matrix() {
        let a = [4.0, 2.0, 0.6, 2.0, 2.0, 0.5, 0.6, 0.5, 3.0];
        let l = cholesky(&a, 3).expect("spd");
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!((v - a[i * 3 + j]).abs() < 1e-12);
            }
            for j in i + 1..3 {
                assert_eq!(l[i * 3 + j], 0.0);
            }
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_err());
    }

    #[test]
    fn features_targets_and_factors_line_up_with_the_prices() {
        let t = table(HISTORY + 60, 3);
        let data = build(&t, &spec()).expect("enough rows");
        assert_eq!(data.train.len(), 20);
        assert_eq!(data.val.len(), 10);
        assert_eq!(data.test.len(), 10);
        assert_eq!(data.train.d, 28);
        // The first instance is the first day with a year of history; its target is the next
        // day's return of each stock.
        assert_eq!(data.dates[0], t.dates[HISTORY]);
        for j in 0..3 {
            let want = t.values[HISTORY + 1][j] / t.values[HISTORY][j] - 1.0;
            assert!((data.train.y_of(0)[j] as f64 - want).abs() < 1e-6);
        }
        // The last test instance's target is that of its own day, no later.
        let last = data.test.len() - 1;
        let day = HISTORY + 39;
        assert_eq!(data.dates[39], t.dates[day]);
        let want = t.values[day + 1][2] / t.values[day][2] - 1.0;
        assert!((data.test.y_of(last)[2] as f64 - want).abs() < 1e-6);
        // Training features are standardised: mean ~0, sd ~1 per feature over train rows.
        for f in 0..28 {
            let col: Vec<f64> = data
                .train
                .x
                .iter()
                .skip(f)
                .step_by(28)
                .map(|&v| v as f64)
                .collect();
            let m = col.iter().sum::<f64>() / col.len() as f64;
            assert!(m.abs() < 1e-4, "feature {f} mean {m}");
        }
        // Each factor reproduces correlation + reg on its diagonal (days/(days-1) + 0.1).
        let l = &data.factors[0];
        let diag0: f64 = (0..3).map(|k| l[k] * l[k]).sum();
        assert!((diag0 - (50.0 / 49.0 + 0.1)).abs() < 1e-9, "{diag0}");
    }

    #[test]
    fn future_risk_is_the_correlation_of_the_next_two_to_ten_days() {
        let t = table(HISTORY + 60, 3);
        let mut sp = spec();
        sp.future_risk = true;
        let data = build(&t, &sp).expect("enough rows");
        let day = HISTORY + 7;
        let rows: Vec<Vec<f64>> = (day + 2..=day + 10)
            .map(|s| {
                (0..3)
                    .map(|j| t.values[s][j] / t.values[s - 1][j] - 1.0)
                    .collect()
            })
            .collect();
        let want = correlation(&rows, 3, 0.1);
        let l = &data.factors[7];
        for i in 0..3 {
            for j in 0..3 {
                let v: f64 = (0..3).map(|k| l[i * 3 + k] * l[j * 3 + k]).sum();
                assert!(
                    (v - want[i * 3 + j]).abs() < 1e-9,
                    "({i}, {j}) {v} vs {}",
                    want[i * 3 + j]
                );
            }
        }
        // Nine samples: the diagonal is 9/8 + reg; the past window's differs.
        assert!((want[0] - (9.0 / 8.0 + 0.1)).abs() < 1e-9);
        let past = build(&t, &spec()).expect("enough rows");
        assert_ne!(past.factors[7], data.factors[7]);
        // The targets do not change with the risk.
        assert_eq!(past.train.y, data.train.y);
        // The last instance needs ten days after it.
        let e = build(&table(HISTORY + 40 + 9, 3), &sp).expect_err("one day short");
        assert!(e.contains("10 after the last"), "{e}");
        assert!(build(&table(HISTORY + 40 + 10, 3), &sp).is_ok());
    }

    #[test]
    fn too_few_rows_is_an_error_naming_the_need() {
        let t = table(HISTORY + 30, 3);
        let e = build(&t, &spec()).expect_err("too short");
        assert!(e.contains("trading days"), "{e}");
        let mut s = spec();
        s.start = "2999-01-01".into();
        let e = build(&table(HISTORY + 60, 3), &s).expect_err("start past the end");
        assert!(e.contains("portfolio.start"), "{e}");
    }
}
