"""Prints a YAML document (a file, or stdin when the path is "-") as JSON,
so the Rust tests can read compose, Prometheus and Grafana files without a
YAML crate.

usage: yaml_to_json.py PATH|-
"""
import json
import sys

import yaml

source = sys.stdin if sys.argv[1] == "-" else open(sys.argv[1], encoding="utf-8")
json.dump(yaml.safe_load(source), sys.stdout)
