//! Server-rendered SVG charts of an endpoint's hourly statistics (success rate and p50/p95
//! latency), so people see a trend instead of reading numbers. Only presentation attributes
//! and classes (the CSP forbids inline styles); colours come from the stylesheet, so charts
//! follow the theme. Hours without attempts are gaps, not zeros: a quiet hour is not a failing
//! one.

use std::fmt::Write;

use herald_proto::v1::StatsPoint;
use maud::{Markup, html};

const WIDTH: f64 = 600.0;
const HEIGHT: f64 = 170.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 592.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 140.0;

/// The x of point `i` of `n`.
fn x(i: usize, n: usize) -> f64 {
    if n <= 1 {
        return (LEFT + RIGHT) / 2.0;
    }
    LEFT + (RIGHT - LEFT) * i as f64 / (n - 1) as f64
}

/// The y of `value` on a scale from 0 to `max`.
fn y(value: f64, max: f64) -> f64 {
    let v = if max > 0.0 { value / max } else { 0.0 };
    BOTTOM - (BOTTOM - TOP) * v.clamp(0.0, 1.0)
}

/// Runs of consecutive defined values as polyline `points` strings (a gap splits them).
fn runs(values: &[Option<f64>], max: f64) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, v) in values.iter().enumerate() {
        match v {
            Some(v) => {
                let _ = write!(current, "{:.1},{:.1} ", x(i, values.len()), y(*v, max));
            }
            None if !current.is_empty() => out.push(std::mem::take(&mut current)),
            None => {}
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out.into_iter().map(|s| s.trim_end().to_owned()).collect()
}

/// One line of a chart: its values, class and legend label.
struct Line<'a> {
    values: Vec<Option<f64>>,
    class: &'a str,
}

/// A time label of an hour (`MM-DD HH:00` UTC).
fn hour_label(p: Option<&StatsPoint>) -> String {
    p.and_then(|p| p.hour.as_ref())
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.format("%m-%d %H:00").to_string())
        .unwrap_or_default()
}

/// The frame, grid and axis labels shared by both charts, with `lines` drawn in it.
fn chart(
    testid: &str,
    title: &str,
    points: &[StatsPoint],
    max: f64,
    y_labels: [String; 3],
    lines: &[Line<'_>],
) -> Markup {
    let mid = (TOP + BOTTOM) / 2.0;
    html! {
        svg class="chart" data-testid=(testid) role="img" aria-label=(title)
            viewBox=(format!("0 0 {WIDTH} {HEIGHT}"))
            xmlns="http://www.w3.org/2000/svg" {
            title { (title) }
            line class="grid" x1=(LEFT) y1=(TOP) x2=(RIGHT) y2=(TOP) stroke-width="1" {}
            line class="grid" x1=(LEFT) y1=(mid) x2=(RIGHT) y2=(mid) stroke-width="1" {}
            line class="axis" x1=(LEFT) y1=(BOTTOM) x2=(RIGHT) y2=(BOTTOM) stroke-width="1" {}
            text class="label" x=(LEFT - 4.0) y=(TOP + 4.0) text-anchor="end" font-size="11" { (y_labels[0]) }
            text class="label" x=(LEFT - 4.0) y=(mid + 4.0) text-anchor="end" font-size="11" { (y_labels[1]) }
            text class="label" x=(LEFT - 4.0) y=(BOTTOM + 4.0) text-anchor="end" font-size="11" { (y_labels[2]) }
            text class="label" x=(LEFT) y=(HEIGHT - 8.0) font-size="11" { (hour_label(points.first())) }
            text class="label" x=(RIGHT) y=(HEIGHT - 8.0) text-anchor="end" font-size="11" { (hour_label(points.last())) }
            @for line in lines {
                @for run in runs(&line.values, max) {
                    @if run.contains(' ') {
                        polyline class=(line.class) points=(run) fill="none" stroke-width="2" {}
                    } @else {
                        @let (cx, cy) = run.split_once(',').unwrap_or(("0", "0"));
                        circle class=(line.class) cx=(cx) cy=(cy) r="2.5" {}
                    }
                }
            }
        }
    }
}

/// Success rate per hour (0–100 %); hours without attempts are gaps.
pub fn success_rate(testid: &str, title: &str, points: &[StatsPoint]) -> Markup {
    let values = points
        .iter()
        .map(|p| (p.attempts > 0).then(|| 100.0 * p.successes as f64 / p.attempts as f64))
        .collect();
    let lines = [Line {
        values,
        class: "rate",
    }];
    let labels = ["100%".into(), "50%".into(), "0%".into()];
    chart(testid, title, points, 100.0, labels, &lines)
}

/// p50 and p95 latency per hour, on a scale up to the largest p95 of the window.
pub fn latency(testid: &str, title: &str, points: &[StatsPoint]) -> Markup {
    let max = points
        .iter()
        .map(|p| p.p95_latency_ms.max(p.p50_latency_ms))
        .max();
    let max = f64::from(max.unwrap_or(0).max(10));
    let series = |f: fn(&StatsPoint) -> u32| {
        points
            .iter()
            .map(|p| (p.attempts > 0).then(|| f64::from(f(p))))
            .collect()
    };
    let lines = [
        Line {
            values: series(|p| p.p95_latency_ms),
            class: "p95",
        },
        Line {
            values: series(|p| p.p50_latency_ms),
            class: "p50",
        },
    ];
    let labels = [
        format!("{max:.0} ms"),
        format!("{:.0} ms", max / 2.0),
        "0 ms".into(),
    ];
    chart(testid, title, points, max, labels, &lines)
}

#[cfg(test)]
mod tests {
    use prost_types::Timestamp;

    use super::*;

    fn point(hour: i64, attempts: u64, successes: u64, p50: u32, p95: u32) -> StatsPoint {
        StatsPoint {
            hour: Some(Timestamp {
                seconds: 1_796_601_600 + hour * 3600,
                nanos: 0,
            }),
            attempts,
            successes,
            p50_latency_ms: p50,
            p95_latency_ms: p95,
        }
    }

    #[test]
    fn the_success_rate_is_a_line_per_run_of_busy_hours() {
        let points = [
            point(0, 10, 10, 20, 40),
            point(1, 4, 2, 30, 80),
            point(2, 0, 0, 0, 0),
            point(3, 5, 0, 10, 10),
        ];
        let svg = success_rate("rate", "Success rate, 24 h", &points).into_string();
        assert!(
            svg.starts_with("<svg class=\"chart\" data-testid=\"rate\""),
            "{svg}"
        );
        assert!(svg.contains("<title>Success rate, 24 h</title>"), "{svg}");
        // Hours 0 and 1 (100 %, 50 %) are one line: top, then halfway; hour 2 is a gap; hour 3
        // (0 %) stands alone at the bottom.
        assert!(
            svg.contains("<polyline class=\"rate\" points=\"48.0,10.0 229.3,75.0\""),
            "{svg}"
        );
        assert!(
            svg.contains("<circle class=\"rate\" cx=\"592.0\" cy=\"140.0\""),
            "{svg}"
        );
        assert_eq!(svg.matches("class=\"rate\"").count(), 2, "{svg}");
        assert!(svg.contains(">12-07 00:00<"), "{svg}");
        assert!(svg.contains(">12-07 03:00<"), "{svg}");
        assert!(!svg.contains("style="), "{svg}");
    }

    #[test]
    fn latency_is_scaled_to_the_largest_p95() {
        let points = [point(0, 1, 1, 50, 200), point(1, 1, 1, 100, 100)];
        let svg = latency("lat", "Latency", &points).into_string();
        assert!(svg.contains(">200 ms<"), "{svg}");
        assert!(svg.contains(">100 ms<"), "{svg}");
        assert!(
            svg.contains("<polyline class=\"p95\" points=\"48.0,10.0 592.0,75.0\""),
            "{svg}"
        );
        assert!(
            svg.contains("<polyline class=\"p50\" points=\"48.0,107.5 592.0,75.0\""),
            "{svg}"
        );
    }

    #[test]
    fn an_empty_window_draws_the_frame_without_lines() {
        let svg = latency("lat", "Latency", &[point(0, 0, 0, 0, 0)]).into_string();
        assert!(
            !svg.contains("polyline") && !svg.contains("circle"),
            "{svg}"
        );
        assert!(svg.contains(">0 ms<"), "{svg}");
    }
}
