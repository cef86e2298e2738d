#!/usr/bin/env python3
"""Renders pgkpi's monitoring mixin (mixin/) into the files users load without Jsonnet:
alerts/<area>.yml (Prometheus rule files), alerts/tests/<area>_test.yml (their promtool
tests) and dashboards/pgkpi-*.json (Grafana). Run it through scripts/render-mixin.sh, which
installs the evaluator (PyPI `jsonnet`) first.

  render-mixin.sh                        write the committed files from the default _config
  render-mixin.sh --check                write nothing; exit 1 naming each committed file that
                                         differs from the render (scripts/test.sh runs this)
  render-mixin.sh --config F --out DIR   render with the _config override in F (Jsonnet, e.g.
                                         { selectorLabels: { job: 'postgres' } }) into DIR
"""

import argparse
import difflib
import sys
from pathlib import Path

try:
    import _jsonnet
    import yaml
except ImportError as e:
    sys.exit(f"mixin/render.py: {e}; run it through scripts/render-mixin.sh, which installs "
             "PyPI's jsonnet and PyYAML into target/py")

import json

REPO = Path(__file__).resolve().parent.parent
RENDERED_DIRS = {"alerts": "*.yml", "alerts/tests": "*_test.yml", "dashboards": "*.json"}
# Files in those directories that are not rendered: Alertmanager's configuration.
NOT_RENDERED = {"alerts/alertmanager.yml"}


HEADER = """\
# Rendered from pgkpi's monitoring mixin (mixin/); edit the mixin, then run
# scripts/render-mixin.sh. Configuration: mixin/config.libsonnet.
"""

# Keys in the order people read a rule and a promtool test; any other key follows, sorted.
KEY_ORDER = ["name", "alert", "record", "expr", "for", "labels", "annotations", "summary",
             "description", "runbook_url", "rule_files", "evaluation_interval", "interval",
             "input_series", "series", "values", "alert_rule_test", "promql_expr_test",
             "eval_time", "alertname", "exp_alerts", "exp_labels", "exp_annotations",
             "exp_samples", "groups", "rules", "tests"]


def ordered(value):
    if isinstance(value, dict):
        rank = {k: i for i, k in enumerate(KEY_ORDER)}
        keys = sorted(value, key=lambda k: (rank.get(k, len(KEY_ORDER)), k))
        return {k: ordered(value[k]) for k in keys}
    if isinstance(value, list):
        return [ordered(v) for v in value]
    return value


class RuleDumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, lists indented under keys."""

    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)


RuleDumper.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def text(name, value):
    if name.endswith(".json"):
        return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    return HEADER + yaml.dump(ordered(value), Dumper=RuleDumper, sort_keys=False,
                              allow_unicode=True, width=1 << 20)


def render(config_code):
    """Every rendered file's repository path and its exact text."""
    out = _jsonnet.evaluate_file(str(REPO / "mixin" / "render.jsonnet"),
                                 ext_codes={"config": config_code})
    return {name: text(name, value) for name, value in json.loads(out).items()}


def check(files):
    problems = []
    for name, text in files.items():
        path = REPO / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text() != text:
            committed = path.read_text().splitlines()
            lines = list(difflib.unified_diff(committed, text.splitlines(), f"committed {name}",
                                              f"rendered {name}", lineterm="", n=1))
            shown = "\n".join("    " + line for line in lines[:12])
            more = f"\n    ... ({len(lines) - 12} more diff lines)" if len(lines) > 12 else ""
            problems.append(f"{name}: differs from the mixin's render\n{shown}{more}")
    for directory, pattern in RENDERED_DIRS.items():
        for path in sorted((REPO / directory).glob(pattern)):
            name = str(path.relative_to(REPO))
            if name not in files and name not in NOT_RENDERED:
                problems.append(f"{name}: not rendered by the mixin (add it to mixin/ or delete it)")
    if problems:
        print("alerts/ and dashboards/ are out of date with the mixin (mixin/):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print("edit mixin/, not the rendered files, then run:  scripts/render-mixin.sh",
              file=sys.stderr)
        return 1
    print(f"mixin: {len(files)} rendered files match alerts/ and dashboards/")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed files; write nothing")
    parser.add_argument("--config", type=Path,
                        help="a Jsonnet file holding a _config override (merged with +)")
    parser.add_argument("--out", type=Path, help="write into this directory (with --config)")
    args = parser.parse_args()
    if args.config and not args.out:
        parser.error("--config renders files that differ from the committed ones: give --out DIR")
    config = args.config.read_text() if args.config else "{}"
    try:
        files = render(config)
    except RuntimeError as e:
        sys.exit(f"mixin/render.py: Jsonnet error (config: {args.config or 'defaults'}):\n{e}")
    if args.check:
        sys.exit(check(files))
    root = args.out or REPO
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print(f"mixin: {len(files)} files rendered into {root}")


if __name__ == "__main__":
    main()
