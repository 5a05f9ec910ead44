//! SVG charts from the records of a run: latency percentiles per message size, throughput
//! against message size, and the backings (steady state and one-off costs).
//!
//! Every chart is built from the `kind` of the records and the fields of that kind (see
//! [`Record`]); a chart without data is not written. The transports are whatever the records
//! name; the palette cycles colours, then marker shapes.
//!
//! Text needs no font library: without plotters' `ttf` feature, layout uses plotters' built-in
//! estimate of a string's box (0.7 em per byte), and the SVG backend writes each label as a
//! `<text>` element with `font-family="sans-serif"`, its anchor (`text-anchor`, `dy`) and size,
//! which the viewer lays out with its own fonts. The estimate only sizes plotters' own boxes
//! (legends, tick label offsets); this module sizes the label areas from the longest label with
//! room to spare, so a wider real font does not overlap the plot.

use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::report::{Grid, finite, fmt_bytes_per_s, fmt_ns, fmt_rate, fmt_value, of_kind};
use super::{Record, Result, size_name};

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const FONT: &str = "sans-serif";
/// Font sizes in plotters' units; the SVG gets `size / 1.24` px.
const TITLE: f64 = 24.0;
const LABEL: f64 = 17.0;
const SMALL: f64 = 15.0;
/// Chart width in px.
const WIDTH: u32 = 1100;
/// Height of one row (a transport or backing) of a row chart, px.
const ROW: u32 = 32;

/// Tableau 10: ten hues that stay distinct on screen and in print.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GRID_GREY: RGBColor = RGBColor(220, 220, 220);
const RANGE_GREY: RGBColor = RGBColor(160, 160, 160);

/// Writes every chart the records have data for into `dir` (created when there is one):
/// `latency_<size>.svg` per message size, `throughput.svg`, `backings.svg`,
/// `backing_costs.svg`. Returns the paths written, in that order.
pub fn write_charts(records: &[Record], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut charts: Vec<(String, String)> = Vec::new();
    let latency = Grid::new(records, "latency", "transport");
    for &size in &latency.sizes {
        if let Some(svg) = latency_chart(&latency, size)? {
            charts.push((format!("latency_{}.svg", size_name(size)), svg));
        }
    }
    for (file, svg) in [
        ("throughput.svg", throughput_chart(records)?),
        ("backings.svg", backings_chart(records)?),
        ("backing_costs.svg", costs_chart(records)?),
    ] {
        if let Some(svg) = svg {
            charts.push((file.to_owned(), svg));
        }
    }
    let mut written = Vec::new();
    if charts.is_empty() {
        return Ok(written);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for (file, svg) in charts {
        let path = dir.join(file);
        std::fs::write(&path, svg).map_err(|e| format!("writing {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Draws onto a white `width` x `height` SVG canvas and returns the document.
fn render(width: u32, height: u32, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

fn style(size: f64) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&BLACK)
}

/// A text style anchored at its left end, centred vertically.
fn left_style(size: f64) -> TextStyle<'static> {
    style(size).pos(Pos::new(HPos::Left, VPos::Center))
}

/// Width in px that a label of `text` takes at `size`, with room for fonts wider than
/// plotters' estimate.
fn text_width(text: &str, size: f64) -> u32 {
    (text.chars().count() as f64 * size * 0.5).ceil() as u32
}

fn widest<'s>(texts: impl IntoIterator<Item = &'s str>, size: f64) -> u32 {
    texts.into_iter().map(|t| text_width(t, size)).max().unwrap_or(0)
}

/// The chart title, centred at the top.
fn title(root: &Area<'_>, text: &str) -> Result<()> {
    let (width, _) = root.dim_in_pixel();
    let centred = style(TITLE).pos(Pos::new(HPos::Center, VPos::Top));
    root.draw(&Text::new(text.to_owned(), (width as i32 / 2, 10), centred))?;
    Ok(())
}

/// How a series or percentile is marked.
#[derive(Clone, Copy)]
enum Shape {
    Circle,
    Triangle,
    Square,
    Cross,
}

/// The colour and marker of entry `i` of a legend: colours first, then shapes.
fn look(i: usize) -> (RGBColor, Shape) {
    let shapes = [Shape::Circle, Shape::Square, Shape::Triangle, Shape::Cross];
    (PALETTE[i % PALETTE.len()], shapes[(i / PALETTE.len()) % shapes.len()])
}

/// Draws one marker of `shape` centred at `at`.
fn draw_marker<CT: CoordTranslate>(
    area: &DrawingArea<SVGBackend<'_>, CT>,
    shape: Shape,
    at: CT::From,
    color: RGBColor,
    size: i32,
) -> Result<()>
where
    CT::From: Clone + 'static,
{
    match shape {
        Shape::Circle => area.draw(&Circle::new(at, size, color.filled()))?,
        Shape::Triangle => area.draw(&TriangleMarker::new(at, size + 1, color.filled()))?,
        Shape::Square => area.draw(
            &(EmptyElement::at(at)
                + Rectangle::new([(-size + 1, -size + 1), (size - 1, size - 1)], color.filled())),
        )?,
        Shape::Cross => area.draw(&Cross::new(at, size, color.stroke_width(3)))?,
    }
    Ok(())
}

/// A legend entry: a short line (when `line` is set) with the marker on it, and the label.
fn legend_entry(
    root: &Area<'_>,
    (x, y): (i32, i32),
    label: &str,
    color: RGBColor,
    shape: Shape,
    line: Option<u32>,
) -> Result<()> {
    if let Some(width) = line {
        root.draw(&PathElement::new(vec![(x, y), (x + 28, y)], color.stroke_width(width)))?;
    }
    draw_marker(root, shape, (x + 14, y), color, 6)?;
    root.draw(&Text::new(label.to_owned(), (x + 36, y), left_style(SMALL)))?;
    Ok(())
}

/// The vertical axis of a chart with one row per name: row `i` at value `i`, the first row on
/// top, a tick (and label) per row.
#[derive(Clone)]
struct RowAxis {
    rows: usize,
    inner: RangedCoordf64,
}

impl RowAxis {
    fn new(rows: usize) -> Self {
        RowAxis { rows, inner: (-0.5..rows as f64 - 0.5).into() }
    }

    /// The row a tick value stands for.
    fn index(&self, value: f64) -> Option<usize> {
        let i = value.round();
        (i >= 0.0 && (i as usize) < self.rows).then_some(i as usize)
    }
}

impl Ranged for RowAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(&(self.rows as f64 - 1.0 - value), limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            (0..self.rows).map(|i| i as f64).collect()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// Decade bounds of a log axis around `min..=max` (positive), with some room at both ends.
fn log_bounds(min: f64, max: f64) -> (f64, f64) {
    let lo = 10f64.powf((min / 1.25).log10().floor());
    let hi = 10f64.powf((max * 1.25).log10().ceil());
    (lo, if hi > lo { hi } else { lo * 10.0 })
}

/// Ticks of a log axis, at most `most` of them: each decade (every other, every third... when
/// there are too many), with 2 and 5 between when the axis spans few decades.
fn log_ticks(lo: f64, hi: f64, most: usize) -> Vec<f64> {
    let decades = ((hi / lo).log10().floor() as usize).max(1);
    let (steps, stride): (&[f64], usize) = if decades <= 2 && 3 * decades < most {
        (&[1.0, 2.0, 5.0], 1)
    } else {
        (&[1.0], decades.div_ceil(most.saturating_sub(1).max(1)))
    };
    let first = lo.log10().floor() as i32;
    let mut ticks = Vec::new();
    for e in (first..=first + decades as i32).step_by(stride) {
        for s in steps {
            let v = s * 10f64.powi(e);
            if v >= lo * 0.999 && v <= hi * 1.001 {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// A log axis over `lo..hi` with at most `most` [`log_ticks`].
fn log_axis(
    lo: f64,
    hi: f64,
    most: usize,
) -> impl Ranged<ValueType = f64, FormatOption = DefaultFormatting> {
    (lo..hi).log_scale().with_key_points(log_ticks(lo, hi, most))
}

/// An axis tick in `unit`: like [`fmt_value`] but short (`1 µs` on an axis of ns/page,
/// `50 M/s` on one of msg/s); the axis description names the unit.
fn tick_label(value: f64, unit: &str) -> String {
    if unit.starts_with("ns/") {
        fmt_ns(value)
    } else if unit != "B/s" && unit.ends_with("/s") {
        fmt_rate(value)
    } else {
        fmt_value(value, unit)
    }
}

/// The percentiles of the latency charts: field, label, colour, marker.
const PERCENTILES: [(&str, &str, RGBColor, Shape); 3] = [
    ("p50", "p50 (median)", PALETTE[0], Shape::Circle),
    ("p99", "p99", PALETTE[1], Shape::Triangle),
    ("p999", "p99.9", PALETTE[3], Shape::Square),
];

/// One-way latency percentiles of every transport at `size`: a row per transport (fastest
/// median on top), p50/p99/p99.9 as dots joined by their range on a log axis, the figures in
/// a column on the right.
fn latency_chart(grid: &Grid<'_>, size: usize) -> Result<Option<String>> {
    struct Row {
        name: String,
        /// p50, p99, p99.9 in ns.
        values: [f64; 3],
    }
    let positive = |r: &Record, key| finite(r, key).filter(|v| *v > 0.0);
    let mut rows: Vec<Row> = grid
        .names
        .iter()
        .filter_map(|name| {
            let r = grid.get(name, size)?;
            let values = [positive(r, "p50")?, positive(r, "p99")?, positive(r, "p999")?];
            Some(Row { name: name.clone(), values })
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    rows.sort_by(|a, b| a.values[0].total_cmp(&b.values[0]).then_with(|| a.name.cmp(&b.name)));
    let min = rows.iter().map(|r| r.values[0]).fold(f64::INFINITY, f64::min);
    let max = rows.iter().flat_map(|r| r.values).fold(0.0, f64::max);
    let (lo, hi) = log_bounds(min, max);
    let figures: Vec<String> = rows
        .iter()
        .map(|r| r.values.iter().map(|&v| fmt_ns(v)).collect::<Vec<_>>().join(" / "))
        .collect();
    let figures_header = "p50 / p99 / p99.9";
    let figures_width = widest(figures.iter().map(String::as_str).chain([figures_header]), SMALL);
    let names_width = widest(rows.iter().map(|r| r.name.as_str()), LABEL) + 20;
    let top = 95;
    let height = top + 75 + ROW * rows.len() as u32;

    let svg = render(WIDTH, height, |root| {
        title(root, &format!("One-way latency, {} messages", size_name(size)))?;
        let mut x = 30;
        for (_, label, color, shape) in PERCENTILES {
            legend_entry(root, (x, 62), label, color, shape, None)?;
            x += 60 + text_width(label, SMALL) as i32;
        }
        let area = root.margin(top, 10, 10, figures_width + 30);
        let axis = RowAxis::new(rows.len());
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(60)
            .y_label_area_size(names_width)
            .build_cartesian_2d(log_axis(lo, hi, 10), axis.clone())?;
        let name_of = |y: &f64| axis.index(*y).map_or(String::new(), |i| rows[i].name.clone());
        let ns_label = |v: &f64| fmt_ns(*v);
        chart
            .configure_mesh()
            .x_desc("one-way latency: half a ping-pong round trip (log scale)")
            .x_label_formatter(&ns_label)
            .y_label_formatter(&name_of)
            .label_style(style(LABEL))
            .axis_desc_style(style(LABEL))
            .bold_line_style(GRID_GREY)
            .draw()?;
        chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
            let y = i as f64;
            PathElement::new(vec![(r.values[0], y), (r.values[2], y)], RANGE_GREY.stroke_width(2))
        }))?;
        for (k, (_, _, color, shape)) in PERCENTILES.into_iter().enumerate() {
            for (i, r) in rows.iter().enumerate() {
                draw_marker(chart.plotting_area(), shape, (r.values[k], i as f64), color, 6)?;
            }
        }
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let x = xs.end + 20;
        let header = style(SMALL).color(&RANGE_GREY).pos(Pos::new(HPos::Left, VPos::Bottom));
        root.draw(&Text::new(figures_header, (x, ys.start - 6), header))?;
        for (i, text) in figures.iter().enumerate() {
            let (_, y) = chart.backend_coord(&(lo, i as f64));
            root.draw(&Text::new(text.clone(), (x, y), left_style(SMALL)))?;
        }
        Ok(())
    })?;
    Ok(Some(svg))
}

/// Bytes/s against message size, a line per transport, log-log; the legend on the right,
/// highest throughput first. shmchan's own transports are drawn thicker.
fn throughput_chart(records: &[Record]) -> Result<Option<String>> {
    let grid = Grid::new(records, "throughput", "transport");
    let mut series: Vec<(String, Vec<(f64, f64)>)> = grid
        .names
        .iter()
        .map(|name| {
            let points = grid
                .sizes
                .iter()
                .filter_map(|&size| {
                    let bytes = finite(grid.get(name, size)?, "bytes_per_s")?;
                    (bytes > 0.0).then_some((size as f64, bytes))
                })
                .collect();
            (name.clone(), points)
        })
        .filter(|(_, points): &(String, Vec<_>)| !points.is_empty())
        .collect();
    if series.is_empty() {
        return Ok(None);
    }
    let peak = |points: &[(f64, f64)]| points.iter().map(|p| p.1).fold(0.0, f64::max);
    series.sort_by(|a, b| peak(&b.1).total_cmp(&peak(&a.1)).then_with(|| a.0.cmp(&b.0)));
    let mut sizes: Vec<f64> = series.iter().flat_map(|s| s.1.iter().map(|p| p.0)).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let (x_lo, x_hi) = (sizes[0] / 1.6, sizes[sizes.len() - 1] * 1.6);
    let all = series.iter().flat_map(|s| s.1.iter().map(|p| p.1));
    let (min, max) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_lo, y_hi) = log_bounds(min, max);
    let legend_width = widest(series.iter().map(|s| s.0.as_str()), SMALL) + 60;
    let height = 620.max(130 + 24 * series.len() as u32);

    let svg = render(WIDTH, height, |root| {
        title(root, "Throughput by message size (one sender, one receiver)")?;
        let area = root.margin(60, 10, 10, legend_width + 20);
        let mut chart = ChartBuilder::on(&area)
            .x_label_area_size(60)
            .y_label_area_size(110)
            .build_cartesian_2d(
                (x_lo..x_hi).log_scale().with_key_points(sizes.clone()),
                log_axis(y_lo, y_hi, 10),
            )?;
        let size_label = |v: &f64| size_name(v.round() as usize);
        let rate_label = |v: &f64| fmt_bytes_per_s(*v);
        chart
            .configure_mesh()
            .x_desc("message size (log scale)")
            .y_desc("throughput, bytes/s (log scale)")
            .x_label_formatter(&size_label)
            .y_label_formatter(&rate_label)
            .label_style(style(LABEL))
            .axis_desc_style(style(LABEL))
            .bold_line_style(GRID_GREY)
            .draw()?;
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        for (i, (name, points)) in series.iter().enumerate() {
            let (color, shape) = look(i);
            let width = if name.starts_with("shmchan") { 3 } else { 2 };
            chart
                .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(width)))?;
            for &p in points {
                draw_marker(chart.plotting_area(), shape, p, color, 5)?;
            }
            let y = ys.start + 10 + 24 * i as i32;
            legend_entry(root, (xs.end + 20, y), name, color, shape, Some(width))?;
        }
        Ok(())
    })?;
    Ok(Some(svg))
}

/// A panel of horizontal bars: a bar per row, values in `unit` (see [`fmt_value`]).
struct Panel {
    heading: String,
    x_desc: String,
    unit: String,
    /// Label and value, first on top.
    rows: Vec<(String, f64)>,
    color: RGBColor,
}

/// Draws `panel` with the value printed after each bar. The axis is logarithmic when the
/// values span more than 30x, else linear from 0.
fn bar_panel(area: &Area<'_>, panel: &Panel) -> Result<()> {
    let values = panel.rows.iter().map(|r| r.1);
    let max = values.clone().fold(0.0, f64::max);
    let min = values.fold(f64::INFINITY, f64::min);
    if min > 0.0 && max / min > 30.0 {
        let (lo, hi) = log_bounds(min, max);
        // Room right of the longest bar for its label: a third of the axis more.
        let hi = hi * (hi / lo).powf(0.3);
        let x_desc = format!("{} (log scale)", panel.x_desc);
        // As many ticks as labels of the widest kind fit across the plot.
        let names_width = widest(panel.rows.iter().map(|r| r.0.as_str()), LABEL) + 40;
        let plot_width = area.dim_in_pixel().0.saturating_sub(names_width);
        let label_width = text_width(&tick_label(hi, &panel.unit), SMALL) + 20;
        let most = (plot_width / label_width).max(2) as usize;
        draw_bars(area, panel, log_axis(lo, hi, most), lo, &x_desc)
    } else {
        let hi = if max > 0.0 { max * 1.35 } else { 1.0 };
        draw_bars(area, panel, RangedCoordf64::from(0.0..hi), 0.0, &panel.x_desc)
    }
}

/// The body of [`bar_panel`] for either axis; bars start at `base`.
fn draw_bars<X: Ranged<ValueType = f64> + ValueFormatter<f64>>(
    area: &Area<'_>,
    panel: &Panel,
    x_axis: X,
    base: f64,
    x_desc: &str,
) -> Result<()> {
    let rows = &panel.rows;
    let axis = RowAxis::new(rows.len());
    let names_width = widest(rows.iter().map(|r| r.0.as_str()), LABEL) + 20;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.heading, style(LABEL + 2.0))
        .margin(10)
        .x_label_area_size(60)
        .y_label_area_size(names_width)
        .build_cartesian_2d(x_axis, axis.clone())?;
    let name_of = |y: &f64| axis.index(*y).map_or(String::new(), |i| rows[i].0.clone());
    let value_label = |v: &f64| tick_label(*v, &panel.unit);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .x_labels(5)
        .x_label_formatter(&value_label)
        .y_label_formatter(&name_of)
        .label_style(style(SMALL))
        .axis_desc_style(style(SMALL))
        .bold_line_style(GRID_GREY)
        .light_line_style(WHITE)
        .disable_y_mesh()
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let y = i as f64;
        Rectangle::new([(base, y - 0.32), (r.1.max(base), y + 0.32)], panel.color.filled())
    }))?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        EmptyElement::at((r.1.max(base), i as f64))
            + Text::new(fmt_value(r.1, &panel.unit), (6, 0), left_style(SMALL))
    }))?;
    Ok(())
}

/// Names of a backing chart's rows: the backing, with the size when there are several.
fn backing_rows(grid: &Grid<'_>, field: &str, names: &[String]) -> Vec<(String, f64)> {
    let several = grid.sizes.len() > 1;
    let mut rows = Vec::new();
    for name in names {
        for &size in &grid.sizes {
            let Some(v) = grid.get(name, size).and_then(|r| finite(r, field)) else { continue };
            let label = if several { format!("{name} {}", size_name(size)) } else { name.clone() };
            rows.push((label, v));
        }
    }
    rows
}

/// Steady state per backing: p50 latency on the left, per-message throughput on the right,
/// the backings in the same order (run order) in both.
fn backings_chart(records: &[Record]) -> Result<Option<String>> {
    let latency = Grid::new(records, "backing_latency", "backing");
    let throughput = Grid::new(records, "backing_throughput", "backing");
    let mut names = latency.names.clone();
    names.extend(throughput.names.iter().filter(|n| !latency.names.contains(n)).cloned());
    let latency_rows = backing_rows(&latency, "p50", &names);
    let throughput_rows = backing_rows(&throughput, "value", &names);
    let size_note = |grid: &Grid<'_>| match grid.sizes.as_slice() {
        [one] => format!(", {} messages", size_name(*one)),
        _ => String::new(),
    };
    let mut panels = Vec::new();
    if !latency_rows.is_empty() {
        panels.push(Panel {
            heading: format!("One-way latency p50{}", size_note(&latency)),
            x_desc: "one-way latency: half a ping-pong round trip".into(),
            unit: "ns".into(),
            rows: latency_rows,
            color: PALETTE[0],
        });
    }
    if !throughput_rows.is_empty() {
        panels.push(Panel {
            heading: format!("Throughput{}", size_note(&throughput)),
            x_desc: "messages per second, one sender, one receiver".into(),
            unit: "msg/s".into(),
            rows: throughput_rows,
            color: PALETTE[2],
        });
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let most = panels.iter().map(|p| p.rows.len()).max().unwrap_or(0) as u32;
    let height = 60 + 110 + ROW * most;
    let svg = render(WIDTH, height, |root| {
        title(root, "Backings: steady state between two processes")?;
        let body = root.margin(50, 0, 0, 0);
        for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(&panels) {
            bar_panel(area, panel)?;
        }
        Ok(())
    })?;
    Ok(Some(svg))
}

/// One-off costs: a panel per cost (and unit), a bar per backing, two panels a row.
fn costs_chart(records: &[Record]) -> Result<Option<String>> {
    let mut panels: Vec<Panel> = Vec::new();
    for r in of_kind(records, "backing_cost") {
        let (Some(backing), Some(cost), Some(value)) =
            (r.str("backing"), r.str("cost"), finite(r, "value"))
        else {
            continue;
        };
        let unit = r.str("unit").unwrap_or("");
        let index = match panels.iter().position(|p| p.heading == cost && p.unit == unit) {
            Some(i) => i,
            None => {
                panels.push(Panel {
                    heading: cost.to_owned(),
                    x_desc: if unit.is_empty() { cost.into() } else { format!("{cost}, {unit}") },
                    unit: unit.to_owned(),
                    rows: Vec::new(),
                    color: PALETTE[4],
                });
                panels.len() - 1
            }
        };
        let rows = &mut panels[index].rows;
        match rows.iter_mut().find(|row| row.0 == backing) {
            Some(row) => row.1 = value,
            None => rows.push((backing.to_owned(), value)),
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let columns = panels.len().min(2);
    let grid_rows = panels.len().div_ceil(columns);
    let most = panels.iter().map(|p| p.rows.len()).max().unwrap_or(0) as u32;
    let panel_height = 120 + ROW * most;
    let height = 60 + panel_height * grid_rows as u32;
    let svg = render(WIDTH, height, |root| {
        title(root, "Backings: one-off costs")?;
        let body = root.margin(50, 0, 0, 0);
        for (area, panel) in body.split_evenly((grid_rows, columns)).iter().zip(&panels) {
            bar_panel(area, panel)?;
        }
        Ok(())
    })?;
    Ok(Some(svg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::Rates;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let path = std::env::temp_dir()
                .join(format!("shmchan-plot-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&path).expect("temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn latency(transport: &str, size: usize, p50: f64) -> Record {
        Record::new(&format!("latency/{transport}/{}", size_name(size)), "ns")
            .of("latency", transport, size)
            .num("p50", p50)
            .num("p99", p50 * 2.0)
            .num("p999", p50 * 9.0)
    }

    fn throughput(transport: &str, size: usize, msgs_per_s: f64) -> Record {
        let name = format!("throughput/{transport}/{}", size_name(size));
        Record::throughput(&name, size, &Rates::from(vec![msgs_per_s], 1000)).of(
            "throughput",
            transport,
            size,
        )
    }

    fn backing(kind: &str, backing: &str) -> Record {
        let r = Record::new(&format!("backing/{kind}/{backing}"), "ns")
            .text("kind", kind)
            .text("backing", backing)
            .num("size", 64.0);
        match kind {
            "backing_latency" => r.num("p50", 180.0).num("p99", 300.0).num("p999", 900.0),
            _ => r.num("value", 40e6).num("bytes_per_s", 40e6 * 64.0),
        }
    }

    fn cost(backing: &str, cost: &str, unit: &str, value: f64) -> Record {
        Record::new(&format!("backing/{cost}/{backing}"), unit)
            .text("kind", "backing_cost")
            .text("backing", backing)
            .text("cost", cost)
            .num("value", value)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn file_names(paths: &[PathBuf]) -> Vec<String> {
        paths.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn every_chart_is_written_with_its_names() {
        let dir = TempDir::new("all");
        let records = vec![
            latency("shmchan_spsc_spin", 64, 150.0),
            latency("unix_stream", 64, 9_000.0),
            latency("shmchan_spsc_spin", 4096, 1_200.0),
            throughput("shmchan_spsc", 8, 126e6),
            throughput("shmchan_spsc", 4096, 3.8e6),
            throughput("pipe", 4096, 0.4e6),
            backing("backing_latency", "posix_shm"),
            backing("backing_latency", "file_disk"),
            backing("backing_throughput", "posix_shm"),
            cost("posix_shm", "first_touch", "ns/page", 250.0),
            cost("file_disk", "first_touch", "ns/page", 900.0),
            cost("file_disk", "msync", "ns", 3e6),
            cost("posix_shm", "msync", "ns", 400.0),
            Record::new("ratio/x", "x").text("kind", "ratio").num("value", 1.0),
        ];
        let written = write_charts(&records, &dir.0).expect("charts");
        assert_eq!(
            file_names(&written),
            [
                "latency_64B.svg",
                "latency_4KiB.svg",
                "throughput.svg",
                "backings.svg",
                "backing_costs.svg"
            ]
        );
        let expect: [&[&str]; 5] = [
            &["shmchan_spsc_spin", "unix_stream", "150 ns", "81 µs", "p99.9"],
            &["shmchan_spsc_spin", "1.2 µs"],
            &["shmchan_spsc", "pipe", "4KiB", "8B", "bytes/s"],
            &["posix_shm", "file_disk", "180 ns", "40 M msg/s"],
            &["posix_shm", "file_disk", "first_touch", "msync", "3 ms", "900 ns/page"],
        ];
        for (path, wanted) in written.iter().zip(expect) {
            let svg = read(path);
            assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
            for text in wanted {
                assert!(svg.contains(text), "{} lacks {text}", path.display());
            }
        }
        // The unix_stream row has no 4 KiB measurement, so that chart leaves it out.
        assert!(!read(&written[1]).contains("unix_stream"));
    }

    #[test]
    fn nothing_to_chart_writes_nothing() {
        let dir = TempDir::new("empty");
        let target = dir.0.join("charts");
        assert!(write_charts(&[], &target).expect("no charts").is_empty());
        let unmeasured = [
            Record::new("latency/x/8B", "ns").of("latency", "x", 8).num("p50", f64::NAN),
            Record::new("run", "s").text("kind", "run").num("value", 1.0),
        ];
        assert!(write_charts(&unmeasured, &target).expect("no charts").is_empty());
        assert!(!target.exists(), "no directory is created for no charts");
    }

    #[test]
    fn names_are_escaped_and_single_points_are_charted() {
        let dir = TempDir::new("odd");
        let records = [latency("a<b>&c", 8, 100.0), throughput("a<b>&c", 8, 1e6)];
        let written = write_charts(&records, &dir.0).expect("charts");
        assert_eq!(file_names(&written), ["latency_8B.svg", "throughput.svg"]);
        for path in &written {
            let svg = read(path);
            assert!(svg.contains("a&lt;b&gt;&amp;c"), "{svg}");
        }
    }

    #[test]
    fn log_ticks_cover_the_bounds() {
        assert_eq!(log_bounds(146.0, 401_663.0), (100.0, 1_000_000.0));
        assert_eq!(
            log_ticks(100.0, 10_000.0, 10),
            [100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10_000.0]
        );
        assert_eq!(log_ticks(100.0, 10_000.0, 5), [100.0, 1000.0, 10_000.0]);
        assert_eq!(log_ticks(10.0, 1e6, 10), [10.0, 100.0, 1e3, 1e4, 1e5, 1e6]);
        assert_eq!(log_ticks(10.0, 1e6, 4), [10.0, 1e3, 1e5]);
        // An upper bound past the last decade (room for bar labels) adds no tick beyond it.
        assert_eq!(log_ticks(0.1, 3e5, 4), [0.1, 10.0, 1e3, 1e5]);
    }
}
