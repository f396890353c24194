//! The resource guard: before a system allocates its model or data, it estimates the run's
//! peak memory from the checked configuration (and the data's size where it is known), and
//! the runner refuses the run, in one line naming the setting, when the estimate exceeds the
//! limit (`--max-memory`, default 80% of the smaller of the machine's memory and the cgroup
//! limit). Estimates are deliberately generous upper bounds: they exist to turn a size typo
//! (`data.synthetic.nodes=4000000000`) into an error instead of an out-of-memory abort.

use crate::error::ConfigError;

/// A system's estimate of its peak memory, and the setting that drives it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// The dominant setting as `key=value` (e.g. `data.synthetic.nodes=1000000`).
    pub setting: String,
    /// Estimated peak bytes.
    pub bytes: u64,
}

/// Parses a size: `8G`, `8GiB`, `512M`, `512MB`, `64k`, or plain bytes (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, ConfigError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || ConfigError::Invalid {
        key: "--max-memory".into(),
        value: text.to_string(),
        reason: "must be a size such as 8G, 8GiB, 512M or a number of bytes".into(),
    };
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `1.5 GiB`, `300 MiB`, ...
pub fn format_size(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= (1u64 << 40) as f64 {
        format!("{:.1} TiB", b / (1u64 << 40) as f64)
    } else if b >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.0} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

/// 80% of the smaller of MemTotal and the cgroup's memory limit; 8 GiB where neither is known.
pub fn default_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("MemTotal:"))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kb| kb * 1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok());
    let m = match (total, cgroup) {
        (Some(t), Some(c)) => t.min(c),
        (Some(t), None) => t,
        (None, Some(c)) => c,
        (None, None) => 8 << 30,
    };
    m / 5 * 4
}

/// What the process holds before a system allocates anything (the binary, the tensor
/// runtime, thread stacks, allocator caches): measured at 15-20 MiB here, rounded up.
pub const PROCESS_BASELINE: u64 = 64 << 20;

/// Checks `estimate` plus [`PROCESS_BASELINE`] against `limit`: the refusal names the
/// setting, the estimate and the limit.
pub fn check(estimate: &MemoryEstimate, limit: u64) -> Result<(), ConfigError> {
    let total = estimate.bytes.saturating_add(PROCESS_BASELINE);
    if total > limit {
        return Err(ConfigError::Parse {
            origin: estimate.setting.clone(),
            msg: format!(
                "needs ~{} (limit {}, --max-memory)",
                format_size(total),
                format_size(limit)
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_every_spelling() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("8GiB").unwrap(), 8 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["", "G", "8X", "-1G", "0", "1e400"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusal_names_setting_estimate_and_limit() {
        let e = MemoryEstimate {
            setting: "data.synthetic.nodes=4000000000".into(),
            bytes: 3 << 40,
        };
        let msg = check(&e, 8 << 30).unwrap_err().to_string();
        assert_eq!(
            msg,
            "data.synthetic.nodes=4000000000: needs ~3.0 TiB (limit 8.0 GiB, --max-memory)"
        );
        assert!(check(&e, 4 << 40).is_ok());
        let small = MemoryEstimate {
            setting: "x=1".into(),
            bytes: 1 << 20,
        };
        assert!(
            check(&small, PROCESS_BASELINE).is_err(),
            "the baseline counts"
        );
        assert!(default_limit() > 1 << 20);
    }
}
