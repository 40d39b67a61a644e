//! Apache's `byrequests` as a precomputed schedule.
//!
//! mod_lbmethod_byrequests keeps a running score per member: on each pick every usable
//! member's score grows by its weight, the highest score wins (the first one on ties) and
//! pays back the sum of the weights. The picks repeat with a period of that sum, so
//! instead of updating every score under a lock on each request, the period is computed
//! once when the set of usable members changes, and a request takes the next slot with a
//! single atomic increment.

/// The smooth weighted round robin schedule for members with `weights` (all at least 1):
/// a sequence of positions into `weights`, one period long.
pub(crate) fn smooth_weighted(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut score = vec![0i64; weights.len()];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            score[i] += i64::from(w);
            if score[i] > score[best] {
                best = i;
            }
        }
        score[best] -= total;
        schedule.push(best as u16);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shares(weights: &[u32]) -> Vec<usize> {
        let s = smooth_weighted(weights);
        (0..weights.len())
            .map(|i| s.iter().filter(|&&p| p as usize == i).count())
            .collect()
    }

    #[test]
    fn equal_weights_alternate_exactly() {
        assert_eq!(smooth_weighted(&[1, 1]), vec![0, 1]);
        assert_eq!(smooth_weighted(&[1, 1, 1]), vec![0, 1, 2]);
        assert_eq!(smooth_weighted(&[2, 2]), vec![0, 1, 0, 1]);
    }

    #[test]
    fn weights_are_interleaved_as_apache_does() {
        // The byrequests example in Apache's documentation, and nginx's {5, 1, 1}.
        assert_eq!(smooth_weighted(&[3, 1]), vec![0, 0, 1, 0]);
        assert_eq!(smooth_weighted(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(shares(&[100, 1, 7, 13]), vec![100, 1, 7, 13]);
    }

    #[test]
    fn single_member() {
        assert_eq!(smooth_weighted(&[4]), vec![0, 0, 0, 0]);
    }
}
