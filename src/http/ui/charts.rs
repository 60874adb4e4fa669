//! Charts drawn on the server as SVG: sparklines for lists and bar charts for an error's
//! events over time. Only numbers go into the markup, never event text.

use maud::{html, Markup};

/// A small bar sparkline of `counts` (oldest first).
pub fn sparkline(counts: &[i64]) -> Markup {
    let width = 96.0;
    let height = 22.0;
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = counts.len().max(1) as f64;
    let bar = width / n;
    let total: i64 = counts.iter().sum();
    html! {
        svg class="spark" width=(width) height=(height) viewBox={"0 0 " (width) " " (height)}
            role="img" aria-label={(total) " events in the last 24 hours"} {
            title { (total) " events in the last 24 hours" }
            line x1="0" y1=(height - 0.5) x2=(width) y2=(height - 0.5) class="base" {}
            @for (i, c) in counts.iter().enumerate() {
                @if *c > 0 {
                    @let h = ((*c as f64 / max) * (height - 2.0)).max(1.5);
                    rect x=(format!("{:.2}", i as f64 * bar + 0.5)) y=(format!("{:.2}", height - h))
                        width=(format!("{:.2}", (bar - 1.0).max(0.5))) height=(format!("{:.2}", h)) {}
                }
            }
        }
    }
}

/// A bar chart of `(unix seconds, count)` points with a label under the first and last bar.
pub fn bars(points: &[(i64, i64)], label: impl Fn(i64) -> String, caption: &str) -> Markup {
    let width = 720.0;
    let height = 120.0;
    let top = 14.0;
    let bottom = 18.0;
    let plot = height - top - bottom;
    let max = points.iter().map(|p| p.1).max().unwrap_or(0).max(1);
    let n = points.len().max(1) as f64;
    let bar = width / n;
    html! {
        figure class="chart" {
            figcaption { (caption) }
            svg width="100%" height=(height) viewBox={"0 0 " (width) " " (height)}
                preserveAspectRatio="none" role="img" aria-label=(caption) {
                text x="0" y="10" class="axis" { "max " (max) }
                line x1="0" y1=(top + plot) x2=(width) y2=(top + plot) class="base" {}
                @for (i, (at, c)) in points.iter().enumerate() {
                    @let h = if *c > 0 { ((*c as f64 / max as f64) * plot).max(1.5) } else { 0.0 };
                    g {
                        title { (label(*at)) ": " (c) }
                        rect class=(if *c > 0 { "bar" } else { "bar empty" })
                            x=(format!("{:.2}", i as f64 * bar + 1.0)) y=(format!("{:.2}", top + plot - h.max(1.0)))
                            width=(format!("{:.2}", (bar - 2.0).max(1.0))) height=(format!("{:.2}", h.max(1.0))) {}
                    }
                }
                @if let (Some(first), Some(last)) = (points.first(), points.last()) {
                    text x="0" y=(height - 4.0) class="axis" { (label(first.0)) }
                    text x=(width) y=(height - 4.0) class="axis end" { (label(last.0)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sparkline_has_a_bar_per_busy_hour() {
        let svg = sparkline(&[0, 3, 0, 1]).into_string();
        assert_eq!(svg.matches("<rect").count(), 2);
        assert!(svg.contains("4 events in the last 24 hours"));
    }

    #[test]
    fn bars_label_both_ends() {
        let svg = bars(&[(0, 1), (3600, 2)], |t| format!("t{t}"), "Last 24 hours").into_string();
        assert!(svg.contains(">t0<") && svg.contains(">t3600<"), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
