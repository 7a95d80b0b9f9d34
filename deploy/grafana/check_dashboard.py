"""Checks deploy/grafana/cartpulse-slo.json (run by
scripts/check-grafana-dashboard.sh):

- it is exactly what build_dashboard.py emits (no hand edits, no drift);
- read through the Foundation SDK's models (generated from Grafana's
  dashboard schema) and written back, it is unchanged: nothing in it is
  unknown to the schema;
- every recording rule its queries use exists in deploy/prometheus/slo-rules.yml.
"""

import json
import pathlib
import re
import sys

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import build_dashboard  # noqa: E402

here = pathlib.Path(__file__).parent
committed = json.loads((here / "cartpulse-slo.json").read_text())
built = json.loads(json.dumps(build_dashboard.build().build(), cls=JSONEncoder))
failures = []
if committed != built:
    failures.append("cartpulse-slo.json is not what build_dashboard.py builds: regenerate it")
if json.loads(json.dumps(Dashboard.from_json(committed), cls=JSONEncoder)) != committed:
    failures.append("cartpulse-slo.json holds fields Grafana's dashboard schema does not know")
rules = set(re.findall(r"record: (\S+)", (here.parent / "prometheus" / "slo-rules.yml").read_text()))
used = set(re.findall(r"cartpulse:slo_\w+:\w+", json.dumps(committed)))
if not used:
    failures.append("the dashboard queries no recording rule")
for name in sorted(used - rules):
    failures.append(f"the dashboard uses {name}, which slo-rules.yml does not record")
panels = [p for p in committed["panels"] if p["type"] != "row"]
print(f"grafana dashboard: {len(panels)} panels, {len(used)} recording rules, schema of grafana-foundation-sdk")
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
