//! Pictures of results (plotters, SVG): the percentile spectrum of each run on HdrHistogram's
//! "nines" axis (0 %, 90 %, 99 %, 99.9 %, ...), every run overlaid in its own colour, and each
//! run's messages per second and p50/p99 latency over time. Inputs are loadgen's JSON results
//! (`--json`, `--out`) or HdrHistogram interval logs (`--hlog`).

use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::{IntervalSummary, Latency};
use crate::results::{check_intervals, decode_histogram, read_hlog};

/// One run to draw.
#[derive(Debug, Clone)]
pub struct Series {
    /// The legend's label (a file name, or the target).
    pub label: String,
    /// Every latency of the measured period, ns.
    pub hist: Histogram<u64>,
    /// Per second of the measured period.
    pub intervals: Vec<IntervalSummary>,
}

impl Series {
    /// Reads a JSON result (with its `histogram`) or an hlog; the label is the file's name.
    pub fn load(path: &Path) -> Result<Series, String> {
        let bytes = crate::results::read_file(path)?;
        let label = path
            .file_name()
            .map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Series::from_bytes(label, &bytes).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// A JSON result or an hlog from its bytes, labelled `label`.
    pub fn from_bytes(label: String, bytes: &[u8]) -> Result<Series, String> {
        if bytes.first() == Some(&b'{') {
            let value: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|e| format!("not a JSON result: {e}"))?;
            return Series::from_json(label, &value);
        }
        let mut hist = crate::tally::new_histogram();
        let mut summaries = Vec::new();
        read_hlog(bytes, |start, h| {
            summaries.push(summary(start.as_secs_f64(), h));
            hist.add(h).map_err(|e| format!("{e:?}"))
        })
        .map_err(|e| format!("not an hlog either: {e}"))?;
        check_intervals(&summaries)?;
        Ok(Series { label, hist, intervals: summaries })
    }

    /// A series from a JSON result (`histogram` and `intervals`).
    pub fn from_json(label: String, value: &serde_json::Value) -> Result<Series, String> {
        let text = value["histogram"]
            .as_str()
            .ok_or("not a loadgen result with a histogram (run loadgen with --json or --out)")?;
        let hist = decode_histogram(text)?;
        let intervals: Vec<IntervalSummary> =
            serde_json::from_value(value["intervals"].clone()).unwrap_or_default();
        check_intervals(&intervals)?;
        Ok(Series { label, hist, intervals })
    }
}

fn summary(t: f64, h: &Histogram<u64>) -> IntervalSummary {
    let l = Latency::of(h);
    IntervalSummary { t, messages: h.len(), p50_us: l.p50, p99_us: l.p99, max_us: l.max }
}

/// The spectrum's x axis: "nines" (x = 3 is 99.9 %).
const NINES: f64 = 5.0;

fn quantile_at(x: f64) -> f64 {
    1.0 - 10f64.powf(-x)
}

fn nines_label(x: &f64) -> String {
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        n => format!("99.{}%", "9".repeat(n as usize - 2)),
    }
}

/// An axis label: whole numbers with thousands separators, fractions below 10.
fn amount(v: &f64) -> String {
    match v.abs() >= 10.0 {
        true if *v < 0.0 => format!("-{}", crate::report::group(v.abs().round() as u64)),
        true => crate::report::group(v.round() as u64),
        false => format!("{v:.1}"),
    }
}

/// Draws `series` into an SVG at `out`.
// Long on purpose: three charts in plotters' builder style, one after the other; a helper per
// chart would take the drawing area, the series and the styles, and read no shorter.
pub fn draw(series: &[Series], out: &Path) -> Result<(), String> {
    if series.is_empty() {
        return Err("nothing to plot".into());
    }
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", out.display());
    let root = SVGBackend::new(out, (1100, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(500);
    let (rate_area, latency_area) = bottom.split_horizontally(550);
    let colour = |i: usize| Palette99::pick(i).to_rgba();

    // The percentile spectrum.
    let max_us = series.iter().map(|s| s.hist.max() as f64 / 1000.0).fold(1.0, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&top)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..NINES, 0.0..max_us)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (µs)")
        .x_labels(6)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&amount)
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, s) in series.iter().enumerate() {
        if s.hist.is_empty() {
            continue;
        }
        let points = (0..=500).map(|k| {
            let x = NINES * k as f64 / 500.0;
            (x, s.hist.value_at_quantile(quantile_at(x)) as f64 / 1000.0)
        });
        let style = colour(i).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| fail(&e))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour(i).stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;

    // Over time: messages per second, and p50 (thin) and p99 (thick) latency.
    let t_max =
        series.iter().flat_map(|s| s.intervals.iter().map(|i| i.t + 1.0)).fold(1.0, f64::max);
    let rate_max = series
        .iter()
        .flat_map(|s| s.intervals.iter().map(|i| i.messages as f64))
        .fold(1.0, f64::max);
    let mut rates = ChartBuilder::on(&rate_area)
        .caption("Messages per second", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..t_max, 0.0..rate_max * 1.1)
        .map_err(|e| fail(&e))?;
    rates
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("messages/s")
        .y_label_formatter(&amount)
        .draw()
        .map_err(|e| fail(&e))?;
    let lat_max =
        series.iter().flat_map(|s| s.intervals.iter().map(|i| i.max_us)).fold(1.0, f64::max);
    let mut latency = ChartBuilder::on(&latency_area)
        .caption("p50 (thin), p99 (thick) and max (faint) per second", ("sans-serif", 18))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..lat_max * 1.1)
        .map_err(|e| fail(&e))?;
    latency
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (µs)")
        .y_label_formatter(&amount)
        .draw()
        .map_err(|e| fail(&e))?;
    for (i, s) in series.iter().enumerate() {
        // Each second is drawn at its middle.
        let at = |iv: &IntervalSummary| iv.t + 0.5;
        let points: Vec<(f64, f64)> =
            s.intervals.iter().map(|iv| (at(iv), iv.messages as f64)).collect();
        rates
            .draw_series(LineSeries::new(points, colour(i).stroke_width(2)))
            .map_err(|e| fail(&e))?;
        let p50: Vec<(f64, f64)> = s.intervals.iter().map(|iv| (at(iv), iv.p50_us)).collect();
        let p99: Vec<(f64, f64)> = s.intervals.iter().map(|iv| (at(iv), iv.p99_us)).collect();
        latency
            .draw_series(LineSeries::new(p50, colour(i).stroke_width(1)))
            .map_err(|e| fail(&e))?;
        latency
            .draw_series(LineSeries::new(p99, colour(i).stroke_width(3)))
            .map_err(|e| fail(&e))?;
        let max: Vec<(f64, f64)> = s.intervals.iter().map(|iv| (at(iv), iv.max_us)).collect();
        latency
            .draw_series(LineSeries::new(max, colour(i).mix(0.35).stroke_width(1)))
            .map_err(|e| fail(&e))?;
    }
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

/// `loadgen sweep --plot`: latency percentiles against achieved throughput, one point per step
/// (the "knee"); failed steps are drawn hollow.
pub fn draw_knee(steps: &[crate::sweep::Step], out: &Path) -> Result<(), String> {
    if steps.is_empty() {
        return Err("no step to plot".into());
    }
    let fail = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", out.display());
    let root = SVGBackend::new(out, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut sorted: Vec<&crate::sweep::Step> = steps.iter().collect();
    sorted.sort_by(|a, b| a.achieved.total_cmp(&b.achieved));
    let x_max = sorted.iter().map(|s| s.achieved).fold(1.0, f64::max) * 1.1;
    let y_max = sorted.iter().map(|s| s.p999_us).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency against throughput (sweep; hollow: failed steps)", ("sans-serif", 22))
        .margin(15)
        .margin_right(40)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("achieved messages/s")
        .y_desc("latency (µs)")
        .x_label_formatter(&amount)
        .y_label_formatter(&amount)
        .draw()
        .map_err(|e| fail(&e))?;
    type Pick = fn(&crate::sweep::Step) -> f64;
    let figures: [(&str, Pick, usize); 3] =
        [("p50", |s| s.p50_us, 0), ("p99", |s| s.p99_us, 1), ("p99.9", |s| s.p999_us, 2)];
    for (name, pick, i) in figures {
        let colour = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = sorted.iter().map(|s| (s.achieved, pick(s))).collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| fail(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(sorted.iter().map(|s| {
                let style = if s.pass { colour.filled() } else { colour.stroke_width(2) };
                Circle::new((s.achieved, pick(s)), 5, style)
            }))
            .map_err(|e| fail(&e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
