//! `DiskSpaceCheck` on the real filesystem of the temporary directory.

use tower_health::{Check, Status, checks::disk::DiskSpaceCheck};

use crate::{postgres::observed, support};

#[tokio::test]
async fn reports_free_space_and_applies_thresholds() {
    let dir = std::env::temp_dir();
    let result = DiskSpaceCheck::new(&dir).without_thresholds().check().await;
    assert_eq!(result.status(), Status::Healthy, "{result:?}");
    let free = observed(&result, "free_bytes").as_u64().unwrap();
    let total = observed(&result, "total_bytes").as_u64().unwrap();
    assert!(total > 0 && free <= total, "free {free} of {total}");
    let percent = observed(&result, "free_percent").as_f64().unwrap();
    assert!((0.0..=100.0).contains(&percent), "{percent}");
    let expected = free as f64 / total as f64 * 100.0;
    assert!((percent - expected).abs() < 1.0, "{percent} vs {expected}");
    let units: Vec<_> = result.observations().iter().map(|o| o.unit()).collect();
    assert_eq!(units, [Some("bytes"), Some("bytes"), Some("%")]);

    // More free bytes than the filesystem has: degraded.
    let result = DiskSpaceCheck::new(&dir)
        .without_thresholds()
        .degraded_below_bytes(total + 1)
        .check()
        .await;
    assert_eq!(result.status(), Status::Degraded, "{result:?}");
    assert!(
        result.message().unwrap().contains("degraded threshold"),
        "{result:?}"
    );

    // Over 100 % is never free: unhealthy, which wins over degraded.
    let result = DiskSpaceCheck::new(&dir)
        .degraded_below_bytes(total + 1)
        .unhealthy_below_percent(100.5)
        .check()
        .await;
    assert_eq!(result.status(), Status::Unhealthy, "{result:?}");
    assert!(
        result.message().unwrap().contains("unhealthy threshold"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_missing_path_is_unhealthy() {
    let path = std::env::temp_dir().join("tower-health-no-such-dir/nested");
    let result = DiskSpaceCheck::new(&path).check().await;
    assert_eq!(result.status(), Status::Unhealthy);
    let message = result.message().unwrap();
    assert!(
        message.contains("statvfs") && message.contains("no-such-dir"),
        "{message}"
    );
}

#[tokio::test]
async fn agrees_with_df() {
    let dir = std::env::temp_dir();
    let Ok(output) = std::process::Command::new("df")
        .args(["-P", "-B1"])
        .arg(&dir)
        .output()
    else {
        support::unavailable("df (coreutils)", "not found");
        return;
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(fields) = text
        .lines()
        .nth(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
    else {
        panic!("unexpected df output: {text}");
    };
    let df_total: u64 = fields[1].parse().unwrap();
    let result = DiskSpaceCheck::new(&dir).check().await;
    let total = observed(&result, "total_bytes").as_u64().unwrap();
    // df -P reports blocks * fragment size, as the check does.
    assert_eq!(total, df_total, "df: {text}");
}
