//! Evaluation metrics on plain slices, so every system computes them the same way.
//!
//! Conventions (stated because libraries differ): macro F1 averages the per-class F1 over the
//! classes that occur in the labels or the predictions (scikit-learn's default); a class with no
//! true positives, predictions or labels has F1 0 if it is counted. ROC-AUC treats tied scores
//! as half-correct (Mann-Whitney with average ranks). Log-loss clips probabilities to
//! [1e-15, 1 - 1e-15]. Dice and IoU of a class absent from both maps are `None`.

/// Fraction of predictions equal to the labels. Empty input gives `NaN`.
pub fn accuracy(pred: &[usize], labels: &[usize]) -> f64 {
    assert_eq!(pred.len(), labels.len(), "accuracy: length mismatch");
    if pred.is_empty() {
        return f64::NAN;
    }
    pred.iter().zip(labels).filter(|(p, l)| p == l).count() as f64 / pred.len() as f64
}

/// Per-class (tp, fp, fn) for single-label predictions over `classes` classes.
fn counts(pred: &[usize], labels: &[usize], classes: usize) -> Vec<(u64, u64, u64)> {
    assert_eq!(pred.len(), labels.len(), "f1: length mismatch");
    let mut c = vec![(0u64, 0u64, 0u64); classes];
    for (&p, &l) in pred.iter().zip(labels) {
        if p == l {
            c[p].0 += 1;
        } else {
            c[p].1 += 1;
            c[l].2 += 1;
        }
    }
    c
}

fn f1(tp: u64, fp: u64, fnn: u64) -> f64 {
    let d = 2 * tp + fp + fnn;
    if d == 0 {
        0.0
    } else {
        2.0 * tp as f64 / d as f64
    }
}

/// Micro-averaged F1 (equals accuracy for single-label multi-class data).
pub fn micro_f1(pred: &[usize], labels: &[usize], classes: usize) -> f64 {
    let c = counts(pred, labels, classes);
    let (tp, fp, fnn) = c
        .iter()
        .fold((0, 0, 0), |a, x| (a.0 + x.0, a.1 + x.1, a.2 + x.2));
    f1(tp, fp, fnn)
}

/// Macro-averaged F1 over the classes present in labels or predictions.
pub fn macro_f1(pred: &[usize], labels: &[usize], classes: usize) -> f64 {
    let c = counts(pred, labels, classes);
    let present: Vec<f64> = c
        .iter()
        .filter(|(tp, fp, fnn)| tp + fp + fnn > 0)
        .map(|&(tp, fp, fnn)| f1(tp, fp, fnn))
        .collect();
    if present.is_empty() {
        return f64::NAN;
    }
    present.iter().sum::<f64>() / present.len() as f64
}

/// Micro F1 for multi-label data given as 0/1 matrices (row-major, same shape).
pub fn micro_f1_multilabel(pred: &[bool], truth: &[bool]) -> f64 {
    assert_eq!(
        pred.len(),
        truth.len(),
        "micro_f1_multilabel: length mismatch"
    );
    let (mut tp, mut fp, mut fnn) = (0, 0, 0);
    for (&p, &t) in pred.iter().zip(truth) {
        match (p, t) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fnn += 1,
            _ => {}
        }
    }
    f1(tp, fp, fnn)
}

/// Area under the ROC curve of `scores` for binary `labels`; `NaN` if one class is missing.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(scores.len(), labels.len(), "roc_auc: length mismatch");
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let (mut rank_sum_pos, mut n_pos) = (0.0, 0u64);
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        // Ranks are 1-based; a tie group shares the mean of its ranks.
        let avg_rank = (i + j + 2) as f64 / 2.0;
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
                n_pos += 1;
            }
        }
        i = j + 1;
    }
    let n_neg = scores.len() as u64 - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return f64::NAN;
    }
    let np = n_pos as f64;
    (rank_sum_pos - np * (np + 1.0) / 2.0) / (np * n_neg as f64)
}

const EPS: f64 = 1e-15;

/// Mean binary cross-entropy of probabilities `p` against `labels`.
pub fn log_loss(p: &[f64], labels: &[bool]) -> f64 {
    assert_eq!(p.len(), labels.len(), "log_loss: length mismatch");
    let s: f64 = p
        .iter()
        .zip(labels)
        .map(|(&q, &y)| {
            let q = q.clamp(EPS, 1.0 - EPS);
            if y { -q.ln() } else { -(1.0 - q).ln() }
        })
        .sum();
    s / p.len() as f64
}

/// Mean multi-class cross-entropy; `probs` is row-major `n × classes`.
pub fn log_loss_multiclass(probs: &[f64], labels: &[usize], classes: usize) -> f64 {
    assert_eq!(
        probs.len(),
        labels.len() * classes,
        "log_loss_multiclass: shape mismatch"
    );
    let s: f64 = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| -probs[i * classes + l].clamp(EPS, 1.0).ln())
        .sum();
    s / labels.len() as f64
}

/// Dice coefficient 2|P∩T| / (|P|+|T|) of class `class` in two label maps.
pub fn dice(pred: &[u8], truth: &[u8], class: u8) -> Option<f64> {
    let (inter, p, t) = overlap(pred, truth, class);
    if p + t == 0 {
        None
    } else {
        Some(2.0 * inter as f64 / (p + t) as f64)
    }
}

/// Intersection over union |P∩T| / |P∪T| of class `class` in two label maps.
pub fn iou(pred: &[u8], truth: &[u8], class: u8) -> Option<f64> {
    let (inter, p, t) = overlap(pred, truth, class);
    let union = p + t - inter;
    if union == 0 {
        None
    } else {
        Some(inter as f64 / union as f64)
    }
}

fn overlap(pred: &[u8], truth: &[u8], class: u8) -> (u64, u64, u64) {
    assert_eq!(pred.len(), truth.len(), "dice/iou: shape mismatch");
    let (mut i, mut p, mut t) = (0, 0, 0);
    for (&a, &b) in pred.iter().zip(truth) {
        let (x, y) = (a == class, b == class);
        i += u64::from(x && y);
        p += u64::from(x);
        t += u64::from(y);
    }
    (i, p, t)
}

/// Median (the mean of the two middle values for an even count; NaN for none), as the
/// benchmarks report their timings. NaNs sort last.
pub fn median(xs: impl AsRef<[f64]>) -> f64 {
    let mut v = xs.as_ref().to_vec();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Mean and sample standard deviation (n-1); std is 0 for a single value.
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    if xs.len() < 2 {
        return (m, 0.0);
    }
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

/// Mean and population standard deviation (divided by n, numpy's default `ddof = 0`); NaN for
/// no values. The federated-graph and layer-importance reports use it (their `_std` keys were
/// defined that way; the other systems report the sample std of [`mean_std`]).
pub fn mean_pop_std(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
    (m, v.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::<f64>::new()).is_nan());
        assert_eq!(median(&[5.0][..]), 5.0);
    }

    #[test]
    fn accuracy_and_f1_hand_computed() {
        // labels 0 0 1 1 2 ; preds 0 1 1 1 0
        let l = [0, 0, 1, 1, 2];
        let p = [0, 1, 1, 1, 0];
        assert!(close(accuracy(&p, &l), 0.6));
        // class0: tp1 fp1 fn1 -> 0.5 ; class1: tp2 fp1 fn0 -> 0.8 ; class2: tp0 fp0 fn1 -> 0
        assert!(close(macro_f1(&p, &l, 3), (0.5 + 0.8 + 0.0) / 3.0));
        assert!(close(micro_f1(&p, &l, 3), 0.6));
        // multi-label: tp 2, fp 1, fn 1 -> 4/6
        let pr = [true, true, false, true];
        let tr = [true, false, true, true];
        assert!(close(micro_f1_multilabel(&pr, &tr), 4.0 / 6.0));
    }

    #[test]
    fn auc_hand_computed_with_ties() {
        // pos scores 0.8, 0.4 ; neg scores 0.4, 0.1 -> pairs: (0.8>0.4)1 (0.8>0.1)1 (0.4=0.4)0.5 (0.4>0.1)1 = 3.5/4
        let s = [0.8, 0.4, 0.4, 0.1];
        let y = [true, true, false, false];
        assert!(close(roc_auc(&s, &y), 0.875));
        assert!(close(roc_auc(&[0.1, 0.9], &[false, true]), 1.0));
        assert!(roc_auc(&[0.1, 0.9], &[true, true]).is_nan());
    }

    #[test]
    fn log_loss_hand_computed() {
        let v = log_loss(&[0.9, 0.2], &[true, false]);
        assert!(close(v, (-(0.9f64).ln() - (0.8f64).ln()) / 2.0));
        let m = log_loss_multiclass(&[0.7, 0.2, 0.1, 0.1, 0.1, 0.8], &[0, 2], 3);
        assert!(close(m, (-(0.7f64).ln() - (0.8f64).ln()) / 2.0));
        assert!(log_loss(&[0.0], &[true]).is_finite());
    }

    #[test]
    fn dice_iou_hand_computed() {
        let p = [1, 1, 0, 2, 0];
        let t = [1, 0, 0, 2, 2];
        // class 1: inter 1, |P| 2, |T| 1 -> dice 2/3, iou 1/2
        assert!(close(dice(&p, &t, 1).unwrap(), 2.0 / 3.0));
        assert!(close(iou(&p, &t, 1).unwrap(), 0.5));
        // class 2: inter 1, |P| 1, |T| 2 -> dice 2/3, iou 1/2
        assert!(close(dice(&p, &t, 2).unwrap(), 2.0 / 3.0));
        assert_eq!(dice(&p, &t, 3), None);
    }

    #[test]
    fn mean_std_hand_computed() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!(close(m, 2.5));
        assert!(close(s, (5.0f64 / 3.0).sqrt()));
        assert_eq!(mean_std(&[2.0]), (2.0, 0.0));
        let (m, s) = mean_pop_std(&[1.0, 2.0, 3.0, 4.0]);
        assert!(close(m, 2.5));
        assert!(close(s, 1.25f64.sqrt()));
        assert_eq!(mean_pop_std(&[2.0]), (2.0, 0.0));
        assert!(mean_pop_std(&[]).0.is_nan() && mean_std(&[]).1.is_nan());
    }
}
