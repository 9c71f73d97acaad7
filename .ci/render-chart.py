#!/usr/bin/env python3
"""Renders deploy/helm/stepgate without helm (no helm binary comes from the package
registries this CI can reach), so checkov can scan what the chart produces.

The chart's templates keep to what this renders faithfully: `{{ .Values.a.b }}`,
`{{ .Release.Name }}`, `{{ .Chart.AppVersion }}`, each optionally piped to `quote` or
`sha256sum`. Any other template construct fails the render: a chart that grows `if`,
`range` or `include` needs helm itself here, and the check must not silently pass.

usage: render-chart.py CHART_DIR OUT_FILE [RELEASE_NAME [NAMESPACE]]
"""
import hashlib
import json
import re
import sys
from pathlib import Path

import yaml

chart_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
release = sys.argv[3] if len(sys.argv) > 3 else "stepgate"
namespace = sys.argv[4] if len(sys.argv) > 4 else "stepgate"
values = yaml.safe_load((chart_dir / "values.yaml").read_text())
chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}")
PATH = re.compile(r"^\.(Values|Release|Chart)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)$")


def lookup(expr, where):
    m = PATH.match(expr)
    if not m:
        sys.exit(f"{where}: `{{{{ {expr} }}}}` is not a plain value path this renderer supports")
    root, rest = m.group(1), m.group(2).split(".")[1:]
    node = {"Values": values, "Release": {"Name": release, "Namespace": namespace}, "Chart": {
        "AppVersion": chart.get("appVersion"), "Name": chart.get("name"),
        "Version": chart.get("version")}}[root]
    for key in rest:
        if not isinstance(node, dict) or key not in node:
            sys.exit(f"{where}: `.{root}.{'.'.join(rest)}` is not set")
        node = node[key]
    return node


def render(action, where):
    parts = [p.strip() for p in action.split("|")]
    value = lookup(parts[0], where)
    for f in parts[1:]:
        if f == "quote":
            value = json.dumps(str(value))
        elif f == "sha256sum":
            value = hashlib.sha256(str(value).encode()).hexdigest()
        else:
            sys.exit(f"{where}: the function `{f}` is not supported by this renderer")
    return str(value)


docs = []
for t in sorted((chart_dir / "templates").glob("*.yaml")):
    text = t.read_text()
    rendered = ACTION.sub(lambda m: render(m.group(1), t.name), text)
    yaml.safe_load(rendered)  # every rendered template is YAML
    docs.append(f"# Source: {t.name}\n{rendered}")
out.write_text("---\n".join(docs))
print(f"rendered {len(docs)} templates of {chart_dir} to {out}")
