//! Reading a node's Prometheus text exposition.

/// Sum of the samples of Prometheus text `text` named `name` whose labels contain `label`.
pub(crate) fn sum_samples(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with(' ') || rest.starts_with('{'))
                    && rest
                        .rsplit_once(' ')
                        .is_some_and(|(k, _)| k.contains(label))
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_label() {
        let text = "# HELP quiver_p x\n\
            quiver_p{shard=\"0\"} 1\n\
            quiver_p{shard=\"10\"} 0.5\n\
            quiver_p_total 7\n\
            quiver_p 2\n";
        assert_eq!(sum_samples(text, "quiver_p", ""), 3.5);
        assert_eq!(sum_samples(text, "quiver_p", "shard=\"0\""), 1.0);
        assert_eq!(sum_samples(text, "quiver_p", "shard=\"3\""), 0.0);
        assert_eq!(sum_samples(text, "quiver_p_total", ""), 7.0);
    }
}
