"""Parses OpenMetrics texts with the Prometheus project's Python client (its strict parser:
one # EOF at the end, TYPE before samples, cumulative buckets, counters ending in _total) and
prints, per file, each sample name with the sum of its values as JSON. A parse error exits
non-zero with the parser's message."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

out = {}
for path in sys.argv[1:]:
    samples = {}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name] = samples.get(sample.name, 0.0) + sample.value
    except ValueError as e:
        sys.exit(f"{path}: {e}")
    out[path] = samples
json.dump(out, sys.stdout)
