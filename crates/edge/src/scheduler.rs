//! Which queued evolution tasks start now: AdaEvo's knapsack over the edge's free memory
//! solved by dynamic programming over a reduced space, and the FIFO baseline.
//!
//! Each queued task offers variants (epoch budgets) with a predicted memory, duration and
//! value; at most one variant per task is chosen, the chosen memories fit the free memory, and
//! at most `max_tasks` start. Reduced space (our reading of "DP over a reduced search space"):
//! memory is counted in whole `unit`s (rounded up, so the DP never overcommits), each task
//! keeps only its Pareto-optimal variants (no other variant has ≤ memory and ≥ value), and only
//! the `max_candidates` tasks with the best value per memory unit enter the DP.

/// One way of running a task.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Variant {
    /// Training epochs.
    pub epochs: usize,
    /// Predicted peak memory, bytes.
    pub memory: u64,
    /// Predicted duration, simulated seconds.
    pub seconds: f64,
    /// Scheduling value (expected QoE-seconds gained).
    pub value: f64,
}

/// A queued task as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Caller's id.
    pub id: usize,
    /// Arrival time (FIFO order).
    pub arrival: f64,
    /// Its variants.
    pub variants: Vec<Variant>,
}

/// A decision: start candidate `id` with variant `variant`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Candidate id.
    pub id: usize,
    /// Index into its variants.
    pub variant: usize,
}

/// The Pareto-optimal variants' indices (ascending memory, strictly rising value).
pub fn pareto(vs: &[Variant]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..vs.len()).collect();
    idx.sort_by(|&a, &b| {
        vs[a]
            .memory
            .cmp(&vs[b].memory)
            .then(vs[b].value.total_cmp(&vs[a].value))
    });
    let mut out: Vec<usize> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for i in idx {
        if vs[i].value > best {
            best = vs[i].value;
            out.push(i);
        }
    }
    out
}

/// Whether `memory` bytes fit in `free` bytes as the knapsack counts them: in whole `unit`s,
/// the capacity rounded down and the task rounded up.
pub fn fits_units(memory: u64, free: u64, unit: u64) -> bool {
    let unit = unit.max(1);
    memory.div_ceil(unit) <= free / unit
}

/// The knapsack DP (see the module doc).
pub fn knapsack(
    cands: &[Candidate],
    free: u64,
    unit: u64,
    max_tasks: usize,
    max_candidates: usize,
) -> Vec<Start> {
    let unit = unit.max(1);
    let cap = (free / unit) as usize;
    if cap == 0 || max_tasks == 0 {
        return Vec::new();
    }
    let units = |m: u64| m.div_ceil(unit) as usize;
    // Reduced space: Pareto variants, then the densest candidates.
    let mut items: Vec<(usize, Vec<usize>)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (i, pareto(&c.variants)))
        .filter(|(i, v)| {
            v.iter()
                .any(|&j| fits_units(cands[*i].variants[j].memory, free, unit))
        })
        .collect();
    let density = |i: usize, v: &[usize]| -> f64 {
        v.iter()
            .map(|&j| {
                let x = &cands[i].variants[j];
                x.value / units(x.memory).max(1) as f64
            })
            .fold(f64::NEG_INFINITY, f64::max)
    };
    items.sort_by(|a, b| {
        density(b.0, &b.1)
            .total_cmp(&density(a.0, &a.1))
            .then(cands[a.0].arrival.total_cmp(&cands[b.0].arrival))
    });
    items.truncate(max_candidates.max(1));
    let k = max_tasks.min(items.len());
    let n = items.len();
    // v[i][c][t]: best value of items[..i] within c units using t tasks; choice for traceback.
    let neg = f64::NEG_INFINITY;
    let mut v = vec![vec![vec![neg; k + 1]; cap + 1]; n + 1];
    let mut choice = vec![vec![vec![usize::MAX; k + 1]; cap + 1]; n + 1];
    for row in v[0].iter_mut() {
        row[0] = 0.0;
    }
    for (i, (ci, vars)) in items.iter().enumerate() {
        for c in 0..=cap {
            for t in 0..=k {
                let mut best = v[i][c][t];
                let mut pick = usize::MAX;
                if t > 0 {
                    for &j in vars {
                        let x = &cands[*ci].variants[j];
                        let u = units(x.memory);
                        if u <= c && v[i][c - u][t - 1] > neg {
                            let val = v[i][c - u][t - 1] + x.value;
                            if val > best + 1e-12 {
                                best = val;
                                pick = j;
                            }
                        }
                    }
                }
                v[i + 1][c][t] = best;
                choice[i + 1][c][t] = pick;
            }
        }
    }
    let (mut t, mut best) = (0, neg);
    for (tt, val) in v[n][cap].iter().enumerate() {
        if *val > best {
            best = *val;
            t = tt;
        }
    }
    let mut c = cap;
    let mut out = Vec::new();
    for i in (1..=n).rev() {
        let j = choice[i][c][t];
        if j != usize::MAX {
            let (ci, _) = &items[i - 1];
            out.push(Start {
                id: cands[*ci].id,
                variant: j,
            });
            c -= units(cands[*ci].variants[j].memory);
            t -= 1;
        }
    }
    out.reverse();
    out
}

/// FIFO: in arrival order, variant `variant` of each, while memory and the task cap allow;
/// stops at the first task that does not fit (head-of-line blocking, as a queue would).
pub fn fifo(cands: &[Candidate], free: u64, max_tasks: usize, variant: usize) -> Vec<Start> {
    let mut order: Vec<&Candidate> = cands.iter().collect();
    order.sort_by(|a, b| a.arrival.total_cmp(&b.arrival).then(a.id.cmp(&b.id)));
    let mut left = free;
    let mut out = Vec::new();
    for c in order {
        if out.len() >= max_tasks {
            break;
        }
        let j = variant.min(c.variants.len().saturating_sub(1));
        let Some(x) = c.variants.get(j) else { break };
        if x.memory > left {
            break;
        }
        left -= x.memory;
        out.push(Start {
            id: c.id,
            variant: j,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(memory: u64, value: f64) -> Variant {
        Variant {
            epochs: 1,
            memory,
            seconds: 1.0,
            value,
        }
    }

    #[test]
    fn knapsack_beats_greedy_and_respects_memory() {
        // Capacity 10: {6 → 7} alone vs {5 → 5, 5 → 5}: the DP takes the pair.
        let cands = vec![
            Candidate {
                id: 0,
                arrival: 0.0,
                variants: vec![var(6, 7.0)],
            },
            Candidate {
                id: 1,
                arrival: 1.0,
                variants: vec![var(5, 5.0)],
            },
            Candidate {
                id: 2,
                arrival: 2.0,
                variants: vec![var(5, 5.0)],
            },
        ];
        let s = knapsack(&cands, 10, 1, 4, 16);
        let ids: Vec<usize> = s.iter().map(|x| x.id).collect();
        assert_eq!(ids, vec![1, 2]);
        // Task cap 1: the single best.
        assert_eq!(
            knapsack(&cands, 10, 1, 1, 16),
            vec![Start { id: 0, variant: 0 }]
        );
        // FIFO blocks at the head once memory runs out.
        assert_eq!(fifo(&cands, 10, 4, 0).len(), 1);
    }

    #[test]
    fn variants_and_brute_force_agree() {
        let cands: Vec<Candidate> = (0..5)
            .map(|i| Candidate {
                id: i,
                arrival: i as f64,
                variants: vec![
                    var(2 + (i as u64 % 3), 1.0 + i as f64),
                    var(4 + (i as u64 % 2), 2.5 + 0.7 * i as f64),
                ],
            })
            .collect();
        let s = knapsack(&cands, 11, 1, 3, 16);
        let got: f64 = s
            .iter()
            .map(|x| cands[x.id].variants[x.variant].value)
            .sum();
        let mem: u64 = s
            .iter()
            .map(|x| cands[x.id].variants[x.variant].memory)
            .sum();
        assert!(mem <= 11 && s.len() <= 3);
        // Brute force over 3^5 assignments.
        let mut best = 0.0f64;
        for code in 0..243usize {
            let (mut c, mut m, mut val, mut t) = (code, 0, 0.0, 0);
            for cand in &cands {
                let pick = c % 3;
                c /= 3;
                if pick > 0 {
                    let x = cand.variants[pick - 1];
                    m += x.memory;
                    val += x.value;
                    t += 1;
                }
            }
            if m <= 11 && t <= 3 {
                best = best.max(val);
            }
        }
        assert!((got - best).abs() < 1e-9, "{got} vs {best}");
    }
}
