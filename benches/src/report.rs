//! Results: min / median / max per backend, test and size; quiverd/anchor ratios per run
//! pair; printed as a table, written as TSV and drawn as an SVG bar chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use plotters::prelude::*;

use crate::scenario::{Backend, Sample, Test};

/// min, median, max of `v` (the mean of the middle two for an even count).
pub fn spread(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// One (test, size): the samples of both backends and the per-run ratios.
pub struct Group<'a> {
    pub test: Test,
    pub size: usize,
    pub quiverd: Vec<&'a Sample>,
    pub anchor: Vec<&'a Sample>,
    /// quiverd Mpps / anchor Mpps of the same run index (pairs where both ran).
    pub ratios: Vec<f64>,
}

pub fn groups(samples: &[Sample]) -> Vec<Group<'_>> {
    let mut keys: Vec<(Test, usize)> = samples.iter().map(|s| (s.test, s.size)).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(test, size)| {
            let of = |b: Backend| -> Vec<&Sample> {
                samples
                    .iter()
                    .filter(|s| s.test == test && s.size == size && s.backend == b)
                    .collect()
            };
            let (quiverd, anchor) = (of(Backend::Quiverd), of(Backend::Anchor));
            let ratios = quiverd
                .iter()
                .filter_map(|q| {
                    let a = anchor.iter().find(|a| a.run == q.run)?;
                    (a.frames > 0).then(|| q.mpps() / a.mpps())
                })
                .collect();
            Group {
                test,
                size,
                quiverd,
                anchor,
                ratios,
            }
        })
        .collect()
}

fn fmt3(s: Option<(f64, f64, f64)>, prec: usize) -> String {
    match s {
        Some((a, b, c)) => format!("{a:.prec$} / {b:.prec$} / {c:.prec$}"),
        None => "-".into(),
    }
}

fn med(v: &[&Sample], f: impl Fn(&Sample) -> f64) -> Option<f64> {
    let xs: Vec<f64> = v.iter().map(|s| f(s)).collect();
    spread(&xs).map(|(_, m, _)| m)
}

/// The stdout table.
pub fn table(groups: &[Group<'_>]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<9} {:>5} {:<8} {:>4}  {:<24} {:<24} {:>5} {:>6} {:>6} {:>8} {:>8} {:>11} {:>6} {:>5}",
        "test",
        "size",
        "backend",
        "runs",
        "Mpps min / med / max",
        "Gbit/s min / med / max",
        "CPU%",
        "bOth%",
        "gOth%",
        "txfull%",
        "rxfull%",
        "drops/s",
        "bound",
        "noisy"
    );
    for g in groups {
        for (name, v) in [("quiverd", &g.quiverd), ("anchor", &g.anchor)] {
            let mpps: Vec<f64> = v.iter().map(|s| s.mpps()).collect();
            let gbps: Vec<f64> = v.iter().map(|s| s.gbps()).collect();
            let opt = |x: Option<f64>, p: usize| x.map_or("-".into(), |x| format!("{x:.p$}"));
            let _ = writeln!(
                out,
                "{:<9} {:>5} {:<8} {:>4}  {:<24} {:<24} {:>5} {:>6} {:>6} {:>8} {:>8} {:>11} {:>6} {:>5}",
                g.test.name(),
                g.size,
                name,
                v.len(),
                fmt3(spread(&mpps), 3),
                fmt3(spread(&gbps), 2),
                opt(med(v, |s| s.backend_cpu), 0),
                opt(med(v, |s| s.backend_cpu_other), 0),
                opt(med(v, |s| s.generator_cpu_other), 0),
                opt(med(v, Sample::gen_tx_full_pct), 1),
                opt(med(v, |s| s.gen_rx_full_pct), 1),
                opt(med(v, |s| s.backend_drops as f64 / s.secs), 0),
                format!("{}/{}", v.iter().filter(|s| s.backend_bound()).count(), v.len()),
                format!("{}/{}", v.iter().filter(|s| s.noisy()).count(), v.len()),
            );
        }
        let list: Vec<String> = g.ratios.iter().map(|r| format!("{r:.2}")).collect();
        let _ = writeln!(
            out,
            "{:<9} {:>5} ratio quiverd/anchor per run: [{}]  median {}\n",
            "",
            "",
            list.join(", "),
            spread(&g.ratios).map_or("-".into(), |(_, m, _)| format!("{m:.2}"))
        );
    }
    out
}

/// Every sample, one line each.
pub fn samples_tsv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "test\tsize\tbackend\trun\tsecs\tframes\tbytes\tmpps\tgbps\tbackend_cpu_pct\tbackend_cpu_other_pct\tgenerator_cpu_other_pct\tsent\tgen_tx\tgen_tx_full\tgen_tx_full_pct\tbackend_drops\tgen_rx_full_bursts_pct\tgen_rx_empty_polls_pct\tbackend_bound\tnoisy\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{:.3}\t{}\t{}\t{:.4}\t{:.4}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{}\t{:.2}\t{}\t{:.1}\t{:.1}\t{}\t{}",
            s.test.name(),
            s.size,
            s.backend.name(),
            s.run,
            s.secs,
            s.frames,
            s.bytes,
            s.mpps(),
            s.gbps(),
            s.backend_cpu,
            s.backend_cpu_other,
            s.generator_cpu_other,
            s.sent,
            s.gen_tx,
            s.gen_tx_full,
            s.gen_tx_full_pct(),
            s.backend_drops,
            s.gen_rx_full_pct,
            s.gen_rx_empty_pct,
            s.backend_bound(),
            s.noisy()
        );
    }
    out
}

/// Per test and size: both backends' spread and the ratios.
pub fn summary_tsv(groups: &[Group<'_>]) -> String {
    let mut out = String::from(
        "test\tsize\tbackend\truns\tmpps_min\tmpps_median\tmpps_max\tgbps_min\tgbps_median\tgbps_max\tcpu_pct_median\tratio_median\tratios\n",
    );
    for g in groups {
        let ratio = spread(&g.ratios).map_or(String::new(), |(_, m, _)| format!("{m:.4}"));
        let ratios: Vec<String> = g.ratios.iter().map(|r| format!("{r:.4}")).collect();
        for (name, v) in [("quiverd", &g.quiverd), ("anchor", &g.anchor)] {
            let m: Vec<f64> = v.iter().map(|s| s.mpps()).collect();
            let b: Vec<f64> = v.iter().map(|s| s.gbps()).collect();
            let (m0, m1, m2) = spread(&m).unwrap_or_default();
            let (b0, b1, b2) = spread(&b).unwrap_or_default();
            let _ = writeln!(
                out,
                "{}\t{}\t{name}\t{}\t{m0:.4}\t{m1:.4}\t{m2:.4}\t{b0:.4}\t{b1:.4}\t{b2:.4}\t{:.1}\t{ratio}\t{}",
                g.test.name(),
                g.size,
                v.len(),
                med(v, |s| s.backend_cpu).unwrap_or(0.0),
                ratios.join(",")
            );
        }
    }
    out
}

/// Bars of the median ratio per test and size, whiskers from the smallest to the
/// largest run-pair ratio, and a line at 1.0 (parity with the anchor).
pub fn ratio_svg(groups: &[Group<'_>], path: &Path, title: &str) -> Result<()> {
    let bars: Vec<(String, (f64, f64, f64))> = groups
        .iter()
        .filter_map(|g| Some((format!("{} {}B", g.test.name(), g.size), spread(&g.ratios)?)))
        .collect();
    let n = bars.len().max(1);
    let top = bars
        .iter()
        .map(|(_, (_, _, max))| *max)
        .fold(1.2f64, f64::max)
        * 1.1;
    let width = u32::try_from(160 * n + 160).unwrap_or(1200);
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(20)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_x_axis()
            .y_desc("quiverd / anchor (Mpps, median of run pairs)")
            .draw()?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, (_, m, _)))| {
            let x = i as f64;
            let color = if *m >= 1.0 { GREEN } else { RED };
            Rectangle::new([(x + 0.2, 0.0), (x + 0.8, *m)], color.mix(0.6).filled())
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, (lo, _, hi)))| {
            let x = i as f64 + 0.5;
            PathElement::new(vec![(x, *lo), (x, *hi)], BLACK.stroke_width(2))
        }))?;
        chart.draw_series(bars.iter().enumerate().map(|(i, (label, (_, m, _)))| {
            Text::new(
                format!("{label}: {m:.2}"),
                (i as f64 + 0.05, top * 0.97),
                ("sans-serif", 13),
            )
        }))?;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 1.0), (n as f64, 1.0)],
            BLUE.stroke_width(1),
        )))?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("drawing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(test: Test, backend: Backend, run: usize, frames: u64) -> Sample {
        Sample {
            test,
            size: 64,
            backend,
            reclaim: None,
            run,
            secs: 1.0,
            frames,
            bytes: frames * 64,
            sent: frames,
            backend_cpu: 100.0,
            backend_cpu_other: 0.0,
            generator_cpu_other: 0.0,
            gen_tx: 10,
            gen_tx_full: 30,
            backend_drops: 0,
            gen_rx_full_pct: 0.0,
            gen_rx_empty_pct: 90.0,
            reclaim_switches: 0,
            deadline_flushes: 0,
        }
    }

    #[test]
    fn spread_is_min_median_max() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((1.0, 2.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), Some((1.0, 2.5, 4.0)));
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn ratios_pair_runs_by_index() {
        let v = vec![
            s(Test::Vm2vm, Backend::Quiverd, 0, 2_000_000),
            s(Test::Vm2vm, Backend::Anchor, 0, 4_000_000),
            s(Test::Vm2vm, Backend::Quiverd, 1, 3_000_000),
            // run 1 of the anchor failed: no pair
            s(Test::Vm2vm, Backend::Anchor, 2, 1_000_000),
        ];
        let g = groups(&v);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].ratios, vec![0.5]);
        assert!((v[0].mpps() - 2.0).abs() < 1e-9);
        assert!((v[0].gen_tx_full_pct() - 75.0).abs() < 1e-9);
        let t = table(&g);
        assert!(t.contains("median 0.50"), "{t}");
        assert_eq!(samples_tsv(&v).lines().count(), 5);
        assert_eq!(summary_tsv(&g).lines().count(), 3);
    }

    #[test]
    fn draws_an_svg() {
        let v = vec![
            s(Test::GuestRx, Backend::Quiverd, 0, 2_000_000),
            s(Test::GuestRx, Backend::Anchor, 0, 1_000_000),
        ];
        let dir = std::env::temp_dir().join(format!("qbench-svg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("r.svg");
        ratio_svg(&groups(&v), &p, "test").expect("svg");
        let text = std::fs::read_to_string(&p).expect("svg written");
        assert!(text.starts_with("<svg"), "{text}");
        assert!(text.contains("guest-rx 64B: 2.00"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
