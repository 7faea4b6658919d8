#!/usr/bin/env python3
"""Checks deploy/grafana/pa-auth.json (and the expressions of the Prometheus rules) against
the metrics pa-auth really emits. Standard library only.

Usage: check_dashboard.py DASHBOARD.json [--rules RULES.yml] [--metrics SCRAPE.txt ...]
                          [--metrics-source src/web/metrics.rs]

Emitted names come from real /metrics scrapes (--metrics, the exposition text; the
integration test passes a sled node's and a cluster node's) and/or from the names written in
the renderer's source (--metrics-source; histograms there get their _bucket/_sum/_count).
With neither, the source file next to this script is used.

The dashboard must be a JSON object with a title, a uid, schemaVersion >= 36, a `datasource`
template variable, and panels each with a unique id, a gridPos and at least one target whose
`expr` names only emitted metrics and whose datasource is the variable. Rules: every `expr:`
must name only emitted metrics (and `up`, which Prometheus makes itself).
"""

import argparse
import json
import re
import sys
from pathlib import Path

FUNCTIONS = {
    # PromQL functions, aggregations, keywords and operators spelled as words.
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bottomk", "ceil", "changes",
    "clamp", "clamp_max", "clamp_min", "count", "count_over_time", "count_values", "day_of_month",
    "day_of_week", "delta", "deriv", "exp", "floor", "group", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log2", "log10", "max", "max_over_time", "min", "min_over_time", "minute", "month",
    "predict_linear", "quantile", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
    "sort", "sort_desc", "sqrt", "stddev", "stddev_over_time", "stdvar", "sum", "sum_over_time",
    "time", "timestamp", "topk", "vector", "year", "and", "or", "unless", "by", "without", "on",
    "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan",
}
NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr):
    """The metric names an expression uses: identifiers outside strings, label matchers,
    range/offset brackets and grouping lists, that are not PromQL words or numbers."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    e = re.sub(r"\{[^}]*\}", " ", e)  # label matchers ($instance etc.)
    e = re.sub(r"\[[^\]]*\]", " ", e)  # ranges ([5m], [$__rate_interval])
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\boffset\s+\S+", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)  # other Grafana variables
    e = re.sub(r"\b\d+(\.\d+)?(e[+-]?\d+)?\b", " ", e)
    return {n for n in NAME.findall(e) if n.lower() not in FUNCTIONS}


def from_scrape(path):
    names = set()
    for line in Path(path).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        names.add(NAME.match(line).group(0))
    return names


def from_source(path):
    text = Path(path).read_text()
    names = set(re.findall(r"\bpa_auth_[a-z0-9_]+", text))
    # `let name = "pa_auth_…"` then "{name}_bucket": every name may be a histogram's.
    for n in list(names):
        names |= {n + "_bucket", n + "_sum", n + "_count"}
    return names


def check_dashboard(path, emitted, errors):
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        errors.append(f"{path}: not JSON: {e}")
        return
    if not isinstance(d, dict):
        errors.append(f"{path}: not a JSON object")
        return
    for key in ("title", "uid"):
        if not isinstance(d.get(key), str) or not d[key]:
            errors.append(f"{path}: no {key}")
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        errors.append(f"{path}: schemaVersion {d.get('schemaVersion')!r} (want >= 36)")
    variables = (d.get("templating") or {}).get("list") or []
    ds_vars = [v.get("name") for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds_vars:
        errors.append(f"{path}: no Prometheus datasource template variable")
    panels = d.get("panels")
    if not isinstance(panels, list) or not panels:
        errors.append(f"{path}: no panels")
        return
    ids = set()
    for i, p in enumerate(panels):
        where = f"{path}: panel {i} ({p.get('title')!r})"
        if p.get("id") in ids:
            errors.append(f"{where}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")) or grid["x"] + grid["w"] > 24:
            errors.append(f"{where}: bad gridPos {grid}")
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            errors.append(f"{where}: no targets")
            continue
        for t in targets:
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                errors.append(f"{where}: target {t.get('refId')} has no expr")
                continue
            ds = t.get("datasource") or p.get("datasource") or {}
            if not ds_vars or ds.get("uid") not in {f"${{{v}}}" for v in ds_vars} | {f"${v}" for v in ds_vars}:
                errors.append(f"{where}: target {t.get('refId')} does not use the datasource variable")
            used = metric_names(expr)
            if not used:
                errors.append(f"{where}: {expr!r} names no metric")
            for name in sorted(used - emitted):
                errors.append(f"{where}: {name} is not emitted by pa-auth ({expr!r})")


def rule_exprs(path):
    """`expr:` values of a rules file: inline, or a `|`/`>` block (no YAML library needed)."""
    lines = Path(path).read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = re.match(r"^(\s*)(?:-\s*)?expr:\s*(.*)$", lines[i])
        i += 1
        if not m:
            continue
        indent, value = len(m.group(1)), m.group(2).strip()
        if value in ("|", ">", "|-", ">-"):
            block = []
            while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i])
                i += 1
            value = "\n".join(block)
        elif value[:1] in "'\"":
            value = value[1:-1]
        out.append(value)
    return out


def check_rules(path, emitted, errors):
    exprs = rule_exprs(path)
    if not exprs:
        errors.append(f"{path}: no expr")
    for expr in exprs:
        used = metric_names(expr)
        if not used:
            errors.append(f"{path}: {expr!r} names no metric")
        for name in sorted(used - emitted - {"up"}):
            errors.append(f"{path}: {name} is not emitted by pa-auth ({expr.strip()!r})")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dashboard")
    ap.add_argument("--rules")
    ap.add_argument("--metrics", action="append", default=[])
    ap.add_argument("--metrics-source", action="append", default=[])
    args = ap.parse_args()
    sources = args.metrics_source
    if not args.metrics and not sources:
        sources = [str(Path(__file__).resolve().parent.parent / "src/web/metrics.rs")]
    emitted = set()
    for p in args.metrics:
        emitted |= from_scrape(p)
    for p in sources:
        emitted |= from_source(p)
    errors = []
    check_dashboard(args.dashboard, emitted, errors)
    if args.rules:
        check_rules(args.rules, emitted, errors)
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        return 1
    print(f"{args.dashboard}: ok" + (f"; {args.rules}: ok" if args.rules else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
