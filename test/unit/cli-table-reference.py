#!/usr/bin/env python3
# Prints what the AWS CLI (awscli 1.x, its own TableFormatter) draws for each
# case of cli-table-cases.json, as JSON {name: table}, to refresh the expected
# tables in cli-table-expected.json:
#   python3 test/unit/cli-table-reference.py > test/unit/cli-table-expected.json
import io, json, os, sys
from types import SimpleNamespace
from awscli.formatter import TableFormatter
from awscli.table import MultiTable, Styler

cases = json.load(open(os.path.join(os.path.dirname(__file__), "cli-table-cases.json")))
out = {}
for name, case in cases.items():
    fmt = TableFormatter(SimpleNamespace(color="off", query=None))
    fmt.table = MultiTable(initial_section=False, column_separator="|", styler=Styler())
    fmt.table._terminal_width = case.get("width", 80)
    stream = io.StringIO()
    fmt._format_response(case["title"], case["data"], stream)
    out[name] = stream.getvalue()
json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
print()
