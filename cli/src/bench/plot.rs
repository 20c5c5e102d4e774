//! `--plot out.svg`: latency distribution and throughput over time, as SVG.

use super::harness::Outcome;
use plotters::prelude::*;
use std::path::Path;

/// Percentiles drawn on the latency chart, as quantiles.
const QUANTILES: &[f64] = &[
    0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1.0,
];

/// Where a quantile sits on the "nines" axis: 90% -> 1, 99% -> 2, 99.9% -> 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-5).log10()
}

fn quantile_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    if pct < 99.0 {
        format!("{pct:.0}%")
    } else {
        let text = format!("{pct:.3}");
        format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40)];

/// Draws both charts for `outcomes` (busbar first, then the raw baseline).
pub(crate) fn draw(path: &Path, title: &str, outcomes: &[&Outcome]) -> Result<(), String> {
    draw_inner(path, title, outcomes).map_err(|e| format!("cannot draw {}: {e}", path.display()))
}

fn draw_inner(
    path: &Path,
    title: &str,
    outcomes: &[&Outcome],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(600);

    // Latency by percentile.
    let x_max = nines(0.99999);
    // Latency on a log scale: the tail is orders of magnitude above the median.
    let micros = |ns: u64| (ns as f64 / 1000.0).max(0.1);
    let y_max = outcomes
        .iter()
        .map(|o| micros(o.histogram.max()))
        .fold(1.0, f64::max)
        * 1.5;
    let y_min = outcomes
        .iter()
        .filter(|o| !o.histogram.is_empty())
        .map(|o| micros(o.histogram.min()))
        .fold(y_max / 10.0, f64::min)
        / 1.5;
    let mut latency = ChartBuilder::on(&left)
        .caption("Latency distribution", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())?;
    latency
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs, log scale)")
        .y_label_formatter(&|y| format!("{y}"))
        .x_labels(6)
        .x_label_formatter(&|x| quantile_label(*x))
        .draw()?;
    for (i, outcome) in outcomes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points: Vec<(f64, f64)> = if outcome.histogram.is_empty() {
            Vec::new()
        } else {
            QUANTILES
                .iter()
                .map(|&q| {
                    (
                        nines(q).min(x_max),
                        micros(outcome.histogram.value_at_quantile(q)),
                    )
                })
                .collect()
        };
        latency
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} latency", outcome.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Throughput over time.
    let t_max = outcomes
        .iter()
        .flat_map(|o| o.timeline.last().map(|p| p.t))
        .fold(0.1, f64::max);
    let r_max = outcomes
        .iter()
        .flat_map(|o| o.timeline.iter().map(|p| p.rate))
        .fold(1.0, f64::max)
        * 1.1;
    let mut throughput = ChartBuilder::on(&right)
        .caption("Throughput over time", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..t_max, 0f64..r_max)?;
    throughput
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("messages/s")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, outcome) in outcomes.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let points = outcome.timeline.iter().map(|p| (p.t, p.rate));
        throughput
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} throughput", outcome.label))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    throughput
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nines_axis_labels() {
        assert_eq!(quantile_label(nines(0.5)), "50%");
        assert_eq!(quantile_label(nines(0.9)), "90%");
        assert_eq!(quantile_label(nines(0.999)), "99.9%");
    }
}
