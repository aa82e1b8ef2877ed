"""Parses the activity-log exports that `herald bench --scenario
activity-log --save-exports DIR` keeps, with Python's own json and csv
modules, and says what they hold:

    python3 scripts/check-exports.py DIR
"""

import collections
import csv
import json
import os
import sys

directory = sys.argv[1] if len(sys.argv) > 1 else "."
ids = set()
failed = 0
with open(os.path.join(directory, "attempts.jsonl")) as lines:
    for line in lines:
        row = json.loads(line)
        ids.add(row["id"])
        failed += row["statusText"] == "fail"
print(f"jsonl: {len(ids)} distinct attempts, {failed} failed")
with open(os.path.join(directory, "attempts.csv"), newline="") as table:
    rows = 0
    shared = 0
    classes = collections.Counter()
    for row in csv.DictReader(table):
        rows += 1
        shared += row["id"] in ids
        classes[row["errorClass"] or "none"] += 1
print(f"csv: {rows} rows, {shared} of them in the jsonl too, error classes {dict(classes)}")
if rows != len(ids) or shared != rows:
    sys.exit("the two exports disagree")
