//! Charts drawn on the server as SVG, so they need no JavaScript and show
//! Japanese labels with the page's own fonts. Plain functions turn figures
//! into shapes (integer pixel positions, computed with integer arithmetic
//! from integer amounts); the `chart_bars.html` template draws them, so
//! every label passes through askama's escaping.

/// One segment of a bar: a team's part of a day's total.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub y: i64,
    pub height: i64,
    pub colour: &'static str,
    /// Read by screen readers and shown on hover: "看護師: ¥5,000".
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    pub x: i64,
    pub label: String,
    pub segments: Vec<Segment>,
}

/// A bar chart, optionally stacked, with an optional target line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarChart {
    pub title: String,
    pub width: i64,
    pub height: i64,
    pub bar_width: i64,
    /// The baseline's y.
    pub base: i64,
    pub bars: Vec<Bar>,
    /// (y, label) of the target line.
    pub goal: Option<(i64, String)>,
    /// (label, y) of the top of the scale.
    pub top: (String, i64),
    pub legend: Vec<(&'static str, String)>,
}

pub const COLOURS: [&str; 8] = ["#d9480f", "#1971c2", "#2b8a3e", "#9c36b5", "#e67700", "#0c8599", "#c2255c", "#5c940d"];

const HEIGHT: i64 = 220;
const TOP: i64 = 20;
const BASE: i64 = 190;
const LEFT: i64 = 8;
const SLOT: i64 = 22;

/// Stacked bars: `series` names the parts (teams), each bar gives one
/// value per part. `goal` draws a line at that value. `format` writes an
/// amount for people.
pub fn stacked(
    title: String,
    series: &[String],
    bars: &[(String, Vec<i64>)],
    goal: Option<(i64, String)>,
    format: impl Fn(i64) -> String,
) -> BarChart {
    let tallest = bars.iter().map(|(_, parts)| parts.iter().map(|v| (*v).max(0)).sum::<i64>()).max().unwrap_or(0);
    let scale_max = tallest.max(goal.as_ref().map(|g| g.0).unwrap_or(0)).max(1);
    let span = BASE - TOP;
    let y_of = |value: i64| BASE - ((i128::from(value) * i128::from(span)) / i128::from(scale_max)) as i64;
    let mut drawn = Vec::with_capacity(bars.len());
    for (i, (label, parts)) in bars.iter().enumerate() {
        let mut running = 0;
        let mut segments = Vec::new();
        for (j, value) in parts.iter().enumerate() {
            let value = (*value).max(0);
            if value == 0 {
                continue;
            }
            let (bottom, top) = (y_of(running), y_of(running + value));
            running += value;
            segments.push(Segment {
                y: top,
                height: (bottom - top).max(1),
                colour: COLOURS[j % COLOURS.len()],
                title: format!("{}: {}", series.get(j).map(String::as_str).unwrap_or(""), format(value)),
            });
        }
        drawn.push(Bar { x: LEFT + SLOT * i as i64, label: label.clone(), segments });
    }
    let width = (LEFT * 2 + SLOT * bars.len() as i64).max(200);
    BarChart {
        title,
        width,
        height: HEIGHT,
        bar_width: SLOT - 6,
        base: BASE,
        bars: drawn,
        goal: goal.map(|(value, label)| (y_of(value), label)),
        top: (format(scale_max), TOP),
        legend: series.iter().enumerate().map(|(j, name)| (COLOURS[j % COLOURS.len()], name.clone())).collect(),
    }
}

/// Simple bars, one value each.
pub fn simple(title: String, bars: &[(String, i64)], format: impl Fn(i64) -> String) -> BarChart {
    let stacked_bars: Vec<(String, Vec<i64>)> = bars.iter().map(|(l, v)| (l.clone(), vec![*v])).collect();
    let mut chart = stacked(title, &[String::new()], &stacked_bars, None, &format);
    for (bar, (label, value)) in chart.bars.iter_mut().zip(bars) {
        for segment in &mut bar.segments {
            segment.title = format!("{label}: {}", format(*value));
        }
    }
    chart.legend.clear();
    chart
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yen(v: i64) -> String {
        format!("¥{v}")
    }

    #[test]
    fn stacked_bars_are_proportional_and_the_goal_line_sits_at_the_goal() {
        let series = vec!["看護師".to_owned(), "薬剤師".to_owned()];
        let bars = vec![("11/1".to_owned(), vec![100, 50]), ("11/2".to_owned(), vec![300, 0])];
        let chart = stacked("raised".into(), &series, &bars, Some((600, "目標".into())), yen);
        let span = BASE - TOP;
        // The goal is the top of the scale.
        assert_eq!(chart.goal, Some((TOP, "目標".into())));
        let first = &chart.bars[0];
        assert_eq!(first.segments.len(), 2);
        assert_eq!(first.segments[0].height, span * 100 / 600);
        assert_eq!(first.segments[0].y, BASE - span * 100 / 600);
        assert_eq!(first.segments[1].y, BASE - span * 150 / 600, "stacked on top of the first");
        assert_eq!(first.segments[1].title, "薬剤師: ¥50");
        assert_eq!(chart.bars[1].segments.len(), 1, "zero parts are not drawn");
        assert_eq!(chart.bars[1].x - first.x, SLOT);
        assert_eq!(chart.top.0, "¥600");
        assert_eq!(chart.legend[1], (COLOURS[1], "薬剤師".to_owned()));
    }

    #[test]
    fn a_total_above_the_goal_raises_the_scale_and_empty_charts_draw() {
        let chart = stacked("x".into(), &["a".into()], &[("d".into(), vec![1200])], Some((600, "goal".into())), yen);
        assert_eq!(chart.bars[0].segments[0].y, TOP);
        assert_eq!(chart.goal.unwrap().0, BASE - (BASE - TOP) / 2);
        let empty = stacked("x".into(), &[], &[], None, yen);
        assert!(empty.bars.is_empty() && empty.width >= 200);
        let simple = simple("mrr".into(), &[("2026-01".into(), 5000), ("2026-02".into(), 0)], yen);
        assert_eq!(simple.bars[0].segments[0].title, "2026-01: ¥5000");
        assert!(simple.bars[1].segments.is_empty());
    }
}
