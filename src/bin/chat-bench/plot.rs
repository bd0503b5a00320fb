//! Pictures of sweeps: p99 latency and delivered/s against the asked rate per sender, one line
//! per series (a store, or a binary of an A/B), as one SVG of two panels. Both axes of both
//! panels are logarithmic: a sweep's rates grow geometrically, and its last step's p99 is often
//! orders of magnitude above the others'. Drawn with plotters' SVG backend alone, which leaves
//! the text's fonts to the viewer.

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::Value;

use crate::BenchResult;

/// One run of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// The asked rate, messages per second per sender.
    pub rate: f64,
    pub p99_ms: f64,
    pub delivered_per_s: f64,
}

/// One line of the picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

impl Series {
    /// The runs of a chat-bench JSON report: a sweep's array (its summary, which has no rate,
    /// is skipped) or a single run.
    pub fn from_report(label: &str, report: &Value) -> BenchResult<Self> {
        let runs = match report {
            Value::Array(runs) => runs.as_slice(),
            run => std::slice::from_ref(run),
        };
        let points: Vec<Point> = runs
            .iter()
            .filter_map(|run| {
                Some(Point {
                    rate: run["rate_per_sender"].as_f64().filter(|rate| *rate > 0.0)?,
                    p99_ms: run["latency_ms"]["p99"].as_f64()?,
                    delivered_per_s: run["deliveries_per_s"].as_f64()?,
                })
            })
            .collect();
        if points.is_empty() {
            return Err(format!("{label}: the report has no run with a rate").into());
        }
        Ok(Self {
            label: label.to_owned(),
            points,
        })
    }

    /// A series from `[LABEL=]FILE`, a JSON report written by `--json` (the label defaults to
    /// the file's name without `.json`).
    pub fn read(arg: &str) -> BenchResult<Self> {
        let (label, path) = match arg.split_once('=') {
            Some((label, path)) => (label.to_owned(), path),
            None => {
                let stem = std::path::Path::new(arg).file_stem().map_or_else(
                    || arg.to_owned(),
                    |stem| stem.to_string_lossy().into_owned(),
                );
                (stem, arg)
            }
        };
        let text = std::fs::read_to_string(path).map_err(|err| format!("reading {path}: {err}"))?;
        let report = serde_json::from_str(&text).map_err(|err| format!("{path}: {err}"))?;
        Self::from_report(&label, &report)
    }
}

/// The picture, as SVG text.
pub fn svg(title: &str, series: &[Series]) -> BenchResult<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (900, 900)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let panels = root.split_evenly((2, 1));
        panel(&panels[0], series, "p99 latency (ms)", |point| point.p99_ms)?;
        panel(&panels[1], series, "delivered/s", |point| {
            point.delivered_per_s
        })?;
        root.present()?;
    }
    Ok(svg)
}

/// One panel: `value` of every series' points against their rate. Values of zero or less have
/// no place on a logarithmic axis and are left out.
fn panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    series: &[Series],
    what: &str,
    value: fn(&Point) -> f64,
) -> BenchResult<()> {
    let xy = |line: &Series| {
        line.points
            .iter()
            .map(|point| (point.rate, value(point)))
            .filter(|(_, y)| *y > 0.0)
            .collect::<Vec<_>>()
    };
    let all: Vec<(f64, f64)> = series.iter().flat_map(xy).collect();
    let x = decades(all.iter().map(|(x, _)| *x));
    let y = decades(all.iter().map(|(_, y)| *y));
    let mut chart = ChartBuilder::on(area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.log_scale(), y.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("asked rate per sender (msg/s)")
        .y_desc(what)
        // Whole numbers without plotters' ".0".
        .x_label_formatter(&|x| format!("{x}"))
        .y_label_formatter(&|y| format!("{y}"))
        .draw()?;
    for (n, line) in series.iter().enumerate() {
        let style = Palette99::pick(n).stroke_width(2);
        chart
            .draw_series(LineSeries::new(xy(line), style).point_size(3))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// A logarithmic axis' range around `values`, in whole decades: plotters labels the powers of
/// ten and the steps between them only from the first power on, so a range starting between
/// two powers would leave its start unlabelled.
fn decades(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (low, high) = values.fold((f64::INFINITY, 0.0_f64), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    if !low.is_finite() {
        // Nothing to show: any range will do.
        return 1.0..10.0;
    }
    let low = 10_f64.powf(low.log10().floor());
    let high = 10_f64.powf(high.log10().ceil()).max(low * 10.0);
    low..high
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(rates: &[f64], p99s: &[f64]) -> Value {
        let mut runs: Vec<Value> = rates
            .iter()
            .zip(p99s)
            .map(|(rate, p99)| {
                serde_json::json!({
                    "scenario": "fanout",
                    "rate_per_sender": rate,
                    "deliveries_per_s": rate * 100.0,
                    "latency_ms": {"p50": p99 / 2.0, "p99": p99},
                    "sweep_clean": true,
                })
            })
            .collect();
        runs.push(serde_json::json!({"scenario": "sweep", "best_clean_rate": rates[0]}));
        Value::Array(runs)
    }

    #[test]
    fn a_sweep_report_gives_its_runs_and_skips_its_summary() {
        let series = Series::from_report("memory", &sweep(&[10.0, 15.0], &[1.5, 40.0]))
            .expect("two runs with rates");
        assert_eq!(series.label, "memory");
        assert_eq!(
            series.points,
            [
                Point {
                    rate: 10.0,
                    p99_ms: 1.5,
                    delivered_per_s: 1000.0
                },
                Point {
                    rate: 15.0,
                    p99_ms: 40.0,
                    delivered_per_s: 1500.0
                },
            ]
        );
        let summary_only = serde_json::json!([{"scenario": "sweep", "best_clean_rate": 1.0}]);
        assert!(Series::from_report("empty", &summary_only).is_err());
    }

    #[test]
    fn two_series_make_one_picture_with_both_labels_and_lines() {
        let series = [
            Series::from_report("memory", &sweep(&[10.0, 15.0, 22.5], &[1.0, 2.0, 30.0])),
            Series::from_report("redis", &sweep(&[10.0, 15.0], &[2.0, 50.0])),
        ]
        .map(|series| series.expect("runs with rates"));
        let svg = svg("fanout 1 x 100", &series).expect("the picture draws");
        assert!(svg.starts_with("<svg"), "{svg}");
        let texts: Vec<&str> = svg
            .split("<text")
            .skip(1)
            .filter_map(|rest| rest.split_once('>')?.1.split_once("</text>"))
            .map(|(text, _)| text.trim())
            .collect();
        for text in [
            "fanout 1 x 100",
            "memory",
            "redis",
            "p99 latency (ms)",
            "delivered/s",
        ] {
            assert!(texts.contains(&text), "{text} missing from {texts:?}");
        }
        // Per panel, a line of each series and its legend's sample, in the series' colour.
        let polylines: Vec<&str> = svg
            .split("<polyline")
            .skip(1)
            .map(|rest| rest.split("/>").next().unwrap_or(rest))
            .collect();
        for n in 0..2 {
            let (r, g, b) = Palette99::pick(n).to_backend_color().rgb;
            let stroke = format!("stroke=\"#{r:02X}{g:02X}{b:02X}\"");
            let drawn = polylines
                .iter()
                .filter(|line| line.contains(&stroke))
                .count();
            assert_eq!(drawn, 4, "{stroke} in {svg}");
        }
    }
}
