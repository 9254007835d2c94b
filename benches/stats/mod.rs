//! Small helpers shared by the bench binaries' reports (`overhead.rs` and
//! `http.rs`). A directory module, so that Cargo does not take it for a
//! bench target of its own.

/// The median of `values` (the mean of the two middle ones for an even
/// count); NaN for none.
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// A goal's verdict, as the report writes it.
pub fn met(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}
