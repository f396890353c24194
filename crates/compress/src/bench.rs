//! The criteria benchmark: rank agreement of every criterion with every ground-truth family
//! (Spearman ρ, Kendall τ-b, top-⌈L/4⌉ precision), mean ± std over the zoo, the
//! leave-one-seed-out choice of the best criterion, and the heat-map SVG.

use std::collections::BTreeMap;

/// Mean and population std (`ddof = 0`): layer importance's reports have always used it.
pub use ferrolab_core::metrics::mean_pop_std as mean_std;

/// Ranks (1-based) with ties given their average rank.
pub fn ranks(v: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut r = vec![0.0; v.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            r[k] = avg;
        }
        i = j + 1;
    }
    r
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    if a.len() < 2 {
        return 0.0;
    }
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

/// Spearman's ρ (Pearson on average ranks; 0 when either side is constant).
pub fn spearman(a: &[f64], b: &[f64]) -> f64 {
    pearson(&ranks(a), &ranks(b))
}

/// Kendall's τ-b (0 when either side is constant).
pub fn kendall(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len();
    let (mut c, mut d, mut ta, mut tb) = (0f64, 0f64, 0f64, 0f64);
    for i in 0..n {
        for j in i + 1..n {
            let x = (a[i] - a[j]).signum() * f64::from(a[i] != a[j]);
            let y = (b[i] - b[j]).signum() * f64::from(b[i] != b[j]);
            if x == 0.0 && y == 0.0 {
                continue;
            } else if x == 0.0 {
                ta += 1.0;
            } else if y == 0.0 {
                tb += 1.0;
            } else if x == y {
                c += 1.0;
            } else {
                d += 1.0;
            }
        }
    }
    let den = ((c + d + ta) * (c + d + tb)).sqrt();
    if den == 0.0 { 0.0 } else { (c - d) / den }
}

/// The `k` indices of the largest values (ties by index).
pub fn top_k(v: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Share of the ground truth's top ⌈L/4⌉ that the criterion's top ⌈L/4⌉ holds.
pub fn top_precision(criterion: &[f64], truth: &[f64]) -> f64 {
    let k = truth.len().div_ceil(4).max(1);
    let t = top_k(truth, k);
    top_k(criterion, k).iter().filter(|i| t.contains(i)).count() as f64 / k as f64
}

/// One criterion against one family on one model.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Agreement {
    pub spearman: f64,
    pub kendall: f64,
    pub top_precision: f64,
}

pub fn agreement(criterion: &[f64], truth: &[f64]) -> Agreement {
    Agreement {
        spearman: spearman(criterion, truth),
        kendall: kendall(criterion, truth),
        top_precision: top_precision(criterion, truth),
    }
}

/// The criterion with the highest mean Spearman ρ over the models `use_model` admits, given
/// `rho[criterion][model]`; ties go to the earlier name in `order`.
pub fn best_criterion(
    rho: &BTreeMap<String, Vec<f64>>,
    order: &[&str],
    use_model: impl Fn(usize) -> bool,
) -> Option<(String, f64)> {
    let mut best: Option<(String, f64)> = None;
    for name in order {
        let Some(v) = rho.get(*name) else { continue };
        let sel: Vec<f64> = v
            .iter()
            .enumerate()
            .filter(|(m, x)| use_model(*m) && x.is_finite())
            .map(|(_, x)| *x)
            .collect();
        if sel.is_empty() {
            continue;
        }
        let m = mean_std(&sel).0;
        if best.as_ref().is_none_or(|(_, b)| m > *b) {
            best = Some((name.to_string(), m));
        }
    }
    best
}

fn color(v: f64) -> String {
    // Blue (−1) through white (0) to red (+1).
    let v = v.clamp(-1.0, 1.0);
    let (r, g, b) = if v >= 0.0 {
        (255.0, 255.0 * (1.0 - v), 255.0 * (1.0 - v))
    } else {
        (255.0 * (1.0 + v), 255.0 * (1.0 + v), 255.0)
    };
    format!("rgb({},{},{})", r as u8, g as u8, b as u8)
}

/// A criterion × family heat map of mean Spearman ρ, as a standalone SVG.
pub fn heatmap_svg(rows: &[String], cols: &[String], values: &[Vec<f64>]) -> String {
    let (cw, ch, left, top) = (110.0, 22.0, 130.0, 40.0);
    let w = left + cw * cols.len() as f64 + 10.0;
    let h = top + ch * rows.len() as f64 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    s.push_str(
        "<text x=\"4\" y=\"14\">Spearman ρ, criterion vs ground truth (mean over the zoo)</text>\n",
    );
    for (j, c) in cols.iter().enumerate() {
        let x = left + cw * j as f64 + cw / 2.0;
        s.push_str(&format!(
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{c}</text>\n",
            top - 6.0
        ));
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + ch * i as f64;
        s.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{r}</text>\n",
            left - 6.0,
            y + ch * 0.7
        ));
        for (j, v) in values[i].iter().enumerate() {
            let x = left + cw * j as f64;
            s.push_str(&format!(
                "<rect x=\"{x}\" y=\"{y}\" width=\"{cw}\" height=\"{ch}\" fill=\"{}\" stroke=\"#888\"/><text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{v:.2}</text>\n",
                color(*v),
                x + cw / 2.0,
                y + ch * 0.7
            ));
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn rank_statistics_by_hand() {
        assert_eq!(ranks(&[3.0, 1.0, 3.0, 2.0]), vec![3.5, 1.0, 3.5, 2.0]);
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((spearman(&a, &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // One swap of four: d² = 2 → ρ = 1 − 6·2/(4·15) = 0.8; τ = (5 − 1)/6.
        let b = [1.0, 3.0, 2.0, 4.0];
        assert!((spearman(&a, &b) - 0.8).abs() < 1e-12);
        assert!((kendall(&a, &b) - 4.0 / 6.0).abs() < 1e-12);
        // τ-b with a tie: a = (1,2,3), b = (1,1,2): c = 2, d = 0, tie in b 1 → 2/√(3·2).
        assert!((kendall(&[1.0, 2.0, 3.0], &[1.0, 1.0, 2.0]) - 2.0 / 6f64.sqrt()).abs() < 1e-12);
        assert_eq!(spearman(&a, &[1.0; 4]), 0.0);
        // L = 8 → k = 2: truth's top two are 7 and 6; the criterion's are 7 and 0.
        let t = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0];
        let c = [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 0.0, 10.0];
        assert_eq!(top_precision(&c, &t), 0.5);
    }

    #[test]
    fn leave_one_out_choice() {
        let mut rho = BTreeMap::new();
        rho.insert("a".to_string(), vec![0.9, 0.1, 0.1]);
        rho.insert("b".to_string(), vec![0.2, 0.5, 0.5]);
        assert_eq!(best_criterion(&rho, &["a", "b"], |_| true).unwrap().0, "b");
        assert_eq!(
            best_criterion(&rho, &["a", "b"], |m| m == 0).unwrap().0,
            "a"
        );
        assert!(best_criterion(&rho, &["a"], |_| false).is_none());
        let svg = heatmap_svg(&["a".into()], &["x".into()], &[vec![0.5]]);
        assert!(svg.contains("<rect") && svg.contains("0.50"));
    }
}
