"""Builds deploy/grafana/cartpulse-slo.json, the Grafana dashboard of the
service level objectives (docs/operations.md, "Service level objectives").

It is written with Grafana's Foundation SDK, whose builders and models are
generated from Grafana's own dashboard schema (the version pinned in
scripts/check-grafana-dashboard.sh), so the panels, queries and options it
emits are ones Grafana knows. The check script rebuilds the file and fails
when the committed JSON differs, and reads the committed JSON back through
the SDK's models to catch anything the schema does not know.

    python deploy/grafana/build_dashboard.py > deploy/grafana/cartpulse-slo.json
"""

import json
import sys

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, ThresholdsMode, Threshold

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# (recording-rule name, title, objective) as in deploy/prometheus/slo-rules.yml.
OBJECTIVES = [
    ("ingest_availability", "Ingest availability", 0.999),
    ("dashboard_latency", "Ingest → dashboard within 1 s", 0.99),
    ("stream_connect", "Stream connection success", 0.999),
    ("scoring_latency", "Scoring within 10 ms", 0.99),
]


def query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref)


def build() -> dashboard.Dashboard:
    d = (
        dashboard.Dashboard("cartpulse: service level objectives")
        .uid("cartpulse-slo")
        .tags(["cartpulse", "slo"])
        .refresh("1m")
        .time("now-7d", "now")
        .timezone("utc")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )
    for name, title, objective in OBJECTIVES:
        budget = 1 - objective
        d = d.with_row(dashboard.Row(title))
        d = d.with_panel(
            stat.Panel()
            .title(f"{title}: good ratio, last 6 h (objective {objective:.1%})")
            .datasource(DATASOURCE)
            .with_target(query(f"1 - cartpulse:slo_{name}:error_ratio_rate6h", "good", "A"))
            .unit("percentunit")
            .decimals(3)
            .thresholds(
                dashboard.ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps([Threshold(value=None, color="red"), Threshold(value=objective, color="green")])
            )
            .height(6)
            .span(8)
        )
        d = d.with_panel(
            timeseries.Panel()
            .title(f"{title}: burn rate (1 = spending the 30-day budget exactly)")
            .description(
                "Error ratio ÷ the budget rate. The fast-burn alert needs 14.4 over both 1 h and 5 m; "
                "the slow-burn alert 6 over both 6 h and 30 m."
            )
            .datasource(DATASOURCE)
            .with_target(query(f"cartpulse:slo_{name}:error_ratio_rate5m / {budget:g}", "5 m", "A"))
            .with_target(query(f"cartpulse:slo_{name}:error_ratio_rate1h / {budget:g}", "1 h", "B"))
            .with_target(query(f"cartpulse:slo_{name}:error_ratio_rate6h / {budget:g}", "6 h", "C"))
            .unit("none")
            .min(0)
            .thresholds(
                dashboard.ThresholdsConfig()
                .mode(ThresholdsMode.ABSOLUTE)
                .steps(
                    [
                        Threshold(value=None, color="green"),
                        Threshold(value=6, color="orange"),
                        Threshold(value=14.4, color="red"),
                    ]
                )
            )
            .height(6)
            .span(16)
        )
    return d


if __name__ == "__main__":
    json.dump(build().build(), sys.stdout, cls=JSONEncoder, indent=2, sort_keys=True)
    sys.stdout.write("\n")
